//! The source of the current time. Every rule that depends on time reads it from a [`Clock`],
//! so that tests can set the time instead of waiting for it.

use std::fmt::Debug;

use chrono::{DateTime, Duration, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> DateTime<Utc>;

    /// Waits until this clock has moved on by `duration`.
    fn sleep(&self, duration: std::time::Duration) -> BoxFuture<'static, ()>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: std::time::Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that stays at one time until a test sets or advances it. Its sleeps end when the
/// test moves it past their end.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: watch::Sender::new(start),
        }
    }

    pub fn set(&self, now: DateTime<Utc>) {
        self.now.send_replace(now);
    }

    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep(&self, duration: std::time::Duration) -> BoxFuture<'static, ()> {
        let until = self.now() + Duration::from_std(duration).unwrap_or(Duration::MAX);
        let mut receiver = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; a dropped clock ends the sleep.
            let _ = receiver.wait_for(|now| *now >= until).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn manual_sleep_ends_at_its_time() {
        let clock = ManualClock::new(DateTime::UNIX_EPOCH);
        let mut sleep = clock.sleep(std::time::Duration::from_secs(2));
        assert!((&mut sleep).now_or_never().is_none());
        clock.advance(Duration::seconds(1));
        assert!((&mut sleep).now_or_never().is_none());
        clock.advance(Duration::seconds(1));
        assert!(sleep.now_or_never().is_some());
    }
}

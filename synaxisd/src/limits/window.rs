//! Window arithmetic that both limiters share: where a charge at an instant is counted, and what
//! the counts of a counter mean for room, the remaining amount, the reset time and the retry
//! time.
//!
//! A sliding window of length W is split into [`BUCKETS`] buckets of W / [`BUCKETS`], aligned
//! to the Unix epoch. A check counts the current bucket and the [`BUCKETS`] buckets before it,
//! so the counted span reaches back between W and W + W / [`BUCKETS`]. Every instant of a window
//! of length W that ends at an admitted charge lies inside the span counted for that charge, so
//! no window of length W ever contains more than the limit. The cost is that a charge keeps
//! counting for up to W / [`BUCKETS`] after it left the last W.

use std::time::Duration;

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};

use super::{
    Admission, Counter, Decision, LimitCheck, LimitError, LimitStatus, Rejection, Window,
    WindowKind,
};

/// Buckets per sliding window.
pub const BUCKETS: u32 = 10;

const BUCKETS_I64: i64 = BUCKETS as i64;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Length of a sliding month.
const SLIDING_MONTH_MS: i64 = 30 * DAY_MS;

/// Length of a window in milliseconds, for every window except the fixed month.
fn length_ms(window: Window) -> i64 {
    match window {
        Window::Minute => MINUTE_MS,
        Window::Hour => HOUR_MS,
        Window::Day => DAY_MS,
        Window::Month => SLIDING_MONTH_MS,
    }
}

/// Length of one bucket of a sliding window in milliseconds.
pub(crate) fn sliding_bucket_ms(window: Window) -> i64 {
    length_ms(window) / BUCKETS_I64
}

/// The fixed window or sliding bucket that counts a charge at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
    /// The fixed window `[start_ms, end_ms)`, in milliseconds since the Unix epoch.
    Fixed { start_ms: i64, end_ms: i64 },
    /// Bucket `index` of a sliding window, counted from the Unix epoch in steps of `bucket_ms`.
    Sliding { index: i64, bucket_ms: i64 },
}

impl Cell {
    /// Locates the window or bucket of `counter` that contains `at`.
    pub(crate) fn locate(counter: &Counter, at: DateTime<Utc>) -> Result<Self, LimitError> {
        let at_ms = at.timestamp_millis();
        match (counter.kind, counter.window) {
            (WindowKind::Fixed, Window::Month) => calendar_month(at),
            (WindowKind::Fixed, window) => {
                let length = length_ms(window);
                let start_ms = at_ms.div_euclid(length) * length;
                Ok(Self::Fixed {
                    start_ms,
                    end_ms: start_ms + length,
                })
            }
            (WindowKind::Sliding, window) => {
                let bucket_ms = sliding_bucket_ms(window);
                Ok(Self::Sliding {
                    index: at_ms.div_euclid(bucket_ms),
                    bucket_ms,
                })
            }
        }
    }

    /// Number of counts that describe the counter at one instant: one for a fixed window, and
    /// the current bucket plus the [`BUCKETS`] before it for a sliding window.
    pub(crate) fn span_len(&self) -> usize {
        match self {
            Self::Fixed { .. } => 1,
            Self::Sliding { .. } => BUCKETS as usize + 1,
        }
    }

    /// Returns whether a charge in this cell still counts at `now_ms`.
    pub(crate) fn counts_at(&self, now_ms: i64) -> bool {
        match *self {
            Self::Fixed { end_ms, .. } => now_ms < end_ms,
            Self::Sliding { index, bucket_ms } => {
                now_ms.div_euclid(bucket_ms) - index <= BUCKETS_I64
            }
        }
    }

    /// Returns the first instant of this cell, in milliseconds.
    pub(crate) fn start_ms(&self) -> i64 {
        match *self {
            Self::Fixed { start_ms, .. } => start_ms,
            Self::Sliding { index, bucket_ms } => index * bucket_ms,
        }
    }

    /// Returns the instant, in milliseconds, from which a charge in this cell no longer counts.
    pub(crate) fn expires_at_ms(&self) -> i64 {
        match *self {
            Self::Fixed { end_ms, .. } => end_ms,
            Self::Sliding { index, bucket_ms } => (index + BUCKETS_I64 + 1) * bucket_ms,
        }
    }
}

/// Locates the calendar month in UTC that contains `at`.
fn calendar_month(at: DateTime<Utc>) -> Result<Cell, LimitError> {
    let out_of_range = || LimitError::TimeOutOfRange {
        millis: at.timestamp_millis(),
    };
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .ok_or_else(out_of_range)?;
    let end = start
        .checked_add_months(Months::new(1))
        .ok_or_else(out_of_range)?;
    Ok(Cell::Fixed {
        start_ms: start.timestamp_millis(),
        end_ms: end.timestamp_millis(),
    })
}

/// Returns whether every check has room: its counted amount plus its cost is at most its limit.
/// `counts[i]` contains the counts of check `i` before the charge, as [`Cell::span_len`] describes.
pub(crate) fn all_have_room(checks: &[LimitCheck], counts: &[Vec<u64>]) -> bool {
    checks
        .iter()
        .zip(counts)
        .all(|(check, counts)| has_room(check, counts))
}

fn has_room(check: &LimitCheck, counts: &[u64]) -> bool {
    total(counts).saturating_add(check.cost) <= check.limit
}

fn total(counts: &[u64]) -> u64 {
    counts
        .iter()
        .fold(0, |sum, count| sum.saturating_add(*count))
}

/// Builds the decision from the counts of every check before the charge: admitted with every
/// status when all have room, else rejected by the limit that has room last.
pub(crate) fn decide(
    checks: &[LimitCheck],
    cells: &[Cell],
    counts: &[Vec<u64>],
    now: DateTime<Utc>,
) -> Result<Decision, LimitError> {
    let now_ms = now.timestamp_millis();

    if all_have_room(checks, counts) {
        let mut statuses = Vec::with_capacity(checks.len());
        for ((check, cell), counts) in checks.iter().zip(cells).zip(counts) {
            let mut charged = counts.clone();
            if let Some(current) = charged.last_mut() {
                *current = current.saturating_add(check.cost);
            }
            statuses.push(status(check, cell, &charged, now_ms)?);
        }
        return Ok(Decision::Admitted(Admission { statuses }));
    }

    // The request waits for the rejecting limit that has room last. `None` (never) is the latest.
    let mut rejecting: Option<(usize, Option<i64>)> = None;
    for (index, ((check, cell), counts)) in checks.iter().zip(cells).zip(counts).enumerate() {
        if has_room(check, counts) {
            continue;
        }
        let retry_at = retry_at_ms(check, cell, counts);
        let later = match rejecting {
            None => true,
            Some((_, None)) => false,
            Some((_, Some(latest))) => retry_at.is_none_or(|at| at > latest),
        };
        if later {
            rejecting = Some((index, retry_at));
        }
    }
    let Some((index, retry_at)) = rejecting else {
        return Err(LimitError::UnexpectedReply {
            operation: "acquire",
            detail: "no limit lacks room in a rejected call".to_owned(),
        });
    };

    let status = status(&checks[index], &cells[index], &counts[index], now_ms)?;
    let retry_after = retry_at.map(|at| {
        let millis = u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0);
        Duration::from_millis(millis)
    });
    Ok(Decision::Rejected(Rejection {
        index,
        status,
        retry_after,
    }))
}

/// Reports a limit with `counts` as they stand after any charge of this call.
fn status(
    check: &LimitCheck,
    cell: &Cell,
    counts: &[u64],
    now_ms: i64,
) -> Result<LimitStatus, LimitError> {
    let reset_ms = match *cell {
        Cell::Fixed { end_ms, .. } => end_ms,
        // Bucket `position` (oldest first) leaves the counted span when the current bucket is
        // `index + position + 1`. Without any count, nothing is left to reset.
        Cell::Sliding { index, bucket_ms } => counts
            .iter()
            .rposition(|count| *count > 0)
            .map_or(now_ms, |position| (index + position as i64 + 1) * bucket_ms),
    };
    Ok(LimitStatus {
        counter: check.counter.clone(),
        limit: check.limit,
        remaining: check.limit.saturating_sub(total(counts)),
        reset_at: instant(reset_ms)?,
    })
}

/// Returns when a limit that lacks room gains room for its cost, if nothing else is charged:
/// the end of a fixed window, or the start of the first bucket whose span leaves out enough old
/// buckets. Returns `None` when the cost exceeds the limit.
fn retry_at_ms(check: &LimitCheck, cell: &Cell, counts: &[u64]) -> Option<i64> {
    if check.cost > check.limit {
        return None;
    }
    match *cell {
        Cell::Fixed { end_ms, .. } => Some(end_ms),
        Cell::Sliding { index, bucket_ms } => {
            // After `steps` bucket boundaries the span has dropped the `steps` oldest buckets.
            // After BUCKETS + 1 steps it contains none of the current counts, so `find_map`
            // always finds a time.
            (1..=counts.len()).find_map(|steps| {
                let left = total(&counts[steps..]);
                (left.saturating_add(check.cost) <= check.limit)
                    .then(|| (index + steps as i64) * bucket_ms)
            })
        }
    }
}

/// Converts milliseconds since the Unix epoch to a time.
pub(crate) fn instant(millis: i64) -> Result<DateTime<Utc>, LimitError> {
    DateTime::from_timestamp_millis(millis).ok_or(LimitError::TimeOutOfRange { millis })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Metric;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("valid time")
    }

    fn millis(text: &str) -> i64 {
        at(text).timestamp_millis()
    }

    fn counter(window: Window, kind: WindowKind) -> Counter {
        Counter::new("org:a", Metric::Requests, window, kind)
    }

    #[test]
    fn fixed_windows_align_to_utc_boundaries() {
        let cases = [
            (
                Window::Minute,
                "2026-01-15T12:00:10.5Z",
                "2026-01-15T12:00:00Z",
                "2026-01-15T12:01:00Z",
            ),
            (
                Window::Hour,
                "2026-01-15T12:59:59Z",
                "2026-01-15T12:00:00Z",
                "2026-01-15T13:00:00Z",
            ),
            (
                Window::Day,
                "2026-01-15T23:59:59Z",
                "2026-01-15T00:00:00Z",
                "2026-01-16T00:00:00Z",
            ),
            (
                Window::Month,
                "2026-01-31T23:59:59Z",
                "2026-01-01T00:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            (
                Window::Month,
                "2026-12-05T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                Window::Month,
                "2028-02-29T12:00:00Z",
                "2028-02-01T00:00:00Z",
                "2028-03-01T00:00:00Z",
            ),
            (
                Window::Minute,
                "1969-12-31T23:59:30Z",
                "1969-12-31T23:59:00Z",
                "1970-01-01T00:00:00Z",
            ),
        ];
        for (window, now, start, end) in cases {
            let cell = Cell::locate(&counter(window, WindowKind::Fixed), at(now));
            let expected = Cell::Fixed {
                start_ms: millis(start),
                end_ms: millis(end),
            };
            assert_eq!(cell.ok(), Some(expected), "{window:?} at {now}");
        }
    }

    #[test]
    fn sliding_buckets_are_a_tenth_of_the_window() {
        let cases = [
            (Window::Minute, 6_000),
            (Window::Hour, 360_000),
            (Window::Day, 8_640_000),
            (Window::Month, 259_200_000),
        ];
        let now = at("2026-01-15T12:00:10Z");
        for (window, bucket_ms) in cases {
            let cell = Cell::locate(&counter(window, WindowKind::Sliding), now);
            let expected = Cell::Sliding {
                index: now.timestamp_millis().div_euclid(bucket_ms),
                bucket_ms,
            };
            assert_eq!(cell.ok(), Some(expected), "{window:?}");
        }
    }

    #[test]
    fn sliding_charge_counts_for_eleven_buckets() {
        let cell = Cell::Sliding {
            index: 100,
            bucket_ms: 6_000,
        };
        assert!(cell.counts_at(600_000));
        assert!(cell.counts_at(110 * 6_000 + 5_999));
        assert!(!cell.counts_at(111 * 6_000));
        assert_eq!(cell.expires_at_ms(), 111 * 6_000);
    }

    #[test]
    fn sliding_retry_waits_for_enough_old_buckets() {
        let check = LimitCheck {
            counter: counter(Window::Minute, WindowKind::Sliding),
            limit: 5,
            cost: 2,
        };
        let cell = Cell::Sliding {
            index: 100,
            bucket_ms: 6_000,
        };
        // 2 in the oldest bucket, 1 in the fourth, 2 in the current: 5 counted.
        let counts = [2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2];
        // Dropping the oldest bucket leaves 3, and 3 + 2 fits.
        assert_eq!(retry_at_ms(&check, &cell, &counts), Some(101 * 6_000));

        let check = LimitCheck { cost: 3, ..check };
        // Room for 3 needs 2 or fewer counted, once the fourth bucket has left after 4 steps.
        assert_eq!(retry_at_ms(&check, &cell, &counts), Some(104 * 6_000));

        // Room for 4 needs the current bucket gone too.
        let check = LimitCheck { cost: 4, ..check };
        assert_eq!(retry_at_ms(&check, &cell, &counts), Some(111 * 6_000));

        let check = LimitCheck { cost: 6, ..check };
        assert_eq!(retry_at_ms(&check, &cell, &counts), None);
    }

    #[test]
    fn rejection_names_limit_with_latest_room() {
        let now = at("2026-01-15T12:00:10Z");
        let minute = LimitCheck {
            counter: counter(Window::Minute, WindowKind::Fixed),
            limit: 1,
            cost: 1,
        };
        let day = LimitCheck {
            counter: counter(Window::Day, WindowKind::Fixed),
            limit: 1,
            cost: 1,
        };
        let checks = [minute.clone(), day, minute];
        let cells: Vec<Cell> = checks
            .iter()
            .map(|check| Cell::locate(&check.counter, now).expect("cell"))
            .collect();
        let counts = vec![vec![1], vec![1], vec![1]];

        let decision = decide(&checks, &cells, &counts, now).expect("decision");
        let Decision::Rejected(rejection) = decision else {
            panic!("expected a rejection, got {decision:?}");
        };
        assert_eq!(rejection.index, 1);
        assert_eq!(rejection.status.remaining, 0);
        assert_eq!(
            rejection.retry_after,
            Some(Duration::from_secs(11 * 3_600 + 59 * 60 + 50))
        );
    }
}

//! The health monitor: probes this region's own dependencies and every peer's `/peer/v1/health`
//! at a fixed interval. A region is down after `down_after` failed probes in a row and up after
//! `up_after` passed ones; until either happens its status is unknown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use synaxis_shared::RegionId;
use synaxis_shared::region::{PeerHealth, RegionHealth, RegionStatus};
use tokio_util::sync::CancellationToken;

use super::Regions;
use crate::config::HealthConfig;
use crate::metrics::RegionLabels;
use crate::store::Store;

#[derive(Debug)]
pub struct HealthMonitor {
    config: HealthConfig,
    states: Mutex<BTreeMap<RegionId, RegionHealth>>,
    up: Family<RegionLabels, Gauge>,
}

impl HealthMonitor {
    /// Starts with every region of `regions` unknown.
    pub fn new(
        config: HealthConfig,
        regions: impl IntoIterator<Item = RegionId>,
        up: Family<RegionLabels, Gauge>,
    ) -> Self {
        let states = regions
            .into_iter()
            .map(|region| {
                let health = RegionHealth {
                    region: region.clone(),
                    status: RegionStatus::Unknown,
                    consecutive_failures: 0,
                    consecutive_passes: 0,
                    last_probe_at: None,
                    since: None,
                    last_error: None,
                    drained_until: None,
                };
                (region, health)
            })
            .collect();
        Self {
            config,
            states: Mutex::new(states),
            up,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RegionId, RegionHealth>> {
        // Each update writes whole values, so a panic elsewhere cannot leave one half-written.
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns this region's view of every region, in region id order.
    pub fn view(&self) -> Vec<RegionHealth> {
        self.lock().values().cloned().collect()
    }

    /// Returns the status of `region`.
    pub fn status(&self, region: &RegionId) -> RegionStatus {
        self.lock()
            .get(region)
            .map_or(RegionStatus::Unknown, |health| health.status)
    }

    /// Returns whether requests may be sent to `region` at `now`: it is not down and not
    /// drained. A region not yet probed enough for a verdict takes traffic.
    pub fn takes_traffic(&self, region: &RegionId, now: DateTime<Utc>) -> bool {
        self.lock()
            .get(region)
            .is_none_or(|health| health.takes_traffic(now))
    }

    /// Drains `region` from routing until `until`, or restores it with `None`. Returns whether
    /// the region is known.
    pub fn drain(&self, region: &RegionId, until: Option<DateTime<Utc>>) -> bool {
        let mut states = self.lock();
        let Some(health) = states.get_mut(region) else {
            return false;
        };
        health.drained_until = until;
        match until {
            Some(until) => tracing::warn!(%region, %until, "region drained from routing"),
            None => tracing::info!(%region, "region restored to routing"),
        }
        true
    }

    /// Counts one probe of `region` at `now`: `Ok` passed, `Err` failed with a reason.
    pub fn record(&self, region: &RegionId, result: Result<(), String>, now: DateTime<Utc>) {
        let mut states = self.lock();
        let Some(health) = states.get_mut(region) else {
            return;
        };
        health.last_probe_at = Some(now);
        let next = match result {
            Ok(()) => {
                health.consecutive_passes = health.consecutive_passes.saturating_add(1);
                health.consecutive_failures = 0;
                health.last_error = None;
                (health.consecutive_passes >= self.config.up_after).then_some(RegionStatus::Up)
            }
            Err(reason) => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                health.consecutive_passes = 0;
                health.last_error = Some(reason);
                (health.consecutive_failures >= self.config.down_after)
                    .then_some(RegionStatus::Down)
            }
        };
        if let Some(next) = next
            && next != health.status
        {
            if next == RegionStatus::Down {
                tracing::warn!(%region, from = %health.status, reason = health.last_error.as_deref().unwrap_or_default(), "region is down");
            } else {
                tracing::info!(%region, from = %health.status, to = %next, "region status changed");
            }
            health.status = next;
            health.since = Some(now);
            self.up
                .get_or_create(&RegionLabels {
                    region: region.to_string(),
                })
                .set(i64::from(next == RegionStatus::Up));
        }
    }

    /// Probes every region each `probe_interval_ms` until `stop` is cancelled.
    pub async fn run(
        self: Arc<Self>,
        regions: Arc<Regions>,
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) {
        let mut interval =
            tokio::time::interval(Duration::from_millis(self.config.probe_interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timeout = Duration::from_millis(self.config.probe_timeout_ms);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = stop.cancelled() => return,
            }
            let own = async {
                let result = match tokio::time::timeout(timeout, store.ping()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(format!("store: {error}")),
                    Err(_) => Err("store: no answer in time".to_owned()),
                };
                (regions.own.clone(), result)
            };
            // Without peer links the peers cannot be asked, so their status stays unknown.
            let probed = regions.peers.keys().filter(|_| regions.auth.is_some());
            let peers = probed.map(|peer| {
                let regions = regions.clone();
                async move {
                    let result =
                        match tokio::time::timeout(timeout, regions.peer_health(peer)).await {
                            Ok(Ok(health)) if health.ready => Ok(()),
                            Ok(Ok(_)) => Err("its dependencies are not ready".to_owned()),
                            Ok(Err(error)) => Err(error.to_string()),
                            Err(_) => Err("no answer in time".to_owned()),
                        };
                    (peer.clone(), result)
                }
            });
            let (own, peers) = tokio::join!(own, futures_util::future::join_all(peers));
            let now = Utc::now();
            for (region, result) in std::iter::once(own).chain(peers) {
                self.record(&region, result, now);
            }
        }
    }
}

/// Builds this region's response to a peer's probe.
pub async fn answer(regions: &Regions, store: &dyn Store) -> PeerHealth {
    PeerHealth {
        region: regions.own.clone(),
        ready: store.ping().await.is_ok(),
        view: regions.health.view(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(down_after: u32, up_after: u32) -> HealthMonitor {
        let config = HealthConfig {
            down_after,
            up_after,
            ..HealthConfig::default()
        };
        HealthMonitor::new(
            config,
            [RegionId::from_static("eu-west-1")],
            Family::default(),
        )
    }

    #[test]
    fn status_follows_runs_of_probes() {
        let region = RegionId::from_static("eu-west-1");
        let monitor = monitor(3, 2);
        let now = Utc::now();
        assert_eq!(monitor.status(&region), RegionStatus::Unknown);
        monitor.record(&region, Ok(()), now);
        assert_eq!(monitor.status(&region), RegionStatus::Unknown);
        monitor.record(&region, Ok(()), now);
        assert_eq!(monitor.status(&region), RegionStatus::Up);

        for _ in 0..2 {
            monitor.record(&region, Err("refused".to_owned()), now);
        }
        assert_eq!(
            monitor.status(&region),
            RegionStatus::Up,
            "two failures of three"
        );
        monitor.record(&region, Ok(()), now);
        for _ in 0..2 {
            monitor.record(&region, Err("refused".to_owned()), now);
        }
        assert_eq!(
            monitor.status(&region),
            RegionStatus::Up,
            "a pass resets the count"
        );
        monitor.record(&region, Err("refused".to_owned()), now);
        assert_eq!(monitor.status(&region), RegionStatus::Down);
        let view = monitor.view();
        assert_eq!(view[0].consecutive_failures, 3);
        assert_eq!(view[0].last_error.as_deref(), Some("refused"));

        monitor.record(&region, Ok(()), now);
        assert_eq!(monitor.status(&region), RegionStatus::Down);
        monitor.record(&region, Ok(()), now);
        assert_eq!(monitor.status(&region), RegionStatus::Up);
    }
}

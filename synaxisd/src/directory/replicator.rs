//! Reads the key directory topics of every region: peers' entries go into the replica, and the
//! entries of this region evict their keys from this process's authentication cache.

use std::sync::Arc;

use synaxis_shared::RegionId;
use tokio_util::sync::CancellationToken;

use super::DirectoryEntry;
use crate::events::{Event, EventBus, Subscription};
use crate::store::Store;
use crate::tenancy::cache::AuthCache;

/// Events applied in one store call at most.
const MAX_BATCH: usize = 256;

#[derive(Debug)]
pub struct Replicator {
    pub store: Arc<dyn Store>,
    pub cache: Arc<AuthCache>,
    pub region: RegionId,
    pub applied: prometheus_client::metrics::counter::Counter,
    pub rejected: prometheus_client::metrics::counter::Counter,
}

/// Wait between two attempts to subscribe to a cluster that refused.
const RESUBSCRIBE_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

impl Replicator {
    /// Creates the topics of `cluster` when missing, subscribes to them as `group`, and applies
    /// their events until `stop` is cancelled. Failures are retried every few seconds.
    pub async fn follow(
        self,
        bus: Arc<dyn EventBus>,
        cluster: String,
        topics: Vec<String>,
        group: String,
        stop: CancellationToken,
    ) {
        let created = tokio::select! {
            created = bus.ensure_topics(&topics) => created,
            () = stop.cancelled() => return,
        };
        if let Err(error) = created {
            tracing::warn!(%error, brokers = %cluster, "cannot create the key directory topics; reading them once they exist");
        }
        let subscription = loop {
            let subscribed = tokio::select! {
                subscribed = bus.subscribe(&topics, &group) => subscribed,
                () = stop.cancelled() => return,
            };
            match subscribed {
                Ok(subscription) => break subscription,
                Err(error) => {
                    tracing::warn!(%error, brokers = %cluster, "cannot subscribe to the key directory topics; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        };
        self.run(subscription, stop).await;
    }

    /// Applies the events of `subscription` until `stop` is cancelled or it ends.
    pub async fn run(self, mut subscription: Subscription, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                event = subscription.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                () = stop.cancelled() => return,
            };
            let mut entries = Vec::new();
            self.read(first, &mut entries);
            while entries.len() < MAX_BATCH {
                match subscription.try_next() {
                    Some(event) => self.read(event, &mut entries),
                    None => break,
                }
            }
            if entries.is_empty() {
                continue;
            }
            match self.store.apply_directory_entries(&entries).await {
                Ok(applied) => {
                    self.applied.inc_by(applied);
                }
                Err(error) => {
                    // The home region publishes every entry again at its next full round.
                    tracing::warn!(%error, entries = entries.len(), "cannot store key directory entries");
                }
            }
        }
    }

    /// Evicts the key of an entry of this region, or adds a peer's entry to `entries`.
    fn read(&self, event: Event, entries: &mut Vec<DirectoryEntry>) {
        let entry: DirectoryEntry = match serde_json::from_slice(&event.payload) {
            Ok(entry) => entry,
            Err(error) => {
                self.rejected.inc();
                tracing::warn!(%error, topic = %event.topic, key = %event.key, "ignoring a key directory event that does not parse");
                return;
            }
        };
        if entry.home_region == self.region {
            self.cache.forget_key(entry.key_id);
        } else {
            entries.push(entry);
        }
    }
}

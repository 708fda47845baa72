//! Publishes the entries of this region's keys when they change, and all of them at start and
//! every `republish_interval`, so a peer that missed an event catches up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::DirectorySelector;
use crate::clock::Clock;
use crate::events::EventBus;
use crate::store::Store;

/// A change to the keys that a selector names; sent by the process that made it.
pub type Changed = DirectorySelector;

/// Changes gathered into one round of reads and publishes at most.
const MAX_BATCH: usize = 256;

/// Wait after a failed round before the next one.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct DirectoryPublisher {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    topic: String,
    republish_interval: Duration,
    published: prometheus_client::metrics::counter::Counter,
}

impl DirectoryPublisher {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        topic: String,
        republish_interval: Duration,
        published: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            store,
            bus,
            clock,
            topic,
            republish_interval,
            published,
        }
    }

    /// Publishes every entry, then the entries of each change received on `changes`, until
    /// `stop` is cancelled.
    pub async fn run(self, mut changes: mpsc::UnboundedReceiver<Changed>, stop: CancellationToken) {
        let created = tokio::select! {
            created = self.bus.ensure_topics(std::slice::from_ref(&self.topic)) => created,
            () = stop.cancelled() => return,
        };
        if let Err(error) = created {
            tracing::warn!(%error, topic = %self.topic, "cannot create the key directory topic");
        }
        let mut pending = vec![DirectorySelector::All];
        let mut republish = tokio::time::interval(self.republish_interval);
        republish.reset();
        loop {
            if !pending.is_empty() {
                pending.sort_by_key(|selector| matches!(selector, DirectorySelector::All));
                pending.dedup();
                if pending.contains(&DirectorySelector::All) {
                    pending = vec![DirectorySelector::All];
                }
                let published = tokio::select! {
                    published = self.publish(&pending) => published,
                    () = stop.cancelled() => return,
                };
                match published {
                    Ok(()) => pending.clear(),
                    Err(error) => {
                        tracing::warn!(%error, "cannot publish key directory entries; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(RETRY_DELAY) => {}
                            () = stop.cancelled() => return,
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                received = changes.recv() => match received {
                    Some(change) => {
                        pending.push(change);
                        while pending.len() < MAX_BATCH {
                            match changes.try_recv() {
                                Ok(change) => pending.push(change),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = republish.tick() => pending.push(DirectorySelector::All),
                () = stop.cancelled() => return,
            }
        }
    }

    async fn publish(&self, selectors: &[DirectorySelector]) -> anyhow::Result<()> {
        for selector in selectors {
            let version = self.clock.now().timestamp_micros();
            let entries = self.store.directory_entries(*selector, version).await?;
            for entry in entries {
                let payload = serde_json::to_vec(&entry)?;
                self.bus
                    .publish(&self.topic, &entry.key_id.to_string(), &payload)
                    .await?;
                self.published.inc();
            }
        }
        Ok(())
    }
}

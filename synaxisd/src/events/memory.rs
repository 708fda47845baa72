//! The in-process event bus of the embedded default: every topic is a log in memory, and each
//! subscription reads its topics from the beginning, as a new Kafka consumer group does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{BusError, Event, EventBus, Subscription, check_topic};

#[derive(Debug, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    topics: Mutex<HashMap<String, Vec<Event>>>,
    /// Woken on every publish.
    published: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Event>>> {
        // Logs only grow by whole events, so a panic elsewhere cannot leave one half-written.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the events of `topic` from `offset` on.
    fn read(&self, topic: &str, offset: usize) -> Vec<Event> {
        self.lock()
            .get(topic)
            .and_then(|log| log.get(offset..))
            .map(<[Event]>::to_vec)
            .unwrap_or_default()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let mut logs = self.shared.lock();
        for topic in topics {
            check_topic(topic)?;
            logs.entry(topic.clone()).or_default();
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), BusError> {
        check_topic(topic)?;
        self.shared
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .push(Event {
                topic: topic.to_owned(),
                key: key.to_owned(),
                payload: Bytes::copy_from_slice(payload),
            });
        self.shared.published.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, topics: &[String], _group: &str) -> Result<Subscription, BusError> {
        for topic in topics {
            check_topic(topic)?;
        }
        let (tx, subscription) = Subscription::channel();
        let shared = self.shared.clone();
        let topics = topics.to_vec();
        tokio::spawn(async move {
            let mut offsets = vec![0; topics.len()];
            loop {
                // Registered before reading, so that a publish between the read and the wait
                // still wakes this task.
                let published = shared.published.notified();
                tokio::pin!(published);
                published.as_mut().enable();
                for (topic, offset) in topics.iter().zip(offsets.iter_mut()) {
                    for event in shared.read(topic, *offset) {
                        *offset += 1;
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    () = published => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(subscription)
    }
}

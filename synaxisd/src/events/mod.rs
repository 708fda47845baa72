//! The event bus between regions: topics of keyed events, read from their beginning by
//! consumer groups. `KafkaBus` (one per Kafka cluster) in production, `MemoryBus` on the
//! embedded default. Consumers must tolerate duplicates and reordering: the bus delivers each
//! event at least once, in order only within one topic.

pub mod kafka;
pub mod memory;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use kafka::KafkaBus;
pub use memory::MemoryBus;

/// One event as a consumer receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    /// The partitioning key: events with one key keep their order.
    pub key: String,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus: {0}")]
    Broker(String),
    #[error("event bus: topic `{0}` is not a valid topic name")]
    InvalidTopic(String),
}

/// A stream of events for one subscriber; dropping it ends the subscription.
#[derive(Debug)]
pub struct Subscription {
    events: mpsc::Receiver<Event>,
}

impl Subscription {
    /// Returns a subscription fed through `events`, and the sender its reader task writes to.
    fn channel() -> (mpsc::Sender<Event>, Self) {
        let (tx, events) = mpsc::channel(1024);
        (tx, Self { events })
    }

    /// Waits for the next event; `None` once the bus has stopped feeding this subscription.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Returns an event that has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + fmt::Debug {
    /// Creates the topics that do not exist yet.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError>;

    /// Publishes one event and returns once the bus has stored it.
    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), BusError>;

    /// Reads `topics` as the consumer group `group`: from the group's last position, or from
    /// the beginning of each topic for a new group.
    async fn subscribe(&self, topics: &[String], group: &str) -> Result<Subscription, BusError>;
}

/// Checks a topic name as Kafka does: 1 to 249 of ASCII letters, digits, `.`, `_` and `-`.
pub fn check_topic(topic: &str) -> Result<(), BusError> {
    let valid = (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(BusError::InvalidTopic(topic.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic("synaxis.eu-west-1.keys").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic("has space").is_err());
        assert!(check_topic(&"a".repeat(250)).is_err());
    }
}

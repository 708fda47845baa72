//! Contract tests of the event bus: every case runs against the in-process bus and against the
//! Kafka-protocol broker of `SYNAXIS_TEST_KAFKA_BROKERS`, each Kafka case on topics and
//! consumer groups of its own.

// Helpers of a test fail it by panicking, as assertions do.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use synaxis_tests::services::{KAFKA_BROKERS_ENV, service_url};
use synaxisd::events::{BusError, Event, EventBus, KafkaBus, Subscription};

/// Bound on waiting for one event. A local broker delivers in milliseconds.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

fn unique(name: &str) -> String {
    format!("synaxis-test-{name}-{}", uuid::Uuid::new_v4().simple())
}

async fn receive(subscription: &mut Subscription) -> Event {
    tokio::time::timeout(RECEIVE_TIMEOUT, subscription.next())
        .await
        .expect("an event within the timeout")
        .expect("the subscription is open")
}

async fn receive_n(subscription: &mut Subscription, count: usize) -> Vec<(String, String)> {
    let mut received = Vec::new();
    for _ in 0..count {
        let event = receive(subscription).await;
        received.push((
            event.key,
            String::from_utf8(event.payload.to_vec()).expect("UTF-8 payload"),
        ));
    }
    received
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(key, payload)| ((*key).to_owned(), (*payload).to_owned()))
        .collect()
}

async fn earlier_events_reach_a_new_group(bus: &dyn EventBus) {
    let topic = unique("earlier");
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("create topic");
    for (key, payload) in [("k1", "one"), ("k2", "two"), ("k1", "three")] {
        bus.publish(&topic, key, payload.as_bytes())
            .await
            .expect("publish");
    }
    let mut subscription = bus
        .subscribe(std::slice::from_ref(&topic), &unique("group"))
        .await
        .expect("subscribe");
    assert_eq!(
        receive_n(&mut subscription, 3).await,
        pairs(&[("k1", "one"), ("k2", "two"), ("k1", "three")])
    );
}

async fn later_events_reach_a_running_subscription(bus: &dyn EventBus) {
    let topic = unique("later");
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("create topic");
    bus.publish(&topic, "k", b"before").await.expect("publish");
    let mut subscription = bus
        .subscribe(std::slice::from_ref(&topic), &unique("group"))
        .await
        .expect("subscribe");
    assert_eq!(
        receive_n(&mut subscription, 1).await,
        pairs(&[("k", "before")])
    );
    bus.publish(&topic, "k", b"after").await.expect("publish");
    assert_eq!(
        receive_n(&mut subscription, 1).await,
        pairs(&[("k", "after")])
    );
}

async fn a_subscription_reads_only_its_topics(bus: &dyn EventBus) {
    let (first, second, other) = (unique("first"), unique("second"), unique("other"));
    bus.ensure_topics(&[first.clone(), second.clone(), other.clone()])
        .await
        .expect("create topics");
    bus.publish(&other, "k", b"elsewhere")
        .await
        .expect("publish");
    bus.publish(&first, "k", b"a").await.expect("publish");
    bus.publish(&second, "k", b"b").await.expect("publish");
    let mut subscription = bus
        .subscribe(&[first.clone(), second.clone()], &unique("group"))
        .await
        .expect("subscribe");
    let mut topics = Vec::new();
    for _ in 0..2 {
        topics.push(receive(&mut subscription).await.topic);
    }
    topics.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(topics, expected);

    // The topic of the one event that follows shows that `other` was never delivered.
    bus.publish(&first, "k", b"last").await.expect("publish");
    let last = receive(&mut subscription).await;
    assert_eq!(
        (last.topic.as_str(), &last.payload[..]),
        (first.as_str(), &b"last"[..])
    );
}

async fn every_group_reads_every_event(bus: &dyn EventBus) {
    let topic = unique("groups");
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("create topic");
    bus.publish(&topic, "k", b"shared").await.expect("publish");
    for _ in 0..2 {
        let mut subscription = bus
            .subscribe(std::slice::from_ref(&topic), &unique("group"))
            .await
            .expect("subscribe");
        assert_eq!(
            receive_n(&mut subscription, 1).await,
            pairs(&[("k", "shared")])
        );
    }
}

async fn invalid_topics_are_refused(bus: &dyn EventBus) {
    let error = bus
        .publish("not a topic", "k", b"x")
        .await
        .expect_err("an invalid topic name is refused");
    assert!(matches!(error, BusError::InvalidTopic(ref topic) if topic == "not a topic"));
}

/// Runs `case` on the in-process bus and on Kafka.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&synaxisd::events::MemoryBus::new()).await;
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(bus) = super::kafka_bus() else { return };
                    super::$case(&bus).await;
                }
            )*
        }
    };
}

fn kafka_bus() -> Option<KafkaBus> {
    let brokers = service_url(KAFKA_BROKERS_ENV)?;
    Some(KafkaBus::connect(&brokers).expect("Kafka client"))
}

contract!(
    earlier_events_reach_a_new_group,
    later_events_reach_a_running_subscription,
    a_subscription_reads_only_its_topics,
    every_group_reads_every_event,
    invalid_topics_are_refused,
);

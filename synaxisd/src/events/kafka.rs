//! The event bus on one Kafka cluster, through librdkafka. The producer is idempotent, so a
//! retried send is stored once; consumers commit their position as they read.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::{BusError, Event, EventBus, Subscription, check_topic};

/// Time a publish may wait for room in the producer's queue and for the broker's
/// acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait after a failed read, so a broker that is down is not asked in a tight loop.
const READ_RETRY_DELAY: Duration = Duration::from_secs(1);

pub struct KafkaBus {
    brokers: String,
    producer: FutureProducer<QuietContext>,
    admin: AdminClient<QuietContext>,
}

/// Logs librdkafka's own messages at debug level, and its client errors, which repeat every
/// few hundred milliseconds while a broker is down, at most once per [`ERROR_LOG_INTERVAL`] for
/// each client.
#[derive(Debug)]
struct QuietContext {
    brokers: String,
    last_error: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Shortest time between two logged client errors of one Kafka client.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

impl QuietContext {
    fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            last_error: std::sync::Mutex::new(None),
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, message, brokers = %self.brokers, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= ERROR_LOG_INTERVAL) {
            *last = Some(now);
            tracing::warn!(%error, reason, brokers = %self.brokers, "Kafka client error; librdkafka retries by itself");
        }
    }
}

impl ConsumerContext for QuietContext {}

impl fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

fn broker_error(error: KafkaError) -> BusError {
    BusError::Broker(error.to_string())
}

impl KafkaBus {
    /// Connects to the cluster whose bootstrap servers are `brokers` (`host:port`, comma
    /// separated). Connections are made lazily; a broker that is down shows as publish errors.
    pub fn connect(brokers: &str) -> Result<Self, BusError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", SEND_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "5")
            .create_with_context(QuietContext::new(brokers))
            .map_err(broker_error)?;
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create_with_context(QuietContext::new(brokers))
            .map_err(broker_error)?;
        Ok(Self {
            brokers: brokers.to_owned(),
            producer,
            admin,
        })
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        for topic in topics {
            check_topic(topic)?;
        }
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|topic| {
                // A key directory needs only the newest entry of each key.
                NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact")
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(SEND_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(broker_error)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(BusError::Broker(format!(
                        "cannot create topic `{topic}`: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), BusError> {
        check_topic(topic)?;
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| broker_error(error))
    }

    async fn subscribe(&self, topics: &[String], group: &str) -> Result<Subscription, BusError> {
        for topic in topics {
            check_topic(topic)?;
        }
        let consumer: StreamConsumer<QuietContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.partition.eof", "false")
            .create_with_context(QuietContext::new(&self.brokers))
            .map_err(broker_error)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(broker_error)?;

        let (tx, subscription) = Subscription::channel();
        let brokers = self.brokers.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    received = consumer.recv() => received,
                    () = tx.closed() => return,
                };
                let event = match received {
                    Ok(message) => Event {
                        topic: message.topic().to_owned(),
                        key: message
                            .key()
                            .map(|key| String::from_utf8_lossy(key).into_owned())
                            .unwrap_or_default(),
                        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                    },
                    Err(error) => {
                        tracing::warn!(%error, %brokers, "cannot read from the event bus; retrying in 1 s");
                        tokio::select! {
                            () = tokio::time::sleep(READ_RETRY_DELAY) => {}
                            () = tx.closed() => return,
                        }
                        continue;
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(subscription)
    }
}

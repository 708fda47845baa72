//! Request records: every inference request that presented a valid key ends in exactly one.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use rust_decimal::Decimal;
use synaxis_shared::api::Key;
use synaxis_shared::{RegionId, RequestId};
use tokio_util::task::TaskTracker;

use crate::billing::{self, Usage, tokens};
use crate::clock::Clock;
use crate::config::Prices;
use crate::metrics::{Metrics, RequestLabels};
use crate::store::{RequestRecord, Store};

/// Status recorded when the client went away before the response ended (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// Starts request records and tracks the writes that finish in the background, so that
/// shutdown can wait for them.
#[derive(Clone, Debug)]
pub struct Recorder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    region: RegionId,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        region: RegionId,
        tracker: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            clock,
            region,
            tracker,
            metrics,
        }
    }

    pub fn start(&self, key: &Key, request_id: &str, endpoint: &str) -> PendingRecord {
        let record = RequestRecord {
            id: RequestId::new(),
            stored_region: self.region.clone(),
            request_id: request_id.to_owned(),
            org_id: key.org_id,
            user_id: key.user_id,
            key_id: key.id,
            endpoint: endpoint.to_owned(),
            model: String::new(),
            stream: false,
            status_code: 0,
            error_code: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: Decimal::ZERO,
            started_at: self.clock.now(),
            duration_ms: 0,
        };
        PendingRecord {
            record: Some(record),
            started: Instant::now(),
            store: self.store.clone(),
            tracker: self.tracker.clone(),
            metrics: self.metrics.clone(),
            prices: None,
            prompt_estimate: 0,
            delivered: String::new(),
        }
    }
}

/// End state of a request: status, error code, usage and cost.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub status: StatusCode,
    pub error_code: Option<&'static str>,
    pub usage: Usage,
    pub cost_usd: Decimal,
}

impl Outcome {
    pub fn failed(status: StatusCode, error_code: &'static str) -> Self {
        Self {
            status,
            error_code: Some(error_code),
            usage: Usage::default(),
            cost_usd: Decimal::ZERO,
        }
    }
}

/// A record written once: by [`PendingRecord::finish`], or by `Drop` in the background with
/// status 499 when the client went away first. A failed write is logged and the record lost.
#[derive(Debug)]
pub struct PendingRecord {
    record: Option<RequestRecord>,
    started: Instant,
    store: Arc<dyn Store>,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
    /// Prices of the deployment that answers, once one does.
    prices: Option<Prices>,
    /// Tokenizer count of the prompt, billed when no usage report arrives.
    prompt_estimate: i64,
    /// Text delivered to the client so far, counted when no usage report arrives.
    delivered: String,
}

impl PendingRecord {
    pub fn set_model(&mut self, model: &str, stream: bool) {
        if let Some(record) = &mut self.record {
            record.model = model.to_owned();
            record.stream = stream;
        }
    }

    pub fn set_prompt_estimate(&mut self, tokens: i64) {
        self.prompt_estimate = tokens;
    }

    pub fn set_prices(&mut self, prices: Prices) {
        self.prices = Some(prices);
    }

    /// Appends text that reached the client.
    pub fn push_delivered(&mut self, text: &str) {
        self.delivered.push_str(text);
    }

    /// Returns the usage counted with the tokenizer: the prompt estimate and the delivered text.
    pub fn counted_usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: tokens::count(&self.delivered),
        }
    }

    /// Returns the cost of `usage` at the answering deployment's prices, or zero before one
    /// answered.
    pub fn cost_of(&self, usage: Usage) -> Decimal {
        self.prices
            .as_ref()
            .map_or(Decimal::ZERO, |prices| billing::cost(prices, usage))
    }

    pub fn request_id(&self) -> Option<RequestId> {
        self.record.as_ref().map(|record| record.id)
    }

    /// Writes the record. Callers do so before the response is complete, so that a client with
    /// the whole response can rely on the record being stored.
    pub async fn finish(mut self, outcome: Outcome) {
        if let Some(record) = self.take_with(outcome) {
            write(&*self.store, &record).await;
        }
    }

    fn take_with(&mut self, outcome: Outcome) -> Option<RequestRecord> {
        let mut record = self.record.take()?;
        record.status_code = outcome.status.as_u16();
        record.error_code = outcome.error_code.map(str::to_owned);
        record.prompt_tokens = outcome.usage.prompt_tokens;
        record.completion_tokens = outcome.usage.completion_tokens;
        record.cost_usd = outcome.cost_usd;
        record.duration_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.metrics.count_request(RequestLabels {
            route: record.endpoint.clone(),
            model: record.model.clone(),
            status: record.status_code,
            region: record.stored_region.to_string(),
        });
        Some(record)
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        // The client went away first: bill what reached it, counted with the tokenizer.
        let usage = self.counted_usage();
        let outcome = Outcome {
            status: StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST),
            error_code: Some("client_disconnected"),
            usage,
            cost_usd: self.cost_of(usage),
        };
        let Some(record) = self.take_with(outcome) else {
            return;
        };
        let store = self.store.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tracker
                .spawn(async move { write(&*store, &record).await });
        } else {
            tracing::error!(request.id = %record.request_id, "no runtime to write a request record; it is lost");
        }
    }
}

async fn write(store: &dyn Store, record: &RequestRecord) {
    // TODO: a record that fails to write is lost; a durable local spool should hold it until
    // the store is back.
    if let Err(error) = store.insert_request(record).await {
        tracing::error!(
            request.id = %record.request_id,
            key.id = %record.key_id,
            %error,
            "failed to store request record"
        );
    }
}

//! Request records: every inference request that presented a valid key ends in exactly one.
//! Finished records go through a channel to [`RecordWriter`], which stores them in batches off
//! the request path and drains the channel at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;
use synaxis_shared::api::Key;
use synaxis_shared::credits::CreditKind;
use synaxis_shared::{RegionId, RequestId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::admission::Reservation;
use super::provider::{Endpoint, Fields};
use crate::billing::budgets::BudgetHold;
use crate::billing::payments::AutoTopups;
use crate::billing::{self, Usage, tokens};
use crate::clock::Clock;
use crate::config::Prices;
use crate::metrics::{Metrics, RequestLabels};
use crate::store::{BudgetCharge, NewCredit, RequestRecord, Store};

/// Status recorded when the client went away before the response ended (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// Records written in one batch at most.
const MAX_BATCH: usize = 1024;

/// Maximum wait for more records after the first one arrives, before a batch is written.
const LINGER: Duration = Duration::from_millis(20);

/// Attempts to store a batch before its records are given up.
const WRITE_ATTEMPTS: u32 = 5;

/// Starts request records and hands finished ones to the [`RecordWriter`].
#[derive(Clone, Debug)]
pub struct Recorder {
    clock: Arc<dyn Clock>,
    region: RegionId,
    sender: mpsc::UnboundedSender<Finished>,
    metrics: Arc<Metrics>,
    /// Tracks the records not yet finished, one token each.
    unfinished: TaskTracker,
}

impl Recorder {
    /// Creates the recorder and the writer that stores what it finishes; the caller runs
    /// [`RecordWriter::run`].
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        region: RegionId,
        metrics: Arc<Metrics>,
    ) -> (Self, RecordWriter) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let recorder = Self {
            clock,
            region,
            sender,
            metrics,
            unfinished: TaskTracker::new(),
        };
        let writer = RecordWriter {
            store,
            receiver,
            auto_topups: None,
        };
        (recorder, writer)
    }

    /// Returns the tracker of records started and not yet finished: at shutdown, the record
    /// writer stops only once it is empty.
    pub fn unfinished(&self) -> TaskTracker {
        self.unfinished.clone()
    }

    pub fn start(&self, key: &Key, request_id: &str, endpoint: &'static str) -> PendingRecord {
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
            route: endpoint,
            sender: self.sender.clone(),
            metrics: self.metrics.clone(),
            unfinished_token: self.unfinished.token(),
            clock: self.clock.clone(),
            prices: None,
            prompt: None,
            delivered: String::new(),
            reservation: None,
            budget_hold: None,
        }
    }
}

/// A finished record, with the charge that settles its budget hold when it has one.
#[derive(Debug)]
pub struct Finished {
    record: RequestRecord,
    charge: Option<BudgetCharge>,
    /// The overage charge of a request past a `credit_charge` limit.
    credit: Option<NewCredit>,
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

/// A record finished once: by [`PendingRecord::finish`], or by `Drop` with status 499 when the
/// client went away first.
#[derive(Debug)]
pub struct PendingRecord {
    record: Option<RequestRecord>,
    started: Instant,
    /// The route, as a metrics label.
    route: &'static str,
    sender: mpsc::UnboundedSender<Finished>,
    metrics: Arc<Metrics>,
    /// Dates the record's ledger entries.
    clock: Arc<dyn Clock>,
    /// Dropped with the record, after it was sent. A settlement in flight keeps a clone.
    unfinished_token: TaskTrackerToken,
    /// Prices of the deployment that responded, once one has.
    prices: Option<Prices>,
    /// The request body, whose input is counted with the tokenizer only when no usage report
    /// arrives.
    prompt: Option<(Endpoint, Bytes)>,
    /// Text delivered to the client so far, counted when no usage report arrives.
    delivered: String,
    /// The admission's token charges and lease, settled and released with the record.
    reservation: Option<Reservation>,
    /// The request's hold on its budgets, settled to its cost when the record is stored.
    budget_hold: Option<BudgetHold>,
}

impl PendingRecord {
    pub fn set_model(&mut self, model: &str, stream: bool) {
        if let Some(record) = &mut self.record {
            record.model = model.to_owned();
            record.stream = stream;
        }
    }

    /// Stores the record as one held for `home`, to hand to that region once it is back.
    pub fn hold_for(&mut self, home: RegionId) {
        if let Some(record) = &mut self.record {
            record.stored_region = home;
        }
    }

    /// Keeps the request body of `endpoint`, to count its input if no usage report arrives.
    pub fn set_prompt(&mut self, endpoint: Endpoint, body: Bytes) {
        self.prompt = Some((endpoint, body));
    }

    /// Keeps the request's budget hold until the record is stored.
    pub fn hold_budget(&mut self, hold: BudgetHold) {
        self.budget_hold = Some(hold);
    }

    /// Keeps the request's reservation of limits until the record is finished.
    pub fn reserve(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    pub fn set_prices(&mut self, prices: Prices) {
        self.prices = Some(prices);
    }

    /// Returns the text delivered to the client so far, for appending.
    pub fn delivered_mut(&mut self) -> &mut String {
        &mut self.delivered
    }

    /// Returns the usage counted with the tokenizer: the request's input and the delivered text.
    pub fn counted_usage(&self) -> Usage {
        let prompt_tokens = self
            .prompt
            .as_ref()
            .map_or(0, |(endpoint, body)| prompt_estimate(*endpoint, body));
        Usage {
            prompt_tokens,
            completion_tokens: tokens::count(&self.delivered),
        }
    }

    /// Returns the cost of `usage` at the responding deployment's prices, or zero before one
    /// responded.
    pub fn cost_of(&self, usage: Usage) -> Decimal {
        self.prices
            .as_ref()
            .map_or(Decimal::ZERO, |prices| billing::cost(prices, usage))
    }

    pub fn request_id(&self) -> Option<RequestId> {
        self.record.as_ref().map(|record| record.id)
    }

    /// Finishes the record with `outcome`, settles its budget hold, and hands the record to the
    /// writer. The hold is settled before this returns, and so before the response ends.
    pub async fn finish(mut self, outcome: Outcome) {
        let hold = self.budget_hold.take();
        let Some(mut finished) = self.take_with(outcome) else {
            return;
        };
        let Some(hold) = hold else {
            self.send(finished);
            return;
        };
        // The settlement and the hand-off run in a task of their own, which keeps the record
        // unfinished for shutdown, so that a client that goes away meanwhile, dropping this
        // future, loses neither the record nor the settlement.
        let sender = self.sender.clone();
        let unfinished = self.unfinished_token.clone();
        let settled = tokio::spawn(async move {
            finished.charge = hold.settle(finished.record.cost_usd).await;
            send(&sender, finished);
            drop(unfinished);
        });
        if let Err(error) = settled.await {
            tracing::error!(%error, "settling a budget hold failed");
        }
    }

    fn send(&self, finished: Finished) {
        send(&self.sender, finished);
    }

    fn take_with(&mut self, outcome: Outcome) -> Option<Finished> {
        let mut record = self.record.take()?;
        let overage = self.reservation.take().and_then(|reservation| {
            let tokens = outcome.usage.prompt_tokens + outcome.usage.completion_tokens;
            reservation.finish(u64::try_from(tokens).unwrap_or(0))
        });
        record.status_code = outcome.status.as_u16();
        record.error_code = outcome.error_code.map(str::to_owned);
        record.prompt_tokens = outcome.usage.prompt_tokens;
        record.completion_tokens = outcome.usage.completion_tokens;
        record.cost_usd = outcome.cost_usd;
        record.duration_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.metrics.count_request(RequestLabels {
            route: self.route,
            model: record.model.clone(),
            status: record.status_code,
            region: record.stored_region.to_string(),
        });
        // Only a record dropped before it was finished still has its budget hold here.
        let charge = self
            .budget_hold
            .take()
            .map(|hold| hold.charge(record.cost_usd));
        let credit = overage.map(|overage| NewCredit {
            org_id: overage.org_id,
            kind: CreditKind::Overage,
            amount_usd: -overage.amount_usd(),
            reference: Some(format!(
                "request {}: {} tokens past the limit",
                record.id, overage.tokens
            )),
            created_at: self.clock.now(),
        });
        Some(Finished {
            record,
            charge,
            credit,
        })
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if self.record.is_none() {
            return;
        }
        // The client went away first: bill what reached it, counted with the tokenizer.
        let usage = self.counted_usage();
        let outcome = Outcome {
            status: StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST),
            error_code: Some("client_disconnected"),
            usage,
            cost_usd: self.cost_of(usage),
        };
        if let Some(finished) = self.take_with(outcome) {
            self.send(finished);
        }
    }
}

/// Hands a finished record to the writer.
fn send(sender: &mpsc::UnboundedSender<Finished>, finished: Finished) {
    if let Err(error) = sender.send(finished) {
        tracing::error!(
            request.id = %error.0.record.request_id,
            "the record writer has stopped; a request record is lost"
        );
    }
}

/// Counts the tokens of a request's input with the tokenizer.
pub(crate) fn prompt_estimate(endpoint: Endpoint, body: &[u8]) -> i64 {
    Fields::parse(body).map_or(0, |fields| input_tokens(endpoint, &fields))
}

/// Counts the tokens of the input of a request whose body is parsed into `fields`: `messages`
/// for chat completions, `prompt` for completions, `input` for embeddings.
pub(crate) fn input_tokens(endpoint: Endpoint, fields: &Fields<'_>) -> i64 {
    let field = match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    let Some(input) = fields.get(field) else {
        return 0;
    };
    if endpoint == Endpoint::ChatCompletions
        && let Some(count) = tokens::count_raw_messages(input)
    {
        return count;
    }
    let Ok(input) = serde_json::from_str::<Value>(input.get()) else {
        return 0;
    };
    match endpoint {
        Endpoint::ChatCompletions => tokens::count_messages(Some(&input)),
        Endpoint::Completions | Endpoint::Embeddings => {
            let mut text = String::new();
            match input {
                Value::String(input) => text.push_str(&input),
                Value::Array(items) => {
                    for item in items {
                        if let Value::String(input) = item {
                            text.push_str(&input);
                        }
                    }
                }
                _ => {}
            }
            tokens::count(&text)
        }
    }
}

/// Stores finished records in batches: each write takes what has arrived since the last one.
#[derive(Debug)]
pub struct RecordWriter {
    store: Arc<dyn Store>,
    receiver: mpsc::UnboundedReceiver<Finished>,
    /// Tops up the credits of orgs that overage charges took under their threshold.
    auto_topups: Option<Arc<AutoTopups>>,
}

impl RecordWriter {
    /// Checks the auto top-up of each org whose credits a stored batch charged.
    pub fn with_auto_topups(mut self, auto_topups: Arc<AutoTopups>) -> Self {
        self.auto_topups = Some(auto_topups);
        self
    }

    /// Runs until `stop` is cancelled, then stores every record still in the channel.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                received = self.receiver.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.gather(&mut batch).await;
                    self.write(&mut batch).await;
                }
                () = stop.cancelled() => break,
            }
        }

        self.receiver.close();
        while self.receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write(&mut batch).await;
        }
    }

    /// Adds the records that arrive within [`LINGER`] of the first one to `batch`, up to
    /// [`MAX_BATCH`]. Fewer, larger writes cost the database less per record, and the writer
    /// sleeps through the wait instead of waking for each record.
    async fn gather(&mut self, batch: &mut Vec<Finished>) {
        if batch.len() < MAX_BATCH {
            tokio::time::sleep(LINGER).await;
        }
        while batch.len() < MAX_BATCH {
            let Ok(record) = self.receiver.try_recv() else {
                break;
            };
            batch.push(record);
        }
    }

    /// Stores and empties `batch`, and settles its budget holds, retrying with backoff.
    async fn write(&self, batch: &mut Vec<Finished>) {
        let mut records = Vec::with_capacity(batch.len());
        let mut charges = Vec::new();
        let mut credits = Vec::new();
        for finished in batch.drain(..) {
            records.push(finished.record);
            charges.extend(finished.charge);
            credits.extend(finished.credit);
        }
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=WRITE_ATTEMPTS {
            match self
                .store
                .insert_requests(&records, &charges, &credits)
                .await
            {
                Ok(()) => {
                    if let Some(auto_topups) = &self.auto_topups
                        && !credits.is_empty()
                    {
                        let orgs = credits.iter().map(|credit| credit.org_id).collect();
                        auto_topups.check(orgs).await;
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, records = records.len(), "failed to store request records; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        // TODO: records that still fail are lost; a durable local spool should hold them until
        // the store is back. Their budget holds expire and are released.
        tracing::error!(
            records = records.len(),
            "request records lost after repeated store failures"
        );
    }
}

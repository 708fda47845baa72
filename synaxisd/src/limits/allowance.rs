//! Local allowances and kept concurrency slots in front of a shared limiter, so that a busy
//! process calls the store once per many requests instead of once per request.
//!
//! When a request's charge goes to the store, the limiter may charge more than the request
//! costs: an allowance, which the store counts as used at once. Later requests of the same
//! process charge the allowance instead of the store, as long as every one of their counters has
//! enough of it, and token settles move units between the request and the allowance. An
//! allowance belongs to the fixed window or sliding bucket that its charge went to. It is used
//! only while requests still charge that window or bucket, so a charge from it counts exactly
//! where a charge to the store would have counted.
//!
//! An allowance is taken only for a limit of at least [`MIN_LIMIT`] and below [`MAX_AMOUNT`]
//! (which marks a limit lifted for one request), and only while the store, as last seen, would
//! have at least half of the limit left after it. Its refill size starts at
//! [`START_REQUESTS`] request costs, doubles while the process uses it up within
//! [`FAST_REFILL_MS`], halves when a refill comes after [`SLOW_REFILL_MS`], and never exceeds
//! the limit divided by [`MAX_SHARE`]. Once an admission leaves an allowance below half of its
//! refill size, a task of its own charges the next refill to the store, while requests go on
//! charging the units left. A refill is charged only to an allowance below half of its refill
//! size, so a process keeps at most one and a half refill sizes of a counter. Only a request
//! whose cost the units left do not cover waits for the store. A task returns to the
//! store every allowance that was not used for [`SWEEP_INTERVAL`], and those of windows and
//! buckets that requests no longer charge. An unused allowance keeps its refill size for
//! [`IDLE_SWEEPS`] sweeps after its units went back.
//!
//! So the store never counts less than was admitted, and no limit is ever exceeded. What an
//! allowance changes is where the last part of a limit goes: while one process has units that
//! it has not used, another process that finds the store full is rejected, by at most the units
//! that other processes have, until they use or return them. Rejections always come from the
//! store. The remaining amounts that a local admission reports are the store's as of the last
//! refill, less what this process used since, so they do not show what other processes used
//! in between.
//!
//! Concurrency leases work alike. When a request that took its lease from the store ends, the
//! process keeps the lease while the scope has fewer than the cap divided by [`SLOT_SHARE`]
//! unused kept leases, and none under a cap of [`MIN_CAP`]. It lends a kept lease to a later
//! request instead of asking the store for one. Kept leases stay in the store's set, so the cap
//! is never exceeded, and a request renews the lease it was lent. A kept lease is lent only
//! while it has at least half of the lease time left, so that it outlives the next renewal, and
//! the others are released. Each sweep renews the kept leases that would fall below half before
//! the sweep after next. Each sweep also releases the kept leases that stayed unused since
//! the last one. A process that dies holding leases frees them when they expire, as it does the
//! leases of its requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::window::{self, Cell};
use super::{
    Adjustment, Admission, Counter, Decision, Finish, HeldLease, LeaseDecision, LeaseRequest,
    LeasedDecision, LimitCheck, LimitError, LimitStatus, Limiter, MAX_AMOUNT, duration_millis,
    validate_adjustments, validate_checks,
};
use crate::clock::Clock;

/// Smallest limit that gets allowances. Below it every charge goes to the store.
pub const MIN_LIMIT: u64 = 10_000;
/// An allowance is at most the limit divided by this.
pub const MAX_SHARE: u64 = 64;
/// Smallest concurrency cap whose leases are kept for later requests.
pub const MIN_CAP: u64 = 64;
/// Unused kept leases of a scope are at most the cap divided by this.
pub const SLOT_SHARE: u64 = 8;
/// The first allowance of a counter, in multiples of the request's cost.
pub const START_REQUESTS: u64 = 16;
/// A refill within this many milliseconds of the previous one doubles the allowance.
pub const FAST_REFILL_MS: i64 = 250;
/// A refill later than this many milliseconds after the previous one halves the allowance.
pub const SLOW_REFILL_MS: i64 = 2_000;
/// Time between returns of unused allowances.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Sweeps that an unused allowance, its units returned, stays known for.
pub const IDLE_SWEEPS: u32 = 10;

/// A limiter that serves charges from local allowances where it can and passes the rest, and
/// every lease, to `inner`.
#[derive(Debug)]
pub struct AllowanceLimiter {
    inner: Arc<dyn Limiter>,
    state: Mutex<State>,
    /// The limiter itself, for the tasks that refill allowances ahead of need.
    this: Weak<AllowanceLimiter>,
}

/// A map hashed with foldhash, seeded per map, instead of SipHash, because every request looks
/// up several keys.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct State {
    allowances: FastMap<Counter, Allowance>,
    /// Units to give back to the store, by counter and the cell they were charged to.
    returns: Vec<(Counter, Cell, u64)>,
    /// Concurrency slots kept for later requests, by lease scope.
    slots: FastMap<String, Slots>,
    /// The store leases of requests under way, by the request's lease id.
    in_use: FastMap<String, SlotInUse>,
    /// Store leases to release.
    releases: Vec<HeldLease>,
}

/// Leases that the store holds for a scope and that no request of this process uses: those of
/// ended requests, kept instead of released so that later requests need no store call.
#[derive(Debug, Default)]
struct Slots {
    cap: u64,
    /// Store lease ids with their expiry in milliseconds.
    free: Vec<(String, i64)>,
    /// The fewest unused kept leases since the last sweep: that many were not needed.
    fewest_free: usize,
    used_since_sweep: bool,
    /// Time to live of the scope's leases, which a sweep renews them for.
    ttl: Duration,
}

/// The store lease that a request uses: its own, or a kept one lent to it.
#[derive(Debug)]
struct SlotInUse {
    scope: String,
    cap: u64,
    store_id: String,
    expires_ms: i64,
    ttl: Duration,
}

/// The units that one process has of one counter in one fixed window or sliding bucket.
#[derive(Debug)]
struct Allowance {
    cell: Cell,
    limit: u64,
    /// Units that the store counts as used and no request of this process has used yet.
    units: u64,
    /// Units that requests of this process charged to the allowance, which a negative settle
    /// may give back to it.
    used: u64,
    /// The store's remaining amount after the last call that charged this counter.
    remaining: u64,
    reset_at: DateTime<Utc>,
    /// Size of the next refill.
    chunk: u64,
    refilled_at_ms: Option<i64>,
    refilling: bool,
    used_since_sweep: bool,
    /// Sweeps in a row that found the allowance unused. Its units go back at the first, and
    /// the entry, with the refill size that it learned, after [`IDLE_SWEEPS`].
    idle_sweeps: u32,
}

impl Allowance {
    fn new(cell: Cell, status: &LimitStatus) -> Self {
        Self {
            cell,
            limit: status.limit,
            units: 0,
            used: 0,
            remaining: status.remaining,
            reset_at: status.reset_at,
            chunk: 0,
            refilled_at_ms: None,
            refilling: false,
            used_since_sweep: true,
            idle_sweeps: 0,
        }
    }

    fn status(&self, counter: &Counter) -> LimitStatus {
        LimitStatus {
            counter: counter.clone(),
            limit: self.limit,
            remaining: self.remaining.saturating_add(self.units),
            reset_at: self.reset_at,
        }
    }

    /// Returns the refill to ask for with a charge of `cost` at `now_ms`, and starts it, or 0
    /// when the store is too close to the limit or a refill is under way.
    fn start_refill(&mut self, cost: u64, now_ms: i64) -> u64 {
        // Units left from half of the refill size on cover the time a refill takes, and more
        // would only hold units that other processes cannot use.
        if self.refilling || (self.chunk > 0 && self.units >= self.chunk / 2) {
            return 0;
        }
        let floor = cost.saturating_mul(START_REQUESTS).max(1);
        let ceiling = self.limit / MAX_SHARE;
        self.chunk = match self.refilled_at_ms {
            None => floor,
            Some(last) if now_ms - last < FAST_REFILL_MS => self.chunk.saturating_mul(2),
            Some(last) if now_ms - last > SLOW_REFILL_MS => self.chunk / 2,
            Some(_) => self.chunk,
        }
        .clamp(floor.min(ceiling), ceiling);
        let needed = cost
            .saturating_add(self.chunk)
            .saturating_add(self.limit / 2);
        if self.chunk == 0 || self.remaining < needed {
            return 0;
        }
        self.refilling = true;
        self.chunk
    }
}

impl AllowanceLimiter {
    /// Wraps `inner` and starts the task that returns unused allowances every
    /// [`SWEEP_INTERVAL`] of `clock`, which stops once the limiter is dropped.
    pub fn start(inner: Arc<dyn Limiter>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let limiter = Arc::new_cyclic(|this| Self {
            inner,
            state: Mutex::new(State::default()),
            this: this.clone(),
        });
        tokio::spawn(run_sweeper(Arc::downgrade(&limiter), clock));
        limiter
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change keeps the state consistent between statements that can panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Charges every check to its allowance when all have enough, and returns the statuses.
    /// An allowance that the charge leaves below half of its refill size starts a refill in a
    /// task of its own, so that later requests find units instead of waiting for the store.
    fn charge_locally(
        &self,
        checks: &[LimitCheck],
        cells: &[Cell],
        now: DateTime<Utc>,
    ) -> Option<Vec<LimitStatus>> {
        if checks.is_empty() {
            return Some(Vec::new());
        }
        if checks.iter().any(|check| check.cost == 0) {
            return None;
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let allowances = &mut state.allowances;
        let fits =
            |allowance: Option<&Allowance>, check: &LimitCheck, cell: &Cell, earlier: u64| {
                allowance.is_some_and(|allowance| {
                    allowance.cell == *cell
                        && allowance.limit == check.limit
                        && allowance.units >= earlier.saturating_add(check.cost)
                })
            };
        for (i, (check, cell)) in checks.iter().zip(cells).enumerate() {
            // A counter named twice must have room for both costs.
            let earlier: u64 = checks[..i]
                .iter()
                .filter(|other| other.counter == check.counter)
                .map(|other| other.cost)
                .sum();
            if !fits(allowances.get(&check.counter), check, cell, earlier) {
                return None;
            }
        }
        let now_ms = now.timestamp_millis();
        let mut statuses = Vec::with_capacity(checks.len());
        let mut top_ups = Vec::new();
        for (check, cell) in checks.iter().zip(cells) {
            let allowance = allowances.get_mut(&check.counter)?;
            allowance.units -= check.cost;
            allowance.used += check.cost;
            allowance.used_since_sweep = true;
            statuses.push(allowance.status(&check.counter));
            if allowance.units < allowance.chunk / 2 {
                let refill = allowance.start_refill(check.cost, now_ms);
                if refill > 0 {
                    top_ups.push(TopUp {
                        check: LimitCheck {
                            cost: refill,
                            ..check.clone()
                        },
                        cell: *cell,
                    });
                }
            }
        }
        drop(guard);
        if !top_ups.is_empty()
            && let Some(limiter) = self.this.upgrade()
        {
            tokio::spawn(async move { limiter.top_up(top_ups, now).await });
        }
        Some(statuses)
    }

    /// Charges the refills of `top_ups` to the store, each into its allowance. A refill that
    /// the store rejects is dropped: the requests that find the allowance empty then go to the
    /// store themselves.
    async fn top_up(&self, top_ups: Vec<TopUp>, now: DateTime<Utc>) {
        let (checks, cells): (Vec<LimitCheck>, Vec<Cell>) = top_ups
            .into_iter()
            .map(|top_up| (top_up.check, top_up.cell))
            .unzip();
        let refills: Vec<u64> = checks.iter().map(|check| check.cost).collect();
        let mut unfinished = UnfinishedRefills {
            limiter: self,
            checks: &checks,
            refills: &refills,
            returned: false,
        };
        let decision = self.inner.acquire(&checks, now).await;
        unfinished.returned = true;
        let admitted = match &decision {
            Ok(Decision::Admitted(admission)) => Some(admission.statuses.as_slice()),
            _ => None,
        };
        self.record(&checks, &cells, &refills, admitted, now.timestamp_millis());
        if let Err(error) = decision {
            tracing::warn!(%error, "refilling rate-limit allowances failed; requests charge the store directly");
        }
    }

    /// Puts charges that [`Self::charge_locally`] took back into their allowances.
    fn restore(&self, checks: &[LimitCheck], cells: &[Cell]) {
        let mut state = self.lock();
        for (check, cell) in checks.iter().zip(cells) {
            if let Some(allowance) = state.allowances.get_mut(&check.counter)
                && allowance.cell == *cell
                && allowance.used >= check.cost
            {
                allowance.units += check.cost;
                allowance.used -= check.cost;
            }
        }
    }

    /// Adds a refill to the cost of each check whose allowance should grow. Returns the
    /// refills, in the order of the checks.
    fn plan_refills(&self, checks: &[LimitCheck], cells: &[Cell], now_ms: i64) -> Vec<u64> {
        let mut state = self.lock();
        checks
            .iter()
            .zip(cells)
            .map(
                |(check, cell)| match state.allowances.get_mut(&check.counter) {
                    Some(allowance)
                        if allowance.cell == *cell
                            && allowance.limit == check.limit
                            && check.cost > 0 =>
                    {
                        allowance.start_refill(check.cost, now_ms)
                    }
                    _ => 0,
                },
            )
            .collect()
    }

    /// Records what a call to the store returned: the end of the refills under way, and for an
    /// admitted call (`statuses` is `Some`) the remaining amounts and the refills it charged.
    fn record(
        &self,
        checks: &[LimitCheck],
        cells: &[Cell],
        refills: &[u64],
        statuses: Option<&[LimitStatus]>,
        now_ms: i64,
    ) -> Option<Vec<LimitStatus>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        for (check, refill) in checks.iter().zip(refills) {
            if *refill > 0
                && let Some(allowance) = state.allowances.get_mut(&check.counter)
            {
                allowance.refilling = false;
            }
        }
        let statuses = statuses?;
        let mut reported = Vec::with_capacity(statuses.len());
        for ((check, cell), (status, refill)) in
            checks.iter().zip(cells).zip(statuses.iter().zip(refills))
        {
            // Admission lifts a `credit_charge` limit to `MAX_AMOUNT` for a request that credits
            // pay for. Units taken under it would count against the real limit of other requests.
            if check.limit < MIN_LIMIT || check.limit >= MAX_AMOUNT {
                reported.push(status.clone());
                continue;
            }
            let allowance = match state.allowances.get_mut(&check.counter) {
                Some(allowance) => allowance,
                None => state
                    .allowances
                    .entry(check.counter.clone())
                    .or_insert_with(|| Allowance::new(*cell, status)),
            };
            if allowance.cell != *cell && cell.start_ms() < allowance.cell.start_ms() {
                // The call charged a window or bucket that requests have left: its refill goes
                // back.
                if *refill > 0 {
                    state.returns.push((check.counter.clone(), *cell, *refill));
                }
                reported.push(status.clone());
                continue;
            }
            if allowance.cell != *cell || allowance.limit != check.limit {
                if allowance.units > 0 {
                    state
                        .returns
                        .push((check.counter.clone(), allowance.cell, allowance.units));
                }
                // The refill size carries over to the next window or bucket.
                let previous = std::mem::replace(allowance, Allowance::new(*cell, status));
                if previous.limit == check.limit {
                    allowance.chunk = previous.chunk;
                    allowance.refilled_at_ms = previous.refilled_at_ms;
                }
            }
            allowance.remaining = status.remaining;
            allowance.reset_at = status.reset_at;
            allowance.used_since_sweep = true;
            if *refill > 0 {
                allowance.units = allowance.units.saturating_add(*refill);
                allowance.refilled_at_ms = Some(now_ms);
            }
            reported.push(allowance.status(&check.counter));
        }
        Some(reported)
    }

    /// Charges `checks` to the store, with refills where they are due, and takes `lease` with
    /// them. A rejected call with refills is repeated without them, so a rejection is the
    /// store's decision on the request alone.
    async fn charge_store(
        &self,
        checks: &[LimitCheck],
        cells: &[Cell],
        lease: Option<&LeaseRequest>,
        now: DateTime<Utc>,
    ) -> Result<LeasedDecision, LimitError> {
        let now_ms = now.timestamp_millis();
        let refills = self.plan_refills(checks, cells, now_ms);
        let mut costs = checks.to_vec();
        for (check, refill) in costs.iter_mut().zip(&refills) {
            check.cost = check.cost.saturating_add(*refill);
        }

        let mut unfinished = UnfinishedRefills {
            limiter: self,
            checks,
            refills: &refills,
            returned: false,
        };
        let decision = self.call_inner(&costs, lease, now).await;
        unfinished.returned = true;

        let admitted = match &decision {
            Ok(LeasedDecision::Decided(Decision::Admitted(admission))) => {
                Some(admission.statuses.as_slice())
            }
            _ => None,
        };
        let reported = self.record(checks, cells, &refills, admitted, now_ms);
        let decision = decision?;
        if let Some(statuses) = reported {
            return Ok(LeasedDecision::Decided(Decision::Admitted(Admission {
                statuses,
            })));
        }
        let rejected_with_refills =
            matches!(decision, LeasedDecision::Decided(Decision::Rejected(_)))
                && refills.iter().any(|refill| *refill > 0);
        if !rejected_with_refills {
            return Ok(decision);
        }

        let decision = self.call_inner(checks, lease, now).await?;
        if let LeasedDecision::Decided(Decision::Admitted(admission)) = &decision {
            let no_refills = vec![0; checks.len()];
            let statuses = self.record(
                checks,
                cells,
                &no_refills,
                Some(&admission.statuses),
                now_ms,
            );
            return Ok(LeasedDecision::Decided(Decision::Admitted(Admission {
                statuses: statuses.unwrap_or_default(),
            })));
        }
        Ok(decision)
    }

    async fn call_inner(
        &self,
        checks: &[LimitCheck],
        lease: Option<&LeaseRequest>,
        now: DateTime<Utc>,
    ) -> Result<LeasedDecision, LimitError> {
        match lease {
            Some(lease) => self.inner.acquire_leased(checks, lease, now).await,
            None => self
                .inner
                .acquire(checks, now)
                .await
                .map(LeasedDecision::Decided),
        }
    }

    /// Lends a kept slot of `lease`'s scope to the request, when one has at least half of the
    /// lease's time to live left, so that it outlives the next renewal. Returns whether it did.
    fn lend_slot(&self, lease: &LeaseRequest, now_ms: i64) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(slots) = state.slots.get_mut(&lease.scope) else {
            return false;
        };
        if slots.cap != lease.cap {
            return false;
        }
        let enough = duration_millis(lease.ttl) / 2;
        while let Some((store_id, expires_ms)) = slots.free.pop() {
            if expires_ms - now_ms < enough {
                state.releases.push(HeldLease {
                    scope: lease.scope.clone(),
                    id: store_id,
                });
                continue;
            }
            slots.used_since_sweep = true;
            slots.fewest_free = slots.fewest_free.min(slots.free.len());
            state.in_use.insert(
                lease.id.clone(),
                SlotInUse {
                    scope: lease.scope.clone(),
                    cap: lease.cap,
                    store_id,
                    expires_ms,
                    ttl: lease.ttl,
                },
            );
            return true;
        }
        false
    }

    /// Takes back the slot lent to a request that was not admitted.
    fn unlend_slot(&self, lease_id: &str) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(slot) = state.in_use.remove(lease_id)
            && let Some(slots) = state.slots.get_mut(&slot.scope)
        {
            slots.free.push((slot.store_id, slot.expires_ms));
        }
    }

    /// Notes the store lease that a request was admitted with, to keep it when the request
    /// ends. Caps below [`MIN_CAP`] keep no slots.
    fn note_store_lease(&self, lease: &LeaseRequest, now_ms: i64) {
        if lease.cap < MIN_CAP {
            return;
        }
        self.lock().in_use.insert(
            lease.id.clone(),
            SlotInUse {
                scope: lease.scope.clone(),
                cap: lease.cap,
                store_id: lease.id.clone(),
                expires_ms: now_ms.saturating_add(duration_millis(lease.ttl)),
                ttl: lease.ttl,
            },
        );
    }

    /// Ends a request's lease: keeps its store lease as a free slot while the scope keeps fewer
    /// than the cap divided by [`SLOT_SHARE`], else returns the store lease to release.
    fn end_lease(&self, lease: &HeldLease) -> Option<HeldLease> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(slot) = state.in_use.remove(&lease.id) else {
            return Some(lease.clone());
        };
        let slots = state.slots.entry(slot.scope.clone()).or_default();
        if slots.cap != slot.cap {
            // The cap changed: slots kept under the old one go.
            for (id, _) in slots.free.drain(..) {
                state.releases.push(HeldLease {
                    scope: slot.scope.clone(),
                    id,
                });
            }
            slots.cap = slot.cap;
        }
        if (slots.free.len() as u64) < slot.cap / SLOT_SHARE {
            slots.free.push((slot.store_id, slot.expires_ms));
            slots.used_since_sweep = true;
            slots.ttl = slot.ttl;
            return None;
        }
        Some(HeldLease {
            scope: slot.scope,
            id: slot.store_id,
        })
    }

    /// Moves the adjustments of charges made at `charged_at` that the allowances can absorb
    /// into them, and returns the rest.
    fn settle_locally(
        &self,
        adjustments: &[Adjustment],
        charged_at: DateTime<Utc>,
    ) -> Vec<Adjustment> {
        let mut state = self.lock();
        let mut rest = Vec::new();
        for adjustment in adjustments {
            let delta = adjustment.delta;
            let allowance = state
                .allowances
                .get_mut(&adjustment.counter)
                .filter(|allowance| {
                    Cell::locate(&adjustment.counter, charged_at).ok() == Some(allowance.cell)
                });
            let left = match allowance {
                Some(allowance) if delta > 0 => {
                    let drawn = allowance.units.min(delta.unsigned_abs());
                    allowance.units -= drawn;
                    allowance.used += drawn;
                    delta - i64::try_from(drawn).unwrap_or(i64::MAX)
                }
                Some(allowance) => {
                    let back = allowance.used.min(delta.unsigned_abs());
                    allowance.used -= back;
                    allowance.units += back;
                    delta + i64::try_from(back).unwrap_or(i64::MAX)
                }
                None => delta,
            };
            if left != 0 {
                rest.push(Adjustment {
                    counter: adjustment.counter.clone(),
                    delta: left,
                });
            }
        }
        rest
    }

    /// Settles and releases what the allowances and kept slots absorb of a request's end, whose
    /// adjustments are valid, and returns the rest for the store.
    fn finish_validated(&self, end: &Finish) -> Option<Finish> {
        let adjustments = self.settle_locally(&end.adjustments, end.charged_at);
        let lease = end.lease.as_ref().and_then(|lease| self.end_lease(lease));
        (!adjustments.is_empty() || lease.is_some()).then_some(Finish {
            adjustments,
            charged_at: end.charged_at,
            lease,
        })
    }

    /// Returns to the store every allowance that was not used since the last sweep, or whose
    /// window or bucket requests no longer charge at `now`, and any units set aside for return.
    /// Releases the kept slots of scopes that no request used since the last sweep, and as many
    /// of the others as stayed unused since then.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<(), LimitError> {
        let now_ms = now.timestamp_millis();
        let mut renewals: Vec<(Duration, Vec<HeldLease>)> = Vec::new();
        let returns = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let returns = &mut state.returns;
            state.allowances.retain(|counter, allowance| {
                let current = Cell::locate(counter, now).ok() == Some(allowance.cell);
                if current && (allowance.used_since_sweep || allowance.refilling) {
                    allowance.used_since_sweep = false;
                    allowance.idle_sweeps = 0;
                    return true;
                }
                if allowance.units > 0 {
                    returns.push((counter.clone(), allowance.cell, allowance.units));
                    allowance.units = 0;
                }
                // An idle entry stays a few sweeps with its refill size, so that a counter used
                // again soon refills at that size instead of starting small.
                allowance.idle_sweeps += 1;
                current && allowance.idle_sweeps <= IDLE_SWEEPS
            });
            let releases = &mut state.releases;
            state.slots.retain(|scope, slots| {
                if slots.used_since_sweep {
                    // Leases that stayed unused through the whole interval are not needed.
                    let surplus = slots.fewest_free.min(slots.free.len());
                    for (id, _) in slots.free.drain(..surplus) {
                        releases.push(HeldLease {
                            scope: scope.clone(),
                            id,
                        });
                    }
                    slots.fewest_free = slots.free.len();
                    slots.used_since_sweep = false;
                    // A kept lease is lent while it has half of its time to live left. The ones
                    // that would fall below that before the sweep after next are renewed now.
                    let due_ms =
                        duration_millis(slots.ttl) / 2 + 2 * duration_millis(SWEEP_INTERVAL);
                    let due: Vec<HeldLease> = slots
                        .free
                        .iter()
                        .filter(|(_, expires_ms)| expires_ms - now_ms < due_ms)
                        .map(|(id, _)| HeldLease {
                            scope: scope.clone(),
                            id: id.clone(),
                        })
                        .collect();
                    if !due.is_empty() {
                        match renewals.iter_mut().find(|(ttl, _)| *ttl == slots.ttl) {
                            Some((_, leases)) => leases.extend(due),
                            None => renewals.push((slots.ttl, due)),
                        }
                    }
                    return true;
                }
                for (id, _) in slots.free.drain(..) {
                    releases.push(HeldLease {
                        scope: scope.clone(),
                        id,
                    });
                }
                false
            });
            (std::mem::take(returns), std::mem::take(releases))
        };
        let given_back = self.give_back(returns, now).await;
        for (ttl, leases) in renewals {
            let renewed = self.inner.renew_leases(&leases, now, ttl).await?;
            self.note_renewed(
                &leases,
                &renewed,
                now_ms.saturating_add(duration_millis(ttl)),
            );
        }
        given_back
    }

    /// Moves the expiry of the kept leases that a renewal reached to `expires_ms`, and drops
    /// those that the store no longer held, wherever they are now: kept, or lent to a request.
    fn note_renewed(&self, leases: &[HeldLease], renewed: &[bool], expires_ms: i64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        for (lease, renewed) in leases.iter().zip(renewed) {
            let expiry = if *renewed { expires_ms } else { i64::MIN };
            if let Some(slots) = state.slots.get_mut(&lease.scope)
                && let Some(index) = slots.free.iter().position(|(id, _)| *id == lease.id)
            {
                if *renewed {
                    slots.free[index].1 = expiry;
                } else {
                    slots.free.swap_remove(index);
                }
                continue;
            }
            if let Some(slot) = state
                .in_use
                .values_mut()
                .find(|slot| slot.store_id == lease.id)
            {
                slot.expires_ms = expiry;
            }
        }
    }

    /// Returns every allowance to the store and releases every kept slot, such as before the
    /// process stops.
    pub async fn return_all(&self, now: DateTime<Utc>) -> Result<(), LimitError> {
        let returns = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let mut returns = std::mem::take(&mut state.returns);
            for (counter, allowance) in state.allowances.drain() {
                if allowance.units > 0 {
                    returns.push((counter, allowance.cell, allowance.units));
                }
            }
            let mut releases = std::mem::take(&mut state.releases);
            for (scope, slots) in state.slots.drain() {
                for (id, _) in slots.free {
                    releases.push(HeldLease {
                        scope: scope.clone(),
                        id,
                    });
                }
            }
            (returns, releases)
        };
        self.give_back(returns, now).await
    }

    async fn give_back(
        &self,
        (returns, releases): (Vec<(Counter, Cell, u64)>, Vec<HeldLease>),
        now: DateTime<Utc>,
    ) -> Result<(), LimitError> {
        let released = releases.into_iter().map(|lease| Finish {
            adjustments: Vec::new(),
            charged_at: now,
            lease: Some(lease),
        });
        let ends: Vec<Finish> = returns
            .into_iter()
            .filter_map(|(counter, cell, units)| {
                Some(Finish {
                    adjustments: vec![Adjustment {
                        counter,
                        delta: -i64::try_from(units).ok()?,
                    }],
                    charged_at: window::instant(cell.start_ms()).ok()?,
                    lease: None,
                })
            })
            .chain(released)
            .collect();
        if ends.is_empty() {
            return Ok(());
        }
        self.inner.finish(&ends, now).await
    }
}

/// A refill to charge to the store ahead of need: the counter's check with the refill as its
/// cost, and the window or bucket that the refill goes to.
struct TopUp {
    check: LimitCheck,
    cell: Cell,
}

/// Refills under way in a store call. Dropped before the call returns, which happens when the
/// caller stops waiting, it marks them ended, so that later requests can refill again.
struct UnfinishedRefills<'a> {
    limiter: &'a AllowanceLimiter,
    checks: &'a [LimitCheck],
    refills: &'a [u64],
    /// Set once the call returned, and then [`AllowanceLimiter::record`] ends the refills.
    returned: bool,
}

impl Drop for UnfinishedRefills<'_> {
    fn drop(&mut self) {
        if self.returned {
            return;
        }
        let mut state = self.limiter.lock();
        for (check, refill) in self.checks.iter().zip(self.refills) {
            if *refill > 0
                && let Some(allowance) = state.allowances.get_mut(&check.counter)
            {
                allowance.refilling = false;
            }
        }
    }
}

/// Sweeps the allowances of `limiter` every [`SWEEP_INTERVAL`] while it exists.
async fn run_sweeper(limiter: Weak<AllowanceLimiter>, clock: Arc<dyn Clock>) {
    loop {
        clock.sleep(SWEEP_INTERVAL).await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        if let Err(error) = limiter.sweep(clock.now()).await {
            tracing::warn!(%error, "returning unused rate-limit allowances failed; they count until their window ends");
        }
    }
}

fn locate(checks: &[LimitCheck], now: DateTime<Utc>) -> Result<Vec<Cell>, LimitError> {
    checks
        .iter()
        .map(|check| Cell::locate(&check.counter, now))
        .collect()
}

#[async_trait]
impl Limiter for AllowanceLimiter {
    async fn acquire(
        &self,
        checks: &[LimitCheck],
        now: DateTime<Utc>,
    ) -> Result<Decision, LimitError> {
        validate_checks(checks)?;
        let cells = locate(checks, now)?;
        if let Some(statuses) = self.charge_locally(checks, &cells, now) {
            return Ok(Decision::Admitted(Admission { statuses }));
        }
        match self.charge_store(checks, &cells, None, now).await? {
            LeasedDecision::Decided(decision) => Ok(decision),
            LeasedDecision::LeaseRejected { .. } => Err(LimitError::UnexpectedReply {
                operation: "acquire",
                detail: "a lease refusal without a lease".to_owned(),
            }),
        }
    }

    async fn acquire_leased(
        &self,
        checks: &[LimitCheck],
        lease: &LeaseRequest,
        now: DateTime<Utc>,
    ) -> Result<LeasedDecision, LimitError> {
        validate_checks(checks)?;
        let cells = locate(checks, now)?;
        let now_ms = now.timestamp_millis();
        let lent = self.lend_slot(lease, now_ms);
        let local = self.charge_locally(checks, &cells, now);
        let decision = match (lent, local) {
            (true, Some(statuses)) => {
                return Ok(LeasedDecision::Decided(Decision::Admitted(Admission {
                    statuses,
                })));
            }
            (true, None) => self.charge_store(checks, &cells, None, now).await,
            (false, None) => self.charge_store(checks, &cells, Some(lease), now).await,
            (false, Some(statuses)) => {
                // The charges came from the allowances: the store takes only the lease, and
                // they go back into the allowances when it refuses the lease or fails.
                let leased = self.inner.acquire_leased(&[], lease, now).await;
                let admitted = matches!(leased, Ok(LeasedDecision::Decided(Decision::Admitted(_))));
                if !admitted {
                    self.restore(checks, &cells);
                }
                leased.map(|leased| match leased {
                    LeasedDecision::Decided(Decision::Admitted(_)) => {
                        LeasedDecision::Decided(Decision::Admitted(Admission { statuses }))
                    }
                    other => other,
                })
            }
        };
        let admitted = matches!(decision, Ok(LeasedDecision::Decided(Decision::Admitted(_))));
        match (lent, admitted) {
            (true, false) => self.unlend_slot(&lease.id),
            (false, true) => self.note_store_lease(lease, now_ms),
            _ => {}
        }
        decision
    }

    async fn settle(
        &self,
        adjustments: &[Adjustment],
        charged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LimitError> {
        validate_adjustments(adjustments)?;
        let rest = self.settle_locally(adjustments, charged_at);
        if rest.is_empty() {
            return Ok(());
        }
        self.inner.settle(&rest, charged_at, now).await
    }

    fn finish_locally(&self, end: Finish) -> Option<Finish> {
        // Invalid adjustments go on to the store, which rejects them with their error.
        if validate_adjustments(&end.adjustments).is_err() {
            return Some(end);
        }
        self.finish_validated(&end)
    }

    async fn finish(&self, ends: &[Finish], now: DateTime<Utc>) -> Result<(), LimitError> {
        for end in ends {
            validate_adjustments(&end.adjustments)?;
        }
        let rest: Vec<Finish> = ends
            .iter()
            .filter_map(|end| self.finish_validated(end))
            .collect();
        if rest.is_empty() {
            return Ok(());
        }
        self.inner.finish(&rest, now).await
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        cap: u64,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseDecision, LimitError> {
        self.inner
            .acquire_lease(scope, cap, lease_id, now, ttl)
            .await
    }

    async fn renew_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool, LimitError> {
        let lease = HeldLease {
            scope: scope.to_owned(),
            id: lease_id.to_owned(),
        };
        let renewed = self
            .renew_leases(std::slice::from_ref(&lease), now, ttl)
            .await?;
        Ok(renewed.first() == Some(&true))
    }

    async fn release_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitError> {
        let store_id = self
            .lock()
            .in_use
            .remove(lease_id)
            .map(|slot| slot.store_id);
        let id = store_id.as_deref().unwrap_or(lease_id);
        self.inner.release_lease(scope, id, now).await
    }

    async fn renew_leases(
        &self,
        leases: &[HeldLease],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<bool>, LimitError> {
        // A request that uses a kept slot renews the slot's store lease.
        let translated: Vec<HeldLease> = {
            let state = self.lock();
            leases
                .iter()
                .map(|lease| match state.in_use.get(&lease.id) {
                    Some(slot) => HeldLease {
                        scope: lease.scope.clone(),
                        id: slot.store_id.clone(),
                    },
                    None => lease.clone(),
                })
                .collect()
        };
        let renewed = self.inner.renew_leases(&translated, now, ttl).await?;
        let expires_ms = now.timestamp_millis().saturating_add(duration_millis(ttl));
        let mut state = self.lock();
        for (lease, renewed) in leases.iter().zip(&renewed) {
            if let Some(slot) = state.in_use.get_mut(&lease.id) {
                // A lease that the store no longer holds is never lent again.
                slot.expires_ms = if *renewed { expires_ms } else { i64::MIN };
            }
        }
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures_util::FutureExt;

    use super::*;
    use crate::clock::ManualClock;
    use crate::limits::memory::MemoryLimiter;
    use crate::limits::{Metric, Window, WindowKind};

    /// A store that counts the calls that charge or settle.
    #[derive(Debug, Default)]
    struct Counting {
        store: MemoryLimiter,
        calls: AtomicUsize,
        lease_calls: AtomicUsize,
        /// While set, charges never return, as when the store stops replying.
        stalled: AtomicBool,
    }

    #[async_trait]
    impl Limiter for Counting {
        async fn acquire(
            &self,
            checks: &[LimitCheck],
            now: DateTime<Utc>,
        ) -> Result<Decision, LimitError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.store.acquire(checks, now).await
        }

        async fn settle(
            &self,
            adjustments: &[Adjustment],
            charged_at: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<(), LimitError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.store.settle(adjustments, charged_at, now).await
        }

        async fn acquire_lease(
            &self,
            scope: &str,
            cap: u64,
            lease_id: &str,
            now: DateTime<Utc>,
            ttl: Duration,
        ) -> Result<LeaseDecision, LimitError> {
            self.lease_calls.fetch_add(1, Ordering::SeqCst);
            self.store
                .acquire_lease(scope, cap, lease_id, now, ttl)
                .await
        }

        async fn renew_lease(
            &self,
            scope: &str,
            lease_id: &str,
            now: DateTime<Utc>,
            ttl: Duration,
        ) -> Result<bool, LimitError> {
            self.store.renew_lease(scope, lease_id, now, ttl).await
        }

        async fn release_lease(
            &self,
            scope: &str,
            lease_id: &str,
            now: DateTime<Utc>,
        ) -> Result<bool, LimitError> {
            self.lease_calls.fetch_add(1, Ordering::SeqCst);
            self.store.release_lease(scope, lease_id, now).await
        }
    }

    impl Counting {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn lease_calls(&self) -> usize {
            self.lease_calls.load(Ordering::SeqCst)
        }

        /// Returns the number of unexpired leases of `scope` at `now`, which the store reports
        /// when a lease with a cap of 0 is refused.
        async fn active_leases(&self, scope: &str, now: DateTime<Utc>) -> u64 {
            match self.store.acquire_lease(scope, 0, "probe", now, TTL).await {
                Ok(LeaseDecision::Rejected { active, .. }) => active,
                other => panic!("a lease with a cap of 0 was not rejected: {other:?}"),
            }
        }

        /// Returns the store's remaining amount of `check` at `now`, charging nothing.
        async fn remaining(&self, check: &LimitCheck, now: DateTime<Utc>) -> u64 {
            let free = LimitCheck {
                cost: 0,
                ..check.clone()
            };
            match self.store.acquire(&[free], now).await {
                Ok(Decision::Admitted(admission)) => admission.statuses[0].remaining,
                other => panic!("a status query was rejected: {other:?}"),
            }
        }
    }

    fn start() -> DateTime<Utc> {
        "2026-03-02T10:00:00Z".parse().expect("time")
    }

    fn limiter(store: Arc<Counting>) -> Arc<AllowanceLimiter> {
        AllowanceLimiter::start(store, Arc::new(ManualClock::new(start())))
    }

    fn requests(limit: u64) -> LimitCheck {
        LimitCheck {
            counter: Counter::new("org:a", Metric::Requests, Window::Day, WindowKind::Fixed),
            limit,
            cost: 1,
        }
    }

    fn tokens(limit: u64, cost: u64) -> LimitCheck {
        LimitCheck {
            counter: Counter::new("org:a", Metric::Tokens, Window::Minute, WindowKind::Sliding),
            limit,
            cost,
        }
    }

    async fn admit(limiter: &AllowanceLimiter, checks: &[LimitCheck]) -> Vec<LimitStatus> {
        match limiter.acquire(checks, start()).await {
            Ok(Decision::Admitted(admission)) => admission.statuses,
            other => panic!("expected an admission, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn busy_counter_goes_to_store_once_per_refill() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = requests(1_000_000);

        for admitted in 1..=1_000_u64 {
            let statuses = admit(&limiter, std::slice::from_ref(&check)).await;
            assert_eq!(statuses[0].remaining, 1_000_000 - admitted);
            // Lets a refill task that the admission started run.
            tokio::task::yield_now().await;
        }
        // The first call learns the counter and the next takes 16 with its request. Each later
        // refill starts when the allowance falls below half of its size and, within the
        // fast-refill time, doubles: 32 + ... + 1024, the last before the units run out.
        assert_eq!(store.calls(), 8);
        let store_remaining = store.remaining(&check, start()).await;
        assert!(
            store_remaining <= 1_000_000 - 1_000,
            "the store counts every admission"
        );
    }

    #[tokio::test]
    async fn small_limit_always_goes_to_store() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = requests(MIN_LIMIT - 1);
        for _ in 0..50 {
            admit(&limiter, std::slice::from_ref(&check)).await;
        }
        assert_eq!(store.calls(), 50);
        assert_eq!(store.remaining(&check, start()).await, MIN_LIMIT - 51);
    }

    #[tokio::test]
    async fn processes_sharing_store_admit_exactly_limit() {
        let store = Arc::new(Counting::default());
        let processes = [limiter(store.clone()), limiter(store.clone())];
        let check = requests(20_000);
        let mut admitted = 0;
        let mut rejected_in_a_row = 0;
        let mut turn = 0;
        // Each process is called in turn until both reject: units that one has are used by it,
        // so nothing of the limit is left over.
        while rejected_in_a_row < 2 {
            let limiter = &processes[turn % 2];
            turn += 1;
            match limiter.acquire(std::slice::from_ref(&check), start()).await {
                Ok(Decision::Admitted(_)) => {
                    admitted += 1;
                    rejected_in_a_row = 0;
                }
                Ok(Decision::Rejected(rejection)) => {
                    assert_eq!(rejection.status.remaining, 0);
                    rejected_in_a_row += 1;
                }
                Err(error) => panic!("acquire failed: {error}"),
            }
        }
        assert_eq!(admitted, 20_000);
        assert_eq!(store.remaining(&check, start()).await, 0);
    }

    #[tokio::test]
    async fn settles_move_units_between_request_and_allowance() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = tokens(10_000_000, 1_000);
        let checks = std::slice::from_ref(&check);
        admit(&limiter, checks).await;
        admit(&limiter, checks).await;
        let calls = store.calls();
        let statuses = admit(&limiter, checks).await;
        assert_eq!(statuses[0].remaining, 10_000_000 - 3_000);
        assert_eq!(store.calls(), calls, "the third charge is local");

        let settle = |delta| {
            let limiter = limiter.clone();
            let counter = check.counter.clone();
            async move {
                limiter
                    .settle(&[Adjustment { counter, delta }], start(), start())
                    .await
                    .expect("settle");
            }
        };
        settle(-400).await;
        settle(250).await;
        assert_eq!(store.calls(), calls, "settles of local charges stay local");
        let statuses = admit(&limiter, checks).await;
        assert_eq!(
            statuses[0].remaining,
            10_000_000 - 3_000 + 400 - 250 - 1_000
        );

        // A negative settle larger than the local charges passes the rest to the store, which
        // never goes below zero.
        settle(-5_000_000).await;
        assert_eq!(store.calls(), calls + 1);
        limiter.return_all(start()).await.expect("return");
        assert_eq!(store.remaining(&check, start()).await, 10_000_000);
    }

    #[tokio::test]
    async fn sweeps_return_idle_and_past_allowances() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = tokens(10_000_000, 1_000);
        let checks = std::slice::from_ref(&check);
        for _ in 0..3 {
            admit(&limiter, checks).await;
        }
        assert!(store.remaining(&check, start()).await < 10_000_000 - 3_000);

        // The first sweep finds the allowance used since the last one and keeps it.
        limiter.sweep(start()).await.expect("sweep");
        assert!(store.remaining(&check, start()).await < 10_000_000 - 3_000);
        limiter.sweep(start()).await.expect("sweep");
        assert_eq!(store.remaining(&check, start()).await, 10_000_000 - 3_000);

        // An allowance of a bucket that requests no longer charge goes back at the next sweep,
        // used or not, and its charges still count where they were made.
        for _ in 0..3 {
            admit(&limiter, checks).await;
        }
        let next_bucket = start() + chrono::Duration::seconds(6);
        limiter.sweep(next_bucket).await.expect("sweep");
        assert_eq!(
            store.remaining(&check, next_bucket).await,
            10_000_000 - 6_000
        );
    }

    #[tokio::test]
    async fn idle_allowance_keeps_refill_size() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = requests(1_000_000);
        let checks = std::slice::from_ref(&check);
        for _ in 0..1_000 {
            admit(&limiter, checks).await;
            tokio::task::yield_now().await;
        }
        // Two sweeps without use return the units.
        limiter.sweep(start()).await.expect("sweep");
        limiter.sweep(start()).await.expect("sweep");
        assert_eq!(store.remaining(&check, start()).await, 1_000_000 - 1_000);

        // The next refill has the size learned before, so the store gets one call for the
        // next 100 requests instead of a ramp from 16 again.
        let calls = store.calls();
        for _ in 0..100 {
            admit(&limiter, checks).await;
        }
        assert_eq!(store.calls(), calls + 1);
    }

    #[tokio::test]
    async fn changed_limit_returns_held_units() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let old = requests(1_000_000);
        for _ in 0..3 {
            admit(&limiter, std::slice::from_ref(&old)).await;
        }
        assert!(store.remaining(&old, start()).await < 1_000_000 - 3);

        let new = requests(2_000_000);
        // The old units count in the store until the next sweep returns them.
        let statuses = admit(&limiter, std::slice::from_ref(&new)).await;
        assert!(statuses[0].remaining < 2_000_000 - 4);
        limiter.sweep(start()).await.expect("sweep");
        assert_eq!(store.remaining(&new, start()).await, 2_000_000 - 4);
    }

    #[tokio::test]
    async fn refill_starts_before_allowance_runs_out() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = requests(1_000_000);
        let checks = std::slice::from_ref(&check);
        // The first call learns the counter, the second takes an allowance of 16.
        admit(&limiter, checks).await;
        admit(&limiter, checks).await;
        assert_eq!(store.calls(), 2);

        // The store stops replying. The refill that starts below half of the allowance waits,
        // and the admissions go on from the units left.
        store.stalled.store(true, Ordering::SeqCst);
        for _ in 0..16 {
            let admitted = limiter.acquire(checks, start()).now_or_never();
            assert!(
                matches!(admitted, Some(Ok(Decision::Admitted(_)))),
                "{admitted:?}"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(store.calls(), 3, "one refill, started ahead of need");
    }

    #[tokio::test]
    async fn refills_capped_when_store_charges() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        // A limit below `MIN_LIMIT` sends every request to the store, where the token counter
        // could take a refill each time.
        let big = tokens(10_000_000, 1_000);
        let checks = [requests(1_000), big.clone()];
        for _ in 0..45 {
            admit(&limiter, &checks).await;
        }
        let charged = 10_000_000 - store.remaining(&big, start()).await;
        assert!(charged <= 45_000 + 24_000, "{charged} tokens charged");
    }

    #[tokio::test]
    async fn abandoned_refill_allows_next_one() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let check = requests(1_000_000);
        let checks = std::slice::from_ref(&check);
        admit(&limiter, checks).await;

        // The caller stops waiting for a call that carries a refill.
        store.stalled.store(true, Ordering::SeqCst);
        let abandoned = limiter.acquire(checks, start()).now_or_never();
        assert!(abandoned.is_none());
        store.stalled.store(false, Ordering::SeqCst);

        admit(&limiter, checks).await;
        let calls = store.calls();
        admit(&limiter, checks).await;
        assert_eq!(store.calls(), calls, "the next call took a refill");
    }

    #[tokio::test]
    async fn refusal_comes_from_store_and_charges_nothing() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let big = requests(1_000_000);
        let small = tokens(MIN_LIMIT, 6_000);
        admit(&limiter, &[big.clone(), small.clone()]).await;
        let before = store.remaining(&big, start()).await;
        match limiter
            .acquire(&[big.clone(), small.clone()], start())
            .await
        {
            Ok(Decision::Rejected(rejection)) => {
                assert_eq!(rejection.index, 1);
                assert_eq!(rejection.status.remaining, MIN_LIMIT - 6_000);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(store.remaining(&big, start()).await, before);
        assert_eq!(store.remaining(&small, start()).await, MIN_LIMIT - 6_000);
    }

    const TTL: Duration = Duration::from_secs(30);

    fn lease(id: &str, cap: u64) -> LeaseRequest {
        LeaseRequest {
            scope: "org:a".to_owned(),
            cap,
            id: id.to_owned(),
            ttl: TTL,
        }
    }

    async fn admit_leased(limiter: &AllowanceLimiter, lease: &LeaseRequest, now: DateTime<Utc>) {
        match limiter.acquire_leased(&[], lease, now).await {
            Ok(LeasedDecision::Decided(Decision::Admitted(_))) => {}
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    async fn end(limiter: &AllowanceLimiter, lease: &LeaseRequest, now: DateTime<Utc>) {
        let end = Finish {
            adjustments: Vec::new(),
            charged_at: now,
            lease: Some(HeldLease {
                scope: lease.scope.clone(),
                id: lease.id.clone(),
            }),
        };
        limiter.finish(&[end], now).await.expect("finish");
    }

    #[tokio::test]
    async fn ended_lease_lent_to_next_request() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let first = lease("r1", 640);
        admit_leased(&limiter, &first, start()).await;
        end(&limiter, &first, start()).await;
        assert_eq!(
            store.active_leases("org:a", start()).await,
            1,
            "kept, not released"
        );
        let calls = store.lease_calls();

        for i in 2..=100 {
            let request = lease(&format!("r{i}"), 640);
            admit_leased(&limiter, &request, start()).await;
            end(&limiter, &request, start()).await;
        }
        assert_eq!(store.lease_calls(), calls, "kept slots need no store call");
        assert_eq!(store.active_leases("org:a", start()).await, 1);

        // A request renews the store lease of the slot it uses.
        let request = lease("r101", 640);
        admit_leased(&limiter, &request, start()).await;
        let later = start() + chrono::Duration::seconds(20);
        let renewed = limiter
            .renew_lease("org:a", "r101", later, TTL)
            .await
            .expect("renew");
        assert!(renewed);
        let after_first_expiry = start() + chrono::Duration::seconds(40);
        assert_eq!(store.active_leases("org:a", after_first_expiry).await, 1);
        end(&limiter, &request, later).await;

        // Unused slots go back to the store at the second sweep.
        limiter.sweep(later).await.expect("sweep");
        assert_eq!(store.active_leases("org:a", later).await, 1);
        limiter.sweep(later).await.expect("sweep");
        assert_eq!(store.active_leases("org:a", later).await, 0);
    }

    #[tokio::test]
    async fn kept_slots_bounded_by_cap_share() {
        let store = Arc::new(Counting::default());
        let processes = [limiter(store.clone()), limiter(store.clone())];
        let cap = MIN_CAP;
        let kept_slots = cap / SLOT_SHARE;
        let requests: Vec<LeaseRequest> = (0..cap).map(|i| lease(&format!("a{i}"), cap)).collect();
        for request in &requests {
            admit_leased(&processes[0], request, start()).await;
        }
        for request in &requests {
            end(&processes[0], request, start()).await;
        }
        assert_eq!(store.active_leases("org:a", start()).await, kept_slots);

        // The other process gets every slot but those that the first keeps, and the first
        // lends those to its own requests.
        for i in 0..cap - kept_slots {
            admit_leased(&processes[1], &lease(&format!("b{i}"), cap), start()).await;
        }
        let rejected = processes[1]
            .acquire_leased(&[], &lease("b-last", cap), start())
            .await
            .expect("acquire");
        assert!(
            matches!(rejected, LeasedDecision::LeaseRejected { .. }),
            "{rejected:?}"
        );
        let calls = store.lease_calls();
        for i in 0..kept_slots {
            admit_leased(&processes[0], &lease(&format!("c{i}"), cap), start()).await;
        }
        assert_eq!(store.lease_calls(), calls);
        assert_eq!(store.active_leases("org:a", start()).await, cap);
    }

    #[tokio::test]
    async fn sweep_releases_slots_unused_since_last() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let cap = MIN_CAP;
        let kept_slots = cap / SLOT_SHARE;
        let requests: Vec<LeaseRequest> = (0..kept_slots)
            .map(|i| lease(&format!("a{i}"), cap))
            .collect();
        for request in &requests {
            admit_leased(&limiter, request, start()).await;
        }
        for request in &requests {
            end(&limiter, request, start()).await;
        }
        limiter.sweep(start()).await.expect("sweep");
        assert_eq!(store.active_leases("org:a", start()).await, kept_slots);

        // Two requests at a time use the kept slots until the next sweep, so the others go.
        for round in 0..5 {
            let pair = [
                lease(&format!("p{round}"), cap),
                lease(&format!("q{round}"), cap),
            ];
            for request in &pair {
                admit_leased(&limiter, request, start()).await;
            }
            for request in &pair {
                end(&limiter, request, start()).await;
            }
        }
        limiter.sweep(start()).await.expect("sweep");
        assert_eq!(store.active_leases("org:a", start()).await, 2);
    }

    #[tokio::test]
    async fn stopped_process_slots_expire() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let request = lease("r1", 640);
        admit_leased(&limiter, &request, start()).await;
        end(&limiter, &request, start()).await;
        drop(limiter);
        let expired = start() + chrono::Duration::from_std(TTL).expect("ttl");
        assert_eq!(store.active_leases("org:a", expired).await, 0);
    }

    #[tokio::test]
    async fn sweep_renews_kept_slots() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let request = lease("r1", 640);
        admit_leased(&limiter, &request, start()).await;
        end(&limiter, &request, start()).await;
        // 14 s on, the kept lease has 16 s of its 30 left, and the sweep after next would find
        // it below half: this sweep renews it.
        limiter
            .sweep(start() + chrono::Duration::seconds(14))
            .await
            .expect("sweep");

        let late = start() + chrono::Duration::seconds(20);
        let calls = store.lease_calls();
        admit_leased(&limiter, &lease("r2", 640), late).await;
        assert_eq!(store.lease_calls(), calls, "r2 is lent the renewed slot");
        assert_eq!(store.active_leases("org:a", late).await, 1);
    }

    #[tokio::test]
    async fn slot_close_to_expiry_is_not_lent() {
        let store = Arc::new(Counting::default());
        let limiter = limiter(store.clone());
        let request = lease("r1", 640);
        admit_leased(&limiter, &request, start()).await;
        end(&limiter, &request, start()).await;
        let late = start() + chrono::Duration::seconds(16);
        let calls = store.lease_calls();
        admit_leased(&limiter, &lease("r2", 640), late).await;
        assert_eq!(
            store.lease_calls(),
            calls + 1,
            "r2 takes a store lease of its own"
        );
        limiter.sweep(late).await.expect("sweep");
        assert_eq!(
            store.active_leases("org:a", late).await,
            1,
            "r1's slot is released"
        );
    }
}

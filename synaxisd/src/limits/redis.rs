//! The Redis limiter, shared by every gateway process of a region. Each method is one Lua script
//! run by `EVALSHA`, so a call is atomic and takes one round trip, whatever the number of scopes
//! and windows it checks. Acquisitions from concurrent requests of one process share a call: a
//! task sends the ones that wait together in one script call, which reads each counter once
//! and writes it once for all of them. The caller's time goes into every script as
//! milliseconds since the Unix epoch; the scripts never read the clock of Redis.
//!
//! Keys, below the configured prefix:
//! - `limit:<scope>:<metric>:<window>:fixed:<window start ms>`: the count of a fixed window.
//! - `limit:<scope>:<metric>:<window>:sliding`: a hash from bucket index to count, with the
//!   total `t` and the lowest bucket index `o` (see the `counter_functions` macro).
//! - `lease:<scope>`: a sorted set of lease ids scored by expiry time in milliseconds.
//!
//! Every key expires [`EXPIRY_GRACE_MS`] after its last charge stops counting.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::{mpsc, oneshot};

use super::window::{self, Cell};
use super::{
    Adjustment, Counter, Decision, Finish, HeldLease, LeaseDecision, LeaseRequest, LeasedDecision,
    LimitCheck, LimitError, Limiter, duration_millis, validate_adjustments, validate_checks,
};

/// Time that a key outlives the last instant at which its counts matter. Gateways whose clocks
/// differ by less than this all see the same counts.
pub const EXPIRY_GRACE_MS: i64 = 60_000;

/// Lua functions that read and change the counters. A fixed window is a string with its count.
/// A sliding window is a hash from bucket index to count, with two more fields: `t`, the total
/// of the bucket fields, and `o`, the lowest bucket index among them. A read finds the total of
/// the counted span in `t` while no bucket has left the span (`o` is still in it), so that a
/// check reads two fields. Only when a bucket has left does it read every field, delete the old
/// ones and write `t` and `o` again, which happens at most once per bucket length and key.
/// Buckets ahead of the reader's span, written by a gateway whose clock runs ahead, count in
/// `t` as if they were in the reader's current bucket.
macro_rules! counter_functions {
    () => {
        r"
local function sliding_total(key, current, buckets)
  local oldest = current - buckets
  local state = redis.call('HMGET', key, 't', 'o')
  if not state[1] then
    return 0, nil
  end
  local lowest = tonumber(state[2])
  if lowest and lowest >= oldest then
    return tonumber(state[1]), lowest
  end
  local total = 0
  lowest = nil
  local fields = redis.call('HGETALL', key)
  for f = 1, #fields, 2 do
    local name = fields[f]
    if name ~= 't' and name ~= 'o' then
      local index = tonumber(name)
      if index < oldest then
        redis.call('HDEL', key, name)
      else
        total = total + tonumber(fields[f + 1])
        if not lowest or index < lowest then
          lowest = index
        end
      end
    end
  end
  if lowest then
    redis.call('HSET', key, 't', total, 'o', lowest)
  else
    redis.call('HDEL', key, 't', 'o')
  end
  return total, lowest
end

local function sliding_add(key, bucket, delta)
  local index = tonumber(bucket)
  local count = redis.call('HINCRBY', key, bucket, delta)
  local applied = delta
  if count < 0 then
    redis.call('HSET', key, bucket, '0')
    applied = delta - count
    count = 0
  end
  if redis.call('HINCRBY', key, 't', applied) < 0 then
    redis.call('HSET', key, 't', '0')
  end
  -- Only a new bucket can be lower than `o`.
  if count == delta then
    local lowest = tonumber(redis.call('HGET', key, 'o'))
    if not lowest or index < lowest then
      redis.call('HSET', key, 'o', index)
    end
  end
  return count
end

local function sliding_buckets(key, current, buckets)
  local names = {}
  for offset = 0, buckets do
    names[offset + 1] = current - buckets + offset
  end
  local values = redis.call('HMGET', key, unpack(names))
  local counts = {}
  local total = 0
  for i = 1, buckets + 1 do
    counts[i] = tonumber(values[i] or '0')
    total = total + counts[i]
  end
  local all = sliding_total(key, current, buckets)
  counts[buckets + 1] = counts[buckets + 1] + (all - total)
  return counts
end

-- Sets the expiry of a key that a new window or bucket went into: on a new key, and later
-- on an existing one, whose expiry may already be later for a newer bucket.
local function extend_expiry(key, ends_at, now, grace)
  local ttl = math.max(tonumber(ends_at) - now, 0) + grace
  redis.call('PEXPIRE', key, ttl, 'NX')
  redis.call('PEXPIRE', key, ttl, 'GT')
end

local function settle_one(key, kind, bucket, delta, ends_at, now, grace)
  delta = tonumber(delta)
  if kind == 'fixed' then
    local count = redis.call('INCRBY', key, delta)
    if count == delta and delta < 0 then
      -- The counter was missing or at zero, and stays empty.
      redis.call('DEL', key)
    elseif count == delta then
      extend_expiry(key, ends_at, now, grace)
    elseif count < 0 then
      redis.call('SET', key, '0', 'KEEPTTL')
    end
  elseif delta > 0 or redis.call('HEXISTS', key, bucket) == 1 then
    if sliding_add(key, bucket, delta) == delta and delta > 0 then
      extend_expiry(key, ends_at, now, grace)
    end
  end
end
"
    };
}

/// Checks and charges the limits of many requests, in the order they came, each with or without
/// a concurrency lease. Each request is admitted when its lease (if any) and every one of its
/// limits have room, counting the charges of the requests admitted before it in the same call,
/// and then its charges count for the requests after it. A rejected request charges nothing.
/// The script reads each counter and lease set once per call. It writes the charges of all
/// admitted requests at the end, one write per counter and bucket.
///
/// KEYS: every counter and lease set that the requests name, each once.
/// ARGV[1]: buckets per sliding window. ARGV[2]: expiry grace (ms). ARGV[3]: the number of
/// requests. Then per request: now (ms), the index in KEYS of its lease set (0 without a lease),
/// the cap, the lease id, the lease's expiry (ms), and the number of its limits. After those,
/// per limit: the index in KEYS of its counter, its kind (`fixed` or `sliding`), limit, cost,
/// current bucket index (sliding only), and the ms from which the charge stops counting.
/// Returns one reply per request: {2, active leases, earliest expiry or -1} when the cap has no
/// room; {1, then each limit's counted total before the charge} when admitted; otherwise {0,
/// then each limit's counts: one for a fixed window, or the buckets of the counted span, oldest
/// first}. A counter listed twice for one request includes the cost of its earlier entries.
const ACQUIRE_BATCH_SCRIPT: &str = concat!(
    counter_functions!(),
    r"
local buckets = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
-- Per counter: its stored count (fixed), or {bucket index, stored total} (sliding).
local stored = {}
-- Per counter: bucket index (0 for a fixed window) -> amount charged by this call.
local charged = {}
local kinds = {}
-- Per counter: the latest ms from which a charge of this call stops counting.
local ends = {}
-- Per lease set: {active leases, this call's included; whether expired ones were dropped}.
local lease_sets = {}
-- Per lease set: the expiry and id of each lease this call takes, for one ZADD.
local new_leases = {}
local latest = 0

local function counted(key, kind, current)
  local total
  if kind == 'fixed' then
    total = stored[key]
    if not total then
      total = tonumber(redis.call('GET', key) or '0')
      stored[key] = total
    end
    local extra = charged[key]
    if extra then
      total = total + (extra[0] or 0)
    end
    return total
  end
  local state = stored[key]
  if not state or state[1] ~= current then
    state = {current, (sliding_total(key, current, buckets))}
    stored[key] = state
  end
  total = state[2]
  local extra = charged[key]
  if extra then
    local oldest = current - buckets
    for bucket, amount in pairs(extra) do
      if bucket >= oldest then
        total = total + amount
      end
    end
  end
  return total
end

local function sliding_span(key, current)
  local counts = sliding_buckets(key, current, buckets)
  local extra = charged[key]
  if extra then
    local oldest = current - buckets
    for bucket, amount in pairs(extra) do
      if bucket >= oldest then
        local position = math.min(bucket - oldest + 1, buckets + 1)
        counts[position] = counts[position] + amount
      end
    end
  end
  return counts
end

-- Returns 'new' or 'held' when the lease fits under the cap, else nil. Expired leases are
-- dropped only when the set looks full, since they count until then.
local function lease_room(key, cap, id, now)
  local set = lease_sets[key]
  if not set then
    set = {redis.call('ZCARD', key), false}
    lease_sets[key] = set
  end
  if set[1] < cap then
    return 'new'
  end
  if not set[2] then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    set[1] = redis.call('ZCARD', key) + #(new_leases[key] or {}) / 2
    set[2] = true
    if set[1] < cap then
      return 'new'
    end
  end
  if redis.call('ZSCORE', key, id) then
    return 'held'
  end
  return nil
end

local function earliest_lease(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    return tonumber(first[2])
  end
  return -1
end

local replies = {}
local at = 4
for r = 1, tonumber(ARGV[3]) do
  local now = tonumber(ARGV[at])
  local lease_index = tonumber(ARGV[at + 1])
  local count = tonumber(ARGV[at + 5])
  local first = at + 6
  if now > latest then
    latest = now
  end
  local lease_key = nil
  local room = 'none'
  if lease_index > 0 then
    lease_key = KEYS[lease_index]
    room = lease_room(lease_key, tonumber(ARGV[at + 2]), ARGV[at + 3], now)
  end
  if not room then
    replies[r] = {2, lease_sets[lease_key][1], earliest_lease(lease_key)}
  else
    local reply = {1}
    local pending = {}
    local admitted = true
    for i = 0, count - 1 do
      local base = first + 6 * i
      local key = KEYS[tonumber(ARGV[base])]
      local total = counted(key, ARGV[base + 1], tonumber(ARGV[base + 4])) + (pending[key] or 0)
      reply[#reply + 1] = total
      local cost = tonumber(ARGV[base + 3])
      if total + cost > tonumber(ARGV[base + 2]) then
        admitted = false
      end
      pending[key] = (pending[key] or 0) + cost
    end
    if admitted then
      for i = 0, count - 1 do
        local base = first + 6 * i
        local cost = tonumber(ARGV[base + 3])
        if cost > 0 then
          local key = KEYS[tonumber(ARGV[base])]
          local bucket = 0
          if ARGV[base + 1] == 'sliding' then
            bucket = tonumber(ARGV[base + 4])
          end
          local extra = charged[key]
          if not extra then
            extra = {}
            charged[key] = extra
            kinds[key] = ARGV[base + 1]
          end
          extra[bucket] = (extra[bucket] or 0) + cost
          local stop = tonumber(ARGV[base + 5])
          if not ends[key] or stop > ends[key] then
            ends[key] = stop
          end
        end
      end
      if lease_key then
        if room == 'new' then
          lease_sets[lease_key][1] = lease_sets[lease_key][1] + 1
        end
        local list = new_leases[lease_key]
        if not list then
          list = {}
          new_leases[lease_key] = list
        end
        list[#list + 1] = ARGV[at + 4]
        list[#list + 1] = ARGV[at + 3]
      end
    else
      reply = {0}
      pending = {}
      for i = 0, count - 1 do
        local base = first + 6 * i
        local key = KEYS[tonumber(ARGV[base])]
        local counts
        if ARGV[base + 1] == 'fixed' then
          counts = {counted(key, 'fixed', 0)}
        else
          counts = sliding_span(key, tonumber(ARGV[base + 4]))
        end
        counts[#counts] = counts[#counts] + (pending[key] or 0)
        for _, value in ipairs(counts) do
          reply[#reply + 1] = value
        end
        pending[key] = (pending[key] or 0) + tonumber(ARGV[base + 3])
      end
    end
    replies[r] = reply
  end
  at = first + 6 * count
end

for key, extra in pairs(charged) do
  for bucket, amount in pairs(extra) do
    local count
    if kinds[key] == 'fixed' then
      count = redis.call('INCRBY', key, amount)
    else
      count = sliding_add(key, bucket, amount)
    end
    -- A new window or bucket is the only charge that moves the key's expiry later.
    if count == amount then
      extend_expiry(key, ends[key], latest, grace)
    end
  end
end
for key, list in pairs(new_leases) do
  redis.call('ZADD', key, unpack(list))
  local last = 0
  for i = 1, #list, 2 do
    last = math.max(last, tonumber(list[i]))
  end
  extend_expiry(key, last, latest, grace)
end
return replies
"
);

/// Drops expired leases, then adds or renews one when it is held or the cap allows it.
///
/// KEYS[1]: the leases of a scope. ARGV: now (ms), cap, lease id, expiry (ms), grace (ms).
/// Returns {1, 0, 0} when acquired, else {0, active leases, earliest expiry or -1}.
const ACQUIRE_LEASE_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local existing = redis.call('ZSCORE', KEYS[1], ARGV[3])
local active = redis.call('ZCARD', KEYS[1])
if existing or active < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.max(tonumber(last[2]) - now, 0) + tonumber(ARGV[5]))
  return {1, 0, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  return {0, active, tonumber(first[2])}
end
return {0, active, -1}
";

/// Settles adjustments and releases leases of many requests in one step.
///
/// KEYS[1..ARGV[3]]: the counters of the adjustments; the KEYS after them: the leases' scopes.
/// ARGV[1]: now (ms). ARGV[2]: expiry grace (ms). ARGV[3]: the number of adjustments.
/// ARGV[4 + 4 * (i - 1) .. 7 + 4 * (i - 1)]: per adjustment, its kind, bucket index (sliding
/// only), delta, and the ms from which the charge stops counting. Then one lease id per lease.
const FINISH_SCRIPT: &str = concat!(
    counter_functions!(),
    r"
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local adjustments = tonumber(ARGV[3])
for i = 1, adjustments do
  local base = 3 + 4 * (i - 1)
  settle_one(KEYS[i], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], now, grace)
end
local first_lease_arg = 3 + 4 * adjustments
for i = adjustments + 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[first_lease_arg + i - adjustments])
end
return 0
"
);

/// Moves the expiry of many unexpired leases. KEYS[i]: the leases of the scope of lease i.
/// ARGV[1]: now (ms). ARGV[2]: the new expiry (ms). ARGV[3]: grace (ms). ARGV[3 + i]: the id of
/// lease i. Returns, per lease, 1 when renewed and 0 when it was not held.
const RENEW_LEASES_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local renewed = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, ARGV[3 + i]) then
    redis.call('ZADD', key, 'XX', ARGV[2], ARGV[3 + i])
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', key, math.max(tonumber(last[2]) - now, 0) + tonumber(ARGV[3]))
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
";

/// Removes a lease. KEYS[1]: the leases of a scope. ARGV: now (ms), lease id. Returns 1 when the
/// removed lease was unexpired, else 0.
const RELEASE_LEASE_SCRIPT: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[2])
if tonumber(score) > tonumber(ARGV[1]) then
  return 1
end
return 0
";

/// The largest number of requests that one call of [`ACQUIRE_BATCH_SCRIPT`] carries.
const MAX_BATCH: usize = 256;

/// A limiter whose counters and leases live in Redis. Clones share one multiplexed connection,
/// which reconnects by itself after Redis restarts, and one batching task for acquisitions.
#[derive(Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    address: String,
    key_prefix: String,
    scripts: Scripts,
    acquisitions: mpsc::UnboundedSender<Acquisition>,
}

#[derive(Clone)]
struct Scripts {
    finish: Script,
    renew_leases: Script,
    acquire_lease: Script,
    release_lease: Script,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("address", &self.address)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to the Redis server of `url`, such as `redis://127.0.0.1:6379`. Every key starts
    /// with `key_prefix`. `timeout` bounds each connection attempt and each script's reply.
    /// While Redis is unreachable, a call waits for one reconnection of at most two attempts,
    /// each bounded by `timeout`, and then fails.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<Self, LimitError> {
        let client = Client::open(url).map_err(LimitError::InvalidUrl)?;
        // The address leaves out any password of the URL.
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|source| LimitError::Connect {
                address: address.clone(),
                source,
            })?;

        let (acquisitions, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_acquisitions(
            connection.clone(),
            Script::new(ACQUIRE_BATCH_SCRIPT),
            queue,
        ));
        Ok(Self {
            connection,
            address,
            key_prefix: key_prefix.to_owned(),
            acquisitions,
            scripts: Scripts {
                finish: Script::new(FINISH_SCRIPT),
                renew_leases: Script::new(RENEW_LEASES_SCRIPT),
                acquire_lease: Script::new(ACQUIRE_LEASE_SCRIPT),
                release_lease: Script::new(RELEASE_LEASE_SCRIPT),
            },
        })
    }

    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Checks that Redis replies to `PING`.
    pub async fn ping(&self) -> Result<(), LimitError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(Self::redis_error("ping"))?;
        Ok(())
    }

    /// Returns the key of `counter` in the window or bucket of `cell`. It appends the parts
    /// rather than calling `format!`, because each request builds several of these keys.
    fn counter_key(&self, counter: &Counter, cell: &Cell) -> String {
        let Counter {
            scope,
            metric,
            window,
            kind,
        } = counter;
        let mut key = String::with_capacity(self.key_prefix.len() + scope.len() + 48);
        for part in [
            self.key_prefix.as_str(),
            "limit:",
            scope,
            ":",
            metric.as_str(),
            ":",
            window.as_str(),
            ":",
            kind.as_str(),
        ] {
            key.push_str(part);
        }
        if let Cell::Fixed { start_ms, .. } = cell {
            key.push(':');
            key.push_str(itoa::Buffer::new().format(*start_ms));
        }
        key
    }

    fn lease_key(&self, scope: &str) -> String {
        let mut key = String::with_capacity(self.key_prefix.len() + "lease:".len() + scope.len());
        key.push_str(&self.key_prefix);
        key.push_str("lease:");
        key.push_str(scope);
        key
    }

    fn redis_error(operation: &'static str) -> impl FnOnce(redis::RedisError) -> LimitError {
        move |source| LimitError::Redis { operation, source }
    }
}

impl RedisLimiter {
    /// Queues one request's acquisition for the batching task and waits for its reply.
    async fn acquire_batched(
        &self,
        now_ms: i64,
        lease: Option<LeaseArgs>,
        checks: &[LimitCheck],
        cells: &[Cell],
    ) -> Result<Vec<i64>, LimitError> {
        let limits = checks
            .iter()
            .zip(cells)
            .map(|(check, cell)| LimitArgs {
                key: self.counter_key(&check.counter, cell),
                kind: kind_name(cell),
                limit: check.limit,
                cost: check.cost,
                bucket: bucket_index(cell),
                ends_ms: cell.expires_at_ms(),
            })
            .collect();
        let (reply, receiver) = oneshot::channel();
        let stopped = || LimitError::Redis {
            operation: "acquire",
            source: redis::RedisError::from((
                redis::ErrorKind::Client,
                "the limiter's batching task has stopped",
            )),
        };
        self.acquisitions
            .send(Acquisition {
                now_ms,
                lease,
                limits,
                reply,
            })
            .map_err(|_| stopped())?;
        receiver.await.map_err(|_| stopped())?
    }
}

/// One request's part of a call of [`ACQUIRE_BATCH_SCRIPT`], and where its reply goes.
struct Acquisition {
    now_ms: i64,
    lease: Option<LeaseArgs>,
    limits: Vec<LimitArgs>,
    reply: oneshot::Sender<Result<Vec<i64>, LimitError>>,
}

struct LeaseArgs {
    key: String,
    cap: u64,
    id: String,
    expires_ms: i64,
}

struct LimitArgs {
    key: String,
    kind: &'static str,
    limit: u64,
    cost: u64,
    bucket: i64,
    ends_ms: i64,
}

/// Sends the queued acquisitions to Redis, all that wait (up to [`MAX_BATCH`]) in one script
/// call, one call at a time. A lone request goes out at once. Requests that arrive during a
/// call wait for the next one, so under load each call serves many requests.
async fn run_acquisitions(
    mut connection: ConnectionManager,
    script: Script,
    mut queue: mpsc::UnboundedReceiver<Acquisition>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let replies: Result<Vec<Vec<i64>>, _> = batch_invocation(&script, &batch)
            .invoke_async(&mut connection)
            .await;
        match replies {
            Ok(replies) if replies.len() == batch.len() => {
                for (acquisition, reply) in batch.drain(..).zip(replies) {
                    // The caller may have stopped waiting, and then the reply has no reader.
                    let _ = acquisition.reply.send(Ok(reply));
                }
            }
            Ok(replies) => {
                let detail = format!("{} replies for {} requests", replies.len(), batch.len());
                for acquisition in batch.drain(..) {
                    let _ = acquisition.reply.send(Err(LimitError::UnexpectedReply {
                        operation: "acquire",
                        detail: detail.clone(),
                    }));
                }
            }
            Err(source) => {
                for acquisition in batch.drain(..) {
                    let _ = acquisition.reply.send(Err(LimitError::Redis {
                        operation: "acquire",
                        source: source.clone(),
                    }));
                }
            }
        }
    }
}

/// Builds the call of [`ACQUIRE_BATCH_SCRIPT`] for `batch`, naming each key once.
fn batch_invocation<'a>(script: &'a Script, batch: &[Acquisition]) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    let mut keys = HashMap::new();
    invocation
        .arg(window::BUCKETS)
        .arg(EXPIRY_GRACE_MS)
        .arg(batch.len());
    for acquisition in batch {
        invocation.arg(acquisition.now_ms);
        match &acquisition.lease {
            Some(lease) => {
                let index = key_index(&mut invocation, &mut keys, &lease.key);
                invocation
                    .arg(index)
                    .arg(lease.cap)
                    .arg(&lease.id)
                    .arg(lease.expires_ms);
            }
            None => {
                invocation.arg(0).arg(0).arg("").arg(0);
            }
        }
        invocation.arg(acquisition.limits.len());
        for limit in &acquisition.limits {
            let index = key_index(&mut invocation, &mut keys, &limit.key);
            invocation
                .arg(index)
                .arg(limit.kind)
                .arg(limit.limit)
                .arg(limit.cost)
                .arg(limit.bucket)
                .arg(limit.ends_ms);
        }
    }
    invocation
}

/// Returns the 1-based index of `key` in the call's KEYS, adding it on its first use.
fn key_index<'k>(
    invocation: &mut redis::ScriptInvocation<'_>,
    keys: &mut HashMap<&'k str, usize>,
    key: &'k str,
) -> usize {
    let next = keys.len() + 1;
    *keys.entry(key).or_insert_with(|| {
        invocation.key(key);
        next
    })
}

fn locate(checks: &[LimitCheck], now: DateTime<Utc>) -> Result<Vec<Cell>, LimitError> {
    checks
        .iter()
        .map(|check| Cell::locate(&check.counter, now))
        .collect()
}

/// Turns the reply of an acquire script into the decision, checking that Redis admitted
/// exactly when the counts it returned have room.
fn decide_reply(
    reply: &[i64],
    checks: &[LimitCheck],
    cells: &[Cell],
    now: DateTime<Utc>,
) -> Result<Decision, LimitError> {
    let (admitted, counts) = split_acquire_reply(reply, cells)?;
    if admitted != window::all_have_room(checks, &counts) {
        return Err(LimitError::UnexpectedReply {
            operation: "acquire",
            detail: format!("admitted = {admitted} disagrees with the counts {counts:?}"),
        });
    }
    window::decide(checks, cells, &counts, now)
}

/// Returns the time until the earliest lease expires, from a script's `earliest` (ms, or -1 when
/// there is none).
fn lease_retry(earliest: i64, now_ms: i64) -> Option<Duration> {
    (earliest >= 0).then(|| Duration::from_millis(u64::try_from(earliest - now_ms).unwrap_or(0)))
}

/// Returns the bucket index of a sliding cell, or 0 for a fixed one, whose key names its window.
fn bucket_index(cell: &Cell) -> i64 {
    match cell {
        Cell::Fixed { .. } => 0,
        Cell::Sliding { index, .. } => *index,
    }
}

fn kind_name(cell: &Cell) -> &'static str {
    match cell {
        Cell::Fixed { .. } => "fixed",
        Cell::Sliding { .. } => "sliding",
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(
        &self,
        checks: &[LimitCheck],
        now: DateTime<Utc>,
    ) -> Result<Decision, LimitError> {
        validate_checks(checks)?;
        let cells = locate(checks, now)?;

        let reply = self
            .acquire_batched(now.timestamp_millis(), None, checks, &cells)
            .await?;
        decide_reply(&reply, checks, &cells, now)
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
        let expires_ms = now_ms.saturating_add(duration_millis(lease.ttl));
        window::instant(expires_ms)?;

        let lease_args = LeaseArgs {
            key: self.lease_key(&lease.scope),
            cap: lease.cap,
            id: lease.id.clone(),
            expires_ms,
        };
        let reply = self
            .acquire_batched(now_ms, Some(lease_args), checks, &cells)
            .await?;
        if let [2, active, earliest] = reply.as_slice() {
            return Ok(LeasedDecision::LeaseRejected {
                active: u64::try_from(*active).unwrap_or(0),
                retry_after: lease_retry(*earliest, now_ms),
            });
        }
        decide_reply(&reply, checks, &cells, now).map(LeasedDecision::Decided)
    }

    async fn finish(&self, ends: &[Finish], now: DateTime<Utc>) -> Result<(), LimitError> {
        let now_ms = now.timestamp_millis();
        let mut invocation = self.scripts.finish.prepare_invoke();

        // Adjustments of the same window or bucket are summed first, so that Redis changes each
        // once however many requests ended together. Keys go in order: the counters of the
        // adjustments, then the lease sets.
        let mut summed: HashMap<(String, i64), (&'static str, i64, i64)> = HashMap::new();
        for end in ends {
            validate_adjustments(&end.adjustments)?;
            for adjustment in &end.adjustments {
                let cell = Cell::locate(&adjustment.counter, end.charged_at)?;
                if adjustment.delta == 0 || !cell.counts_at(now_ms) {
                    continue;
                }
                let key = (
                    self.counter_key(&adjustment.counter, &cell),
                    bucket_index(&cell),
                );
                let entry =
                    summed
                        .entry(key)
                        .or_insert((kind_name(&cell), 0, cell.expires_at_ms()));
                entry.1 = entry.1.saturating_add(adjustment.delta);
                entry.2 = entry.2.max(cell.expires_at_ms());
            }
        }
        let mut adjustment_args = Vec::with_capacity(summed.len());
        for ((key, bucket), (kind, delta, expires_ms)) in summed {
            if delta == 0 {
                continue;
            }
            invocation.key(key);
            adjustment_args.push((kind, bucket, delta, expires_ms));
        }
        let leases: Vec<&HeldLease> = ends.iter().filter_map(|end| end.lease.as_ref()).collect();
        if adjustment_args.is_empty() && leases.is_empty() {
            return Ok(());
        }

        invocation
            .arg(now_ms)
            .arg(EXPIRY_GRACE_MS)
            .arg(adjustment_args.len());
        for (kind, bucket, delta, expires_ms) in adjustment_args {
            invocation.arg(kind).arg(bucket).arg(delta).arg(expires_ms);
        }
        for lease in leases {
            invocation.key(self.lease_key(&lease.scope)).arg(&lease.id);
        }

        let _: i64 = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(Self::redis_error("finish"))?;
        Ok(())
    }

    async fn renew_leases(
        &self,
        leases: &[HeldLease],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<bool>, LimitError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = now.timestamp_millis();
        let expires_ms = now_ms.saturating_add(duration_millis(ttl));
        window::instant(expires_ms)?;

        let mut invocation = self.scripts.renew_leases.prepare_invoke();
        invocation.arg(now_ms).arg(expires_ms).arg(EXPIRY_GRACE_MS);
        for lease in leases {
            invocation.key(self.lease_key(&lease.scope)).arg(&lease.id);
        }
        let renewed: Vec<i64> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(Self::redis_error("renew_leases"))?;
        if renewed.len() != leases.len() {
            return Err(LimitError::UnexpectedReply {
                operation: "renew_leases",
                detail: format!("{} values for {} leases", renewed.len(), leases.len()),
            });
        }
        Ok(renewed.into_iter().map(|flag| flag == 1).collect())
    }

    async fn settle(
        &self,
        adjustments: &[Adjustment],
        charged_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LimitError> {
        let end = Finish {
            adjustments: adjustments.to_vec(),
            charged_at,
            lease: None,
        };
        self.finish(std::slice::from_ref(&end), now).await
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        cap: u64,
        lease_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseDecision, LimitError> {
        let now_ms = now.timestamp_millis();
        let expires_ms = now_ms.saturating_add(duration_millis(ttl));
        let expires_at = window::instant(expires_ms)?;

        let reply: Vec<i64> = self
            .scripts
            .acquire_lease
            .key(self.lease_key(scope))
            .arg(now_ms)
            .arg(cap)
            .arg(lease_id)
            .arg(expires_ms)
            .arg(EXPIRY_GRACE_MS)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(Self::redis_error("acquire_lease"))?;

        match reply.as_slice() {
            [1, _, _] => Ok(LeaseDecision::Acquired { expires_at }),
            [0, active, earliest] => {
                let retry_after = (*earliest >= 0)
                    .then(|| Duration::from_millis(u64::try_from(earliest - now_ms).unwrap_or(0)));
                Ok(LeaseDecision::Rejected {
                    active: u64::try_from(*active).unwrap_or(0),
                    retry_after,
                })
            }
            _ => Err(LimitError::UnexpectedReply {
                operation: "acquire_lease",
                detail: format!("{reply:?}"),
            }),
        }
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
        let renewed = self.renew_leases(&[lease], now, ttl).await?;
        Ok(renewed.first().copied().unwrap_or(false))
    }

    async fn release_lease(
        &self,
        scope: &str,
        lease_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitError> {
        let released: i64 = self
            .scripts
            .release_lease
            .key(self.lease_key(scope))
            .arg(now.timestamp_millis())
            .arg(lease_id)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(Self::redis_error("release_lease"))?;
        Ok(released == 1)
    }
}

/// Splits the reply of an acquire script into the admitted flag and the counts of each cell.
/// An admitted reply carries one total per cell, which goes into the cell's current bucket: the
/// newest bucket with a count is then the current one, as it is after a charge.
fn split_acquire_reply(reply: &[i64], cells: &[Cell]) -> Result<(bool, Vec<Vec<u64>>), LimitError> {
    let unexpected = |detail: String| LimitError::UnexpectedReply {
        operation: "acquire",
        detail,
    };
    let Some((flag, mut rest)) = reply.split_first() else {
        return Err(unexpected("an empty reply".to_owned()));
    };
    let admitted = *flag == 1;
    let expected_len = if admitted {
        1 + cells.len()
    } else {
        1 + cells.iter().map(Cell::span_len).sum::<usize>()
    };
    if reply.len() != expected_len {
        return Err(unexpected(format!(
            "{} values where {expected_len} were expected",
            reply.len()
        )));
    }

    let mut counts = Vec::with_capacity(cells.len());
    for cell in cells {
        let taken = if admitted { 1 } else { cell.span_len() };
        let (span, next) = rest.split_at(taken);
        let mut span = span
            .iter()
            .map(|count| u64::try_from(*count))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| unexpected(format!("a negative count in {span:?}")))?;
        if admitted && span.len() < cell.span_len() {
            let total = span.pop().unwrap_or(0);
            span = vec![0; cell.span_len() - 1];
            span.push(total);
        }
        counts.push(span);
        rest = next;
    }
    Ok((admitted, counts))
}

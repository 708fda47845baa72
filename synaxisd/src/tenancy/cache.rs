//! The in-process cache of key lookups. An entry lives at most [`AUTH_CACHE_TTL_SECS`], and
//! never past its key's expiry or the end of a rotated secret's grace. The process that changes
//! a key, user, team or org evicts the entries it affects at once; other processes see the
//! change when their entries expire, or sooner when the key directory's events tell them.
//!
//! Concurrent misses of one key share one store lookup, so that the requests that find an
//! entry expired together, or a key's first requests, do not each query the store. The first
//! request that finds an entry in its last [`REFRESH_AHEAD_MS`] starts a lookup that replaces
//! it, so that a key in steady use is looked up about once per entry life without a request
//! waiting for the store. An entry still never outlives its lookup by more than the TTL.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::counter::Counter;
use synaxis_shared::{KeyId, OrgId, TeamId, UserId};

use crate::directory::DirectorySelector;
use crate::store::{AuthenticatedKey, StoreError};

/// Maximum life of a cached lookup, in seconds. It is also the maximum time another process
/// may still accept a key after it was revoked.
pub const AUTH_CACHE_TTL_SECS: i64 = 5;

/// Entries kept at most; past it the cache is emptied, which costs only lookups.
const MAX_ENTRIES: usize = 100_000;

/// Milliseconds before an entry ends from which a request that finds it starts the lookup that
/// replaces it.
pub const REFRESH_AHEAD_MS: i64 = 250;

#[derive(Debug)]
struct Entry {
    key: Arc<AuthenticatedKey>,
    valid_until: DateTime<Utc>,
    /// When a lookup that replaces the entry is due. It is `None` for an entry that ends with
    /// its key's expiry or secret grace, because a new lookup would not extend it.
    refresh_at: Option<DateTime<Utc>>,
    refreshing: bool,
}

/// A key served from the cache.
#[derive(Debug)]
pub struct Cached {
    pub key: Arc<AuthenticatedKey>,
    /// Set for the one request that should start the lookup that replaces the entry.
    pub refresh: bool,
}

/// The result of a store lookup, shared with the misses that waited for it. `None` means that
/// the lookup failed, so each waiter tries on its own.
type SharedLookup = tokio::sync::OnceCell<Option<Option<Arc<AuthenticatedKey>>>>;

/// A map by key hash. The hashes are HMAC outputs that no client can choose, so foldhash's fast
/// hashing needs no protection against chosen collisions.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// Store lookups in flight, by key hash.
    loading: Mutex<HashMap<String, Arc<SharedLookup>>>,
    /// Counts evictions, so that a lookup that an eviction overtook does not store what it read
    /// before the change.
    generation: AtomicU64,
    hits: Counter,
    misses: Counter,
    /// Receives every change that this process makes, for the key directory.
    changes: Option<tokio::sync::mpsc::UnboundedSender<DirectorySelector>>,
}

impl AuthCache {
    /// Creates a cache that counts its hits and misses into these counters.
    pub fn new(hits: Counter, misses: Counter) -> Self {
        Self {
            hits,
            misses,
            ..Self::default()
        }
    }

    /// Sends every change made through this cache's evictions to `changes`.
    pub fn with_changes(
        mut self,
        changes: tokio::sync::mpsc::UnboundedSender<DirectorySelector>,
    ) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Tells the key directory that the keys of `selector` changed; eviction does it too.
    pub fn announce(&self, selector: DirectorySelector) {
        if let Some(changes) = &self.changes {
            // The receiver is gone only at shutdown, when nothing is published any more.
            let _ = changes.send(selector);
        }
    }

    /// Returns the cached key for `hash` when its entry is still valid at `now`, counting a hit.
    /// The first caller that finds the entry due for refresh gets `refresh` set, and should
    /// then [`load`](Self::load) it in the background.
    pub fn get(&self, hash: &str, now: DateTime<Utc>) -> Option<Cached> {
        let mut entries = self.lock(&self.entries);
        let found = entries
            .get_mut(hash)
            .filter(|entry| now < entry.valid_until)
            .map(|entry| {
                let refresh = !entry.refreshing && entry.refresh_at.is_some_and(|due| due <= now);
                entry.refreshing |= refresh;
                Cached {
                    key: Arc::clone(&entry.key),
                    refresh,
                }
            });
        drop(entries);
        if found.is_some() {
            self.hits.inc();
        }
        found
    }

    /// Looks `hash` up with `lookup` after [`get`](Self::get) missed, and caches a key found.
    /// Misses of the same hash that arrive while a lookup runs wait for it and take its result.
    /// They count as hits, because only the lookups that reach the store count as misses.
    pub async fn load<F, Fut>(
        &self,
        hash: &str,
        now: DateTime<Utc>,
        lookup: F,
    ) -> Result<Option<Arc<AuthenticatedKey>>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<AuthenticatedKey>, StoreError>>,
    {
        let shared = Arc::clone(self.lock(&self.loading).entry(hash.to_owned()).or_default());
        let generation = self.generation.load(Ordering::Acquire);
        let mut own = None;
        let outcome = shared
            .get_or_init(|| async {
                let _in_flight = InFlight {
                    cache: self,
                    hash,
                    shared: &shared,
                };
                self.misses.inc();
                let result = lookup().await.map(|found| found.map(Arc::new));
                if let Ok(Some(key)) = &result {
                    self.insert(hash.to_owned(), Arc::clone(key), now, generation);
                }
                let outcome = result.as_ref().ok().cloned();
                own = Some(result);
                outcome
            })
            .await
            .clone();

        match (own, outcome) {
            (Some(result), _) => result,
            (None, Some(found)) => {
                self.hits.inc();
                Ok(found)
            }
            (None, None) => {
                self.misses.inc();
                Ok(lookup().await?.map(Arc::new))
            }
        }
    }

    /// Caches `key`, unless an eviction happened since `generation` was read.
    fn insert(
        &self,
        hash: String,
        key: Arc<AuthenticatedKey>,
        now: DateTime<Utc>,
        generation: u64,
    ) {
        let full_life = now + Duration::seconds(AUTH_CACHE_TTL_SECS);
        let mut valid_until = full_life;
        for limit in [key.key.expires_at, key.key.previous_secret_expires_at]
            .into_iter()
            .flatten()
        {
            valid_until = valid_until.min(limit);
        }
        let refresh_at = (valid_until == full_life)
            .then(|| valid_until - Duration::milliseconds(REFRESH_AHEAD_MS));

        let mut entries = self.lock(&self.entries);
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                key,
                valid_until,
                refresh_at,
                refreshing: false,
            },
        );
    }

    pub fn evict_key(&self, id: KeyId) {
        self.forget_key(id);
        self.announce(DirectorySelector::Key(id));
    }

    pub fn evict_user(&self, id: UserId) {
        self.evict(|key| key.key.user_id == id);
        self.announce(DirectorySelector::User(id));
    }

    pub fn evict_team(&self, id: TeamId) {
        self.evict(|key| key.team_id == Some(id));
        self.announce(DirectorySelector::Team(id));
    }

    pub fn evict_org(&self, id: OrgId) {
        self.evict(|key| key.key.org_id == id);
        self.announce(DirectorySelector::Org(id));
    }

    /// Evicts a key that another process changed, without announcing it again.
    pub fn forget_key(&self, id: KeyId) {
        self.evict(|key| key.key.id == id);
    }

    fn evict(&self, matches: impl Fn(&AuthenticatedKey) -> bool) {
        let mut entries = self.lock(&self.entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, entry| !matches(&entry.key));
    }

    /// Lookups served from the cache since start.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Lookups that went to the store since start.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    fn lock<'a, T>(&self, map: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        // Both maps hold plain values, so a panic elsewhere cannot leave them half-written.
        map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A store lookup in flight, taken out of `AuthCache::loading` when the lookup ends or its
/// request is cancelled, so that an abandoned lookup leaves nothing behind.
struct InFlight<'a> {
    cache: &'a AuthCache,
    hash: &'a str,
    shared: &'a Arc<SharedLookup>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut loading = self.cache.lock(&self.cache.loading);
        if loading
            .get(self.hash)
            .is_some_and(|current| Arc::ptr_eq(current, self.shared))
        {
            loading.remove(self.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use synaxis_shared::api::{Key, KeyScope};
    use synaxis_shared::{RegionId, Role};

    use super::*;

    fn key(now: DateTime<Utc>) -> AuthenticatedKey {
        AuthenticatedKey {
            key: Key {
                id: KeyId::new(),
                org_id: OrgId::new(),
                user_id: UserId::new(),
                name: "default".to_owned(),
                scope: KeyScope::Inference,
                region: RegionId::from_static("us-east-1"),
                allowed_models: Vec::new(),
                rpm_limit: None,
                tpm_limit: None,
                active: true,
                expires_at: None,
                created_at: now,
                rotated_at: None,
                previous_secret_expires_at: None,
                revoked_at: None,
            },
            role: Role::Developer,
            team_id: None,
            locale: Default::default(),
            team_allowed_models: Vec::new(),
            org_allowed_models: Vec::new(),
            limits: Default::default(),
            org_plan: Default::default(),
            budgets: Vec::new(),
        }
    }

    /// Wakes the lookup waiting on `release` after one turn of the test's task, in which every
    /// load joined beside it starts the lookup or waits for it.
    async fn release_after_one_turn(release: &tokio::sync::Notify) {
        tokio::task::yield_now().await;
        release.notify_waiters();
    }

    fn in_flight(cache: &AuthCache) -> usize {
        cache.lock(&cache.loading).len()
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_lookup() {
        let cache = AuthCache::default();
        let now = Utc::now();
        let found = key(now);
        let lookups = AtomicUsize::new(0);
        let release = tokio::sync::Notify::new();
        let lookup = || async {
            lookups.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            Ok(Some(found.clone()))
        };

        let misses = futures_util::future::join_all((0..20).map(|_| cache.load("h", now, lookup)));
        let (results, ()) = tokio::join!(misses, release_after_one_turn(&release));

        assert_eq!(lookups.load(Ordering::SeqCst), 1, "store lookups");
        for result in results {
            let answered = result.expect("lookup").expect("key found");
            assert_eq!(answered.key.id, found.key.id);
        }
        assert_eq!(cache.misses(), 1);
        assert_eq!(cache.hits(), 19);
        assert!(cache.get("h", now).is_some(), "the key is cached");
    }

    #[tokio::test]
    async fn entry_refreshed_in_its_last_moments() {
        let cache = AuthCache::default();
        let now = Utc::now();
        let found = key(now);
        let lookup = || async { Ok(Some(found.clone())) };
        cache.load("h", now, lookup).await.expect("lookup");

        let early = now + Duration::seconds(1);
        let cached = cache.get("h", early).expect("cached");
        assert!(!cached.refresh, "too early to refresh");

        let late = now + Duration::seconds(AUTH_CACHE_TTL_SECS) - Duration::milliseconds(100);
        let first = cache.get("h", late).expect("cached");
        assert!(first.refresh, "the first use in the last moments refreshes");
        let second = cache.get("h", late).expect("cached");
        assert!(!second.refresh, "one refresh at a time");

        // The refresh's lookup gives the entry a whole life from its own time.
        cache.load("h", late, lookup).await.expect("lookup");
        let after = now + Duration::seconds(AUTH_CACHE_TTL_SECS) + Duration::seconds(1);
        let refreshed = cache.get("h", after).expect("cached after the first life");
        assert!(!refreshed.refresh);
    }

    #[tokio::test]
    async fn entry_ending_with_its_key_not_refreshed() {
        let cache = AuthCache::default();
        let now = Utc::now();
        let mut expiring = key(now);
        expiring.key.expires_at = Some(now + Duration::seconds(2));
        let lookup = || async { Ok(Some(expiring.clone())) };
        cache.load("h", now, lookup).await.expect("lookup");

        let late = now + Duration::seconds(2) - Duration::milliseconds(100);
        let cached = cache.get("h", late).expect("cached");
        assert!(!cached.refresh, "a lookup would not extend the entry");
    }

    #[tokio::test]
    async fn failed_lookup_waiters_retry() {
        let cache = AuthCache::default();
        let now = Utc::now();
        let found = key(now);
        let lookups = AtomicUsize::new(0);
        let release = tokio::sync::Notify::new();
        let lookup = || async {
            if lookups.fetch_add(1, Ordering::SeqCst) == 0 {
                release.notified().await;
                return Err(StoreError::Corrupt("store down".to_owned()));
            }
            Ok(Some(found.clone()))
        };

        let first = cache.load("h", now, lookup);
        let second = cache.load("h", now, lookup);
        let (first, second, ()) = tokio::join!(first, second, release_after_one_turn(&release));

        assert!(first.is_err(), "the failed lookup's own error");
        assert!(
            second.expect("own lookup").is_some(),
            "the waiter's own lookup"
        );
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
        assert_eq!(in_flight(&cache), 0, "lookups left in flight");
    }

    #[tokio::test]
    async fn cancelled_lookup_leaves_nothing_in_flight() {
        let cache = AuthCache::default();
        let now = Utc::now();
        let lookups = AtomicUsize::new(0);
        let lookup = || {
            lookups.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Option<AuthenticatedKey>, StoreError>>()
        };

        let load = cache.load("h", now, lookup);
        let cancelled = tokio::time::timeout(std::time::Duration::ZERO, load).await;

        assert!(
            cancelled.is_err(),
            "the lookup never ends, so the load is cancelled"
        );
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "the lookup started");
        assert_eq!(in_flight(&cache), 0, "lookups left in flight");
    }

    #[tokio::test]
    async fn eviction_during_lookup_skips_caching() {
        let cache = AuthCache::default();
        let now = Utc::now();
        let found = key(now);
        let key_id = found.key.id;
        let lookup = || async {
            // The key changes while its old state is being read.
            cache.forget_key(key_id);
            Ok(Some(found.clone()))
        };

        let result = cache.load("h", now, lookup).await.expect("lookup");

        assert!(result.is_some(), "the request itself is answered");
        assert!(
            cache.get("h", now).is_none(),
            "the stale read is not cached"
        );
    }
}

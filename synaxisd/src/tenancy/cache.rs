//! The in-process cache of key lookups. An entry lives at most [`AUTH_CACHE_TTL_SECS`], and
//! never past its key's expiry or the end of a rotated secret's grace. The process that changes
//! a key, user, team or org evicts the entries it affects at once; other processes see the
//! change when their entries expire, or sooner when the key directory's events tell them.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::counter::Counter;
use synaxis_shared::{KeyId, OrgId, TeamId, UserId};

use crate::directory::DirectorySelector;
use crate::store::AuthenticatedKey;

/// Maximum life of a cached lookup, in seconds. It is also the maximum time another process
/// may still accept a key after it was revoked.
pub const AUTH_CACHE_TTL_SECS: i64 = 5;

/// Entries kept at most; past it the cache is emptied, which costs only lookups.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    key: AuthenticatedKey,
    valid_until: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, Entry>>,
    hits: Counter,
    misses: Counter,
    /// Receives every change that this process makes, for the key directory.
    changes: Option<tokio::sync::mpsc::UnboundedSender<DirectorySelector>>,
}

impl AuthCache {
    /// Creates a cache that counts its hits and misses into these counters.
    pub fn new(hits: Counter, misses: Counter) -> Self {
        Self {
            entries: Mutex::default(),
            hits,
            misses,
            changes: None,
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

    /// Returns the cached key for `hash` when its entry is still valid at `now`.
    pub fn get(&self, hash: &str, now: DateTime<Utc>) -> Option<AuthenticatedKey> {
        let entries = self.lock();
        let found = entries
            .get(hash)
            .filter(|entry| now < entry.valid_until)
            .map(|entry| entry.key.clone());
        drop(entries);

        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.inc();
        found
    }

    pub fn insert(&self, hash: String, key: AuthenticatedKey, now: DateTime<Utc>) {
        let mut valid_until = now + Duration::seconds(AUTH_CACHE_TTL_SECS);
        for limit in [key.key.expires_at, key.key.previous_secret_expires_at]
            .into_iter()
            .flatten()
        {
            valid_until = valid_until.min(limit);
        }

        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, Entry { key, valid_until });
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
        self.lock().retain(|_, entry| !matches(&entry.key));
    }

    /// Lookups served from the cache since start.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Lookups that went to the store since start.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are plain values, so a panic elsewhere cannot leave them half-written.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

//! The audit log: an append-only chain in which each entry carries the hash of the previous
//! one, and a head (sequence and hash) kept apart from the entries. Changing an entry breaks
//! its hash; deleting entries leaves a gap or a head that points past the last entry.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use synaxis_shared::api::{ActorKind, AuditEntry, AuditResult, AuditVerification, BrokenEntry};
use synaxis_shared::{OrgId, RegionId};
use uuid::Uuid;

use crate::store::{AuditFilter, Store};
use crate::tenancy::rbac::{Action, Actor, Target};
use crate::tenancy::{Caller, TenancyError, check};

/// Entries read per page when listing or verifying.
const PAGE_SIZE: i64 = 1000;

/// `prev_hash` of the first entry, and the head's hash of an empty chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit entry before it joins the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    pub id: Uuid,
    /// Truncated to microseconds, the precision both databases store, so that the hash of a
    /// stored entry can be computed again.
    pub at: DateTime<Utc>,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    pub org_id: Option<OrgId>,
    pub source_ip: Option<String>,
    pub region: RegionId,
    pub result: AuditResult,
    pub justification: Option<String>,
}

/// The newest entry's sequence number and hash, as recorded apart from the entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

impl AuditDraft {
    pub fn new(at: DateTime<Utc>, region: RegionId) -> Self {
        Self {
            id: Uuid::new_v4(),
            at: at.trunc_subsecs(6),
            actor_kind: ActorKind::Operator,
            actor_id: "operator".to_owned(),
            action: String::new(),
            target_kind: String::new(),
            target_id: None,
            org_id: None,
            source_ip: None,
            region,
            result: AuditResult::Success,
            justification: None,
        }
    }

    /// Links the draft after the entry `seq - 1` whose hash is `prev_hash`.
    pub fn seal(&self, seq: i64, prev_hash: &str) -> AuditEntry {
        let mut entry = AuditEntry {
            seq,
            id: self.id,
            at: self.at,
            actor_kind: self.actor_kind,
            actor_id: self.actor_id.clone(),
            action: self.action.clone(),
            target_kind: self.target_kind.clone(),
            target_id: self.target_id.clone(),
            org_id: self.org_id,
            source_ip: self.source_ip.clone(),
            region: self.region.clone(),
            result: self.result,
            justification: self.justification.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        entry.hash = entry_hash(&entry);
        entry
    }
}

/// Computes the SHA-256, in lowercase hex, of an entry's fields and its `prev_hash`, encoded as
/// a JSON array in a fixed order. The entry's own `hash` field is not part of it.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let fields = (
        entry.seq,
        entry.id,
        entry
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        entry.actor_kind.as_str(),
        &entry.actor_id,
        &entry.action,
        &entry.target_kind,
        &entry.target_id,
        entry.org_id,
        &entry.source_ip,
        entry.region.as_str(),
        entry.result.as_str(),
        &entry.justification,
        &entry.prev_hash,
    );
    // Serializing strings, numbers and options to a JSON array cannot fail.
    let encoded = serde_json::to_vec(&fields).unwrap_or_default();
    hex::encode(Sha256::digest(&encoded))
}

/// Checks a chain page by page. Feed it every entry in sequence order, then call
/// [`ChainVerifier::finish`] with the head.
#[derive(Debug)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
    checked: u64,
    broken: Option<BrokenEntry>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            checked: 0,
            broken: None,
        }
    }
}

impl ChainVerifier {
    /// Returns false once a broken entry is found, so that callers can stop reading.
    pub fn push(&mut self, entry: &AuditEntry) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let expected_seq = self.last_seq + 1;
        let reason = if entry.seq != expected_seq {
            Some(format!(
                "entry {expected_seq} is missing: the entry after {} is {}",
                self.last_seq, entry.seq
            ))
        } else if entry.prev_hash != self.last_hash {
            Some(format!(
                "entry {} does not link to entry {}: its prev_hash differs from that entry's hash",
                entry.seq, self.last_seq
            ))
        } else if entry_hash(entry) != entry.hash {
            Some(format!(
                "entry {} was modified: its hash does not match its contents",
                entry.seq
            ))
        } else {
            None
        };

        if let Some(reason) = reason {
            self.broken = Some(BrokenEntry {
                seq: entry.seq.min(expected_seq),
                reason,
            });
            return false;
        }
        self.last_seq = entry.seq;
        self.last_hash = entry.hash.clone();
        self.checked += 1;
        true
    }

    pub fn finish(mut self, head: &AuditHead) -> AuditVerification {
        if self.broken.is_none() {
            if head.seq > self.last_seq {
                self.broken = Some(BrokenEntry {
                    seq: self.last_seq + 1,
                    reason: format!(
                        "entries {} to {} are missing: the head records entry {} but the log ends at {}",
                        self.last_seq + 1,
                        head.seq,
                        head.seq,
                        self.last_seq
                    ),
                });
            } else if head.seq < self.last_seq || head.hash != self.last_hash {
                self.broken = Some(BrokenEntry {
                    seq: self.last_seq,
                    reason: format!(
                        "entry {} does not match the head (entry {} with another hash)",
                        self.last_seq, head.seq
                    ),
                });
            }
        }
        AuditVerification {
            valid: self.broken.is_none(),
            entries_checked: self.checked,
            head_seq: head.seq,
            first_broken: self.broken,
        }
    }
}

/// Reading and checking the audit log, with role-based access.
#[derive(Clone, Debug)]
pub struct AuditLog {
    store: Arc<dyn Store>,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Lists entries after `after_seq` in sequence order: any org's for the operator, the
    /// caller's own org's for a member.
    pub async fn list(
        &self,
        caller: &Caller,
        org_id: Option<OrgId>,
        after_seq: i64,
        limit: Option<i64>,
    ) -> Result<Vec<AuditEntry>, TenancyError> {
        let org_id = match &caller.actor {
            Actor::Operator | Actor::Signup => org_id,
            Actor::Member(member) => Some(org_id.unwrap_or(member.org_id)),
        };
        let target = Target {
            org_id,
            named: (
                "organization",
                org_id.map(|id| id.to_string()).unwrap_or_default(),
            ),
            ..Target::default()
        };
        check(&caller.actor, Action::AuditRead, &target)?;

        let filter = AuditFilter {
            org_id,
            after_seq,
            limit: limit.unwrap_or(100).clamp(1, PAGE_SIZE),
        };
        Ok(self.store.list_audit(&filter).await?)
    }

    /// Checks the whole chain, up to the head read at the start, page by page.
    pub async fn verify(&self, caller: &Caller) -> Result<AuditVerification, TenancyError> {
        check(&caller.actor, Action::AuditVerify, &Target::default())?;

        let head = self.store.audit_head().await?;
        let mut verifier = ChainVerifier::default();
        let mut after_seq = 0;
        'pages: loop {
            let filter = AuditFilter {
                org_id: None,
                after_seq,
                limit: PAGE_SIZE,
            };
            let page = self.store.list_audit(&filter).await?;
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            for entry in &page {
                // Entries appended after the head was read are checked by a later run.
                if entry.seq > head.seq || !verifier.push(entry) {
                    break 'pages;
                }
            }
        }
        Ok(verifier.finish(&head))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn chain(length: i64) -> (Vec<AuditEntry>, AuditHead) {
        let region: RegionId = "us-east-1".parse().expect("region id");
        let start = Utc
            .with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
            .single()
            .expect("time");
        let mut entries: Vec<AuditEntry> = Vec::new();
        for seq in 1..=length {
            let mut draft = AuditDraft::new(start + chrono::Duration::seconds(seq), region.clone());
            draft.action = "key.create".to_owned();
            draft.target_kind = "key".to_owned();
            let prev = entries
                .last()
                .map_or(GENESIS_HASH, |entry| entry.hash.as_str());
            entries.push(draft.seal(seq, prev));
        }
        let head = AuditHead {
            seq: length,
            hash: entries
                .last()
                .map_or(GENESIS_HASH.to_owned(), |entry| entry.hash.clone()),
        };
        (entries, head)
    }

    fn verify(entries: &[AuditEntry], head: &AuditHead) -> AuditVerification {
        let mut verifier = ChainVerifier::default();
        for entry in entries {
            if !verifier.push(entry) {
                break;
            }
        }
        verifier.finish(head)
    }

    #[test]
    fn intact_chain_verifies() {
        let (entries, head) = chain(5);
        let result = verify(&entries, &head);
        assert!(result.valid, "{result:?}");
        assert_eq!(result.entries_checked, 5);
    }

    #[test]
    fn empty_chain_verifies() {
        let (entries, head) = chain(0);
        assert!(verify(&entries, &head).valid);
    }

    #[test]
    fn modified_entry_is_named() {
        let (mut entries, head) = chain(5);
        entries[2].action = "key.revoke".to_owned();
        let broken = verify(&entries, &head).first_broken.expect("broken");
        assert_eq!(broken.seq, 3);
        assert!(broken.reason.contains("modified"), "{}", broken.reason);
    }

    #[test]
    fn rehashed_entry_breaks_the_link() {
        let (mut entries, head) = chain(5);
        entries[2].action = "key.revoke".to_owned();
        entries[2].hash = entry_hash(&entries[2]);
        let broken = verify(&entries, &head).first_broken.expect("broken");
        assert_eq!(broken.seq, 4);
    }

    #[test]
    fn deleted_middle_entry_is_named() {
        let (mut entries, head) = chain(5);
        entries.remove(1);
        let broken = verify(&entries, &head).first_broken.expect("broken");
        assert_eq!(broken.seq, 2);
    }

    #[test]
    fn deleted_newest_entries_are_detected() {
        let (mut entries, head) = chain(5);
        entries.truncate(3);
        let result = verify(&entries, &head);
        let broken = result.first_broken.expect("broken");
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("missing"), "{}", broken.reason);
    }
}

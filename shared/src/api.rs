//! Request and response bodies of the control API (`/control/v1/...`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;
use crate::plans::Overrides;
use crate::{KeyId, Locale, OrgId, RegionId, Role, TeamId, UserId};

/// A list response: `{"data": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// Header that carries the written reason for a control call; it is kept in the audit log.
pub const JUSTIFICATION_HEADER: &str = "x-synaxis-justification";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgRequest {
    pub name: String,
    /// Unique short name; derived from `name` when absent.
    #[serde(default)]
    pub slug: Option<String>,
    /// The plan to join, at its newest version; the configured default plan when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// A partial update: absent fields keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrgRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Models every key of the org may call, by exact name or glob; empty allows all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    /// The currency of the org's invoices; the plan's `billing_currencies` lists those allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_currency: Option<Currency>,
    /// A transfer mechanism for all the org's users, or `none`; operator only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_mechanism: Option<crate::compliance::TransferMechanismChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub primary_region: RegionId,
    pub allowed_models: Vec<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    /// The plan's id in the plan catalog, such as `free`.
    pub plan: String,
    /// The plan version the org is on until it is migrated.
    pub plan_version: u32,
    /// Per-field values that replace the plan's.
    #[serde(default, skip_serializing_if = "Overrides::is_empty")]
    pub plan_overrides: Overrides,
    /// The currency of the org's invoices.
    #[serde(default = "Currency::base")]
    pub billing_currency: Currency,
    /// The end of the org's trial of its plan, for an org that signed up by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// The transfer mechanism an operator recorded for all the org's users, which allows
    /// processing them in another jurisdiction without their own consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_mechanism: Option<crate::compliance::OrgTransferMechanism>,
}

/// The body of `POST /control/v1/signup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The email of the org's owner.
    pub email: String,
    pub org_name: String,
    /// The region to sign up in; the client's country picks it when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
}

/// Response to a signup: the new org, its owner, and the owner's management key, whose
/// secret is shown only here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignupResponse {
    pub org: Org,
    pub user: User,
    pub key: Key,
    pub secret: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTeamRequest {
    pub org_id: OrgId,
    pub name: String,
    /// Models the team's keys may call, by exact name or glob; empty allows all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
}

/// A partial update: absent fields keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeamRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: TeamId,
    pub org_id: OrgId,
    pub name: String,
    pub allowed_models: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// When the team was suspended for being past its org plan's cap on teams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub org_id: OrgId,
    pub email: String,
    #[serde(default = "default_role")]
    pub role: Role,
    #[serde(default)]
    pub team_id: Option<TeamId>,
    #[serde(default)]
    pub locale: Locale,
}

fn default_role() -> Role {
    Role::Developer
}

/// A partial update: absent fields keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub org_id: OrgId,
    pub team_id: Option<TeamId>,
    pub email: String,
    pub role: Role,
    pub locale: Locale,
    pub data_residency_region: RegionId,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// The API a key may call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// The inference API (`/v1/...`).
    #[default]
    Inference,
    /// The control API, with the permissions of the key's user.
    Management,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inference => "inference",
            Self::Management => "management",
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inference" => Ok(Self::Inference),
            "management" => Ok(Self::Management),
            other => Err(format!(
                "invalid key scope `{other}`: use `inference` or `management`"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub user_id: UserId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scope: KeyScope,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Public model names or globs (`gpt-4o*`) the key may call; empty means every model that
    /// the key's team and org allow.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Requests per minute that the key may make, from 1 to 2^53 - 1; absent for no key limit.
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute that the key may use, from 1 to 2^53 - 1; absent for no key limit.
    #[serde(default)]
    pub tpm_limit: Option<u64>,
}

/// A partial update: absent fields keep their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Absent keeps the key's requests-per-minute limit, a number sets it, `null` removes it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rpm_limit: Option<Option<u64>>,
    /// Absent keeps the key's tokens-per-minute limit, a number sets it, `null` removes it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub tpm_limit: Option<Option<u64>>,
}

/// Deserializes a field that is present, so that `null` becomes `Some(None)` and only an absent
/// field (through `#[serde(default)]`) becomes `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// Seconds during which the previous secret keeps working; 0 ends it at once.
    #[serde(default)]
    pub grace_seconds: u64,
}

/// A virtual key as the API shows it: never its secret or the secret's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub id: KeyId,
    pub org_id: OrgId,
    pub user_id: UserId,
    pub name: String,
    pub scope: KeyScope,
    /// The home region named by the key's visible prefix.
    pub region: RegionId,
    pub allowed_models: Vec<String>,
    /// Requests per minute (sliding window, throttled) that the key may make; `None` for none.
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute (sliding window, throttled), input and output together.
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    /// End of the grace period of the secret replaced by the last rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The response to key creation or rotation, the only place where a secret ever appears.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub key: Key,
    pub secret: String,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The kind of actor of an audited action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// The holder of the operator token; the entry's actor id is `operator`.
    Operator,
    /// A user through a management key; the entry's actor id is the user's id.
    User,
    /// A self-service signup; the entry's actor id is `signup`.
    Signup,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::User => "user",
            Self::Signup => "signup",
        }
    }
}

/// The outcome of an audited action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Success,
    /// Rejected by role-based access control.
    Denied,
    /// Attempted and failed (invalid input, conflict, not found).
    Failure,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }
}

/// One entry of the hash-chained audit log. It contains ids, never emails, names or secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    /// Dotted action name such as `key.rotate`.
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    pub org_id: Option<OrgId>,
    pub source_ip: Option<String>,
    pub region: RegionId,
    pub result: AuditResult,
    pub justification: Option<String>,
    /// Hash of the previous entry; 64 zeros for the first.
    pub prev_hash: String,
    /// SHA-256 of this entry's fields and `prev_hash`, in lowercase hex.
    pub hash: String,
}

/// The result of checking the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    pub valid: bool,
    pub entries_checked: u64,
    /// Sequence number recorded as the chain's head.
    pub head_seq: i64,
    pub first_broken: Option<BrokenEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenEntry {
    pub seq: i64,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_key_limits_tell_absent_from_null() -> Result<(), serde_json::Error> {
        let absent: UpdateKeyRequest = serde_json::from_str("{}")?;
        assert_eq!(absent.rpm_limit, None);
        let cleared: UpdateKeyRequest = serde_json::from_str(r#"{"rpm_limit": null}"#)?;
        assert_eq!(cleared.rpm_limit, Some(None));
        assert_eq!(cleared.tpm_limit, None);
        let set: UpdateKeyRequest = serde_json::from_str(r#"{"tpm_limit": 5000}"#)?;
        assert_eq!(set.tpm_limit, Some(Some(5000)));

        for request in [absent, cleared, set] {
            let json = serde_json::to_string(&request)?;
            let back: UpdateKeyRequest = serde_json::from_str(&json)?;
            assert_eq!(back, request, "{json}");
        }
        Ok(())
    }
}

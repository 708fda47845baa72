//! Row types shared by both databases, and their conversion into API types.

use chrono::{DateTime, Utc};
use synaxis_shared::api::{ActorKind, AuditEntry, AuditResult, Key, KeyScope, Org, Team, User};
use synaxis_shared::budgets::{Budget, BudgetRef, BudgetScope, from_micros};
use synaxis_shared::credits::CreditEntry;
use synaxis_shared::invoices::{FxRate, Invoice, InvoiceLine};
use synaxis_shared::limits::LimitSet;
use synaxis_shared::plans::Overrides;
use uuid::Uuid;

use super::types::{ModelList, Money};
use super::{AuthenticatedKey, KeyLimits, OrgPlan, RequestRecord, StoreError, parse_region};
use crate::directory::{DirectoryEntry, KeyState};
use synaxis_shared::compliance::{ConsentFlags, ConsentRecord, ConsentSource, TransferRecord};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("invalid {what} `{value}`"))
}

/// Reads the JSON text of a limit set from `column`, such as `users.limits`; NULL is the empty
/// set.
pub(crate) fn parse_limits(column: &str, value: Option<&str>) -> Result<LimitSet, StoreError> {
    let Some(text) = value else {
        return Ok(LimitSet::default());
    };
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("invalid limit set in `{column}`: {error}")))
}

/// Writes a limit set as JSON text, or NULL when it is empty.
pub(crate) fn encode_limits(limits: &LimitSet) -> Option<String> {
    if limits.is_empty() {
        return None;
    }
    let text = serde_json::to_string(limits)
        .unwrap_or_else(|_| unreachable!("a limit set holds only structs, integers and enums"));
    Some(text)
}

/// Reads a per-minute limit of `api_keys.{column}`, which the schema keeps positive.
fn parse_key_limit(column: &str, value: Option<i64>) -> Result<Option<u64>, StoreError> {
    value
        .map(|limit| {
            u64::try_from(limit)
                .map_err(|_| corrupt(&format!("api_keys.{column}"), &limit.to_string()))
        })
        .transpose()
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrgRow {
    id: Uuid,
    slug: String,
    name: String,
    primary_region: String,
    allowed_models: ModelList,
    active: bool,
    created_at: DateTime<Utc>,
    plan: String,
    plan_version: i64,
    plan_overrides: Option<String>,
    billing_currency: String,
    trial_ends_at: Option<DateTime<Utc>>,
    transfer_mechanism: Option<String>,
}

impl TryFrom<OrgRow> for Org {
    type Error = StoreError;

    fn try_from(row: OrgRow) -> Result<Self, StoreError> {
        Ok(Org {
            id: row.id.into(),
            slug: row.slug,
            name: row.name,
            primary_region: parse_region(row.primary_region)?,
            allowed_models: row.allowed_models.0,
            active: row.active,
            created_at: row.created_at,
            plan: row.plan,
            plan_version: u32::try_from(row.plan_version).map_err(|_| {
                corrupt("organizations.plan_version", &row.plan_version.to_string())
            })?,
            plan_overrides: parse_overrides(row.plan_overrides.as_deref())?,
            billing_currency: row
                .billing_currency
                .parse()
                .map_err(|_| corrupt("organizations.billing_currency", &row.billing_currency))?,
            trial_ends_at: row.trial_ends_at,
            transfer_mechanism: row
                .transfer_mechanism
                .as_deref()
                .map(|text| {
                    text.parse()
                        .map_err(|_| corrupt("organizations.transfer_mechanism", text))
                })
                .transpose()?,
        })
    }
}

/// Reads the JSON text of `organizations.plan_overrides`; NULL is no override.
fn parse_overrides(value: Option<&str>) -> Result<Overrides, StoreError> {
    let Some(text) = value else {
        return Ok(Overrides::default());
    };
    serde_json::from_str(text).map_err(|error| {
        StoreError::Corrupt(format!(
            "invalid overrides in `organizations.plan_overrides`: {error}"
        ))
    })
}

/// Writes plan overrides as JSON text, or NULL when there are none.
pub(crate) fn encode_overrides(overrides: &Overrides) -> Option<String> {
    if overrides.is_empty() {
        return None;
    }
    let text = serde_json::to_string(overrides)
        .unwrap_or_else(|_| unreachable!("overrides hold only numbers, strings and booleans"));
    Some(text)
}

#[derive(sqlx::FromRow)]
pub(crate) struct TeamRow {
    id: Uuid,
    org_id: Uuid,
    name: String,
    allowed_models: ModelList,
    created_at: DateTime<Utc>,
    suspended_at: Option<DateTime<Utc>>,
}

impl TryFrom<TeamRow> for Team {
    type Error = StoreError;

    fn try_from(row: TeamRow) -> Result<Self, StoreError> {
        Ok(Team {
            id: row.id.into(),
            org_id: row.org_id.into(),
            name: row.name,
            allowed_models: row.allowed_models.0,
            created_at: row.created_at,
            suspended_at: row.suspended_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    org_id: Uuid,
    team_id: Option<Uuid>,
    email: String,
    role: String,
    locale: String,
    data_residency_region: String,
    active: bool,
    created_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: row.id.into(),
            org_id: row.org_id.into(),
            team_id: row.team_id.map(Into::into),
            email: row.email,
            role: row.role.parse().map_err(|_| corrupt("role", &row.role))?,
            locale: row
                .locale
                .parse()
                .map_err(|_| corrupt("locale", &row.locale))?,
            data_residency_region: parse_region(row.data_residency_region)?,
            active: row.active,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: Uuid,
    org_id: Uuid,
    user_id: Uuid,
    name: String,
    scope: String,
    region: String,
    allowed_models: ModelList,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    active: bool,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    rotated_at: Option<DateTime<Utc>>,
    previous_key_expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for Key {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        Ok(Key {
            id: row.id.into(),
            org_id: row.org_id.into(),
            user_id: row.user_id.into(),
            name: row.name,
            scope: row
                .scope
                .parse::<KeyScope>()
                .map_err(|_| corrupt("key scope", &row.scope))?,
            region: parse_region(row.region)?,
            allowed_models: row.allowed_models.0,
            rpm_limit: parse_key_limit("rpm_limit", row.rpm_limit)?,
            tpm_limit: parse_key_limit("tpm_limit", row.tpm_limit)?,
            active: row.active,
            expires_at: row.expires_at,
            created_at: row.created_at,
            rotated_at: row.rotated_at,
            previous_secret_expires_at: row.previous_key_expires_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// A key joined with what authentication, model access and limits need from its user, team
/// and org.
#[derive(sqlx::FromRow)]
pub(crate) struct AuthRow {
    #[sqlx(flatten)]
    key: KeyRow,
    user_role: String,
    user_team_id: Option<Uuid>,
    user_locale: String,
    user_limits: Option<String>,
    team_allowed_models: Option<ModelList>,
    team_limits: Option<String>,
    org_allowed_models: ModelList,
    org_limits: Option<String>,
    org_plan: String,
    org_plan_version: i64,
    org_plan_overrides: Option<String>,
    key_budget: bool,
    team_budget: bool,
    org_budget: bool,
}

/// A key's authentication join with the facts its directory entry adds.
#[derive(sqlx::FromRow)]
pub(crate) struct DirectoryRow {
    #[sqlx(flatten)]
    auth: AuthRow,
    key_hash: String,
    previous_key_hash: Option<String>,
    user_active: bool,
    org_active: bool,
    consent_granted: Option<bool>,
    consent_regions: Option<String>,
    org_transfer_mechanism: Option<String>,
}

impl DirectoryRow {
    pub(crate) fn into_entry(self, version: i64) -> Result<DirectoryEntry, StoreError> {
        let state = KeyState {
            key_hash: self.key_hash,
            previous_key_hash: self.previous_key_hash,
            user_active: self.user_active,
            org_active: self.org_active,
        };
        let consent = ConsentFlags {
            cross_border_failover: self.consent_granted.unwrap_or(false),
            regions: parse_consent_regions(self.consent_regions.as_deref())?,
        };
        let mut entry = DirectoryEntry::new(self.auth.try_into()?, state, version);
        entry.consent = consent;
        entry.org_transfer_mechanism = self
            .org_transfer_mechanism
            .as_deref()
            .map(|text| {
                text.parse()
                    .map_err(|_| corrupt("organizations.transfer_mechanism", text))
            })
            .transpose()?;
        Ok(entry)
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ConsentRow {
    user_id: Uuid,
    scope: String,
    version: i64,
    granted: bool,
    regions: String,
    source: String,
    recorded_at: DateTime<Utc>,
}

impl TryFrom<ConsentRow> for ConsentRecord {
    type Error = StoreError;

    fn try_from(row: ConsentRow) -> Result<Self, StoreError> {
        Ok(ConsentRecord {
            user_id: row.user_id.into(),
            scope: row
                .scope
                .parse()
                .map_err(|_| corrupt("consents.scope", &row.scope))?,
            version: u32::try_from(row.version)
                .map_err(|_| corrupt("consents.version", &row.version.to_string()))?,
            granted: row.granted,
            regions: serde_json::from_str(&row.regions)
                .map_err(|_| corrupt("consents.regions", &row.regions))?,
            source: match row.source.as_str() {
                "user" => ConsentSource::User,
                "operator" => ConsentSource::Operator,
                other => return Err(corrupt("consents.source", other)),
            },
            recorded_at: row.recorded_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TransferRow {
    id: Uuid,
    request_id: String,
    user_id: Uuid,
    org_id: Uuid,
    from_region: String,
    to_region: String,
    regulation: String,
    legal_basis: String,
    citation: String,
    at: DateTime<Utc>,
}

impl TryFrom<TransferRow> for TransferRecord {
    type Error = StoreError;

    fn try_from(row: TransferRow) -> Result<Self, StoreError> {
        Ok(TransferRecord {
            id: row.id,
            request_id: row.request_id,
            user_id: row.user_id.into(),
            org_id: row.org_id.into(),
            from_region: parse_region(row.from_region)?,
            to_region: parse_region(row.to_region)?,
            regulation: row.regulation,
            legal_basis: serde_json::from_str(&row.legal_basis)
                .map_err(|_| corrupt("transfers.legal_basis", &row.legal_basis))?,
            citation: row.citation,
            at: row.at,
        })
    }
}

/// Parses the regions of a consent record, as the key directory query returns them.
pub(crate) fn parse_consent_regions(
    text: Option<&str>,
) -> Result<Vec<synaxis_shared::RegionId>, StoreError> {
    text.map_or(Ok(Vec::new()), |text| {
        serde_json::from_str(text).map_err(|_| corrupt("consents.regions", text))
    })
}

/// Parses a replica entry stored in `key_directory.entry`.
pub(crate) fn parse_directory_entry(text: &str) -> Result<DirectoryEntry, StoreError> {
    serde_json::from_str(text).map_err(|error| {
        StoreError::Corrupt(format!("invalid entry in `key_directory.entry`: {error}"))
    })
}

impl TryFrom<AuthRow> for AuthenticatedKey {
    type Error = StoreError;

    fn try_from(row: AuthRow) -> Result<Self, StoreError> {
        let budgets = [
            (row.key_budget, BudgetScope::Key, Some(row.key.id)),
            (row.team_budget, BudgetScope::Team, row.user_team_id),
            (row.org_budget, BudgetScope::Org, Some(row.key.org_id)),
        ]
        .into_iter()
        .filter_map(|(exists, scope, id)| Some(BudgetRef { scope, id: id? }).filter(|_| exists))
        .collect();
        Ok(AuthenticatedKey {
            key: row.key.try_into()?,
            role: row
                .user_role
                .parse()
                .map_err(|_| corrupt("role", &row.user_role))?,
            team_id: row.user_team_id.map(Into::into),
            locale: row
                .user_locale
                .parse()
                .map_err(|_| corrupt("locale", &row.user_locale))?,
            team_allowed_models: row
                .team_allowed_models
                .map(|models| models.0)
                .unwrap_or_default(),
            org_allowed_models: row.org_allowed_models.0,
            limits: KeyLimits {
                user: parse_limits("users.limits", row.user_limits.as_deref())?,
                team: parse_limits("teams.limits", row.team_limits.as_deref())?,
                org: parse_limits("organizations.limits", row.org_limits.as_deref())?,
            },
            org_plan: OrgPlan {
                plan: row.org_plan,
                version: u32::try_from(row.org_plan_version).map_err(|_| {
                    corrupt(
                        "organizations.plan_version",
                        &row.org_plan_version.to_string(),
                    )
                })?,
                overrides: parse_overrides(row.org_plan_overrides.as_deref())?,
            },
            budgets,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CreditRow {
    org_id: Uuid,
    seq: i64,
    kind: String,
    amount_usd: Money,
    balance_usd: Money,
    reference: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<CreditRow> for CreditEntry {
    type Error = StoreError;

    fn try_from(row: CreditRow) -> Result<Self, StoreError> {
        Ok(CreditEntry {
            org_id: row.org_id.into(),
            seq: u64::try_from(row.seq)
                .map_err(|_| corrupt("credit_ledger.seq", &row.seq.to_string()))?,
            kind: row
                .kind
                .parse()
                .map_err(|_| corrupt("credit_ledger.kind", &row.kind))?,
            amount_usd: row.amount_usd.0,
            balance_usd: row.balance_usd.0,
            reference: row.reference,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RequestRow {
    id: Uuid,
    stored_region: String,
    request_id: String,
    org_id: Uuid,
    user_id: Uuid,
    key_id: Uuid,
    endpoint: String,
    model: String,
    stream: bool,
    status_code: i32,
    error_code: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: Money,
    started_at: DateTime<Utc>,
    duration_ms: i64,
}

impl TryFrom<RequestRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> Result<Self, StoreError> {
        Ok(RequestRecord {
            id: row.id.into(),
            stored_region: parse_region(row.stored_region)?,
            request_id: row.request_id,
            org_id: row.org_id.into(),
            user_id: row.user_id.into(),
            key_id: row.key_id.into(),
            endpoint: row.endpoint,
            model: row.model,
            stream: row.stream,
            status_code: u16::try_from(row.status_code)
                .map_err(|_| corrupt("status code", &row.status_code.to_string()))?,
            error_code: row.error_code,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            cost_usd: row.cost_usd.0,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    id: Uuid,
    at: DateTime<Utc>,
    actor_kind: String,
    actor_id: String,
    action: String,
    target_kind: String,
    target_id: Option<String>,
    org_id: Option<Uuid>,
    source_ip: Option<String>,
    region: String,
    result: String,
    justification: Option<String>,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        let actor_kind = match row.actor_kind.as_str() {
            "operator" => ActorKind::Operator,
            "user" => ActorKind::User,
            "signup" => ActorKind::Signup,
            other => return Err(corrupt("actor kind", other)),
        };
        let result = match row.result.as_str() {
            "success" => AuditResult::Success,
            "denied" => AuditResult::Denied,
            "failure" => AuditResult::Failure,
            other => return Err(corrupt("audit result", other)),
        };
        Ok(AuditEntry {
            seq: row.seq,
            id: row.id,
            at: row.at,
            actor_kind,
            actor_id: row.actor_id,
            action: row.action,
            target_kind: row.target_kind,
            target_id: row.target_id,
            org_id: row.org_id.map(Into::into),
            source_ip: row.source_ip,
            region: parse_region(row.region)?,
            result,
            justification: row.justification,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

/// Converts every row, failing on the first that does not convert.
pub(crate) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub(crate) struct BudgetRow {
    scope: String,
    scope_id: Uuid,
    org_id: Uuid,
    max_micros: i64,
    spent_micros: i64,
    reserved_micros: i64,
    updated_at: DateTime<Utc>,
}

impl TryFrom<BudgetRow> for Budget {
    type Error = StoreError;

    fn try_from(row: BudgetRow) -> Result<Self, StoreError> {
        let remaining = row
            .max_micros
            .saturating_sub(row.spent_micros)
            .saturating_sub(row.reserved_micros)
            .max(0);
        Ok(Budget {
            scope: row
                .scope
                .parse()
                .map_err(|_| corrupt("budgets.scope", &row.scope))?,
            id: row.scope_id,
            org_id: row.org_id.into(),
            max_usd: from_micros(row.max_micros),
            spent_usd: from_micros(row.spent_micros),
            reserved_usd: from_micros(row.reserved_micros),
            remaining_usd: from_micros(remaining),
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct FxRow {
    currency: String,
    rate: Money,
    effective_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl TryFrom<FxRow> for FxRate {
    type Error = StoreError;

    fn try_from(row: FxRow) -> Result<Self, StoreError> {
        Ok(FxRate {
            currency: row
                .currency
                .parse()
                .map_err(|_| corrupt("fx_rates.currency", &row.currency))?,
            rate: row.rate.0,
            effective_at: row.effective_at,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct InvoiceRow {
    pub(crate) id: Uuid,
    org_id: Uuid,
    period: String,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    currency: String,
    fx_rate: Money,
    fx_effective_at: Option<DateTime<Utc>>,
    total: Money,
    issued_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct InvoiceItemRow {
    kind: String,
    amount_usd: Money,
    amount: Money,
    charged: bool,
}

impl InvoiceRow {
    /// Joins the invoice with its lines, in position order.
    pub(crate) fn with_items(self, items: Vec<InvoiceItemRow>) -> Result<Invoice, StoreError> {
        let lines = items
            .into_iter()
            .map(|item| {
                Ok(InvoiceLine {
                    kind: item
                        .kind
                        .parse()
                        .map_err(|_| corrupt("invoice_items.kind", &item.kind))?,
                    amount_usd: item.amount_usd.0,
                    amount: item.amount.0,
                    charged: item.charged,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Invoice {
            id: self.id.into(),
            org_id: self.org_id.into(),
            period: self.period,
            period_start: self.period_start,
            period_end: self.period_end,
            currency: self
                .currency
                .parse()
                .map_err(|_| corrupt("invoices.currency", &self.currency))?,
            fx_rate: self.fx_rate.0,
            fx_effective_at: self.fx_effective_at,
            lines,
            total: self.total.0,
            issued_at: self.issued_at,
        })
    }
}

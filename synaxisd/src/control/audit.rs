//! Audit log routes.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use synaxis_shared::OrgId;
use synaxis_shared::api::{AuditEntry, AuditVerification, List};

use super::ControlCaller;
use super::extract::QueryParams;
use crate::http_error::ApiError;
use crate::server::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    org_id: Option<OrgId>,
    #[serde(default)]
    after_seq: i64,
    limit: Option<i64>,
}

/// Lists entries in sequence order: all of them for the operator, an org's for its owners and
/// admins.
pub async fn list(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<AuditEntry>>, ApiError> {
    let data = state
        .audit
        .list(&caller, query.org_id, query.after_seq, query.limit)
        .await?;
    Ok(Json(List { data }))
}

/// Checks the whole chain against its head; operator only.
pub async fn verify(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
) -> Result<Json<AuditVerification>, ApiError> {
    Ok(Json(state.audit.verify(&caller).await?))
}

//! Region status: this region's view of every region, and its peers' views; the residency
//! check of every region; failover drills.

use axum::Json;
use axum::extract::State;
use synaxis_shared::compliance::ResidencyCheck;
use synaxis_shared::region::{DrillReport, DrillRequest, RegionsStatus};

use super::ControlCaller;
use super::extract::JsonBody;
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::tenancy::rbac::{Action, Actor};
use synaxis_shared::api::AuditResult;

/// Returns every region's view of every region; operator only.
pub async fn status(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
) -> Result<Json<RegionsStatus>, ApiError> {
    if !matches!(caller.actor, Actor::Operator) {
        return Err(ApiError::PermissionDenied(
            "only the operator reads the status of regions".to_owned(),
        ));
    }
    Ok(Json(state.regions.status().await))
}

/// Returns every region's residency report; operator only.
pub async fn residency(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
) -> Result<Json<ResidencyCheck>, ApiError> {
    if !matches!(caller.actor, Actor::Operator) {
        return Err(ApiError::PermissionDenied(
            "only the operator runs the residency check".to_owned(),
        ));
    }
    Ok(Json(
        state
            .regions
            .residency(state.tenancy.store().as_ref())
            .await,
    ))
}

/// Runs a failover drill of a region and returns its report; operator only, with a
/// justification, which the drill's audit entries carry. The audit entry of the drill records
/// a failure when the drill could not run or found a problem.
pub async fn drill(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    JsonBody(request): JsonBody<DrillRequest>,
) -> Result<Json<DrillReport>, ApiError> {
    state
        .tenancy
        .authorize_operation(&caller, Action::FailoverDrill, "region")
        .await?;
    let Some(justification) = caller.justification.clone() else {
        return Err(ApiError::invalid(
            "justification",
            "a drill needs a justification: pass --justification TEXT (header x-synaxis-justification)",
        ));
    };
    // The drill runs in a task of its own, so that a client that goes away does not stop it
    // halfway, with a region drained and its audit entry unwritten.
    let drill_id = crate::region::drill::new_id(&request.region);
    let drill = tokio::spawn(async move {
        let report = crate::region::drill::run(&state, &request, &justification, &drill_id).await;
        let result = match &report {
            Ok(report) if report.passed() => AuditResult::Success,
            _ => AuditResult::Failure,
        };
        state
            .tenancy
            .record_operation(
                &caller,
                Action::FailoverDrill,
                ("failover_drill", drill_id.as_str()),
                result,
            )
            .await?;
        report
    });
    match drill.await {
        Ok(report) => report.map(Json),
        Err(error) => {
            tracing::error!(%error, "the failover drill task failed");
            Err(ApiError::Internal)
        }
    }
}

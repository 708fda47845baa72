//! Region status: this region's view of every region, and its peers' views.

use axum::Json;
use axum::extract::State;
use synaxis_shared::compliance::ResidencyCheck;
use synaxis_shared::region::RegionsStatus;

use super::ControlCaller;
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::tenancy::rbac::Actor;

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

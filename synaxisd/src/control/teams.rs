//! Team routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use synaxis_shared::api::{CreateTeamRequest, List, Team, UpdateTeamRequest};
use synaxis_shared::{OrgId, TeamId};

use super::ControlCaller;
use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;

pub async fn create(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    JsonBody(request): JsonBody<CreateTeamRequest>,
) -> Result<(StatusCode, Json<Team>), ApiError> {
    let team = state.tenancy.create_team(&caller, request).await?;

    tracing::info!(team.id = %team.id, org.id = %team.org_id, "team created");
    Ok((StatusCode::CREATED, Json(team)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    org_id: OrgId,
}

pub async fn list(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<List<Team>>, ApiError> {
    let data = state.tenancy.list_teams(&caller, query.org_id).await?;
    Ok(Json(List { data }))
}

pub async fn show(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(team): Path<String>,
) -> Result<Json<Team>, ApiError> {
    let id: TeamId = parse_id("team", &team)?;
    Ok(Json(state.tenancy.get_team(&caller, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(team): Path<String>,
    JsonBody(request): JsonBody<UpdateTeamRequest>,
) -> Result<Json<Team>, ApiError> {
    let id: TeamId = parse_id("team", &team)?;

    let team = state.tenancy.update_team(&caller, id, request).await?;

    tracing::info!(team.id = %team.id, "team updated");
    Ok(Json(team))
}

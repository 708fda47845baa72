//! Budget routes of keys, teams and organizations: `GET`, `PUT` and `DELETE` on
//! `.../{id}/budget`.

use axum::Json;
use axum::extract::{Path, State};
use synaxis_shared::budgets::{Budget, BudgetScope, SetBudgetRequest};

use super::ControlCaller;
use super::extract::{JsonBody, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::tenancy::Caller;
use crate::tenancy::budgets::BudgetOf;

/// Parses the budget owner's id from the path, which is a UUID for keys and teams and an id or
/// slug for organizations.
fn budget_of(scope: BudgetScope, id: &str) -> Result<BudgetOf<'_>, ApiError> {
    Ok(match scope {
        BudgetScope::Key => BudgetOf::Key(parse_id("key", id)?),
        BudgetScope::Team => BudgetOf::Team(parse_id("team", id)?),
        BudgetScope::Org => BudgetOf::Org(id),
    })
}

async fn show(
    state: AppState,
    caller: Caller,
    scope: BudgetScope,
    id: String,
) -> Result<Json<Budget>, ApiError> {
    let budget = state
        .tenancy
        .get_budget(&caller, budget_of(scope, &id)?)
        .await?;
    Ok(Json(budget))
}

async fn set(
    state: AppState,
    caller: Caller,
    scope: BudgetScope,
    id: String,
    request: SetBudgetRequest,
) -> Result<Json<Budget>, ApiError> {
    let budget = state
        .tenancy
        .set_budget(&caller, budget_of(scope, &id)?, request)
        .await?;

    tracing::info!(scope = %scope, id = %budget.id, max_usd = %budget.max_usd, "budget set");
    Ok(Json(budget))
}

async fn remove(
    state: AppState,
    caller: Caller,
    scope: BudgetScope,
    id: String,
) -> Result<Json<Budget>, ApiError> {
    let removed = state
        .tenancy
        .remove_budget(&caller, budget_of(scope, &id)?)
        .await?;

    tracing::info!(scope = %scope, id = %removed.id, "budget removed");
    Ok(Json(removed))
}

/// Defines the `GET`, `PUT` and `DELETE` handlers of one scope's budget route.
macro_rules! budget_handlers {
    ($show:ident, $set:ident, $remove:ident, $scope:expr) => {
        pub async fn $show(
            State(state): State<AppState>,
            ControlCaller(caller): ControlCaller,
            Path(id): Path<String>,
        ) -> Result<Json<Budget>, ApiError> {
            show(state, caller, $scope, id).await
        }

        pub async fn $set(
            State(state): State<AppState>,
            ControlCaller(caller): ControlCaller,
            Path(id): Path<String>,
            JsonBody(request): JsonBody<SetBudgetRequest>,
        ) -> Result<Json<Budget>, ApiError> {
            set(state, caller, $scope, id, request).await
        }

        pub async fn $remove(
            State(state): State<AppState>,
            ControlCaller(caller): ControlCaller,
            Path(id): Path<String>,
        ) -> Result<Json<Budget>, ApiError> {
            remove(state, caller, $scope, id).await
        }
    };
}

budget_handlers!(show_key, set_key, remove_key, BudgetScope::Key);
budget_handlers!(show_team, set_team, remove_team, BudgetScope::Team);
budget_handlers!(show_org, set_org, remove_org, BudgetScope::Org);

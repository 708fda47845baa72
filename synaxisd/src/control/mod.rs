//! The control API (`/control/v1/...`): organizations, teams, users, keys, limit sets, budgets,
//! plans, credits and the audit log.
//! Callers are the operator (operator token) or users through management keys, limited by
//! their role.

mod audit;
mod auth;
mod billing;
mod budgets;
mod consent;
pub use consent::ScopeQuery;
pub(crate) mod extract;
mod keys;
mod limits;
mod orgs;
mod regions;
mod signup;
mod teams;
mod users;

use axum::Router;
use axum::routing::{get, post, put};

use crate::server::AppState;

pub use auth::ControlCaller;
pub use signup::Signup;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/control/v1/signup", post(signup::signup))
        .route("/control/v1/orgs", post(orgs::create).get(orgs::list))
        .route(
            "/control/v1/orgs/{org}",
            get(orgs::show).patch(orgs::update),
        )
        .route("/control/v1/orgs/{org}/revoke", post(orgs::revoke))
        .route(
            "/control/v1/orgs/{org}/entitlements",
            get(orgs::entitlements).patch(orgs::set_overrides),
        )
        .route("/control/v1/orgs/{org}/plan", post(orgs::migrate_plan))
        .route("/control/v1/plans/lifecycle", post(orgs::run_lifecycle))
        .route(
            "/control/v1/orgs/{org}/credits",
            get(orgs::credits).post(orgs::add_credit),
        )
        .route(
            "/control/v1/orgs/{org}/credits/auto-topup",
            put(orgs::set_auto_topup).delete(orgs::remove_auto_topup),
        )
        .route(
            "/control/v1/orgs/{org}/credits/history",
            get(orgs::credit_history),
        )
        .route(
            "/control/v1/orgs/{org}/budget",
            get(budgets::show_org)
                .put(budgets::set_org)
                .delete(budgets::remove_org),
        )
        .route(
            "/control/v1/orgs/{org}/limits",
            get(limits::show_org).put(limits::set_org),
        )
        .route("/control/v1/teams", post(teams::create).get(teams::list))
        .route(
            "/control/v1/teams/{team}",
            get(teams::show).patch(teams::update),
        )
        .route(
            "/control/v1/teams/{team}/budget",
            get(budgets::show_team)
                .put(budgets::set_team)
                .delete(budgets::remove_team),
        )
        .route(
            "/control/v1/teams/{team}/limits",
            get(limits::show_team).put(limits::set_team),
        )
        .route("/control/v1/users", post(users::create).get(users::list))
        .route(
            "/control/v1/users/{user}",
            get(users::show).patch(users::update),
        )
        .route("/control/v1/users/{user}/revoke", post(users::revoke))
        .route(
            "/control/v1/users/{user}/consent",
            get(consent::show)
                .post(consent::grant)
                .delete(consent::withdraw),
        )
        .route(
            "/control/v1/users/{user}/limits",
            get(limits::show_user).put(limits::set_user),
        )
        .route("/control/v1/keys", post(keys::create).get(keys::list))
        .route(
            "/control/v1/keys/{key}",
            get(keys::show).patch(keys::update),
        )
        .route(
            "/control/v1/keys/{key}/budget",
            get(budgets::show_key)
                .put(budgets::set_key)
                .delete(budgets::remove_key),
        )
        .route("/control/v1/keys/{key}/rotate", post(keys::rotate))
        .route("/control/v1/keys/{key}/revoke", post(keys::revoke))
        .route(
            "/control/v1/fx",
            get(billing::list_fx).post(billing::set_fx),
        )
        .route(
            "/control/v1/orgs/{org}/invoices",
            get(billing::list_invoices).post(billing::issue_invoice),
        )
        .route("/control/v1/invoices/{invoice}", get(billing::show_invoice))
        .route("/control/v1/regions", get(regions::status))
        .route("/control/v1/compliance/residency", get(regions::residency))
        .route("/control/v1/failover/drills", post(regions::drill))
        .route("/control/v1/audit", get(audit::list))
        .route("/control/v1/audit/verify", get(audit::verify))
}

//! Failover: this region serves a request of a user whose home region is down or drained, when
//! the compliance provider of the user's jurisdiction allows it. The usage records made meanwhile
//! go to the home region once it takes traffic again.
//!
//! A served request authenticates with the replica's directory entry, runs through the local
//! router with the entry's limits and model policies, and stores its record in this region's
//! `requests` with `stored_region` set to the home region: the record is held. A transfer to
//! another jurisdiction first writes a transfer record naming the legal basis, and its response
//! carries `x-synaxis-cross-border: true`.
//!
//! The hand-off task sends held records to the home region's `/peer/v1/usage`, which stores
//! those it does not have yet, and deletes them here once the home region has confirmed. A
//! hand-off whose response is lost is repeated and stores nothing twice, so every record lands
//! in its home region exactly once.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use synaxis_shared::RegionId;
use synaxis_shared::budgets::{Budget, BudgetScope};
use synaxis_shared::region::RegionStatus;
use tokio_util::sync::CancellationToken;

use super::{Peer, REQUEST_ID, Regions, refuse, refuse_in};
use crate::compliance::{Compliance, Transfer, TransferDecision, TransferRequest};
use crate::directory::DirectoryEntry;
use crate::gateway::auth::bearer_token;
use crate::http_error::ApiError;
use crate::metrics::Metrics;
use crate::server::{AppState, Next};
use crate::store::{AuthenticatedKey, RequestRecord, Store};

/// Path under which a peer hands this region the records it held for it.
pub const USAGE_PATH: &str = "/peer/v1/usage";

/// Marks a response served by a region of another jurisdiction than the user's.
pub static CROSS_BORDER_HEADER: HeaderName = HeaderName::from_static("x-synaxis-cross-border");

/// The inference routes that a region serves for users of another region during failover,
/// besides `GET /v1/models`. The others read or change data that only the home region holds.
const SERVED_ROUTES: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// Records handed to a home region in one call at most.
const HAND_OFF_BATCH: i64 = 500;

/// Time between two passes of the hand-off task.
const HAND_OFF_INTERVAL: Duration = Duration::from_secs(1);

/// Set on a request that this region serves during failover for a user of `home`.
#[derive(Clone, Debug)]
pub struct FailedOver {
    pub home: RegionId,
    /// The key as the replica's directory entry describes it.
    pub key: Arc<AuthenticatedKey>,
    /// The replicated budgets of the key, its team and its org, each less the cost of the
    /// records that this region holds for them.
    pub budgets: Vec<Budget>,
}

/// The response of a region to a hand-off of held records.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct HandOffAnswer {
    /// Records stored now; the others were stored by an earlier hand-off.
    pub stored: u64,
}

/// Serves `request`, whose key belongs to `home`, here if the user's compliance provider
/// allows it; otherwise responds with 503 `region_unavailable`, with how to consent when consent would
/// allow it.
pub(super) async fn serve(
    state: &AppState,
    home: &RegionId,
    peer: &Peer,
    mut request: Request,
    next: Next,
) -> Response {
    let own = &state.regions.own;
    let presented = bearer_token(request.headers()).unwrap_or_default();
    let entry = match state.tenancy.find_in_directory(presented).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return refuse(ApiError::InvalidKey, request.headers(), own),
        Err(error) => {
            tracing::warn!(%error, "cannot read the key directory replica");
            let error = ApiError::RegionUnavailable {
                region: home.clone(),
            };
            return refuse(error, request.headers(), own);
        }
    };
    // From here on the user is known, so errors speak the user's language by default.
    let reject = |error: ApiError, headers: &axum::http::HeaderMap| {
        refuse_in(error, headers, own, Some(entry.locale))
    };
    let compliance = Compliance::default();
    let Some(provider) = compliance.provider(peer.jurisdiction) else {
        let error = ApiError::RegionUnavailable {
            region: home.clone(),
        };
        return reject(error, request.headers());
    };
    let decision = provider.validate_transfer(&TransferRequest {
        target_region: own,
        target: state.regions.own_jurisdiction,
        org_mechanism: entry.org_transfer_mechanism,
        consent: &entry.consent,
    });
    let path = request.uri().path();
    let served_route = entry.scope == synaxis_shared::api::KeyScope::Inference
        && ((request.method() == Method::POST && SERVED_ROUTES.contains(&path))
            || (request.method() == Method::GET && path == "/v1/models"));
    let basis = match decision {
        TransferDecision::Refused => {
            state.metrics.count_failover(home.as_str(), false);
            let error = ApiError::RegionUnavailableWithoutConsent {
                region: home.clone(),
                here: own.clone(),
            };
            return reject(error, request.headers());
        }
        _ if !served_route => {
            let error = ApiError::RegionUnavailable {
                region: home.clone(),
            };
            return reject(error, request.headers());
        }
        TransferDecision::SameJurisdiction => None,
        TransferDecision::Allowed(basis) => Some(basis),
    };

    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Some(basis) = basis {
        let transfer = Transfer {
            request_id: &request_id,
            user_id: entry.user_id,
            org_id: entry.org_id,
            from_region: home,
            to_region: own,
            basis,
            at: Utc::now(),
        };
        let store = state.tenancy.store().as_ref();
        if let Err(error) = provider.log_transfer(store, transfer).await {
            // Without its record, the transfer does not happen.
            tracing::error!(%error, "failed to record a transfer, so the request is rejected");
            let error = ApiError::RegionUnavailable {
                region: home.clone(),
            };
            return reject(error, request.headers());
        }
    }
    // The model list costs nothing, so only inference checks the budgets.
    let budgets = if request.method() == Method::POST {
        match budgets_left(state, home, &entry).await {
            Ok(budgets) => budgets,
            Err(error) => {
                let mut response = reject(error, request.headers());
                mark_cross_border(&mut response, basis.is_some());
                return response;
            }
        }
    } else {
        Vec::new()
    };
    state.metrics.count_failover(home.as_str(), true);
    tracing::info!(
        home = %home,
        user.id = %entry.user_id,
        basis = basis.map(|basis| basis.citation()).unwrap_or("same jurisdiction"),
        "serving a request of a region that takes no traffic"
    );
    request.extensions_mut().insert(FailedOver {
        home: home.clone(),
        key: Arc::new(entry.authenticated_key()),
        budgets,
    });
    let mut response = next.run(request).await;
    mark_cross_border(&mut response, basis.is_some());
    response
}

/// Marks a response of a request that was transferred to another jurisdiction.
fn mark_cross_border(response: &mut Response, transferred: bool) {
    if transferred {
        response.headers_mut().insert(
            CROSS_BORDER_HEADER.clone(),
            HeaderValue::from_static("true"),
        );
    }
}

/// Returns the replicated budgets of the entry's key, team and org, each less the cost of the
/// records that this region holds for them. The request's handler refuses with 402 when one has
/// less left than the request's worst-case cost, or nothing.
async fn budgets_left(
    state: &AppState,
    home: &RegionId,
    entry: &DirectoryEntry,
) -> Result<Vec<Budget>, ApiError> {
    if entry.budgets.is_empty() {
        return Ok(Vec::new());
    }
    // NOTE: this reads every record held for the org on each request, which grows with a long
    // outage of a busy org with budgets.
    let held = state
        .tenancy
        .store()
        .held_requests(home, Some(entry.org_id), i64::MAX)
        .await
        .map_err(|error| {
            tracing::warn!(%error, org.id = %entry.org_id, "cannot read the held records of an org");
            ApiError::RegionUnavailable {
                region: home.clone(),
            }
        })?;
    let mut left = Vec::with_capacity(entry.budgets.len());
    for budget in &entry.budgets {
        // NOTE: held records carry no team, so a team budget counts the key's user's records
        // only, and the replicated spend is as old as the entry.
        let spent_here: Decimal = held
            .iter()
            .filter(|record| match budget.scope {
                BudgetScope::Key => record.key_id == entry.key_id,
                BudgetScope::Team => record.user_id == entry.user_id,
                BudgetScope::Org => true,
            })
            .map(|record| record.cost_usd)
            .sum();
        left.push(Budget {
            spent_usd: budget.spent_usd + spent_here,
            remaining_usd: (budget.remaining_usd - spent_here).max(Decimal::ZERO),
            ..budget.clone()
        });
    }
    Ok(left)
}

/// Stores the records that a peer held for this region. `region::route_by_region` has checked
/// the caller.
pub async fn accept_held(
    State(state): State<AppState>,
    Json(records): Json<Vec<RequestRecord>>,
) -> Response {
    let own = &state.regions.own;
    if let Some(record) = records.iter().find(|record| record.stored_region != *own) {
        let error = ApiError::InvalidRequest {
            param: Some("stored_region".to_owned()),
            message: format!(
                "record {} belongs to region {}, not to {own}; hand it to its own region",
                record.id, record.stored_region
            ),
        };
        return error.into_response();
    }
    match state.tenancy.store().accept_held_requests(&records).await {
        Ok(stored) => {
            if stored > 0 {
                tracing::info!(
                    stored,
                    handed = records.len(),
                    "stored request records held by a peer"
                );
            }
            Json(HandOffAnswer { stored }).into_response()
        }
        Err(error) => ApiError::from(crate::tenancy::TenancyError::Store(error)).into_response(),
    }
}

/// Hands held records to their home regions while those are up and take traffic, every
/// [`HAND_OFF_INTERVAL`], until `stop` is cancelled.
pub async fn hand_off(
    regions: Arc<Regions>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    if regions.auth.is_none() {
        return;
    }
    let mut interval = tokio::time::interval(HAND_OFF_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        for region in regions.peers.keys() {
            let now = Utc::now();
            let up = regions.health.status(region) == RegionStatus::Up
                && regions.health.takes_traffic(region, now);
            if !up {
                continue;
            }
            if let Err(error) = hand_off_to(&regions, store.as_ref(), &metrics, region).await {
                tracing::warn!(%region, %error, "cannot hand held request records to their region; retrying");
            }
        }
    }
}

/// Hands every record held for `region` to it, a batch at a time.
async fn hand_off_to(
    regions: &Regions,
    store: &dyn Store,
    metrics: &Metrics,
    region: &RegionId,
) -> Result<(), String> {
    loop {
        let held = store
            .held_requests(region, None, HAND_OFF_BATCH)
            .await
            .map_err(|error| error.to_string())?;
        if held.is_empty() {
            return Ok(());
        }
        let answer: HandOffAnswer = regions
            .peer_post(region, USAGE_PATH, &held)
            .await
            .map_err(|error| error.to_string())?;
        let ids: Vec<_> = held.iter().map(|record| record.id).collect();
        let released = store
            .release_held_requests(region, &ids)
            .await
            .map_err(|error| error.to_string())?;
        metrics.count_handed_off(region.as_str(), released);
        tracing::info!(%region, handed = held.len(), stored_there = answer.stored, "held request records handed to their region");
        if held.len() < usize::try_from(HAND_OFF_BATCH).unwrap_or(usize::MAX) {
            return Ok(());
        }
    }
}

//! Failover drills. The region that an operator asks coordinates one:
//!
//! 1. Every region creates a drill org with two users, one who consents to cross-border
//!    failover and one who does not, and an inference key for each that expires soon after the
//!    drill.
//! 2. The coordinator waits until every region's key directory replica contains the keys of the
//!    other regions.
//! 3. Every region drains the drilled region from its routing, until the drill's end plus a
//!    margin, so that a coordinator that dies leaves no region drained for long.
//! 4. For the drill's duration, every key sends synthetic chat completions through every region
//!    but the drained one, in rounds.
//! 5. Every region restores the drained region, and the coordinator waits until the records
//!    held meanwhile have reached their home region.
//! 6. Every region revokes its drill org. The report counts what failed over, what was refused
//!    for lack of consent, what was served at home, and how many records of served requests are
//!    missing or stored twice.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use synaxis_shared::api::{CreateKeyRequest, CreateOrgRequest, CreateUserRequest, KeyScope};
use synaxis_shared::compliance::{ConsentScope, GrantConsentRequest};
use synaxis_shared::region::{DrillReport, DrillRequest, DrillTraffic, DrillUsage, RegionStatus};
use synaxis_shared::{Jurisdiction, RegionId, Role};
use tokio::time::Instant;

use super::failover::CROSS_BORDER_HEADER;
use crate::http_error::ApiError;
use crate::server::AppState;
use crate::tenancy::{Caller, TenancyError};

/// Path at which a region creates its drill tenants.
pub const TENANTS_PATH: &str = "/peer/v1/drill/tenants";

/// Path at which a region reports which keys its directory replica contains.
pub const DIRECTORY_PATH: &str = "/peer/v1/drill/directory";

/// Path at which a region counts the records of request ids.
pub const RECORDS_PATH: &str = "/peer/v1/drill/records";

/// Path at which a region revokes its drill org once the drill is over.
pub const FINISH_PATH: &str = "/peer/v1/drill/finish";

/// Path at which a region takes or releases the claim of a drill.
pub const CLAIM_PATH: &str = "/peer/v1/drill/claim";

/// Path at which a region drains a region from its routing or restores it.
pub const DRAIN_PATH: &str = "/peer/v1/regions/drain";

/// Maximum duration of a drill, in seconds.
pub const MAX_DURATION_SECS: u64 = 3600;

/// Time between two rounds of synthetic requests.
const ROUND_INTERVAL: Duration = Duration::from_millis(250);

/// Maximum wait for the drill keys to reach every replica.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// Maximum wait for held records to reach their home region after the drill.
const HAND_OFF_WAIT: Duration = Duration::from_secs(60);

/// Time between two checks while waiting for replicas or hand-offs.
const POLL: Duration = Duration::from_millis(250);

/// How long a drain outlasts the drill's planned end.
const DRAIN_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// How long a drill's claim on the regions outlives its planned end: the waits for replicas and
/// hand-offs, the drain's margin, and slack.
const CLAIM_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// How long the drill keys outlive the drill's planned end.
const KEY_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

/// Maximum wait for the response to one synthetic request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
pub struct TenantsRequest {
    drill_id: String,
    expires_at: DateTime<Utc>,
    justification: String,
}

/// A drill's hold on a region: while it lasts, no other drill starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillClaim {
    pub drill_id: String,
    /// The region that runs the drill.
    pub coordinator: RegionId,
    /// The claim ends by itself then, should the drill never release it.
    pub until: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClaimRequest {
    claim: DrillClaim,
    /// Releases the claim instead of taking it.
    release: bool,
}

/// The claim of another drill on the region, when the region rejected the request.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClaimAnswer {
    held_by: Option<DrillClaim>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FinishRequest {
    drill_id: String,
    justification: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FinishAnswer {
    revoked: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrillKey {
    secret: String,
    consent: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TenantsAnswer {
    region: RegionId,
    jurisdiction: Jurisdiction,
    keys: Vec<DrillKey>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DirectoryQuery {
    secrets: Vec<String>,
}

/// For each secret of a [`DirectoryQuery`], its replica entry's consent flag, or `None` when
/// the replica has no entry yet.
#[derive(Debug, Serialize, Deserialize)]
pub struct DirectoryAnswer {
    consent: Vec<Option<bool>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainRequest {
    pub region: RegionId,
    /// Drained until then; `None` restores the region.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainAnswer {
    drained: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordsQuery {
    request_ids: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordCount {
    request_id: String,
    stored_region: RegionId,
    count: i64,
}

/// Creates this region's drill tenants for a coordinator.
pub async fn peer_tenants(
    State(state): State<AppState>,
    Json(request): Json<TenantsRequest>,
) -> Response {
    respond(create_tenants(&state, &request).await)
}

/// Takes or releases a drill's claim on this region for a coordinator.
pub async fn peer_claim(
    State(state): State<AppState>,
    Json(request): Json<ClaimRequest>,
) -> Response {
    respond(Ok(take_or_release(&state, &request)))
}

/// Revokes this region's drill org for a coordinator.
pub async fn peer_finish(
    State(state): State<AppState>,
    Json(request): Json<FinishRequest>,
) -> Response {
    respond(finish(&state, &request).await)
}

/// Reports which drill keys this region's replica holds.
pub async fn peer_directory(
    State(state): State<AppState>,
    Json(query): Json<DirectoryQuery>,
) -> Response {
    respond(replicated(&state, &query).await)
}

/// Counts the records of a drill's request ids in this region.
pub async fn peer_records(
    State(state): State<AppState>,
    Json(query): Json<RecordsQuery>,
) -> Response {
    respond(count_records(&state, &query).await)
}

/// Drains a region from this region's routing, or restores it.
pub async fn peer_drain(
    State(state): State<AppState>,
    Json(request): Json<DrainRequest>,
) -> Response {
    respond(Ok(drain(&state, &request)))
}

fn respond<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

fn store_error(error: crate::store::StoreError) -> ApiError {
    ApiError::from(TenancyError::Store(error))
}

async fn create_tenants(
    state: &AppState,
    request: &TenantsRequest,
) -> Result<TenantsAnswer, ApiError> {
    let caller = Caller {
        justification: Some(request.justification.clone()),
        ..Caller::operator()
    };
    let tenancy = &state.tenancy;
    // The highest-ranked plan, so that the drill's rate of requests stays within its quotas.
    let plan = tenancy
        .plans()
        .plans()
        .max_by_key(|plan| plan.rank)
        .map(|plan| plan.id.clone());
    let org = tenancy
        .create_org(
            &caller,
            CreateOrgRequest {
                name: format!("Failover drill {}", request.drill_id),
                slug: Some(format!("drill-{}", request.drill_id)),
                plan,
            },
        )
        .await?;
    let mut keys = Vec::new();
    for consent in [true, false] {
        let label = if consent { "consent" } else { "no-consent" };
        let user = tenancy
            .create_user(
                &caller,
                CreateUserRequest {
                    org_id: org.id,
                    email: format!("{label}@drill-{}.synaxis.invalid", request.drill_id),
                    role: Role::Developer,
                    team_id: None,
                    locale: Default::default(),
                },
            )
            .await?;
        if consent {
            let grant = GrantConsentRequest {
                scope: ConsentScope::CrossBorderFailover,
                regions: Vec::new(),
            };
            tenancy.grant_consent(&caller, user.id, grant).await?;
        }
        let key = tenancy
            .create_key(
                &caller,
                CreateKeyRequest {
                    user_id: user.id,
                    name: Some(format!("failover drill {}", request.drill_id)),
                    scope: KeyScope::Inference,
                    expires_at: Some(request.expires_at),
                    allowed_models: Vec::new(),
                    rpm_limit: None,
                    tpm_limit: None,
                },
            )
            .await?;
        keys.push(DrillKey {
            secret: key.secret,
            consent,
        });
    }
    Ok(TenantsAnswer {
        region: state.regions.own.clone(),
        jurisdiction: state.regions.own_jurisdiction,
        keys,
    })
}

/// Revokes the drill's org in this region, which deactivates its keys; an org that the drill
/// did not get to create is no error.
async fn finish(state: &AppState, request: &FinishRequest) -> Result<FinishAnswer, ApiError> {
    let caller = Caller {
        justification: Some(request.justification.clone()),
        ..Caller::operator()
    };
    let slug = format!("drill-{}", request.drill_id);
    match state.tenancy.revoke_org(&caller, &slug).await {
        Ok(_) => Ok(FinishAnswer { revoked: true }),
        Err(TenancyError::Store(crate::store::StoreError::NotFound { .. })) => {
            Ok(FinishAnswer { revoked: false })
        }
        Err(error) => Err(error.into()),
    }
}

async fn replicated(state: &AppState, query: &DirectoryQuery) -> Result<DirectoryAnswer, ApiError> {
    let mut consent = Vec::with_capacity(query.secrets.len());
    for secret in &query.secrets {
        let entry = state
            .tenancy
            .find_in_directory(secret)
            .await
            .map_err(store_error)?;
        consent.push(entry.map(|entry| entry.consent.cross_border_failover));
    }
    Ok(DirectoryAnswer { consent })
}

async fn count_records(
    state: &AppState,
    query: &RecordsQuery,
) -> Result<Vec<RecordCount>, ApiError> {
    let counts = state
        .tenancy
        .store()
        .count_requests_by_id(&query.request_ids)
        .await
        .map_err(store_error)?;
    Ok(counts
        .into_iter()
        .map(|(request_id, stored_region, count)| RecordCount {
            request_id,
            stored_region,
            count,
        })
        .collect())
}

/// Takes the request's claim on this region unless another drill's unexpired claim holds it, or
/// releases the request's own claim.
fn take_or_release(state: &AppState, request: &ClaimRequest) -> ClaimAnswer {
    let mut slot = state
        .regions
        .drill
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Utc::now();
    let ours = &request.claim;
    if let Some(held) = slot.as_ref()
        && held.until > now
        && held.drill_id != ours.drill_id
    {
        return ClaimAnswer {
            held_by: (!request.release).then(|| held.clone()),
        };
    }
    *slot = (!request.release).then(|| ours.clone());
    ClaimAnswer { held_by: None }
}

/// Takes `claim` in every region, in region id order, so that of two drills that start together
/// one gets every claim and the other none. Releases what it took when a region refuses.
async fn claim_all(
    state: &AppState,
    regions: &[RegionId],
    claim: &DrillClaim,
) -> Result<(), ApiError> {
    let mut ordered = regions.to_vec();
    ordered.sort();
    let take = ClaimRequest {
        claim: claim.clone(),
        release: false,
    };
    for (index, region) in ordered.iter().enumerate() {
        let answer: Result<ClaimAnswer, String> =
            on_region(state, region, CLAIM_PATH, &take, async {
                Ok(take_or_release(state, &take))
            })
            .await;
        let refusal = match answer {
            Ok(ClaimAnswer { held_by: None }) => continue,
            Ok(ClaimAnswer {
                held_by: Some(held),
            }) => ApiError::DrillRunning {
                refused: claim.drill_id.clone(),
                drill_id: held.drill_id,
                coordinator: held.coordinator,
                until: held.until,
            },
            Err(error) => drill_failed("cannot claim the regions", &error),
        };
        release_all(state, &ordered[..index], claim).await;
        return Err(refusal);
    }
    Ok(())
}

/// Releases `claim` in `regions`; a region that cannot be reached lets it expire.
async fn release_all(state: &AppState, regions: &[RegionId], claim: &DrillClaim) {
    let release = ClaimRequest {
        claim: claim.clone(),
        release: true,
    };
    for region in regions {
        let answer: Result<ClaimAnswer, String> =
            on_region(state, region, CLAIM_PATH, &release, async {
                Ok(take_or_release(state, &release))
            })
            .await;
        if let Err(error) = answer {
            tracing::warn!(%region, %error, drill.id = %claim.drill_id, "cannot release a drill's claim; it expires at {}", claim.until);
        }
    }
}

fn drain(state: &AppState, request: &DrainRequest) -> DrainAnswer {
    DrainAnswer {
        drained: state.regions.health.drain(&request.region, request.until),
    }
}

/// Runs `local` when `region` is this one, else sends `body` to the peer's `path`.
async fn on_region<B, T, F>(
    state: &AppState,
    region: &RegionId,
    path: &str,
    body: &B,
    local: F,
) -> Result<T, String>
where
    B: Serialize + Sync,
    T: DeserializeOwned,
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    if *region == state.regions.own {
        local.await.map_err(|error| error.to_string())
    } else {
        state
            .regions
            .peer_post(region, path, body)
            .await
            .map_err(|error| format!("{region}: {error}"))
    }
}

/// Returns every region, this one first.
fn all_regions(state: &AppState) -> Vec<RegionId> {
    std::iter::once(state.regions.own.clone())
        .chain(state.regions.peers.keys().cloned())
        .collect()
}

/// Checks a drill request against this deployment.
fn check_request(state: &AppState, request: &DrillRequest) -> Result<String, ApiError> {
    let regions = &state.regions;
    if request.region != regions.own && !regions.peers.contains_key(&request.region) {
        let known: Vec<String> = all_regions(state).iter().map(ToString::to_string).collect();
        return Err(ApiError::invalid(
            "region",
            format!(
                "`{}` is not a region of the service: use one of {}",
                request.region,
                known.join(", ")
            ),
        ));
    }
    if regions.auth.is_none() || regions.peers.is_empty() {
        return Err(ApiError::invalid(
            "region",
            "a drill needs peer regions linked by SYNAXIS_PEER_SECRET",
        ));
    }
    if !(1..=MAX_DURATION_SECS).contains(&request.duration_secs) {
        return Err(ApiError::invalid(
            "duration_secs",
            format!(
                "the duration must be 1 to {MAX_DURATION_SECS} seconds, not {}",
                request.duration_secs
            ),
        ));
    }
    let names = state.gateway.model_names();
    let model = match &request.model {
        Some(model) => state.gateway.model(model).map(|route| route.name.clone()),
        None => names.first().map(|name| (*name).to_owned()),
    };
    let Some(model) = model else {
        let requested = request.model.as_deref().unwrap_or_default();
        return Err(ApiError::invalid(
            "model",
            format!(
                "model `{requested}` is not configured in region {}: use one of {}",
                regions.own,
                names.join(", ")
            ),
        ));
    };
    Ok(model)
}

/// Checks that every region takes traffic now, or the drill would measure an outage or another
/// drill instead.
fn check_health(state: &AppState) -> Result<(), ApiError> {
    let regions = &state.regions;
    let now = Utc::now();
    for health in regions.health.view() {
        let region = &health.region;
        let cause = if let Some(until) = health.drained_until.filter(|until| *until > now) {
            let until = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            format!("drained until {until} by a drill that ended without restoring it")
        } else if *region != regions.own && health.status != RegionStatus::Up {
            health.status.to_string()
        } else {
            continue;
        };
        return Err(ApiError::DrillFailed(format!(
            "region {region} is {cause} in the view of {}, and a drill needs every region up and taking traffic",
            regions.own
        )));
    }
    Ok(())
}

/// One drill key, with the region and jurisdiction it belongs to.
struct Sender {
    home: RegionId,
    jurisdiction: Jurisdiction,
    consent: bool,
    secret: String,
}

/// Returns a new drill id, which names the drilled region, such as `eu-west-1-3f9a0c12b7de`.
pub fn new_id(region: &RegionId) -> String {
    format!(
        "{region}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Runs the drill `drill_id` as [`DrillRequest`] describes, with `justification` on every change
/// it makes, once it has every region's claim.
pub async fn run(
    state: &AppState,
    request: &DrillRequest,
    justification: &str,
    drill_id: &str,
) -> Result<DrillReport, ApiError> {
    let model = check_request(state, request)?;
    let duration =
        chrono::Duration::seconds(i64::try_from(request.duration_secs).unwrap_or(i64::MAX));
    let regions = all_regions(state);
    let claim = DrillClaim {
        drill_id: drill_id.to_owned(),
        coordinator: state.regions.own.clone(),
        until: Utc::now() + duration + CLAIM_MARGIN,
    };
    claim_all(state, &regions, &claim).await?;
    let report = match check_health(state) {
        Ok(()) => run_claimed(state, request, justification, drill_id, &model).await,
        Err(error) => Err(error),
    };
    release_all(state, &regions, &claim).await;
    report
}

async fn run_claimed(
    state: &AppState,
    request: &DrillRequest,
    justification: &str,
    drill_id: &str,
    model: &str,
) -> Result<DrillReport, ApiError> {
    let drill_id = drill_id.to_owned();
    let model = model.to_owned();
    let started_at = Utc::now();
    let duration =
        chrono::Duration::seconds(i64::try_from(request.duration_secs).unwrap_or(i64::MAX));
    let regions = all_regions(state);
    tracing::info!(drill.id = %drill_id, region = %request.region, duration_secs = request.duration_secs, "failover drill started");

    // 1. Tenants in every region.
    let tenants_request = TenantsRequest {
        drill_id: drill_id.clone(),
        expires_at: started_at + duration + KEY_MARGIN,
        justification: justification.to_owned(),
    };
    let finish_request = FinishRequest {
        drill_id: drill_id.clone(),
        justification: justification.to_owned(),
    };
    let mut senders = Vec::new();
    for region in &regions {
        let answer: Result<TenantsAnswer, String> = on_region(
            state,
            region,
            TENANTS_PATH,
            &tenants_request,
            create_tenants(state, &tenants_request),
        )
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                revoke_tenants(state, &regions, &finish_request).await;
                return Err(drill_failed("cannot create the drill tenants", &error));
            }
        };
        senders.extend(answer.keys.into_iter().map(|key| Sender {
            home: answer.region.clone(),
            jurisdiction: answer.jurisdiction,
            consent: key.consent,
            secret: key.secret,
        }));
    }

    // 2. Every replica contains the other regions' keys, with their consent.
    if let Err(error) = wait_for_replicas(state, &regions, &senders).await {
        revoke_tenants(state, &regions, &finish_request).await;
        return Err(error);
    }

    // 3. to 5. Drain, send, restore; the region is restored whatever happened meanwhile.
    let until = Utc::now() + duration + DRAIN_MARGIN;
    let drained = set_drain(state, &regions, &request.region, Some(until)).await;
    let traffic = match drained {
        Ok(()) => Ok(send_traffic(state, request, &model, &drill_id, &senders).await),
        Err(error) => Err(error),
    };
    let restored = set_drain(state, &regions, &request.region, None).await;
    if let Err(error) = &restored {
        tracing::error!(%error, region = %request.region, "a region was not restored after the drill; its drain ends by itself at {until}");
    }
    let (traffic, served) = match traffic {
        Ok(traffic) => traffic,
        Err(error) => {
            revoke_tenants(state, &regions, &finish_request).await;
            return Err(drill_failed("cannot drain the region", &error));
        }
    };

    // 6. The records of served requests.
    let usage = check_usage(state, &regions, &served).await;
    revoke_tenants(state, &regions, &finish_request).await;
    let mut report = DrillReport {
        drill_id,
        region: request.region.clone(),
        model,
        started_at,
        ended_at: Utc::now(),
        failed_over: traffic.iter().map(|group| group.failed_over).sum(),
        refused_without_consent: traffic
            .iter()
            .map(|group| group.refused_without_consent)
            .sum(),
        served_at_home: traffic.iter().map(|group| group.served_at_home).sum(),
        errors: traffic.iter().map(|group| group.errors).sum(),
        unexpected: Vec::new(),
        traffic,
        usage,
        restored: restored.is_ok(),
    };
    report.unexpected = unexpected(&report, state);
    // The log keeps the outcome for an operator whose client went away before the report.
    let unexpected = report.unexpected.join("; ");
    if report.passed() {
        tracing::info!(
            drill.id = %report.drill_id,
            region = %report.region,
            failed_over = report.failed_over,
            refused = report.refused_without_consent,
            served_at_home = report.served_at_home,
            "failover drill passed"
        );
    } else {
        tracing::warn!(
            drill.id = %report.drill_id,
            region = %report.region,
            failed_over = report.failed_over,
            refused = report.refused_without_consent,
            served_at_home = report.served_at_home,
            errors = report.errors,
            lost = report.usage.lost,
            duplicated = report.usage.duplicated,
            still_held = report.usage.still_held,
            restored = report.restored,
            unexpected,
            "failover drill found problems"
        );
    }
    Ok(report)
}

fn drill_failed(what: &str, error: &str) -> ApiError {
    tracing::error!(%error, "{what}");
    ApiError::DrillFailed(format!("{what}: {error}"))
}

/// Revokes the drill's org in every region, so that its keys stop working at once. A region
/// that cannot be reached keeps its org until an operator revokes it; its keys expire anyway.
async fn revoke_tenants(state: &AppState, regions: &[RegionId], request: &FinishRequest) {
    for region in regions {
        let answer: Result<FinishAnswer, String> =
            on_region(state, region, FINISH_PATH, request, finish(state, request)).await;
        if let Err(error) = answer {
            tracing::warn!(%region, %error, drill.id = %request.drill_id, "cannot revoke a drill org; revoke `drill-{}` there by hand", request.drill_id);
        }
    }
}

async fn wait_for_replicas(
    state: &AppState,
    regions: &[RegionId],
    senders: &[Sender],
) -> Result<(), ApiError> {
    let deadline = Instant::now() + REPLICATION_WAIT;
    for region in regions {
        let others: Vec<&Sender> = senders.iter().filter(|key| key.home != *region).collect();
        let query = DirectoryQuery {
            secrets: others.iter().map(|key| key.secret.clone()).collect(),
        };
        loop {
            let answer: Result<DirectoryAnswer, String> = on_region(
                state,
                region,
                DIRECTORY_PATH,
                &query,
                replicated(state, &query),
            )
            .await;
            let ready = answer.as_ref().is_ok_and(|answer| {
                answer
                    .consent
                    .iter()
                    .zip(&others)
                    .all(|(seen, key)| *seen == Some(key.consent))
            });
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                let reason = answer.err().unwrap_or_else(|| {
                    "the drill keys have not reached its key directory replica".to_owned()
                });
                return Err(drill_failed(
                    &format!("region {region} is not ready for the drill"),
                    &reason,
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// Drains `region` until `until` in every region's routing, or restores it with `None`.
async fn set_drain(
    state: &AppState,
    regions: &[RegionId],
    region: &RegionId,
    until: Option<DateTime<Utc>>,
) -> Result<(), String> {
    let request = DrainRequest {
        region: region.clone(),
        until,
    };
    let calls = regions.iter().map(|observer| {
        let request = &request;
        async move {
            on_region(state, observer, DRAIN_PATH, request, async {
                Ok(drain(state, request))
            })
            .await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let errors: Vec<String> = answers
        .into_iter()
        .filter_map(|answer| match answer {
            Ok(DrainAnswer { drained: true }) => None,
            Ok(DrainAnswer { drained: false }) => Some(format!("a region does not know {region}")),
            Err(error) => Some(error),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The outcome of one synthetic request.
enum Outcome {
    /// Served by the entry region. `cross_border` when its header marked a transfer.
    FailedOver {
        cross_border: bool,
    },
    Refused,
    ServedAtHome,
    Error,
}

/// Sends rounds of synthetic requests from every key through every region but the drained one
/// until the drill's duration has passed. Returns the counts per key and entry region, and the
/// request ids of served requests with their home region.
async fn send_traffic(
    state: &AppState,
    request: &DrillRequest,
    model: &str,
    drill_id: &str,
    senders: &[Sender],
) -> (Vec<DrillTraffic>, Vec<(String, RegionId)>) {
    let entries: Vec<(RegionId, String)> = all_regions(state)
        .into_iter()
        .filter(|region| *region != request.region)
        .filter_map(|region| {
            let url = if region == state.regions.own {
                state.regions.own_url.clone()
            } else {
                state.regions.peers.get(&region)?.url.clone()
            };
            let url = format!("{}/v1/chat/completions", url.as_str().trim_end_matches('/'));
            Some((region, url))
        })
        .collect();
    let mut traffic: Vec<DrillTraffic> = Vec::new();
    for sender in senders {
        for (entry, _) in &entries {
            traffic.push(DrillTraffic {
                home: sender.home.clone(),
                jurisdiction: sender.jurisdiction,
                consent: sender.consent,
                entry: entry.clone(),
                sent: 0,
                failed_over: 0,
                refused_without_consent: 0,
                served_at_home: 0,
                errors: 0,
                mislabelled: 0,
            });
        }
    }
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "failover drill"}],
        "max_tokens": 8,
    });
    let mut served = Vec::new();
    let end = Instant::now() + Duration::from_secs(request.duration_secs);
    let mut interval = tokio::time::interval(ROUND_INTERVAL);
    let mut sequence = 0_u64;
    while Instant::now() < end {
        interval.tick().await;
        let mut round = Vec::new();
        for sender in senders {
            for (entry, url) in &entries {
                sequence += 1;
                let request_id = format!("drill-{drill_id}-{sequence}");
                round.push(async {
                    let outcome = send_one(state, url, entry, sender, &body, &request_id).await;
                    (request_id, outcome)
                });
            }
        }
        let outcomes = futures_util::future::join_all(round).await;
        for (index, (request_id, outcome)) in outcomes.into_iter().enumerate() {
            let group = &mut traffic[index];
            group.sent += 1;
            let is_served = matches!(outcome, Outcome::FailedOver { .. } | Outcome::ServedAtHome);
            match outcome {
                Outcome::FailedOver { cross_border } => {
                    group.failed_over += 1;
                    let transfer = jurisdiction_of(state, &group.entry) != Some(group.jurisdiction);
                    if cross_border != transfer {
                        group.mislabelled += 1;
                    }
                }
                Outcome::Refused => group.refused_without_consent += 1,
                Outcome::ServedAtHome => group.served_at_home += 1,
                Outcome::Error => group.errors += 1,
            }
            if is_served {
                served.push((request_id, group.home.clone()));
            }
        }
    }
    (traffic, served)
}

async fn send_one(
    state: &AppState,
    url: &str,
    entry: &RegionId,
    sender: &Sender,
    body: &serde_json::Value,
    request_id: &str,
) -> Outcome {
    let answer = state
        .regions
        .client
        .post(url)
        .bearer_auth(&sender.secret)
        .header("x-request-id", request_id)
        .timeout(REQUEST_TIMEOUT)
        .json(body)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%error, %entry, "a drill request failed");
            return Outcome::Error;
        }
    };
    let served_by = answer
        .headers()
        .get("x-synaxis-region")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answer_headers_cross_border = answer.headers().contains_key(&CROSS_BORDER_HEADER);
    let status = answer.status();
    if status.is_success() {
        // Reading the body lets the response, and so its record, finish.
        if answer.bytes().await.is_err() {
            return Outcome::Error;
        }
        if served_by == sender.home.as_str() {
            return Outcome::ServedAtHome;
        }
        if served_by == entry.as_str() {
            let cross_border = answer_headers_cross_border;
            return Outcome::FailedOver { cross_border };
        }
        return Outcome::Error;
    }
    let code = answer
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
    if status.as_u16() == 503 && code.as_deref() == Some("region_unavailable") {
        return Outcome::Refused;
    }
    tracing::warn!(status = status.as_u16(), code = code.unwrap_or_default(), %entry, "a drill request failed");
    Outcome::Error
}

/// Waits until no region holds a record of `served` for another region, then counts each
/// served request's records.
async fn check_usage(
    state: &AppState,
    regions: &[RegionId],
    served: &[(String, RegionId)],
) -> DrillUsage {
    let query = RecordsQuery {
        request_ids: served.iter().map(|(id, _)| id.clone()).collect(),
    };
    let deadline = Instant::now() + HAND_OFF_WAIT;
    // Per request id: records in its home region, and records held elsewhere.
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    loop {
        counts.clear();
        let mut complete = true;
        for region in regions {
            let answer: Result<Vec<RecordCount>, String> = on_region(
                state,
                region,
                RECORDS_PATH,
                &query,
                count_records(state, &query),
            )
            .await;
            match answer {
                Ok(rows) => {
                    for row in rows {
                        let entry = counts.entry(row.request_id).or_default();
                        if row.stored_region == *region {
                            entry.0 += row.count;
                        } else {
                            entry.1 += row.count;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot count the drill's records");
                    complete = false;
                }
            }
        }
        let held: i64 = counts.values().map(|(_, held)| held).sum();
        if (complete && held == 0) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut usage = DrillUsage {
        expected: u64::try_from(served.len()).unwrap_or(u64::MAX),
        ..DrillUsage::default()
    };
    for (request_id, _) in served {
        let (home, held) = counts.get(request_id).copied().unwrap_or_default();
        match home + held {
            0 => usage.lost += 1,
            1 if home == 1 => usage.landed += 1,
            1 => {}
            _ => usage.duplicated += 1,
        }
        usage.still_held += u64::try_from(held).unwrap_or(0);
    }
    usage
}

/// Lists the outcomes that the transfer rules do not allow, or that the drill did not produce
/// though the rules require them.
fn unexpected(report: &DrillReport, state: &AppState) -> Vec<String> {
    let mut found = Vec::new();
    for group in &report.traffic {
        let what = format!(
            "keys of {} {} consent sent through {}",
            group.home,
            if group.consent { "with" } else { "without" },
            group.entry
        );
        let entry_jurisdiction = jurisdiction_of(state, &group.entry);
        let drained = group.home == report.region;
        let allowed = group.consent || entry_jurisdiction == Some(group.jurisdiction);
        if drained && allowed && group.failed_over != group.sent - group.errors {
            found.push(format!(
                "{what}: only {} of {} failed over",
                group.failed_over, group.sent
            ));
        }
        if drained && !allowed && group.failed_over > 0 {
            found.push(format!(
                "{what}: {} were served without a transfer basis",
                group.failed_over
            ));
        }
        if !drained && group.served_at_home != group.sent - group.errors {
            found.push(format!(
                "{what}: only {} of {} were served at home",
                group.served_at_home, group.sent
            ));
        }
        if group.mislabelled > 0 {
            found.push(format!(
                "{what}: {} failed over with a cross-border header that does not match the jurisdictions",
                group.mislabelled
            ));
        }
    }
    found
}

fn jurisdiction_of(state: &AppState, region: &RegionId) -> Option<Jurisdiction> {
    if *region == state.regions.own {
        Some(state.regions.own_jurisdiction)
    } else {
        state
            .regions
            .peers
            .get(region)
            .map(|peer| peer.jurisdiction)
    }
}

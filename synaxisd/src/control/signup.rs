//! `POST /control/v1/signup`: self-service signup, without credentials. The region is the one
//! the request names, or else the one of the client's country. A signup for another region
//! than this daemon's is forwarded to it over the peer API, or, without peer links, gets 421
//! with that region's signup URL; nothing is stored here either way.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use synaxis_shared::RegionId;
use synaxis_shared::api::{SignupRequest, SignupResponse};
use url::Url;

use super::extract::JsonBody;
use crate::config::SignupConfig;
use crate::geo::{GeoIp, client_ip};
use crate::http_error::ApiError;
use crate::server::AppState;

/// The signup settings of this daemon, with its country database.
#[derive(Debug)]
pub struct Signup {
    config: SignupConfig,
    geo: Option<GeoIp>,
    /// Each region's peer URL, where its signups go.
    regions: BTreeMap<RegionId, Url>,
}

impl Signup {
    pub fn new(config: SignupConfig, geo: Option<GeoIp>, regions: BTreeMap<RegionId, Url>) -> Self {
        Self {
            config,
            geo,
            regions,
        }
    }

    /// Returns the region of a signup from `client`: the one the request names, else the one
    /// of the client's country, else the default.
    pub fn region_for(&self, named: Option<&RegionId>, client: IpAddr) -> RegionId {
        if let Some(region) = named {
            return region.clone();
        }
        self.geo
            .as_ref()
            .and_then(|geo| geo.country(client))
            .and_then(|country| self.config.country_regions.get(&country).cloned())
            .unwrap_or_else(|| self.config.default_region.clone())
    }

    /// Returns the signup URL of `region`, when the region table has it.
    fn signup_url(&self, region: &RegionId) -> Option<String> {
        let base = self.regions.get(region)?;
        let mut url = base.clone();
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["control", "v1", "signup"]);
        Some(url.to_string())
    }
}

/// The address of the connection's peer; unspecified when the server did not record it.
#[derive(Debug)]
pub struct Peer(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // A signup that a peer region forwarded carries the client's address as that region
        // saw it.
        let forwarded = parts
            .extensions
            .get::<crate::region::Forwarded>()
            .and_then(|forwarded| forwarded.client_ip);
        let peer = forwarded.unwrap_or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(peer)| {
                    peer.ip()
                })
        });
        Ok(Self(peer))
    }
}

pub async fn signup(
    State(state): State<AppState>,
    Peer(peer): Peer,
    axum::Extension(context): axum::Extension<crate::server::RequestContext>,
    mut headers: HeaderMap,
    JsonBody(request): JsonBody<SignupRequest>,
) -> Result<Response, ApiError> {
    let Some(signup) = state.signup.as_ref() else {
        return Err(ApiError::PermissionDenied(
            "self-service signup is off on this server; ask its operator to create your organization".to_owned(),
        ));
    };
    // Several header lines are one list, in order, so the last entry is the last line's.
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let forwarded_for = (!lines.is_empty()).then(|| lines.join(","));
    let client = client_ip(
        peer,
        forwarded_for.as_deref(),
        &signup.config.trusted_proxies,
    );
    let region = signup.region_for(request.region.as_ref(), client);
    if region != state.region && state.regions.can_forward_to(&region) {
        // The peer takes the region from the body, so its own view of the client's address
        // does not send the signup back.
        let forwarded = SignupRequest {
            region: Some(region.clone()),
            ..request
        };
        let body = serde_json::to_vec(&forwarded).map_err(|_| ApiError::Internal)?;
        // The home region logs the signup under this request's id.
        if let Ok(id) = axum::http::HeaderValue::from_str(&context.request_id) {
            headers.insert("x-request-id", id);
        }
        let answer = state
            .regions
            .send(
                &region,
                Method::POST,
                "/control/v1/signup",
                &headers,
                body.into(),
                Some(client),
            )
            .await
            .map_err(|error| {
                tracing::warn!(%region, %client, %error, "cannot forward a signup to its region");
                ApiError::RegionUnavailable {
                    region: region.clone(),
                }
            })?;
        tracing::info!(%client, %region, status = answer.status().as_u16(), "signup forwarded to its region");
        return Ok(crate::region::relay(answer));
    }
    if region != state.region {
        let signup_url = signup.signup_url(&region).ok_or_else(|| {
            ApiError::invalid(
                "region",
                format!(
                    "region `{region}` is not a region of the service: use one of {}",
                    signup
                        .regions
                        .keys()
                        .map(RegionId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        tracing::info!(%client, %region, "signup sent to another region");
        return Err(ApiError::WrongRegion {
            region,
            signup_url,
            named: request.region.is_some(),
        });
    }

    let created = state
        .tenancy
        .signup(
            request,
            &signup.config.trial_plan,
            signup.config.trial_days,
            Some(client.to_string()),
        )
        .await?;

    tracing::info!(org.id = %created.org.id, %client, "organization signed up");
    Ok((StatusCode::CREATED, Json::<SignupResponse>(created)).into_response())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Opens a signup service on the test database, whose ranges are DE, BR, US and JP.
    fn service() -> Option<Signup> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/geoip/test-country.mmdb");
        let geo = GeoIp::open(&path).ok()?;
        Some(Signup::new(
            SignupConfig::default(),
            Some(geo),
            BTreeMap::new(),
        ))
    }

    #[test]
    fn direct_clients_land_by_country() {
        let Some(signup) = service() else {
            panic!("the test country database is missing");
        };
        for (address, expected) in [
            ("192.0.2.7", "eu-west-1"),
            ("198.51.100.7", "sa-east-1"),
            ("203.0.113.7", "us-east-1"),
            ("2001:db8::7", "us-east-1"),
            ("127.0.0.1", "us-east-1"),
        ] {
            let client: IpAddr = address.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_eq!(
                signup.region_for(None, client),
                RegionId::from_static(expected),
                "{address}"
            );
        }
        let named = RegionId::from_static("sa-east-1");
        let german: IpAddr = "192.0.2.7"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(signup.region_for(Some(&named), german), named);
    }
}

//! Authentication between regions, and the HTTP client of peer calls.
//!
//! A peer call carries `x-synaxis-peer: region=<id>, ts=<unix seconds>, sig=<hex>`, where `sig`
//! is HMAC-SHA-256 under the secret that every region shares of
//! `synaxis-peer-v1\n<region>\n<ts>\n<METHOD>\n<path and query>`. A receiver accepts it only
//! from a known region other than itself and within [`MAX_SKEW_SECS`] of its own clock. The
//! links run over TLS 1.3, which keeps the header from being read and replayed in transit.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use synaxis_shared::RegionId;

use crate::config::PeerConfig;

pub static PEER_HEADER: HeaderName = HeaderName::from_static("x-synaxis-peer");

/// Largest difference between the sender's and the receiver's clocks that a signature allows.
pub const MAX_SKEW_SECS: i64 = 60;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerAuthError {
    #[error("this region has no peer links: SYNAXIS_PEER_SECRET is not set")]
    NoLinks,
    #[error("the peer call carries no x-synaxis-peer header")]
    Missing,
    #[error("the x-synaxis-peer header is malformed")]
    Malformed,
    #[error("region `{0}` is not a peer of this region")]
    UnknownRegion(String),
    #[error("the peer call's time is more than {MAX_SKEW_SECS} s from this region's clock")]
    Stale,
    #[error("the peer call's signature does not match")]
    BadSignature,
}

impl PeerAuthError {
    /// Returns the reason in Brazilian Portuguese.
    pub fn message_pt_br(&self) -> String {
        match self {
            Self::NoLinks => {
                "esta região não tem ligações com outras: SYNAXIS_PEER_SECRET não está definido"
                    .to_owned()
            }
            Self::Missing => "a chamada não traz o cabeçalho x-synaxis-peer".to_owned(),
            Self::Malformed => "o cabeçalho x-synaxis-peer está malformado".to_owned(),
            Self::UnknownRegion(region) => {
                format!("a região `{region}` não é uma região par desta")
            }
            Self::Stale => format!(
                "o horário da chamada difere do relógio desta região em mais de {MAX_SKEW_SECS} s"
            ),
            Self::BadSignature => "a assinatura da chamada não confere".to_owned(),
        }
    }
}

/// Signs this region's peer calls and checks the peers' calls.
#[derive(Debug)]
pub struct PeerAuth {
    region: RegionId,
    secret: SecretString,
    peers: BTreeSet<RegionId>,
}

type HmacSha256 = Hmac<Sha256>;

impl PeerAuth {
    pub fn new(region: RegionId, secret: SecretString, peers: BTreeSet<RegionId>) -> Self {
        Self {
            region,
            secret,
            peers,
        }
    }

    fn mac(&self, region: &str, ts: i64, method: &Method, path_and_query: &str) -> HmacSha256 {
        // HMAC takes keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = HmacSha256::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(
            format!("synaxis-peer-v1\n{region}\n{ts}\n{method}\n{path_and_query}").as_bytes(),
        );
        mac
    }

    /// Returns the header value that authenticates this region's call.
    pub fn sign(&self, method: &Method, path_and_query: &str, now: DateTime<Utc>) -> HeaderValue {
        let ts = now.timestamp();
        let signature = hex::encode(
            self.mac(self.region.as_str(), ts, method, path_and_query)
                .finalize()
                .into_bytes(),
        );
        let value = format!("region={}, ts={ts}, sig={signature}", self.region);
        // Region ids, digits and hex digits are all visible ASCII.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// Returns the peer region that signed this call, or why it is refused.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path_and_query: &str,
        now: DateTime<Utc>,
    ) -> Result<RegionId, PeerAuthError> {
        let value = headers
            .get(&PEER_HEADER)
            .ok_or(PeerAuthError::Missing)?
            .to_str()
            .map_err(|_| PeerAuthError::Malformed)?;
        let (mut region, mut ts, mut sig) = (None, None, None);
        for part in value.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or(PeerAuthError::Malformed)?;
            match name {
                "region" => region = Some(value),
                "ts" => ts = value.parse::<i64>().ok(),
                "sig" => sig = hex::decode(value).ok(),
                _ => return Err(PeerAuthError::Malformed),
            }
        }
        let (Some(region), Some(ts), Some(sig)) = (region, ts, sig) else {
            return Err(PeerAuthError::Malformed);
        };
        let peer: RegionId = region
            .parse()
            .map_err(|_| PeerAuthError::UnknownRegion(region.to_owned()))?;
        if !self.peers.contains(&peer) || peer == self.region {
            return Err(PeerAuthError::UnknownRegion(region.to_owned()));
        }
        if (now.timestamp() - ts).abs() > MAX_SKEW_SECS {
            return Err(PeerAuthError::Stale);
        }
        self.mac(region, ts, method, path_and_query)
            .verify_slice(&sig)
            .map_err(|_| PeerAuthError::BadSignature)?;
        Ok(peer)
    }
}

/// Builds the HTTP client of peer calls: TLS 1.3 only, trusting `peer.ca_file` when set.
pub fn client(config: &PeerConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|error| {
            anyhow::anyhow!("cannot read peer.ca_file {}: {error}", path.display())
        })?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
            anyhow::anyhow!(
                "invalid config: `peer.ca_file`: {} holds no PEM certificate: {error}",
                path.display()
            )
        })? {
            builder = builder.add_root_certificate(certificate);
        }
        builder = builder.tls_built_in_root_certs(false);
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(region: &str) -> PeerAuth {
        let peers = ["eu-west-1", "us-east-1", "sa-east-1"]
            .iter()
            .map(|id| RegionId::from_static(id))
            .collect();
        PeerAuth::new(
            region.parse().expect("region id"),
            SecretString::from("a-shared-secret-of-at-least-32-bytes!"),
            peers,
        )
    }

    fn signed(value: HeaderValue) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(PEER_HEADER.clone(), value);
        headers
    }

    #[test]
    fn peer_signature_verifies_region() {
        let now = Utc::now();
        let headers = signed(auth("us-east-1").sign(&Method::POST, "/peer/v1/forward/v1/x", now));
        assert_eq!(
            auth("sa-east-1").verify(&headers, &Method::POST, "/peer/v1/forward/v1/x", now),
            Ok(RegionId::from_static("us-east-1"))
        );
    }

    #[test]
    fn peer_signature_rejects_forgeries() {
        let now = Utc::now();
        let receiver = auth("sa-east-1");
        let value = auth("us-east-1").sign(&Method::POST, "/peer/v1/health", now);
        let headers = signed(value.clone());
        assert_eq!(
            receiver.verify(&headers, &Method::GET, "/peer/v1/health", now),
            Err(PeerAuthError::BadSignature)
        );
        assert_eq!(
            receiver.verify(&headers, &Method::POST, "/peer/v1/other", now),
            Err(PeerAuthError::BadSignature)
        );
        assert_eq!(
            receiver.verify(
                &headers,
                &Method::POST,
                "/peer/v1/health",
                now + chrono::Duration::seconds(MAX_SKEW_SECS + 1)
            ),
            Err(PeerAuthError::Stale)
        );
        assert_eq!(
            receiver.verify(&HeaderMap::new(), &Method::POST, "/peer/v1/health", now),
            Err(PeerAuthError::Missing)
        );
        let other_secret = PeerAuth::new(
            RegionId::from_static("us-east-1"),
            SecretString::from("another-secret-that-is-32-bytes-long"),
            BTreeSet::new(),
        );
        let headers = signed(other_secret.sign(&Method::POST, "/peer/v1/health", now));
        assert_eq!(
            receiver.verify(&headers, &Method::POST, "/peer/v1/health", now),
            Err(PeerAuthError::BadSignature)
        );
        // A region may not call itself, and an unknown one not at all.
        let own = signed(auth("sa-east-1").sign(&Method::POST, "/peer/v1/health", now));
        assert!(matches!(
            receiver.verify(&own, &Method::POST, "/peer/v1/health", now),
            Err(PeerAuthError::UnknownRegion(_))
        ));
    }
}

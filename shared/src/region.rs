//! Regions and the jurisdictions whose law applies in them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A region id such as `eu-west-1`: lowercase ASCII letters, digits and hyphens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionId(String);

/// Error returned when a string is not a valid region id.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid region id `{0}`: use lowercase letters, digits and hyphens, for example `eu-west-1`"
)]
pub struct InvalidRegionId(pub String);

impl RegionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the region id written in the code as `id`, which must be a valid id.
    pub fn from_static(id: &'static str) -> Self {
        debug_assert!(id.parse::<Self>().is_ok(), "invalid region id `{id}`");
        Self(id.to_owned())
    }
}

impl FromStr for RegionId {
    type Err = InvalidRegionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 63
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidRegionId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for RegionId {
    type Error = InvalidRegionId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RegionId> for String {
    fn from(id: RegionId) -> Self {
        id.0
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The legal system a region belongs to; it selects the compliance rules for its users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Jurisdiction {
    /// European Union and EEA, under the GDPR.
    EU,
    /// United States.
    US,
    /// Brazil, under the LGPD.
    BR,
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::EU => "EU",
            Self::US => "US",
            Self::BR => "BR",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_id_accepts_standard_ids() {
        for id in ["eu-west-1", "us-east-1", "sa-east-1", "local"] {
            assert!(id.parse::<RegionId>().is_ok(), "{id} should parse");
        }
    }

    #[test]
    fn region_id_rejects_malformed_ids() {
        for id in ["", "EU-WEST-1", "eu_west_1", "-eu", "eu-", "eu west"] {
            assert!(id.parse::<RegionId>().is_err(), "{id:?} should be rejected");
        }
    }
}

/// The health status of a region in one observer's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionStatus {
    /// Not yet probed enough times for a verdict.
    Unknown,
    Up,
    Down,
}

impl fmt::Display for RegionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// An observer's record of one region's probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionHealth {
    pub region: RegionId,
    pub status: RegionStatus,
    /// Probes in a row that failed, and that passed; one of them is 0.
    pub consecutive_failures: u32,
    pub consecutive_passes: u32,
    pub last_probe_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Since when the status has held.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The reason the last probe failed.
    pub last_error: Option<String>,
    /// Until when an operator drained the region from this observer's routing: requests of its
    /// users are handled as if it were down, though its probes may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl RegionHealth {
    /// Returns whether requests may be sent to the region at `now`: it is not down, and not
    /// drained.
    pub fn takes_traffic(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.status != RegionStatus::Down && self.drained_until.is_none_or(|until| until <= now)
    }
}

/// One region's view of every region, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionView {
    pub observer: RegionId,
    #[serde(default)]
    pub regions: Vec<RegionHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The response of `GET /control/v1/regions`: the view of the region that served it, then its
/// peers' views as they reported them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionsStatus {
    pub region: RegionId,
    pub views: Vec<RegionView>,
}

/// A region's response to a peer's health probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    pub region: RegionId,
    /// Whether its own dependencies respond.
    pub ready: bool,
    pub view: Vec<RegionHealth>,
}

/// The request of `POST /control/v1/failover/drills`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// The region to drain from every region's routing for the drill.
    pub region: RegionId,
    /// How long synthetic traffic runs, in seconds.
    pub duration_secs: u64,
    /// The model that synthetic requests call; the serving region's first model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The outcome of a drill's requests from the test key of one user, sent through one entry
/// region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillTraffic {
    /// The home region of the key.
    pub home: RegionId,
    pub jurisdiction: Jurisdiction,
    /// Whether the key's user consented to cross-border failover.
    pub consent: bool,
    /// The region the requests were sent to.
    pub entry: RegionId,
    pub sent: u64,
    /// Served by the entry region for a drained home region.
    pub failed_over: u64,
    /// Refused with `region_unavailable` for lack of a transfer basis.
    pub refused_without_consent: u64,
    /// Served by the home region, which was not drained.
    pub served_at_home: u64,
    /// Any other response, such as an error of the upstream, or a transport failure.
    pub errors: u64,
    /// Failed over with an `x-synaxis-cross-border` header that does not match the
    /// jurisdictions of the key's region and the entry region.
    pub mislabelled: u64,
}

/// The counts of the usage records of a drill's served requests, by where they landed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillUsage {
    /// Served requests, each of which should have one record in its home region.
    pub expected: u64,
    /// Served requests with exactly one record in their home region.
    pub landed: u64,
    /// Served requests with no record in their home region.
    pub lost: u64,
    /// Served requests with more than one record.
    pub duplicated: u64,
    /// Records still held by a region other than their home when the drill gave up waiting.
    pub still_held: u64,
}

/// The report of a failover drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    pub drill_id: String,
    /// The drained region.
    pub region: RegionId,
    pub model: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: chrono::DateTime<chrono::Utc>,
    pub traffic: Vec<DrillTraffic>,
    pub failed_over: u64,
    pub refused_without_consent: u64,
    pub served_at_home: u64,
    pub errors: u64,
    pub usage: DrillUsage,
    /// Outcomes that differ from what the rules require, such as a request of a user without
    /// consent that was served in another jurisdiction.
    pub unexpected: Vec<String>,
    /// Whether every region took the drained region back into its routing.
    pub restored: bool,
}

impl DrillReport {
    /// Returns whether the drill found nothing wrong.
    pub fn passed(&self) -> bool {
        self.usage.lost == 0
            && self.usage.duplicated == 0
            && self.usage.still_held == 0
            && self.unexpected.is_empty()
            && self.errors == 0
            && self.restored
    }
}

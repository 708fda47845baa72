//! Legal bases of processing and of transfers between jurisdictions, as each regulation lists
//! them, and the consent a user gives to cross-border processing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{RegionId, UserId};

/// GDPR Art. 6(1): lawful bases of processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdprProcessingBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
    LegitimateInterests,
}

/// LGPD Art. 7: legal bases of processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LgpdProcessingBasis {
    Consent,
    LegalOrRegulatoryObligation,
    PublicAdministration,
    ResearchBody,
    Contract,
    ExerciseOfRights,
    ProtectionOfLife,
    HealthProtection,
    LegitimateInterests,
    CreditProtection,
}

/// GDPR Chapter V: bases of a transfer out of the EU and EEA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdprTransferBasis {
    /// Art. 45.
    AdequacyDecision,
    /// Art. 46(2)(c).
    StandardContractualClauses,
    /// Art. 47.
    BindingCorporateRules,
    /// Art. 49(1)(a).
    ExplicitConsent,
    /// Art. 49(1)(b).
    ContractWithDataSubject,
    /// Art. 49(1)(c).
    ContractInDataSubjectInterest,
    /// Art. 49(1)(d).
    PublicInterest,
    /// Art. 49(1)(e).
    LegalClaims,
    /// Art. 49(1)(f).
    VitalInterests,
    /// Art. 49(1)(g).
    PublicRegister,
}

/// LGPD Art. 33: bases of an international transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LgpdTransferBasis {
    /// Art. 33, I.
    AdequateCountry,
    /// Art. 33, II: specific or standard contractual clauses, global corporate rules, seals
    /// and certificates.
    ContractualClauses,
    GlobalCorporateRules,
    SealsAndCertificates,
    /// Art. 33, III.
    InternationalLegalCooperation,
    /// Art. 33, IV.
    ProtectionOfLife,
    /// Art. 33, V.
    AnpdAuthorization,
    /// Art. 33, VI.
    CooperationAgreement,
    /// Art. 33, VII.
    PublicPolicy,
    /// Art. 33, VIII.
    SpecificConsent,
    /// Art. 33, IX.
    LegalObligationContractOrRights,
}

/// Bases of a transfer of a US user's data. US law does not restrict it, but the product still
/// requires one of these before processing outside the United States.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsTransferBasis {
    Consent,
    ContractualClauses,
}

/// The basis of one transfer, under the regulation of the user's jurisdiction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "regulation", content = "basis", rename_all = "snake_case")]
pub enum TransferBasis {
    Gdpr(GdprTransferBasis),
    Lgpd(LgpdTransferBasis),
    Us(UsTransferBasis),
}

impl TransferBasis {
    /// Returns the provision that the basis rests on, such as `GDPR Art. 49(1)(a)`.
    pub fn citation(&self) -> &'static str {
        match self {
            Self::Gdpr(basis) => match basis {
                GdprTransferBasis::AdequacyDecision => "GDPR Art. 45",
                GdprTransferBasis::StandardContractualClauses => "GDPR Art. 46(2)(c)",
                GdprTransferBasis::BindingCorporateRules => "GDPR Art. 47",
                GdprTransferBasis::ExplicitConsent => "GDPR Art. 49(1)(a)",
                GdprTransferBasis::ContractWithDataSubject => "GDPR Art. 49(1)(b)",
                GdprTransferBasis::ContractInDataSubjectInterest => "GDPR Art. 49(1)(c)",
                GdprTransferBasis::PublicInterest => "GDPR Art. 49(1)(d)",
                GdprTransferBasis::LegalClaims => "GDPR Art. 49(1)(e)",
                GdprTransferBasis::VitalInterests => "GDPR Art. 49(1)(f)",
                GdprTransferBasis::PublicRegister => "GDPR Art. 49(1)(g)",
            },
            Self::Lgpd(basis) => match basis {
                LgpdTransferBasis::AdequateCountry => "LGPD Art. 33, I",
                LgpdTransferBasis::ContractualClauses
                | LgpdTransferBasis::GlobalCorporateRules
                | LgpdTransferBasis::SealsAndCertificates => "LGPD Art. 33, II",
                LgpdTransferBasis::InternationalLegalCooperation => "LGPD Art. 33, III",
                LgpdTransferBasis::ProtectionOfLife => "LGPD Art. 33, IV",
                LgpdTransferBasis::AnpdAuthorization => "LGPD Art. 33, V",
                LgpdTransferBasis::CooperationAgreement => "LGPD Art. 33, VI",
                LgpdTransferBasis::PublicPolicy => "LGPD Art. 33, VII",
                LgpdTransferBasis::SpecificConsent => "LGPD Art. 33, VIII",
                LgpdTransferBasis::LegalObligationContractOrRights => "LGPD Art. 33, IX",
            },
            Self::Us(basis) => match basis {
                UsTransferBasis::Consent => "US: the user's consent",
                UsTransferBasis::ContractualClauses => "US: contractual clauses",
            },
        }
    }
}

/// A request processed outside its user's jurisdiction, and the basis that allowed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    pub id: uuid::Uuid,
    pub request_id: String,
    pub user_id: UserId,
    pub org_id: crate::OrgId,
    /// The user's home region.
    pub from_region: RegionId,
    /// The region that processed the request.
    pub to_region: RegionId,
    /// The regulation of the user's jurisdiction, such as `GDPR`.
    pub regulation: String,
    pub legal_basis: TransferBasis,
    /// The provision the basis rests on, such as `GDPR Art. 49(1)(a)`.
    pub citation: String,
    pub at: DateTime<Utc>,
}

/// A request record stored in a region where it does not belong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidencyViolation {
    /// The record's id.
    pub record_id: uuid::Uuid,
    pub request_id: String,
    pub user_id: UserId,
    /// The user's residency region, when this region has the user.
    pub user_region: Option<RegionId>,
}

/// One region's residency check of its own store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidencyReport {
    pub region: RegionId,
    pub records_checked: u64,
    /// Records of users who belong to another region, or whom this region does not know.
    pub violations: Vec<ResidencyViolation>,
    /// Usage held for another region after a failover, waiting to go home; not a violation.
    pub pending_transfers: u64,
    /// The reason a peer's report could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The response of `GET /control/v1/compliance/residency`: this region's report, then each
/// peer's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidencyCheck {
    pub reports: Vec<ResidencyReport>,
}

/// A transfer mechanism that an operator records on an org for all its users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgTransferMechanism {
    StandardContractualClauses,
}

impl OrgTransferMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardContractualClauses => "standard_contractual_clauses",
        }
    }
}

impl std::str::FromStr for OrgTransferMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "standard_contractual_clauses" => Ok(Self::StandardContractualClauses),
            other => Err(format!(
                "unknown transfer mechanism `{other}`: use standard_contractual_clauses"
            )),
        }
    }
}

/// A change of an org's transfer mechanism: record one, or remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMechanismChange {
    StandardContractualClauses,
    None,
}

/// Scopes of a user's consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentScope {
    /// Processing in another region while the home region is down.
    CrossBorderFailover,
}

impl ConsentScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrossBorderFailover => "cross_border_failover",
        }
    }
}

impl std::str::FromStr for ConsentScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cross_border_failover" => Ok(Self::CrossBorderFailover),
            other => Err(format!(
                "unknown consent scope `{other}`: use cross_border_failover"
            )),
        }
    }
}

/// The party that recorded a consent change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// The user, with their own key.
    User,
    /// An operator, on the user's documented request.
    Operator,
}

/// One version of a user's consent in one scope: a grant or a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub user_id: UserId,
    pub scope: ConsentScope,
    /// 1 for the first record of the user and scope, then one more for each change.
    pub version: u32,
    pub granted: bool,
    /// Regions that a grant allows; empty allows every region.
    pub regions: Vec<RegionId>,
    pub source: ConsentSource,
    pub recorded_at: DateTime<Utc>,
}

/// Body of a consent grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConsentRequest {
    pub scope: ConsentScope,
    /// Regions that the consent allows; empty or absent allows every region.
    #[serde(default)]
    pub regions: Vec<RegionId>,
}

/// A user's consent in one scope: the latest record, which decides, and every record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    pub user_id: UserId,
    pub scope: ConsentScope,
    /// Whether the latest record is a grant.
    pub granted: bool,
    pub current: Option<ConsentRecord>,
    pub history: Vec<ConsentRecord>,
}

/// The consent that decides a transfer: the latest state of a user's consent records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentFlags {
    pub cross_border_failover: bool,
    /// Regions that the consent allows; empty means every region.
    #[serde(default)]
    pub regions: Vec<RegionId>,
}

impl ConsentFlags {
    /// Returns whether the consent allows processing in `region`.
    pub fn allows(&self, region: &RegionId) -> bool {
        self.cross_border_failover && (self.regions.is_empty() || self.regions.contains(region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_allows_its_regions_only() {
        let eu = RegionId::from_static("eu-west-1");
        let us = RegionId::from_static("us-east-1");
        assert!(!ConsentFlags::default().allows(&us));
        let everywhere = ConsentFlags {
            cross_border_failover: true,
            regions: Vec::new(),
        };
        assert!(everywhere.allows(&us));
        let named = ConsentFlags {
            cross_border_failover: true,
            regions: vec![eu.clone()],
        };
        assert!(named.allows(&eu));
        assert!(!named.allows(&us));
    }

    #[test]
    fn transfer_bases_cite_their_articles() {
        assert_eq!(
            TransferBasis::Gdpr(GdprTransferBasis::ExplicitConsent).citation(),
            "GDPR Art. 49(1)(a)"
        );
        assert_eq!(
            TransferBasis::Gdpr(GdprTransferBasis::StandardContractualClauses).citation(),
            "GDPR Art. 46(2)(c)"
        );
        assert_eq!(
            TransferBasis::Lgpd(LgpdTransferBasis::SpecificConsent).citation(),
            "LGPD Art. 33, VIII"
        );
        let json =
            serde_json::to_string(&TransferBasis::Lgpd(LgpdTransferBasis::ContractualClauses))
                .expect("serializes");
        assert_eq!(
            json,
            r#"{"regulation":"lgpd","basis":"contractual_clauses"}"#
        );
    }
}

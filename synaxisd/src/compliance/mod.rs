//! Compliance providers, one per regulation, chosen by the jurisdiction of the user's home
//! region: GDPR for the EU, LGPD for Brazil, and a US provider. Each decides whether a user's
//! request may be processed in another jurisdiction and on which legal basis.
//!
//! The rules are the same shape for every provider. Processing inside the user's jurisdiction
//! is no transfer. Otherwise it needs an org-level mechanism (standard contractual clauses that
//! an operator recorded) or the user's explicit consent to cross-border failover in the target
//! region. Each provider names the basis in its own regulation's terms.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use synaxis_shared::compliance::{
    ConsentFlags, GdprTransferBasis, LgpdTransferBasis, OrgTransferMechanism, TransferBasis,
    TransferRecord, UsTransferBasis,
};
use synaxis_shared::{Jurisdiction, OrgId, RegionId, UserId};

use crate::store::{StoreError, TransferStore};

/// A request to process a user's data in `target_region`, of jurisdiction `target`.
#[derive(Clone, Copy, Debug)]
pub struct TransferRequest<'a> {
    pub target_region: &'a RegionId,
    pub target: Jurisdiction,
    /// The mechanism recorded on the user's org, if any.
    pub org_mechanism: Option<OrgTransferMechanism>,
    /// The latest state of the user's consent.
    pub consent: &'a ConsentFlags,
}

/// A provider's decision on a [`TransferRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferDecision {
    /// The target is in the user's own jurisdiction: no transfer happens.
    SameJurisdiction,
    /// Allowed on this basis, which the transfer record keeps.
    Allowed(TransferBasis),
    /// Neither an org mechanism nor the user's consent allows it.
    Refused,
}

/// A transfer that happened: a request of a user processed in another jurisdiction.
#[derive(Clone, Copy, Debug)]
pub struct Transfer<'a> {
    pub request_id: &'a str,
    pub user_id: UserId,
    pub org_id: OrgId,
    pub from_region: &'a RegionId,
    pub to_region: &'a RegionId,
    pub basis: TransferBasis,
    pub at: DateTime<Utc>,
}

#[async_trait]
pub trait ComplianceProvider: Send + Sync + Debug {
    /// Returns the regulation's short name, such as `GDPR`.
    fn regulation(&self) -> &'static str;

    /// Returns the jurisdiction whose users this provider serves.
    fn jurisdiction(&self) -> Jurisdiction;

    /// Returns the basis of a transfer under standard contractual clauses.
    fn clauses_basis(&self) -> TransferBasis;

    /// Returns the basis of a transfer under the user's explicit consent.
    fn consent_basis(&self) -> TransferBasis;

    /// Decides whether a user of this jurisdiction may be served in the request's region.
    fn validate_transfer(&self, request: &TransferRequest<'_>) -> TransferDecision {
        if request.target == self.jurisdiction() {
            return TransferDecision::SameJurisdiction;
        }
        if request.org_mechanism == Some(OrgTransferMechanism::StandardContractualClauses) {
            return TransferDecision::Allowed(self.clauses_basis());
        }
        if request.consent.allows(request.target_region) {
            return TransferDecision::Allowed(self.consent_basis());
        }
        TransferDecision::Refused
    }

    /// Records a transfer in the processing region's store, with this regulation's name and
    /// the citation of its basis.
    async fn log_transfer(
        &self,
        store: &dyn TransferStore,
        transfer: Transfer<'_>,
    ) -> Result<TransferRecord, StoreError> {
        let record = TransferRecord {
            id: uuid::Uuid::new_v4(),
            request_id: transfer.request_id.to_owned(),
            user_id: transfer.user_id,
            org_id: transfer.org_id,
            from_region: transfer.from_region.clone(),
            to_region: transfer.to_region.clone(),
            regulation: self.regulation().to_owned(),
            legal_basis: transfer.basis,
            citation: transfer.basis.citation().to_owned(),
            at: transfer.at,
        };
        store.record_transfer(&record).await?;
        Ok(record)
    }
}

/// The GDPR: transfers out of the EU and EEA under Chapter V.
#[derive(Debug)]
pub struct Gdpr;

#[async_trait]
impl ComplianceProvider for Gdpr {
    fn regulation(&self) -> &'static str {
        "GDPR"
    }

    fn jurisdiction(&self) -> Jurisdiction {
        Jurisdiction::EU
    }

    fn clauses_basis(&self) -> TransferBasis {
        TransferBasis::Gdpr(GdprTransferBasis::StandardContractualClauses)
    }

    fn consent_basis(&self) -> TransferBasis {
        TransferBasis::Gdpr(GdprTransferBasis::ExplicitConsent)
    }
}

/// The LGPD: international transfers under Art. 33.
#[derive(Debug)]
pub struct Lgpd;

#[async_trait]
impl ComplianceProvider for Lgpd {
    fn regulation(&self) -> &'static str {
        "LGPD"
    }

    fn jurisdiction(&self) -> Jurisdiction {
        Jurisdiction::BR
    }

    fn clauses_basis(&self) -> TransferBasis {
        TransferBasis::Lgpd(LgpdTransferBasis::ContractualClauses)
    }

    fn consent_basis(&self) -> TransferBasis {
        TransferBasis::Lgpd(LgpdTransferBasis::SpecificConsent)
    }
}

/// US users: US law does not restrict the transfer, but the product requires the same
/// mechanism or consent as elsewhere.
#[derive(Debug)]
pub struct UsPrivacy;

#[async_trait]
impl ComplianceProvider for UsPrivacy {
    fn regulation(&self) -> &'static str {
        "US"
    }

    fn jurisdiction(&self) -> Jurisdiction {
        Jurisdiction::US
    }

    fn clauses_basis(&self) -> TransferBasis {
        TransferBasis::Us(UsTransferBasis::ContractualClauses)
    }

    fn consent_basis(&self) -> TransferBasis {
        TransferBasis::Us(UsTransferBasis::Consent)
    }
}

/// Every provider, found by jurisdiction.
#[derive(Debug)]
pub struct Compliance {
    providers: Vec<Box<dyn ComplianceProvider>>,
}

impl Default for Compliance {
    fn default() -> Self {
        Self {
            providers: vec![Box::new(Gdpr), Box::new(Lgpd), Box::new(UsPrivacy)],
        }
    }
}

impl Compliance {
    /// Returns the provider of `jurisdiction`.
    pub fn provider(&self, jurisdiction: Jurisdiction) -> Option<&dyn ComplianceProvider> {
        self.providers
            .iter()
            .find(|provider| provider.jurisdiction() == jurisdiction)
            .map(AsRef::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        home: Jurisdiction,
        target: Jurisdiction,
        mechanism: Option<OrgTransferMechanism>,
        consent: &ConsentFlags,
    ) -> TransferDecision {
        let region = RegionId::from_static("us-east-1");
        let compliance = Compliance::default();
        let provider = compliance
            .provider(home)
            .expect("a provider per jurisdiction");
        provider.validate_transfer(&TransferRequest {
            target_region: &region,
            target,
            org_mechanism: mechanism,
            consent,
        })
    }

    #[test]
    fn transfers_need_clauses_or_consent() {
        let none = ConsentFlags::default();
        let consent = ConsentFlags {
            cross_border_failover: true,
            regions: Vec::new(),
        };
        let elsewhere = ConsentFlags {
            cross_border_failover: true,
            regions: vec![RegionId::from_static("sa-east-1")],
        };
        let clauses = Some(OrgTransferMechanism::StandardContractualClauses);
        use Jurisdiction::{BR, EU, US};
        let cases = [
            (EU, EU, None, &none, TransferDecision::SameJurisdiction),
            (EU, US, None, &none, TransferDecision::Refused),
            (EU, US, None, &elsewhere, TransferDecision::Refused),
            (
                EU,
                US,
                None,
                &consent,
                TransferDecision::Allowed(TransferBasis::Gdpr(GdprTransferBasis::ExplicitConsent)),
            ),
            (
                EU,
                US,
                clauses,
                &none,
                TransferDecision::Allowed(TransferBasis::Gdpr(
                    GdprTransferBasis::StandardContractualClauses,
                )),
            ),
            (
                BR,
                US,
                None,
                &consent,
                TransferDecision::Allowed(TransferBasis::Lgpd(LgpdTransferBasis::SpecificConsent)),
            ),
            (
                BR,
                EU,
                clauses,
                &none,
                TransferDecision::Allowed(TransferBasis::Lgpd(
                    LgpdTransferBasis::ContractualClauses,
                )),
            ),
            (BR, EU, None, &none, TransferDecision::Refused),
            (US, EU, None, &none, TransferDecision::Refused),
            (
                US,
                EU,
                None,
                &consent,
                TransferDecision::Allowed(TransferBasis::Us(UsTransferBasis::Consent)),
            ),
        ];
        for (home, target, mechanism, consent, expected) in cases {
            assert_eq!(
                decide(home, target, mechanism, consent),
                expected,
                "{home:?} user in {target:?} with {mechanism:?} and {consent:?}"
            );
        }
    }

    #[test]
    fn every_jurisdiction_has_a_provider() {
        let compliance = Compliance::default();
        for jurisdiction in [Jurisdiction::EU, Jurisdiction::US, Jurisdiction::BR] {
            let provider = compliance.provider(jurisdiction).expect("provider");
            assert_eq!(provider.jurisdiction(), jurisdiction);
        }
    }
}

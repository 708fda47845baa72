//! Auto top-up of credits through a payment provider. After overage charges lower an org's
//! balance, [`AutoTopups`] checks the orgs whose plan allows auto top-up and that set a
//! threshold. For each one under it, the [`PaymentProvider`] adds the configured amount.
//! The default provider, [`InvoiceProvider`], takes no payment itself: it records a pending
//! invoice line that the next invoice bills.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use synaxis_shared::OrgId;
use synaxis_shared::credits::CreditEntry;

use crate::clock::Clock;
use crate::store::{Store, StoreError};
use crate::tenancy::plans::PlanCatalog;

/// A way of paying for credits.
#[async_trait]
pub trait PaymentProvider: Send + Sync + Debug {
    /// Adds `amount_usd` to the org's credits and bills it, while the org's balance is under
    /// `threshold_usd`. Returns the `auto_topup` ledger entry, or `None` when the balance is
    /// not under the threshold, such as after another process's top-up.
    async fn top_up(
        &self,
        org_id: OrgId,
        threshold_usd: Decimal,
        amount_usd: Decimal,
        now: DateTime<Utc>,
    ) -> Result<Option<CreditEntry>, StoreError>;
}

/// The offline provider: each top-up becomes a pending line of the org's next invoice.
#[derive(Debug)]
pub struct InvoiceProvider {
    store: Arc<dyn Store>,
}

impl InvoiceProvider {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl PaymentProvider for InvoiceProvider {
    async fn top_up(
        &self,
        org_id: OrgId,
        threshold_usd: Decimal,
        amount_usd: Decimal,
        now: DateTime<Utc>,
    ) -> Result<Option<CreditEntry>, StoreError> {
        self.store
            .invoice_topup(org_id, threshold_usd, amount_usd, now)
            .await
    }
}

/// Tops up the credits of orgs whose balance fell under their threshold.
#[derive(Debug)]
pub struct AutoTopups {
    store: Arc<dyn Store>,
    provider: Arc<dyn PaymentProvider>,
    plans: Arc<PlanCatalog>,
    clock: Arc<dyn Clock>,
}

impl AutoTopups {
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn PaymentProvider>,
        plans: Arc<PlanCatalog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            provider,
            plans,
            clock,
        }
    }

    /// Tops up each of `orgs` that has an auto top-up, on a plan that allows it, and a balance
    /// under its threshold. Failures are logged: the next charge checks again.
    pub async fn check(&self, orgs: BTreeSet<OrgId>) {
        for org_id in orgs {
            if let Err(error) = self.check_one(org_id).await {
                tracing::warn!(%error, org.id = %org_id, "auto top-up failed");
            }
        }
    }

    async fn check_one(&self, org_id: OrgId) -> Result<(), StoreError> {
        self.top_up_under(org_id, Decimal::ZERO).await.map(|_| ())
    }

    /// Tops up the org's credits when its balance less `charge` is under its threshold, so that
    /// a request refused for want of credit can be admitted. Returns whether credit was added.
    pub async fn top_up_to_cover(&self, org_id: OrgId, charge: Decimal) -> bool {
        match self.top_up_under(org_id, charge).await {
            Ok(topped_up) => topped_up,
            Err(error) => {
                tracing::warn!(%error, org.id = %org_id, "auto top-up failed");
                false
            }
        }
    }

    /// Tops up the org when it has an auto top-up, on a plan that allows it, and its balance
    /// less `charge` is under the threshold.
    async fn top_up_under(&self, org_id: OrgId, charge: Decimal) -> Result<bool, StoreError> {
        let Some(settings) = self.store.get_auto_topup(org_id).await? else {
            return Ok(false);
        };
        let org = self.store.get_org(org_id).await?;
        let allowed = self
            .plans
            .entitlements_of(&org)
            .is_ok_and(|(entitlements, _)| entitlements.auto_topup);
        if !allowed {
            tracing::debug!(org.id = %org_id, "the org's plan no longer allows auto top-up");
            return Ok(false);
        }
        let threshold = settings.threshold_usd + charge;
        let (balance, _) = self.store.credit_balance(org_id).await?;
        if balance >= threshold {
            return Ok(false);
        }
        let entry = self
            .provider
            .top_up(org_id, threshold, settings.amount_usd, self.clock.now())
            .await?;
        let Some(entry) = entry else {
            return Ok(false);
        };
        tracing::info!(
            org.id = %org_id,
            amount_usd = %entry.amount_usd,
            balance_usd = %entry.balance_usd,
            "credits topped up automatically"
        );
        Ok(true)
    }
}

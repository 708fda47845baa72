//! Billing currencies, exchange rates and invoices. An operator sets rates and issues an org's
//! monthly invoice; the org's owner, admins and billing users read its invoices.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use synaxis_shared::InvoiceId;
use synaxis_shared::api::Org;
use synaxis_shared::invoices::{FxRate, Invoice, IssueInvoiceRequest, SetFxRatesRequest};
use synaxis_shared::money::Currency;
use synaxis_shared::plans::Quota;

use super::plans::PlanLimit;
use super::rbac::{Action, Target};
use super::{Caller, Tenancy, TenancyError, check, org_target};
use crate::billing::invoices::{convert, usd_lines};

impl Tenancy {
    /// Refuses a billing currency that the org's plan does not list, naming the plan that does.
    pub(super) fn check_billing_currency(
        &self,
        org: &Org,
        currency: Currency,
    ) -> Result<(), TenancyError> {
        let (entitlements, plan) = self.plans.entitlements_of(org)?;
        let allows = |currencies: &[String]| currencies.iter().any(|code| code == currency.code());
        if allows(&entitlements.billing_currencies) {
            return Ok(());
        }
        let lifted_by = self
            .plans
            .plans()
            .filter(|other| other.rank > plan.rank)
            .filter(|other| allows(&other.latest().1.billing_currencies))
            .min_by_key(|other| other.rank)
            .map(|other| (other.name.clone(), Quota::Unlimited));
        Err(TenancyError::PlanLimit(Box::new(PlanLimit {
            field: "billing_currencies",
            plan_name: plan.name.clone(),
            limit: None,
            value: Some(currency.code().to_owned()),
            lifted_by,
        })))
    }

    /// Stores exchange rates, all or none. The call requires a justification.
    pub async fn set_fx_rates(
        &self,
        caller: &Caller,
        request: SetFxRatesRequest,
    ) -> Result<Vec<FxRate>, TenancyError> {
        let draft = self.draft(caller, Action::FxSet, "fx_rate");
        let result = async {
            check(&caller.actor, Action::FxSet, &Target::default())?;
            super::plans::require_justification(caller, "setting exchange rates")?;
            if request.rates.is_empty() {
                return Err(TenancyError::invalid(
                    "rates",
                    "no rates given: send at least one {\"currency\", \"rate\"}",
                ));
            }
            let now = self.clock.now();
            let mut rates = Vec::with_capacity(request.rates.len());
            for (index, rate) in request.rates.into_iter().enumerate() {
                let field = format!("rates[{index}]");
                if rate.currency == Currency::base() {
                    return Err(TenancyError::invalid(
                        format!("{field}.currency"),
                        "USD is the base currency, whose rate is always 1: set EUR, BRL or GBP",
                    ));
                }
                let (lowest, highest) = (Decimal::new(1, 6), Decimal::from(1_000_000));
                if rate.rate < lowest || rate.rate > highest {
                    return Err(TenancyError::invalid(
                        format!("{field}.rate"),
                        format!(
                            "{} is out of range: give units of {} per USD from {lowest} to {highest}, such as 0.92",
                            rate.rate, rate.currency
                        ),
                    ));
                }
                rates.push(FxRate {
                    currency: rate.currency,
                    rate: rate.rate,
                    effective_at: rate.effective_at.unwrap_or(now),
                    created_at: now,
                });
            }
            self.store.insert_fx_rates(&rates, &draft).await?;
            Ok(rates)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Lists exchange rates, of one currency or all, newest first.
    pub async fn list_fx_rates(
        &self,
        caller: &Caller,
        currency: Option<Currency>,
    ) -> Result<Vec<FxRate>, TenancyError> {
        check(&caller.actor, Action::FxRead, &Target::default())?;
        Ok(self.store.list_fx_rates(currency).await?)
    }

    /// Issues an org's invoice of a calendar month: the plan fee and the credit bought in the
    /// month are charged, and usage and overage paid from credits are listed, in the org's
    /// billing currency at the rate in force now.
    pub async fn issue_invoice(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        request: IssueInvoiceRequest,
    ) -> Result<Invoice, TenancyError> {
        let mut draft = self.draft(caller, Action::InvoiceIssue, "organization");
        let result = async {
            let org = self
                .checked_org(caller, Action::InvoiceIssue, id_or_slug, &mut draft)
                .await?;
            let (period_start, period_end) = month_bounds(&request.period)?;
            let now = self.clock.now();
            if period_end > now {
                return Err(TenancyError::invalid(
                    "period",
                    format!(
                        "{} ends at {}: issue its invoice after the month ends, so that it holds all of the month",
                        request.period,
                        period_end.to_rfc3339()
                    ),
                ));
            }
            if period_end <= org.created_at {
                return Err(TenancyError::invalid(
                    "period",
                    format!(
                        "{} ended before the organization was created ({}): give a later month",
                        request.period,
                        org.created_at.to_rfc3339()
                    ),
                ));
            }
            let currency = org.billing_currency;
            let (fx_rate, fx_effective_at) = if currency == Currency::base() {
                (Decimal::ONE, None)
            } else {
                let rate = self.store.fx_rate_at(currency, now).await?.ok_or_else(|| {
                    TenancyError::invalid(
                        "currency",
                        format!(
                            "no {currency} rate is in force: set one with `synaxisctl fx set {currency} RATE`"
                        ),
                    )
                })?;
                (rate.rate, Some(rate.effective_at))
            };
            let (entitlements, _) = self.plans.entitlements_of(&org)?;
            let entries = self
                .store
                .credits_between(org.id, period_start, period_end)
                .await?;
            // An org still on its trial at the end of the month pays no fee for it.
            let on_trial = org.trial_ends_at.is_some_and(|ends| ends >= period_end);
            let fee = if on_trial {
                Decimal::ZERO
            } else {
                entitlements.monthly_fee_usd
            };
            let lines = usd_lines(fee, &entries);
            let (lines, total) = convert(&lines, currency, fx_rate).ok_or_else(|| {
                TenancyError::invalid(
                    "currency",
                    format!(
                        "the amounts of {} overflow at the {currency} rate {fx_rate}: check the rate with `synaxisctl fx list`",
                        request.period
                    ),
                )
            })?;
            let invoice = Invoice {
                id: InvoiceId::new(),
                org_id: org.id,
                period: request.period.clone(),
                period_start,
                period_end,
                currency,
                fx_rate,
                fx_effective_at,
                lines,
                total,
                issued_at: now,
            };
            self.store.insert_invoice(&invoice, &draft).await?;
            Ok(invoice)
        }
        .await;
        self.audited(draft, result).await
    }

    /// Lists an org's invoices, newest first.
    pub async fn list_invoices(
        &self,
        caller: &Caller,
        id_or_slug: &str,
    ) -> Result<Vec<Invoice>, TenancyError> {
        let org = self.load_org(id_or_slug).await?;
        check(
            &caller.actor,
            Action::InvoiceRead,
            &org_target(org.id, "organization", id_or_slug),
        )?;
        Ok(self.store.list_invoices(org.id).await?)
    }

    /// Returns one invoice; an invoice of another org is not found.
    pub async fn get_invoice(
        &self,
        caller: &Caller,
        id: InvoiceId,
    ) -> Result<Invoice, TenancyError> {
        let invoice = self.store.get_invoice(id).await?;
        check(
            &caller.actor,
            Action::InvoiceRead,
            &org_target(invoice.org_id, "invoice", id),
        )?;
        Ok(invoice)
    }
}

/// Returns the start and end, in UTC, of the month `period`, such as `2026-11`.
fn month_bounds(period: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), TenancyError> {
    let invalid = || {
        TenancyError::invalid(
            "period",
            format!("`{period}` is not a month: write it as YYYY-MM, such as 2026-11"),
        )
    };
    let start =
        NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").map_err(|_| invalid())?;
    if format!("{:04}-{:02}", start.year(), start.month()) != period {
        return Err(invalid());
    }
    let end = start
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(invalid)?;
    let at_midnight = |date: NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .map(|time| Utc.from_utc_datetime(&time))
            .ok_or_else(invalid)
    };
    Ok((at_midnight(start)?, at_midnight(end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_bound_periods() {
        let (start, end) = month_bounds("2026-12").unwrap_or_else(|_| unreachable!());
        assert_eq!(start.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-11", "2026-11-01", "november"] {
            assert!(month_bounds(bad).is_err(), "{bad}");
        }
    }
}

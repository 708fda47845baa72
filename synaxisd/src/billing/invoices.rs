//! Invoice math. An invoice charges an org's plan fee and the credit it bought in the period.
//! Usage and overage, which credits already paid, appear as information lines and are never
//! charged again. Each line is summed in USD, unrounded, then converted to the org's billing
//! currency at one rate and rounded once to the currency's minor unit, half to even. The total
//! is the sum of the rounded charged lines, so it can differ from the rounded sum of the USD
//! amounts.

use rust_decimal::Decimal;
use synaxis_shared::credits::{CreditEntry, CreditKind};
use synaxis_shared::invoices::{InvoiceLine, LineKind};
use synaxis_shared::money::Currency;

/// A line before conversion: its kind and its USD amount, unrounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdLine {
    pub kind: LineKind,
    pub amount_usd: Decimal,
}

/// Converts `lines` at `rate` (units of `currency` per USD) and returns them with the total:
/// the sum of the rounded amounts of the charged lines. Returns `None` when an amount
/// overflows the decimal type.
pub fn convert(
    lines: &[UsdLine],
    currency: Currency,
    rate: Decimal,
) -> Option<(Vec<InvoiceLine>, Decimal)> {
    let places = currency.minor_unit_places();
    let mut converted = Vec::with_capacity(lines.len());
    let mut total = Decimal::ZERO;
    for line in lines {
        let mut amount = currency.round(line.amount_usd.checked_mul(rate)?);
        // Every amount shows its minor unit, such as 24.50 and 0.00.
        amount.rescale(places);
        let charged = line.kind.is_charged();
        if charged {
            total = total.checked_add(amount)?;
        }
        converted.push(InvoiceLine {
            kind: line.kind,
            amount_usd: line.amount_usd,
            amount,
            charged,
        });
    }
    total.rescale(places);
    Some((converted, total))
}

/// Builds the USD lines of a period from the plan fee and the period's ledger entries: one line
/// per kind, each the unrounded sum of its entries. Lines without entries are left out, except
/// the plan fee.
pub fn usd_lines(plan_fee_usd: Decimal, entries: &[CreditEntry]) -> Vec<UsdLine> {
    let mut lines = vec![UsdLine {
        kind: LineKind::PlanFee,
        amount_usd: plan_fee_usd,
    }];
    for kind in [
        LineKind::CreditTopups,
        LineKind::Usage,
        LineKind::Overage,
        LineKind::CreditCorrections,
    ] {
        let matching: Vec<Decimal> = entries
            .iter()
            .filter(|entry| line_kind(entry.kind) == kind)
            .map(|entry| entry.amount_usd)
            .collect();
        if matching.is_empty() {
            continue;
        }
        // Ledger amounts are signed from the org's side: spending is negative. An invoice line
        // shows what was bought or paid, so spending lines show as positive amounts.
        let sum: Decimal = matching.into_iter().sum();
        let amount_usd = match kind {
            LineKind::Usage | LineKind::Overage => -sum,
            _ => sum,
        };
        lines.push(UsdLine { kind, amount_usd });
    }
    lines
}

fn line_kind(kind: CreditKind) -> LineKind {
    match kind {
        CreditKind::Topup | CreditKind::AutoTopup => LineKind::CreditTopups,
        CreditKind::Usage => LineKind::Usage,
        CreditKind::Overage => LineKind::Overage,
        CreditKind::Refund | CreditKind::Adjustment => LineKind::CreditCorrections,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap_or_default()
    }

    fn line(kind: LineKind, usd: &str) -> UsdLine {
        UsdLine {
            kind,
            amount_usd: dec(usd),
        }
    }

    /// Each case: lines in USD, the currency and rate, the expected rounded amounts, and the
    /// expected total, all computed by hand.
    #[test]
    fn lines_convert_and_round_once() {
        let cases = [
            // USD at 1: 49 + 10.005, a tie that rounds to the even 10.00.
            (
                vec![
                    line(LineKind::PlanFee, "49"),
                    line(LineKind::CreditTopups, "10.005"),
                ],
                Currency::Usd,
                "1",
                vec!["49.00", "10.00"],
                "59.00",
            ),
            // EUR at 0.92: 49 * 0.92 = 45.08; 12.5 * 0.92 = 11.5 exactly.
            (
                vec![
                    line(LineKind::PlanFee, "49"),
                    line(LineKind::CreditTopups, "12.5"),
                ],
                Currency::Eur,
                "0.92",
                vec!["45.08", "11.50"],
                "56.58",
            ),
            // BRL at 5.0: 0.003 * 5 = 0.015, a tie that rounds up to the even 0.02;
            // 0.001 * 5 = 0.005, a tie that rounds down to 0.00. The information line of
            // overage, 0.3 * 5 = 1.5, is not in the total.
            (
                vec![
                    line(LineKind::PlanFee, "0.003"),
                    line(LineKind::CreditTopups, "0.001"),
                    line(LineKind::Overage, "0.3"),
                ],
                Currency::Brl,
                "5.0",
                vec!["0.02", "0.00", "1.50"],
                "0.02",
            ),
            // GBP at 0.79: two lines of 0.0063 USD convert to 0.004977 each, which round to
            // 0.00, so the total is 0.00, although their sum, 0.009954, rounds to 0.01.
            (
                vec![
                    line(LineKind::PlanFee, "0.0063"),
                    line(LineKind::CreditTopups, "0.0063"),
                ],
                Currency::Gbp,
                "0.79",
                vec!["0.00", "0.00"],
                "0.00",
            ),
            // GBP at 0.79: 49 * 0.79 = 38.71; 0.0225 USD of usage is information.
            (
                vec![
                    line(LineKind::PlanFee, "49"),
                    line(LineKind::Usage, "0.0225"),
                ],
                Currency::Gbp,
                "0.79",
                vec!["38.71", "0.02"],
                "38.71",
            ),
        ];
        for (lines, currency, rate, amounts, total) in cases {
            let (converted, sum) = convert(&lines, currency, dec(rate)).unwrap_or_default();
            let rounded: Vec<Decimal> = converted.iter().map(|line| line.amount).collect();
            let expected: Vec<Decimal> = amounts.iter().map(|amount| dec(amount)).collect();
            assert_eq!(rounded, expected, "{currency} at {rate}");
            assert_eq!(sum, dec(total), "{currency} at {rate}");
        }
    }

    fn entry(kind: CreditKind, amount: &str) -> CreditEntry {
        CreditEntry {
            org_id: synaxis_shared::OrgId::new(),
            seq: 1,
            kind,
            amount_usd: dec(amount),
            balance_usd: Decimal::ZERO,
            reference: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn credit_paid_overage_is_not_charged() {
        let entries = [
            entry(CreditKind::Topup, "25"),
            entry(CreditKind::Overage, "-0.5"),
            entry(CreditKind::Usage, "-1.2"),
            entry(CreditKind::AutoTopup, "10"),
            entry(CreditKind::Overage, "-0.25"),
        ];
        let lines = usd_lines(dec("49"), &entries);
        assert_eq!(
            lines,
            [
                line(LineKind::PlanFee, "49"),
                line(LineKind::CreditTopups, "35"),
                line(LineKind::Usage, "1.2"),
                line(LineKind::Overage, "0.75"),
            ]
        );
        let (converted, total) = convert(&lines, Currency::Usd, Decimal::ONE).unwrap_or_default();
        let charged: Vec<LineKind> = converted
            .iter()
            .filter(|line| line.charged)
            .map(|line| line.kind)
            .collect();
        assert_eq!(charged, [LineKind::PlanFee, LineKind::CreditTopups]);
        assert_eq!(total, dec("84.00"), "the fee and the bought credit only");
    }
}

//! Limit sets: the request and token limits of a scope, and an organization's cap on concurrent
//! requests, written as in the config and the control API:
//!
//! ```toml
//! [limits]
//! concurrent_requests = 20
//!
//! [limits.requests]
//! per_minute = { limit = 100, window = "sliding", action = "throttle" }
//! per_day    = { limit = 100000, window = "fixed", action = "block" }
//!
//! [limits.tokens]
//! per_month  = { limit = 10000000, window = "fixed", action = "credit_charge" }
//! ```

use serde::{Deserialize, Serialize};

/// The largest limit, cost or adjustment that a limiter accepts, 2^53 - 1. The Redis scripts
/// add counts as Lua numbers, which are exact integers only up to 2^53.
pub const MAX_AMOUNT: u64 = (1 << 53) - 1;

/// The quantity that a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Requests,
    Tokens,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// The length of a limit's window. A fixed month is the calendar month in UTC; a sliding month
/// is 30 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// The kind of a window. A fixed window resets at its boundary in UTC. A sliding window counts the
/// charges of the last window length, in buckets of a tenth of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    Fixed,
    Sliding,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Sliding => "sliding",
        }
    }
}

/// The handling of a request that a limit has no room for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Hold the request for a bounded wait until capacity frees, then respond 429.
    Throttle,
    /// Respond 429 `quota_exceeded` at once, until the window resets.
    Block,
    /// Admit past the limit and charge the overage to the org's credits. Until credits are
    /// enforced, such a limit acts as `Block`.
    CreditCharge,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Block => "block",
            Self::CreditCharge => "credit_charge",
        }
    }
}

/// One limit of a set: its amount per window, the window kind and the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    pub limit: u64,
    /// The window kind; a limit without one is fixed.
    #[serde(default = "fixed")]
    pub window: WindowKind,
    pub action: Action,
}

fn fixed() -> WindowKind {
    WindowKind::Fixed
}

/// The limits of one metric, at most one per window length.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<LimitRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<LimitRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<LimitRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_month: Option<LimitRule>,
}

impl MetricLimits {
    /// Returns each limit with its window, shortest window first.
    pub fn rules(&self) -> impl Iterator<Item = (Window, LimitRule)> + '_ {
        [
            (Window::Minute, self.per_minute),
            (Window::Hour, self.per_hour),
            (Window::Day, self.per_day),
            (Window::Month, self.per_month),
        ]
        .into_iter()
        .filter_map(|(window, rule)| rule.map(|rule| (window, rule)))
    }
}

/// The request and token limits of one scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    /// The maximum number of requests in flight at once, a cap that only organizations have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u64>,
    #[serde(default)]
    pub requests: MetricLimits,
    #[serde(default)]
    pub tokens: MetricLimits,
}

impl LimitSet {
    /// Returns each limit with its metric and window.
    pub fn rules(&self) -> impl Iterator<Item = (Metric, Window, LimitRule)> + '_ {
        let requests = self
            .requests
            .rules()
            .map(|(window, rule)| (Metric::Requests, window, rule));
        let tokens = self
            .tokens
            .rules()
            .map(|(window, rule)| (Metric::Tokens, window, rule));
        requests.chain(tokens)
    }

    /// Returns whether the set contains no limit at all.
    pub fn is_empty(&self) -> bool {
        self.concurrent_requests.is_none() && self.rules().next().is_none()
    }

    /// Checks every limit, and names the first invalid one by its path under `prefix`, such as
    /// `limits.requests.per_minute.limit`, with the reason. `concurrent_requests` is accepted
    /// only when `for_org` is true.
    pub fn validate(&self, prefix: &str, for_org: bool) -> Result<(), (String, String)> {
        if let Some(cap) = self.concurrent_requests {
            let key = format!("{prefix}.concurrent_requests");
            if !for_org {
                return Err((
                    key,
                    "only an organization has a cap on concurrent requests; set it on the org"
                        .to_owned(),
                ));
            }
            if cap == 0 || cap > MAX_AMOUNT {
                return Err((key, format!("must be between 1 and {MAX_AMOUNT}")));
            }
        }
        for (metric, window, rule) in self.rules() {
            let key = format!("{prefix}.{}.per_{}.limit", metric.as_str(), window.as_str());
            if rule.limit == 0 {
                return Err((
                    key,
                    "must be at least 1; to stop all requests, deactivate the key, user or org"
                        .to_owned(),
                ));
            }
            if rule.limit > MAX_AMOUNT {
                return Err((key, format!("must be at most {MAX_AMOUNT}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [requests]
        per_minute = { limit = 100, window = "sliding", action = "throttle" }
        per_hour   = { limit = 10000, window = "fixed", action = "throttle" }
        per_day    = { limit = 100000, action = "block" }

        [tokens]
        per_minute = { limit = 10000, window = "sliding", action = "throttle" }
        per_month  = { limit = 10000000, window = "fixed", action = "credit_charge" }
    "#;

    #[test]
    fn limit_set_example_parses() {
        let set: LimitSet = toml::from_str(EXAMPLE).expect("the example parses");
        set.validate("limits", true).expect("the example is valid");

        let rules: Vec<_> = set.rules().collect();
        assert_eq!(rules.len(), 5);
        assert_eq!(
            rules[0],
            (
                Metric::Requests,
                Window::Minute,
                LimitRule {
                    limit: 100,
                    window: WindowKind::Sliding,
                    action: Action::Throttle
                }
            )
        );
        assert_eq!(rules[2].2.window, WindowKind::Fixed, "fixed is the default");
        assert_eq!(rules[4].2.action, Action::CreditCharge);
    }

    #[test]
    fn limit_set_rejects_unknown_names() {
        let window =
            toml::from_str::<LimitSet>("[requests]\nper_week = { limit = 1, action = \"block\" }")
                .expect_err("no weekly window");
        assert!(window.to_string().contains("per_week"), "{window}");
        let action =
            toml::from_str::<LimitSet>("[requests]\nper_day = { limit = 1, action = \"wait\" }")
                .expect_err("no such action");
        assert!(action.to_string().contains("wait"), "{action}");
    }

    #[test]
    fn limit_set_names_invalid_limits() {
        let zero: LimitSet =
            toml::from_str("[tokens]\nper_day = { limit = 0, action = \"block\" }")
                .expect("parses");
        let (key, reason) = zero.validate("limits", false).expect_err("zero is invalid");
        assert_eq!(key, "limits.tokens.per_day.limit");
        assert!(reason.contains("at least 1"), "{reason}");

        let huge = LimitSet {
            requests: MetricLimits {
                per_hour: Some(LimitRule {
                    limit: MAX_AMOUNT + 1,
                    window: WindowKind::Fixed,
                    action: Action::Block,
                }),
                ..MetricLimits::default()
            },
            ..LimitSet::default()
        };
        let (key, _) = huge.validate("orgs.acme", true).expect_err("too large");
        assert_eq!(key, "orgs.acme.requests.per_hour.limit");
    }

    #[test]
    fn concurrency_cap_belongs_to_orgs() {
        let set: LimitSet = toml::from_str("concurrent_requests = 4").expect("parses");
        assert!(set.validate("limits", true).is_ok());
        let (key, reason) = set.validate("limits", false).expect_err("not on a user");
        assert_eq!(key, "limits.concurrent_requests");
        assert!(reason.contains("organization"), "{reason}");
        let zero: LimitSet = toml::from_str("concurrent_requests = 0").expect("parses");
        assert!(zero.validate("limits", true).is_err());
        assert!(LimitSet::default().is_empty());
        assert!(!set.is_empty());
    }
}

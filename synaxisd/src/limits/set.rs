//! Limit sets: the request and token limits of a scope, written as in the config and the
//! control API:
//!
//! ```toml
//! [limits.requests]
//! per_minute = { limit = 100, window = "sliding", action = "throttle" }
//! per_day    = { limit = 100000, window = "fixed", action = "block" }
//!
//! [limits.tokens]
//! per_month  = { limit = 10000000, window = "fixed", action = "credit_charge" }
//! ```

use serde::{Deserialize, Serialize};

use super::{MAX_AMOUNT, Metric, Window, WindowKind};

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

    /// Checks every limit, and names the first invalid one by its path under `prefix`, such as
    /// `limits.requests.per_minute.limit`, with the reason.
    pub fn validate(&self, prefix: &str) -> Result<(), (String, String)> {
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

    /// Returns the paths of the limits whose action is `credit_charge`, such as
    /// `limits.tokens.per_month`.
    pub fn credit_charge_limits(&self, prefix: &str) -> Vec<String> {
        self.rules()
            .filter(|(_, _, rule)| rule.action == Action::CreditCharge)
            .map(|(metric, window, _)| {
                format!("{prefix}.{}.per_{}", metric.as_str(), window.as_str())
            })
            .collect()
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
        set.validate("limits").expect("the example is valid");

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
        assert_eq!(
            set.credit_charge_limits("limits"),
            vec!["limits.tokens.per_month".to_owned()]
        );
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
        let (key, reason) = zero.validate("limits").expect_err("zero is invalid");
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
        let (key, _) = huge.validate("orgs.acme").expect_err("too large");
        assert_eq!(key, "orgs.acme.requests.per_hour.limit");
    }
}

//! Value parsers of command-line flags. Their error messages are in English, like the rest
//! of clap's usage errors.

use chrono::{DateTime, Utc};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use reqwest::Url;
use reqwest::header::HeaderValue;
use synaxis_shared::api::KeyScope;
use synaxis_shared::limits::MAX_AMOUNT;
use synaxis_shared::{Locale, Role};

use super::Justification;
use super::actions::LimitChange;

pub fn parse_endpoint(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|error| format!("invalid URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("use an http:// or https:// URL".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("remove the query string and fragment from the URL".to_owned());
    }
    Ok(url)
}

/// Accepts a token that fits a bearer `Authorization` header: visible ASCII without spaces.
pub fn parse_token(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("the token is empty".to_owned());
    }
    if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("the token must be visible ASCII characters without spaces".to_owned());
    }
    Ok(value.to_owned())
}

/// Maximum length of a justification in bytes, after trimming. synaxisd rejects longer ones.
const MAX_JUSTIFICATION_BYTES: usize = 1024;

/// Accepts one line of printable ASCII text of at most [`MAX_JUSTIFICATION_BYTES`] bytes, as
/// synaxisd requires of the header.
pub fn parse_justification(value: &str) -> Result<Justification, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("the justification is empty".to_owned());
    }
    if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(
            "the justification must be one line of printable ASCII characters, without accents"
                .to_owned(),
        );
    }
    if trimmed.len() > MAX_JUSTIFICATION_BYTES {
        return Err(format!(
            "the justification has {} bytes, and the maximum is {MAX_JUSTIFICATION_BYTES}",
            trimmed.len()
        ));
    }
    HeaderValue::from_str(trimmed)
        .map(Justification)
        .map_err(|error| format!("the justification is not a valid header value: {error}"))
}

/// Rejects values that cannot be a single URL path segment. The URL builder drops `.` and
/// `..` segments, so they would reach another route.
pub fn parse_org_reference(value: &str) -> Result<String, String> {
    if matches!(value, "" | "." | "..") {
        return Err("expected an organization id or slug".to_owned());
    }
    Ok(value.to_owned())
}

pub fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|timestamp| timestamp.with_timezone(&Utc))
        .map_err(|error| format!("{error}: use an RFC 3339 timestamp such as 2030-12-31T23:59:59Z"))
}

/// Parses a key's per-minute limit: a whole number from 1 to 2^53 - 1, the largest count that
/// synaxisd's limiters accept.
pub fn parse_key_limit(value: &str) -> Result<u64, String> {
    let limit: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number: use a number such as 600"))?;
    if limit == 0 || limit > MAX_AMOUNT {
        return Err(format!("use a number from 1 to {MAX_AMOUNT}"));
    }
    Ok(limit)
}

/// Parses the new per-minute limit of `key update`: a number as [`parse_key_limit`] takes it,
/// or `none` to remove the limit.
pub fn parse_key_limit_change(value: &str) -> Result<LimitChange, String> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(LimitChange(None));
    }
    parse_key_limit(value)
        .map(|limit| LimitChange(Some(limit)))
        .map_err(|message| format!("{message}, or `none` to remove the limit"))
}

/// Parses a duration such as `60s`, `15m`, `1h`, `1h 30m` or `0` into whole seconds. The
/// syntax is humantime's, which also accepts fractions such as `1.5h`.
pub fn parse_grace(value: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(value.trim())
        .map_err(|error| format!("{error}: use a duration such as 60s, 15m, 1h or 0"))?;
    if duration.subsec_nanos() != 0 {
        return Err("use whole seconds, such as 2s rather than 1500ms".to_owned());
    }
    Ok(duration.as_secs())
}

/// Accepts a context name made of ASCII letters, digits, `.`, `_` and `-`, so that it can
/// be typed in a shell and used as a TOML key without quotes.
pub fn parse_context_name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("the context name is empty".to_owned());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !value.chars().all(allowed) {
        return Err(
            "use only ASCII letters, digits, `.`, `_` and `-` in a context name".to_owned(),
        );
    }
    Ok(value.to_owned())
}

/// Parses a role and lists the valid roles in `--help` and in errors.
pub fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str)).try_map(|value| value.parse::<Role>())
}

/// Parses a user's locale and lists the valid locales in `--help` and in errors.
pub fn locale_parser() -> impl TypedValueParser<Value = Locale> {
    PossibleValuesParser::new([Locale::En, Locale::PtBr].map(Locale::as_str))
        .try_map(|value| value.parse::<Locale>())
}

/// Parses a key scope and lists the valid scopes in `--help` and in errors.
pub fn scope_parser() -> impl TypedValueParser<Value = KeyScope> {
    PossibleValuesParser::new([KeyScope::Inference, KeyScope::Management].map(KeyScope::as_str))
        .try_map(|value| value.parse::<KeyScope>())
}

/// Parses a drill duration, from 1 s to 1 h: whole seconds, or a duration such as `30s`, `2m`
/// or `1m 30s`.
pub fn parse_duration_secs(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let seconds = match value.parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(value)
            .map_err(|error| {
                format!("`{value}` is not a duration ({error}): use seconds or a duration such as 30s or 2m")
            })?
            .as_secs(),
    };
    if (1..=3600).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("the duration must be 1s to 1h, not `{value}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_endpoint_accepts_http_and_https() {
        assert!(parse_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(parse_endpoint("https://gateway.example.com/synaxis/").is_ok());
    }

    #[test]
    fn parse_endpoint_rejects_other_urls() {
        assert!(parse_endpoint("127.0.0.1:8080").is_err());
        assert!(parse_endpoint("ftp://example.com").is_err());
        assert!(parse_endpoint("http://example.com/?a=b").is_err());
    }

    #[test]
    fn parse_token_rejects_invalid_header_values() {
        assert!(parse_token("").is_err());
        assert!(parse_token("has space").is_err());
        assert!(parse_token("line\nbreak").is_err());
        assert!(parse_token("op-token_123").is_ok());
    }

    #[test]
    fn parse_timestamp_requires_rfc3339() {
        assert!(parse_timestamp("2030-12-31T23:59:59Z").is_ok());
        assert!(parse_timestamp("2030-12-31T20:59:59-03:00").is_ok());
        assert!(parse_timestamp("2030-12-31").is_err());
    }

    #[test]
    fn parse_grace_accepts_units() -> Result<(), String> {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("60s", 60),
            ("15m", 900),
            ("1h", 3_600),
            ("1h 30m", 5_400),
            ("1.5h", 5_400),
            ("2days", 172_800),
            (" 45s ", 45),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_grace(text)?, seconds, "{text}");
        }
        Ok(())
    }

    #[test]
    fn parse_grace_rejects_invalid_durations() {
        for text in ["", "60", "-5s", "soon", "1500ms", "0.5s"] {
            assert!(parse_grace(text).is_err(), "{text}");
        }
    }

    #[test]
    fn parse_grace_error_shows_examples() {
        let message = parse_grace("60").expect_err("a number without a unit is invalid");
        assert!(message.contains("60s, 15m, 1h or 0"), "{message}");
    }

    #[test]
    fn parse_justification_accepts_printable_ascii() -> Result<(), String> {
        let justification = parse_justification("  ticket OPS-12: rotate leaked key ")?;
        assert_eq!(
            justification.header_value().as_bytes(),
            b"ticket OPS-12: rotate leaked key"
        );
        assert!(parse_justification(&"x".repeat(MAX_JUSTIFICATION_BYTES)).is_ok());
        Ok(())
    }

    #[test]
    fn parse_justification_rejects_invalid_text() {
        let too_long = "x".repeat(MAX_JUSTIFICATION_BYTES + 1);
        let cases = [
            "",
            "   ",
            "two\nlines",
            "tab\there",
            "manutenção",
            &too_long,
        ];
        for text in cases {
            assert!(parse_justification(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn parse_key_limit_accepts_range() -> Result<(), String> {
        assert_eq!(parse_key_limit("1")?, 1);
        assert_eq!(parse_key_limit(" 600 ")?, 600);
        assert_eq!(parse_key_limit(&MAX_AMOUNT.to_string())?, MAX_AMOUNT);
        for text in ["0", "-1", "1.5", "many", "", &(MAX_AMOUNT + 1).to_string()] {
            assert!(parse_key_limit(text).is_err(), "{text:?}");
        }
        Ok(())
    }

    #[test]
    fn parse_key_limit_change_accepts_none() -> Result<(), String> {
        assert_eq!(parse_key_limit_change("none")?, LimitChange(None));
        assert_eq!(parse_key_limit_change("None")?, LimitChange(None));
        assert_eq!(parse_key_limit_change("90")?, LimitChange(Some(90)));
        let message = parse_key_limit_change("0").expect_err("0 is no limit");
        assert!(message.contains("`none`"), "{message}");
        Ok(())
    }

    #[test]
    fn parse_context_name_accepts_shell_words() {
        assert!(parse_context_name("prod-eu.1_a").is_ok());
        assert!(parse_context_name("").is_err());
        assert!(parse_context_name("with space").is_err());
        assert!(parse_context_name("a/b").is_err());
        assert!(parse_context_name("ação").is_err());
    }

    #[test]
    fn drill_durations_take_units() {
        assert_eq!(parse_duration_secs("30"), Ok(30));
        assert_eq!(parse_duration_secs("30s"), Ok(30));
        assert_eq!(parse_duration_secs("2m"), Ok(120));
        assert_eq!(parse_duration_secs("1h"), Ok(3600));
        assert_eq!(parse_duration_secs("1m 30s"), Ok(90));
        for invalid in ["0", "2h", "ten", "5d", ""] {
            assert!(parse_duration_secs(invalid).is_err(), "{invalid}");
        }
    }
}

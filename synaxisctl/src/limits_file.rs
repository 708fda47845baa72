//! The TOML file of `synaxisctl limits set`: a limit set in the form that synaxisd's config uses
//! under `[limits.org]`, with `concurrent_requests`, `[requests]` and `[tokens]` at the top level
//! or under `[limits]`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use synaxis_shared::limits::LimitSet;

/// The source of a limit set: a file, or standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    /// Returns the input that `--file` names: standard input for `-`, else the file.
    pub fn from_arg(path: &Path) -> Self {
        if path == Path::new("-") {
            Self::Stdin
        } else {
            Self::File(path.to_owned())
        }
    }
}

/// An error of reading a limits file. The messages are in [`crate::messages`].
#[derive(Debug, thiserror::Error)]
pub enum LimitsFileError {
    #[error("cannot read the limits file")]
    Read {
        input: Input,
        #[source]
        error: io::Error,
    },
    /// Invalid TOML, or TOML that is not a limit set.
    #[error("invalid limits file: {message}")]
    Invalid {
        input: Input,
        /// The line of the error, from 1, when the parser reports where it is.
        line: Option<usize>,
        /// The dotted key of the error, such as `requests.per_minute.limit`.
        key: Option<String>,
        message: String,
    },
    /// The file has a `[limits]` table and other top-level keys too.
    #[error("the limits file mixes [limits] with top-level keys")]
    Mixed { input: Input, keys: Vec<String> },
}

/// The form with every key and table under `[limits]`, such as `[limits.requests]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Nested {
    limits: LimitSet,
}

/// Reads and parses the limit set of `input`.
pub fn read(input: &Input) -> Result<LimitSet, LimitsFileError> {
    let read_error = |error| LimitsFileError::Read {
        input: input.clone(),
        error,
    };
    let text = match input {
        Input::File(path) => std::fs::read_to_string(path).map_err(read_error)?,
        Input::Stdin => {
            let mut text = String::new();
            io::stdin().read_to_string(&mut text).map_err(read_error)?;
            text
        }
    };
    parse(&text, input)
}

/// Parses a limit set from TOML text. Errors name the line and the dotted key where the parser
/// reports them.
pub fn parse(text: &str, input: &Input) -> Result<LimitSet, LimitsFileError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|error| invalid(input, text, None, &error))?;
    let nested = table.contains_key("limits");
    if nested && table.len() > 1 {
        return Err(LimitsFileError::Mixed {
            input: input.clone(),
            keys: table
                .keys()
                .filter(|key| *key != "limits")
                .cloned()
                .collect(),
        });
    }

    let deserializer = toml::Deserializer::new(text);
    let parsed = if nested {
        serde_path_to_error::deserialize::<_, Nested>(deserializer).map(|file| file.limits)
    } else {
        serde_path_to_error::deserialize::<_, LimitSet>(deserializer)
    };
    parsed.map_err(|error| {
        let key = error
            .path()
            .iter()
            .next()
            .is_some()
            .then(|| error.path().to_string());
        invalid(input, text, key, error.inner())
    })
}

fn invalid(
    input: &Input,
    text: &str,
    key: Option<String>,
    error: &toml::de::Error,
) -> LimitsFileError {
    let line = error
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| before.matches('\n').count() + 1);
    LimitsFileError::Invalid {
        input: input.clone(),
        line,
        key,
        message: error.message().trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use synaxis_shared::limits::{Action, WindowKind};

    use super::*;

    fn file() -> Input {
        Input::File(PathBuf::from("limits.toml"))
    }

    const TOP_LEVEL: &str = r#"
concurrent_requests = 20

[requests]
per_minute = { limit = 100, window = "sliding", action = "throttle" }

[tokens]
per_month = { limit = 10000000, action = "credit_charge" }
"#;

    #[test]
    fn parse_reads_top_level_tables() -> Result<(), LimitsFileError> {
        let set = parse(TOP_LEVEL, &file())?;
        assert_eq!(set.concurrent_requests, Some(20));
        let per_minute = set
            .requests
            .per_minute
            .ok_or_else(|| invalid_test("no per_minute"))?;
        assert_eq!(per_minute.limit, 100);
        assert_eq!(per_minute.window, WindowKind::Sliding);
        let per_month = set
            .tokens
            .per_month
            .ok_or_else(|| invalid_test("no per_month"))?;
        assert_eq!(per_month.window, WindowKind::Fixed);
        assert_eq!(per_month.action, Action::CreditCharge);
        Ok(())
    }

    fn invalid_test(message: &str) -> LimitsFileError {
        LimitsFileError::Invalid {
            input: file(),
            line: None,
            key: None,
            message: message.to_owned(),
        }
    }

    #[test]
    fn parse_reads_tables_under_limits() -> Result<(), LimitsFileError> {
        let nested = r#"
[limits]
concurrent_requests = 20

[limits.requests]
per_minute = { limit = 100, window = "sliding", action = "throttle" }

[limits.tokens]
per_month = { limit = 10000000, action = "credit_charge" }
"#;
        assert_eq!(parse(nested, &file())?, parse(TOP_LEVEL, &file())?);
        Ok(())
    }

    #[test]
    fn parse_of_empty_file_is_empty_set() -> Result<(), LimitsFileError> {
        assert!(parse("", &file())?.is_empty());
        assert!(parse("# no limits\n", &Input::Stdin)?.is_empty());
        Ok(())
    }

    /// Returns the line, key and message of an invalid file, or panics.
    fn error_of(text: &str) -> (Option<usize>, Option<String>, String) {
        match parse(text, &file()) {
            Err(LimitsFileError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        let (line, key, message) =
            error_of("[requests]\nper_minute = { limit = \"many\", action = \"block\" }\n");
        assert_eq!(line, Some(2));
        assert_eq!(key.as_deref(), Some("requests.per_minute.limit"));
        assert!(message.contains("invalid type"), "{message}");

        let (line, key, message) =
            error_of("\n[limits.requests]\nper_week = { limit = 1, action = \"block\" }\n");
        assert_eq!(line, Some(3));
        assert_eq!(key.as_deref(), Some("limits.requests.per_week"));
        assert!(message.contains("per_week"), "{message}");

        let (line, key, message) = error_of("[tokens]\nper_day = { limit = 5 }\n");
        assert_eq!(line, Some(2));
        assert_eq!(key.as_deref(), Some("tokens.per_day"));
        assert!(message.contains("action"), "{message}");
    }

    #[test]
    fn syntax_errors_name_line() {
        let (line, key, _) = error_of("[requests]\nper_minute = {\n");
        assert_eq!(line, Some(2));
        assert_eq!(key, None);
    }

    #[test]
    fn mixed_forms_are_rejected() {
        let text = "[limits]\nconcurrent_requests = 2\n\n[requests]\n";
        match parse(text, &file()) {
            Err(LimitsFileError::Mixed { keys, .. }) => assert_eq!(keys, ["requests"]),
            other => panic!("expected mixed forms, got {other:?}"),
        }
    }

    #[test]
    fn dash_reads_standard_input() {
        assert_eq!(Input::from_arg(Path::new("-")), Input::Stdin);
        assert_eq!(Input::from_arg(Path::new("limits.toml")), file());
    }
}

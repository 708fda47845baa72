//! The endpoint and the token of a run. Each comes from the first source that sets it: the
//! command-line flag, then the environment variable, then the current context of the
//! config file. The endpoint falls back to [`DEFAULT_ENDPOINT`], and the token has no default.

use reqwest::Url;

use crate::cli::{BearerToken, parse_endpoint};
use crate::config::{ConfigError, ConfigStore};

pub const ENDPOINT_VAR: &str = "SYNAXIS_ENDPOINT";
pub const TOKEN_VAR: &str = "SYNAXIS_TOKEN";
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// The settings of one source, each of which may be missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    pub endpoint: Option<Url>,
    pub token: Option<BearerToken>,
}

/// The resolved endpoint and token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub endpoint: Url,
    pub token: Option<BearerToken>,
    /// Whether the token came from the config file.
    pub token_from_context: bool,
}

/// An error of reading the settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid {variable}: {message}")]
    InvalidVariable {
        variable: &'static str,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Layer {
    /// Reads `SYNAXIS_ENDPOINT` and `SYNAXIS_TOKEN`.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    /// Reads the layer through `variable`, which returns the value of an environment
    /// variable. An empty value counts as unset, so `SYNAXIS_TOKEN=` disables the variable.
    fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let read = |name: &'static str| variable(name).filter(|value| !value.is_empty());
        let invalid = |variable: &'static str| {
            move |message: String| SettingsError::InvalidVariable { variable, message }
        };

        let endpoint = read(ENDPOINT_VAR)
            .map(|value| parse_endpoint(&value))
            .transpose()
            .map_err(invalid(ENDPOINT_VAR))?;
        let token = read(TOKEN_VAR)
            .map(|value| value.parse::<BearerToken>())
            .transpose()
            .map_err(invalid(TOKEN_VAR))?;
        Ok(Self { endpoint, token })
    }

    /// Reads the current context of the config file. Without `HOME` or `XDG_CONFIG_HOME`
    /// there is no config file, and so no context.
    pub fn from_current_context() -> Result<Self, ConfigError> {
        let store = match ConfigStore::from_env() {
            Ok(store) => store,
            Err(ConfigError::NoLocation) => return Ok(Self::default()),
            Err(error) => return Err(error),
        };
        let file = store.load()?;
        let context = file
            .current_context()
            .map_err(|error| store.context_error(error))?;
        Ok(context.map_or_else(Self::default, |context| Self {
            endpoint: Some(context.endpoint.clone()),
            token: context.token.clone(),
        }))
    }
}

/// Resolves the endpoint and the token from the flags, the environment and the current
/// context, in that order. `context` is called only when the first two leave a value unset,
/// so that a broken config file does not stop a command that needs nothing from it.
pub fn resolve(
    flags: Layer,
    environment: Layer,
    context: impl FnOnce() -> Result<Layer, ConfigError>,
) -> Result<Connection, ConfigError> {
    let mut endpoint = flags.endpoint.or(environment.endpoint);
    let mut token = flags.token.or(environment.token);
    let mut token_from_context = false;

    if endpoint.is_none() || token.is_none() {
        let context = context()?;
        endpoint = endpoint.or(context.endpoint);
        if token.is_none() {
            token_from_context = context.token.is_some();
            token = context.token;
        }
    }

    Ok(Connection {
        endpoint: endpoint.unwrap_or_else(default_endpoint),
        token,
        token_from_context,
    })
}

#[expect(
    clippy::expect_used,
    reason = "DEFAULT_ENDPOINT is a valid URL, and a unit test parses it"
)]
fn default_endpoint() -> Url {
    parse_endpoint(DEFAULT_ENDPOINT).expect("DEFAULT_ENDPOINT is a valid URL")
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::error::Error;

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    fn layer(endpoint: Option<&str>, token: Option<&str>) -> Result<Layer, Box<dyn Error>> {
        Ok(Layer {
            endpoint: endpoint.map(parse_endpoint).transpose()?,
            token: token.map(str::parse).transpose()?,
        })
    }

    fn token_of(connection: &Connection) -> Option<&str> {
        connection.token.as_ref().map(BearerToken::expose)
    }

    #[test]
    fn default_endpoint_parses() {
        assert_eq!(default_endpoint().as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn resolve_prefers_flags() -> TestResult {
        let context = layer(Some("http://context.example"), Some("context-token"))?;
        let connection = resolve(
            layer(Some("http://flag.example"), Some("flag-token"))?,
            layer(Some("http://env.example"), Some("env-token"))?,
            || Ok(context),
        )?;

        assert_eq!(connection.endpoint.as_str(), "http://flag.example/");
        assert_eq!(token_of(&connection), Some("flag-token"));
        assert!(!connection.token_from_context);
        Ok(())
    }

    #[test]
    fn resolve_prefers_environment_over_context() -> TestResult {
        let context = layer(Some("http://context.example"), Some("context-token"))?;
        let connection = resolve(
            Layer::default(),
            layer(Some("http://env.example"), Some("env-token"))?,
            || Ok(context),
        )?;

        assert_eq!(connection.endpoint.as_str(), "http://env.example/");
        assert_eq!(token_of(&connection), Some("env-token"));
        Ok(())
    }

    #[test]
    fn resolve_fills_each_value_independently() -> TestResult {
        let context = layer(Some("http://context.example"), Some("context-token"))?;
        let connection = resolve(layer(None, Some("flag-token"))?, Layer::default(), || {
            Ok(context)
        })?;

        assert_eq!(connection.endpoint.as_str(), "http://context.example/");
        assert_eq!(token_of(&connection), Some("flag-token"));
        assert!(!connection.token_from_context);
        Ok(())
    }

    #[test]
    fn resolve_reads_token_from_context() -> TestResult {
        let context = layer(None, Some("context-token"))?;
        let connection = resolve(
            layer(Some("http://flag.example"), None)?,
            Layer::default(),
            || Ok(context),
        )?;

        assert_eq!(connection.endpoint.as_str(), "http://flag.example/");
        assert_eq!(token_of(&connection), Some("context-token"));
        assert!(connection.token_from_context);
        Ok(())
    }

    #[test]
    fn resolve_defaults_endpoint_only() -> TestResult {
        let connection = resolve(Layer::default(), Layer::default(), || Ok(Layer::default()))?;

        assert_eq!(connection.endpoint.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(connection.token, None);
        Ok(())
    }

    #[test]
    fn resolve_skips_unneeded_context() -> TestResult {
        let called = Cell::new(false);
        resolve(
            layer(Some("http://flag.example"), None)?,
            layer(None, Some("env-token"))?,
            || {
                called.set(true);
                Err(ConfigError::NoLocation)
            },
        )?;
        assert!(!called.get());
        Ok(())
    }

    #[test]
    fn resolve_reports_context_error() {
        let result = resolve(Layer::default(), Layer::default(), || {
            Err(ConfigError::NoLocation)
        });
        assert!(matches!(result, Err(ConfigError::NoLocation)));
    }

    #[test]
    fn environment_ignores_empty_values() -> TestResult {
        let layer = Layer::from_variables(|_| Some(String::new()))?;
        assert_eq!(layer, Layer::default());
        Ok(())
    }

    #[test]
    fn environment_rejects_invalid_values() {
        let result = Layer::from_variables(|name| {
            (name == ENDPOINT_VAR).then(|| "ftp://example.com".to_owned())
        });
        let Err(SettingsError::InvalidVariable { variable, .. }) = result else {
            panic!("expected an invalid variable error, got {result:?}");
        };
        assert_eq!(variable, ENDPOINT_VAR);

        let result =
            Layer::from_variables(|name| (name == TOKEN_VAR).then(|| "has space".to_owned()));
        assert!(result.is_err());
    }
}

//! The daemon's own secrets: the pepper that keys the hash of every virtual key, and the
//! operator token that guards the control API.
//!
//! In production both come from the environment. On the embedded default, a missing secret is
//! generated on first start into a file under the data directory that only the owner can read,
//! and read back from there on later starts.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};

pub const PEPPER_ENV: &str = "SYNAXIS_KEY_PEPPER";
pub const OPERATOR_TOKEN_ENV: &str = "SYNAXIS_OPERATOR_TOKEN";
/// The secret that every region shares to sign peer calls; without it, nothing is forwarded.
pub const PEER_SECRET_ENV: &str = "SYNAXIS_PEER_SECRET";

const PEPPER_FILE: &str = "key-pepper";
const OPERATOR_TOKEN_FILE: &str = "operator-token";

/// Shortest accepted pepper, operator token or peer secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug)]
pub struct Secrets {
    pub pepper: SecretString,
    pub operator_token: SecretString,
    /// The operator token when this start generated it, so that it can be shown once.
    pub generated_operator_token: Option<GeneratedSecret>,
    pub peer_secret: Option<SecretString>,
}

#[derive(Debug)]
pub struct GeneratedSecret {
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "{name} is not set: PostgreSQL deployments take their secrets from the environment; set it to at least {MIN_SECRET_LEN} random characters"
    )]
    MissingInProduction { name: &'static str },
    #[error("{source_name} is too short: use at least {MIN_SECRET_LEN} random characters")]
    TooShort { source_name: String },
    #[error("cannot read or write secret file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Sources of secrets: the environment, and on the embedded default the data directory.
#[allow(missing_debug_implementations)]
pub struct SecretSources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Directory for generated secrets; `None` when secrets must come from the environment.
    pub generate_into: Option<&'a Path>,
}

impl Secrets {
    pub fn load(sources: &SecretSources<'_>) -> Result<Self, SecretsError> {
        let (pepper, _) = load_one(sources, PEPPER_ENV, PEPPER_FILE)?;
        let (operator_token, generated) =
            load_one(sources, OPERATOR_TOKEN_ENV, OPERATOR_TOKEN_FILE)?;
        Ok(Self {
            pepper,
            operator_token,
            generated_operator_token: generated,
            peer_secret: peer_secret(sources.env)?,
        })
    }
}

/// Reads `SYNAXIS_PEER_SECRET`, which is optional but must be long enough when set.
pub fn peer_secret(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, SecretsError> {
    env(PEER_SECRET_ENV)
        .map(|value| {
            check_length(&value, PEER_SECRET_ENV)?;
            Ok(SecretString::from(value))
        })
        .transpose()
}

fn load_one(
    sources: &SecretSources<'_>,
    env_name: &'static str,
    file_name: &str,
) -> Result<(SecretString, Option<GeneratedSecret>), SecretsError> {
    if let Some(value) = (sources.env)(env_name) {
        check_length(&value, env_name)?;
        return Ok((SecretString::from(value), None));
    }

    let Some(dir) = sources.generate_into else {
        return Err(SecretsError::MissingInProduction { name: env_name });
    };

    let path = dir.join(file_name);
    match fs::read_to_string(&path) {
        Ok(value) => {
            let value = value.trim().to_owned();
            check_length(&value, &path.display().to_string())?;
            warn_if_readable_by_others(&path);
            Ok((SecretString::from(value), None))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let value = generate_secret();
            write_owner_only(dir, &path, value.expose_secret())?;
            Ok((value, Some(GeneratedSecret { path })))
        }
        Err(source) => Err(SecretsError::Io { path, source }),
    }
}

fn check_length(value: &str, source_name: &str) -> Result<(), SecretsError> {
    if value.len() < MIN_SECRET_LEN {
        return Err(SecretsError::TooShort {
            source_name: source_name.to_owned(),
        });
    }
    Ok(())
}

/// Generates 48 base62 characters, about 285 bits of entropy.
fn generate_secret() -> SecretString {
    let value: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    SecretString::from(value)
}

fn write_owner_only(dir: &Path, path: &Path, value: &str) -> Result<(), SecretsError> {
    let io_error = |source| SecretsError::Io {
        path: path.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error)?;
    file.write_all(value.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "secret file is readable by other users; run chmod 600 on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_owner_only_and_stable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = |_: &str| None;
        let sources = SecretSources {
            env: &env,
            generate_into: Some(dir.path()),
        };

        let first = Secrets::load(&sources).expect("first load");
        assert!(first.generated_operator_token.is_some());
        let mode = fs::metadata(dir.path().join(PEPPER_FILE))
            .expect("pepper file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let second = Secrets::load(&sources).expect("second load");
        assert!(second.generated_operator_token.is_none());
        assert_eq!(first.pepper.expose_secret(), second.pepper.expose_secret());
        assert_eq!(
            first.operator_token.expose_secret(),
            second.operator_token.expose_secret()
        );
    }

    #[test]
    fn production_requires_environment_secrets() {
        let env = |_: &str| None;
        let sources = SecretSources {
            env: &env,
            generate_into: None,
        };
        let error = Secrets::load(&sources).expect_err("must fail");
        assert!(matches!(
            error,
            SecretsError::MissingInProduction { name: PEPPER_ENV }
        ));
    }

    #[test]
    fn short_environment_secret_is_rejected() {
        let env = |_: &str| Some("short".to_owned());
        let sources = SecretSources {
            env: &env,
            generate_into: None,
        };
        assert!(matches!(
            Secrets::load(&sources),
            Err(SecretsError::TooShort { .. })
        ));
    }
}

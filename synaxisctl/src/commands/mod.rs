//! One handler per resource: each builds the request of an action, sends it, and prints the
//! reply. `context` edits the config file and sends no request.

mod audit;
mod budget;
mod compliance;
mod context;
mod credits;
mod failover;
mod fx;
mod invoice;
mod key;
mod limits;
mod org;
mod plan;
mod region;
mod team;
mod user;

use std::io;

pub use audit::run as audit;
pub use budget::run as budget;
pub use compliance::run as compliance;
pub use context::{ContextFlags, run as context};
pub use credits::run as credits;
pub use failover::run as failover;
pub use fx::run as fx;
pub use invoice::run as invoice;
pub use key::run as key;
pub use limits::run as limits;
pub use org::run as org;
pub use plan::run as plan;
pub use region::run as region;
pub use team::run as team;
pub use user::run as user;

use synaxis_shared::api::BrokenEntry;

use crate::client::ClientError;
use crate::config::ConfigError;
use crate::exit::Exit;
use crate::limits_file::LimitsFileError;
use crate::prompt::PromptError;
use crate::settings::SettingsError;

/// An error of one command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    LimitsFile(#[from] LimitsFileError),
    /// A rates file that cannot be read, or a line of it that is not a rate.
    #[error("invalid rates file {path}: {message}")]
    RatesFile {
        path: String,
        /// The line of the error, from 1; `None` when the file cannot be read.
        line: Option<usize>,
        message: String,
    },
    #[error("missing token")]
    MissingToken,
    /// `audit verify` found the chain broken. The server names the first broken entry,
    /// when it found one.
    #[error("the audit chain is broken")]
    AuditChainBroken { first_broken: Option<BrokenEntry> },
    /// Regions whose residency check found violations or could not be read.
    #[error("the residency check found problems")]
    ResidencyProblems { problems: Vec<String> },
    /// A failover drill whose outcomes differ from the transfer rules, or that lost or
    /// duplicated usage records.
    #[error("the failover drill found problems")]
    DrillProblems { problems: Vec<String> },
    /// Regions that another region reports down, as `observer: region`, or views that could
    /// not be read.
    #[error("regions are down or unreadable")]
    RegionsDegraded { problems: Vec<String> },
    #[error("failed to start the async runtime")]
    Runtime(#[source] io::Error),
    #[error("failed to write the output")]
    Output(#[from] io::Error),
}

impl CommandError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Client(error) => error.exit(),
            Self::Settings(SettingsError::Config(error)) | Self::Config(error) => error.exit(),
            Self::Settings(SettingsError::InvalidVariable { .. })
            | Self::Prompt(PromptError::Missing(_))
            | Self::LimitsFile(LimitsFileError::Invalid { .. } | LimitsFileError::Mixed { .. })
            | Self::RatesFile { .. }
            | Self::MissingToken => Exit::Usage,
            // A `--file` path that does not exist is a wrong argument, like an invalid file.
            Self::LimitsFile(LimitsFileError::Read { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                Exit::Usage
            }
            Self::Prompt(PromptError::Terminal { .. })
            | Self::LimitsFile(LimitsFileError::Read { .. })
            | Self::AuditChainBroken { .. }
            | Self::RegionsDegraded { .. }
            | Self::ResidencyProblems { .. }
            | Self::DrillProblems { .. }
            | Self::Runtime(_)
            | Self::Output(_) => Exit::Failure,
        }
    }

    /// Reports whether stdout was closed early, as by `synaxisctl key list | head -1`, which
    /// needs no error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;
    use crate::config::ContextError;
    use crate::prompt::Field;

    #[test]
    fn exit_of_client_error_follows_status() {
        let error = CommandError::Client(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            message: "not found".to_owned(),
        });
        assert_eq!(error.exit(), Exit::NotFound);
    }

    #[test]
    fn exit_of_limits_file_read_error() {
        let read = |kind| {
            CommandError::LimitsFile(LimitsFileError::Read {
                input: crate::limits_file::Input::Stdin,
                error: io::Error::from(kind),
            })
        };
        assert_eq!(read(io::ErrorKind::NotFound).exit(), Exit::Usage);
        assert_eq!(read(io::ErrorKind::PermissionDenied).exit(), Exit::Failure);
    }

    #[test]
    fn exit_of_output_error_is_failure() {
        let error = CommandError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(error.exit(), Exit::Failure);
        assert!(error.is_broken_pipe());
    }

    #[test]
    fn exit_of_each_new_error() {
        let context_error = |source| {
            CommandError::Config(ConfigError::Context {
                path: "config.toml".into(),
                source,
            })
        };
        let cases = [
            (
                CommandError::Prompt(PromptError::Missing(Field::Email)),
                Exit::Usage,
            ),
            (CommandError::MissingToken, Exit::Usage),
            (
                CommandError::AuditChainBroken { first_broken: None },
                Exit::Failure,
            ),
            (
                context_error(ContextError::NotFound("a".to_owned())),
                Exit::NotFound,
            ),
            (
                context_error(ContextError::Exists("a".to_owned())),
                Exit::Conflict,
            ),
            (
                CommandError::Settings(SettingsError::InvalidVariable {
                    variable: "SYNAXIS_TOKEN",
                    message: String::new(),
                }),
                Exit::Usage,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.exit(), expected, "{error:?}");
        }
    }
}

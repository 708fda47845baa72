//! One handler per resource: each builds the request of an action, sends it, and prints the
//! reply.

mod key;
mod org;
mod user;

use std::io;

pub use key::run as key;
pub use org::run as org;
pub use user::run as user;

use crate::client::ClientError;
use crate::exit::Exit;

/// An error of one command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("failed to start the async runtime")]
    Runtime(#[source] io::Error),
    #[error("failed to write the output")]
    Output(#[from] io::Error),
}

impl CommandError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Client(error) => error.exit(),
            Self::Runtime(_) | Self::Output(_) => Exit::Failure,
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

    #[test]
    fn exit_of_client_error_follows_status() {
        let error = CommandError::Client(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            message: "not found".to_owned(),
        });
        assert_eq!(error.exit(), Exit::NotFound);
    }

    #[test]
    fn exit_of_output_error_is_failure() {
        let error = CommandError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(error.exit(), Exit::Failure);
        assert!(error.is_broken_pipe());
    }
}

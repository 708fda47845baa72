//! Exit statuses of synaxisctl. The values are a stable interface for scripts, and the help
//! text lists them.

use std::process::ExitCode;

use reqwest::StatusCode;

/// The exit status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// Any failure without a more specific status, such as a connection error or HTTP 5xx.
    Failure = 1,
    /// Invalid command-line arguments or a missing operator token. clap uses the same value.
    Usage = 2,
    /// HTTP 404.
    NotFound = 3,
    /// HTTP 401 or 403.
    Denied = 4,
    /// HTTP 402, 409 or 429.
    Conflict = 5,
}

impl Exit {
    /// Maps the status of an error response to an exit status.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Self::Denied,
            StatusCode::PAYMENT_REQUIRED | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {
                Self::Conflict
            }
            _ => Self::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_status_maps_each_documented_status() -> Result<(), Box<dyn std::error::Error>> {
        let cases = [
            (400, Exit::Failure),
            (401, Exit::Denied),
            (402, Exit::Conflict),
            (403, Exit::Denied),
            (404, Exit::NotFound),
            (409, Exit::Conflict),
            (422, Exit::Failure),
            (429, Exit::Conflict),
            (500, Exit::Failure),
            (502, Exit::Failure),
            (503, Exit::Failure),
            (504, Exit::Failure),
        ];
        for (code, expected) in cases {
            let status = StatusCode::from_u16(code)?;
            assert_eq!(Exit::for_status(status), expected, "HTTP {code}");
        }
        Ok(())
    }

    #[test]
    fn exit_values_are_stable() {
        assert_eq!(Exit::Success as u8, 0);
        assert_eq!(Exit::Failure as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::NotFound as u8, 3);
        assert_eq!(Exit::Denied as u8, 4);
        assert_eq!(Exit::Conflict as u8, 5);
    }

    #[test]
    fn usage_matches_clap_usage_status() {
        let error = clap::Error::new(clap::error::ErrorKind::InvalidValue);
        assert_eq!(error.exit_code(), Exit::Usage as i32);
    }
}

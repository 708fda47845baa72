//! User-facing text in English and Brazilian Portuguese. clap's own help and usage errors,
//! and the `--help` text below, are in English only.

use crate::client::ClientError;
use crate::commands::CommandError;
use crate::language::Language;

/// The end of `--help`: environment variables and exit codes.
pub const AFTER_HELP: &str = "\
Environment:
  SYNAXIS_LANG   Language of messages, `en` or `pt-BR`. When unset, `LANG` selects
                 Portuguese if it starts with `pt`, and English otherwise. The value is
                 also sent as Accept-Language, so server errors use the same language.

Exit codes:
  0  Success.
  1  Failure: connection error, timeout, invalid request (HTTP 400), server error
     (HTTP 5xx) or any other error.
  2  Usage error: invalid arguments or a missing operator token.
  3  Not found (HTTP 404).
  4  Denied: invalid operator token (HTTP 401) or forbidden (HTTP 403).
  5  Conflict or limit: conflict (HTTP 409), payment required (HTTP 402) or too many
     requests (HTTP 429).";

impl Language {
    pub fn missing_token(self) -> &'static str {
        match self {
            Self::En => "missing operator token: pass --token TOKEN or set SYNAXIS_TOKEN.",
            Self::PtBr => "token de operador ausente: use --token TOKEN ou defina SYNAXIS_TOKEN.",
        }
    }

    /// Returns the line printed before a new key's secret.
    pub fn secret_notice(self) -> &'static str {
        match self {
            Self::En => {
                "Secret of the new key, shown only once. Store it now, because it cannot be shown again:"
            }
            Self::PtBr => {
                "Segredo da nova chave, exibido apenas uma vez. Guarde-o agora, pois ele não pode ser exibido novamente:"
            }
        }
    }

    /// Returns the value shown for a key whose list of allowed models is empty.
    pub fn all_models(self) -> &'static str {
        match self {
            Self::En => "(all models)",
            Self::PtBr => "(todos os modelos)",
        }
    }

    /// Returns the headers of the two-column table of a single item.
    pub fn field_value_headers(self) -> [&'static str; 2] {
        match self {
            Self::En => ["field", "value"],
            Self::PtBr => ["campo", "valor"],
        }
    }

    /// Builds the error message printed after `synaxisctl: `.
    pub fn describe(self, error: &CommandError) -> String {
        match error {
            CommandError::Client(error) => self.describe_client(error),
            CommandError::Runtime(error) => match self {
                Self::En => format!("failed to start the async runtime: {error}"),
                Self::PtBr => format!("não foi possível iniciar o runtime assíncrono: {error}"),
            },
            CommandError::Output(error) => match self {
                Self::En => format!("failed to write the output: {error}"),
                Self::PtBr => format!("não foi possível escrever a saída: {error}"),
            },
        }
    }

    fn describe_client(self, error: &ClientError) -> String {
        match self {
            Self::En => describe_client_en(error),
            Self::PtBr => describe_client_pt_br(error),
        }
    }
}

fn describe_client_en(error: &ClientError) -> String {
    let cause = error.root_cause();
    match error {
        ClientError::Build(_) => format!("failed to build the HTTP client: {cause}"),
        ClientError::InvalidToken => {
            "the operator token is not a valid HTTP header value: check --token or SYNAXIS_TOKEN."
                .to_owned()
        }
        ClientError::InvalidEndpoint { endpoint } => {
            format!(
                "the endpoint {endpoint} is not a base URL: check --endpoint or SYNAXIS_ENDPOINT."
            )
        }
        ClientError::Connect { endpoint, .. } => format!(
            "cannot connect to {endpoint}: {cause}. Check that synaxisd is running there, or set --endpoint or SYNAXIS_ENDPOINT."
        ),
        ClientError::Timeout {
            endpoint, seconds, ..
        } => format!(
            "the request to {endpoint} timed out after {seconds} seconds. Try again, or raise --timeout."
        ),
        ClientError::Transport { endpoint, .. } => {
            format!("the request to {endpoint} failed: {cause}")
        }
        ClientError::Api { status, message } => format!("{message} (HTTP {status})"),
        ClientError::Status { status, body } if body.is_empty() => {
            format!("the server returned HTTP {status} without an error body.")
        }
        ClientError::Status { status, body } => {
            format!("the server returned HTTP {status} without an error body: {body}")
        }
        ClientError::InvalidResponse { status, .. } => format!(
            "the server returned HTTP {status} with an unexpected body ({cause}). Check that --endpoint names a synaxisd server."
        ),
    }
}

fn describe_client_pt_br(error: &ClientError) -> String {
    let cause = error.root_cause();
    match error {
        ClientError::Build(_) => format!("não foi possível criar o cliente HTTP: {cause}"),
        ClientError::InvalidToken => {
            "o token de operador não é um valor de cabeçalho HTTP válido: verifique --token ou SYNAXIS_TOKEN."
                .to_owned()
        }
        ClientError::InvalidEndpoint { endpoint } => {
            format!("o endpoint {endpoint} não é uma URL base: verifique --endpoint ou SYNAXIS_ENDPOINT.")
        }
        ClientError::Connect { endpoint, .. } => format!(
            "não foi possível conectar a {endpoint}: {cause}. Verifique se o synaxisd está em execução nesse endereço, ou defina --endpoint ou SYNAXIS_ENDPOINT."
        ),
        ClientError::Timeout {
            endpoint, seconds, ..
        } => format!(
            "a requisição a {endpoint} excedeu o tempo limite de {seconds} segundos. Tente novamente ou aumente --timeout."
        ),
        ClientError::Transport { endpoint, .. } => {
            format!("a requisição a {endpoint} falhou: {cause}")
        }
        ClientError::Api { status, message } => format!("{message} (HTTP {status})"),
        ClientError::Status { status, body } if body.is_empty() => {
            format!("o servidor retornou HTTP {status} sem corpo de erro.")
        }
        ClientError::Status { status, body } => {
            format!("o servidor retornou HTTP {status} sem corpo de erro: {body}")
        }
        ClientError::InvalidResponse { status, .. } => format!(
            "o servidor retornou HTTP {status} com um corpo inesperado ({cause}). Verifique se --endpoint aponta para um servidor synaxisd."
        ),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn describe_api_error_keeps_server_message_and_status() {
        let error = CommandError::Client(ClientError::Api {
            status: StatusCode::CONFLICT,
            message: "A organização `acme` já existe.".to_owned(),
        });
        assert_eq!(
            Language::PtBr.describe(&error),
            "A organização `acme` já existe. (HTTP 409 Conflict)"
        );
    }

    #[test]
    fn describe_uses_chosen_language() {
        let error = CommandError::Client(ClientError::Status {
            status: StatusCode::BAD_GATEWAY,
            body: String::new(),
        });
        assert!(
            Language::En
                .describe(&error)
                .contains("without an error body")
        );
        assert!(
            Language::PtBr
                .describe(&error)
                .contains("sem corpo de erro")
        );
    }

    #[test]
    fn missing_token_names_flag_and_variable() {
        for language in [Language::En, Language::PtBr] {
            assert!(language.missing_token().contains("--token"));
            assert!(language.missing_token().contains("SYNAXIS_TOKEN"));
        }
    }
}

//! Error messages: the line printed after `synaxisctl: ` for each error.

use synaxis_shared::api::BrokenEntry;

use crate::client::ClientError;
use crate::commands::CommandError;
use crate::config::{ConfigError, ContextError};
use crate::language::Language;
use crate::limits_file::{Input, LimitsFileError};
use crate::prompt::PromptError;
use crate::settings::SettingsError;

impl Language {
    /// Builds the error message printed after `synaxisctl: `.
    pub fn describe(self, error: &CommandError) -> String {
        match error {
            CommandError::Client(error) => self.describe_client(error),
            CommandError::Settings(SettingsError::Config(error)) | CommandError::Config(error) => {
                self.describe_config(error)
            }
            CommandError::Settings(SettingsError::InvalidVariable { variable, message }) => {
                match self {
                    Self::En => format!("invalid {variable}: {message}"),
                    Self::PtBr => format!("{variable} inválida: {message}"),
                }
            }
            CommandError::Prompt(error) => self.describe_prompt(error),
            CommandError::LimitsFile(error) => self.describe_limits_file(error),
            CommandError::RatesFile {
                path,
                line,
                message,
            } => match (self, line) {
                (Self::En, Some(line)) => {
                    format!(
                        "{path}, line {line}: {message}. Each line is CURRENCY,RATE,EFFECTIVE_AT, such as EUR,0.92,2026-12-01T00:00:00Z"
                    )
                }
                (Self::En, None) => format!("cannot read the rates file {path}: {message}"),
                (Self::PtBr, Some(line)) => {
                    format!(
                        "{path}, linha {line}: {message}. Cada linha é MOEDA,TAXA,VIGÊNCIA, como EUR,0.92,2026-12-01T00:00:00Z"
                    )
                }
                (Self::PtBr, None) => {
                    format!("não foi possível ler o arquivo de taxas {path}: {message}")
                }
            },
            CommandError::MissingToken => self.missing_token().to_owned(),
            CommandError::AuditChainBroken { first_broken } => {
                self.describe_broken_chain(first_broken.as_ref())
            }
            CommandError::ResidencyProblems { problems } => match self {
                Self::En => format!("residency check failed: {}", problems.join("; ")),
                Self::PtBr => format!(
                    "a verificação de residência falhou: {}",
                    problems.join("; ")
                ),
            },
            CommandError::DrillProblems { problems } => match self {
                Self::En => format!("the failover drill failed: {}", problems.join("; ")),
                Self::PtBr => format!("o exercício de failover falhou: {}", problems.join("; ")),
            },
            CommandError::RegionsDegraded { problems } => match self {
                Self::En => format!("regions not up: {}", problems.join("; ")),
                Self::PtBr => format!("regiões fora do ar: {}", problems.join("; ")),
            },
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

    fn describe_config(self, error: &ConfigError) -> String {
        match self {
            Self::En => describe_config_en(error),
            Self::PtBr => describe_config_pt_br(error),
        }
    }

    fn describe_prompt(self, error: &PromptError) -> String {
        match (self, error) {
            (Self::En, PromptError::Missing(field)) => {
                let (flag, value) = (field.flag(), field.value_name());
                format!("missing {flag}: pass {flag} {value}")
            }
            (Self::PtBr, PromptError::Missing(field)) => {
                let (flag, value) = (field.flag(), field.value_name());
                format!("{flag} ausente: use {flag} {value}")
            }
            (Self::En, PromptError::Terminal { field, source }) => format!(
                "failed to read {} from the terminal: {source}. Pass {} {} instead.",
                field.flag(),
                field.flag(),
                field.value_name()
            ),
            (Self::PtBr, PromptError::Terminal { field, source }) => format!(
                "não foi possível ler {} do terminal: {source}. Use {} {}.",
                field.flag(),
                field.flag(),
                field.value_name()
            ),
        }
    }

    fn describe_limits_file(self, error: &LimitsFileError) -> String {
        match error {
            LimitsFileError::Read { input, error } => {
                let name = self.input_name(input);
                match self {
                    Self::En => format!("cannot read the limits from {name}: {error}"),
                    Self::PtBr => format!("não foi possível ler os limites de {name}: {error}"),
                }
            }
            LimitsFileError::Invalid {
                input,
                line,
                key,
                message,
            } => {
                let mut place = self.input_name(input);
                if let Some(line) = line {
                    let word = match self {
                        Self::En => "line",
                        Self::PtBr => "linha",
                    };
                    place.push_str(&format!(", {word} {line}"));
                }
                if let Some(key) = key {
                    let word = match self {
                        Self::En => "key",
                        Self::PtBr => "chave",
                    };
                    place.push_str(&format!(", {word} `{key}`"));
                }
                let example =
                    r#"`per_minute = { limit = 100, window = "sliding", action = "throttle" }`"#;
                match self {
                    Self::En => format!(
                        "invalid limits in {place}: {message}. Fix it: each limit is written as {example} under [requests] or [tokens], and `synaxisctl limits set --help` shows the whole form."
                    ),
                    Self::PtBr => format!(
                        "limites inválidos em {place}: {message}. Corrija: cada limite se escreve como {example} em [requests] ou [tokens], e `synaxisctl limits set --help` mostra o formato completo."
                    ),
                }
            }
            LimitsFileError::Mixed { input, keys } => {
                let name = self.input_name(input);
                let keys = keys
                    .iter()
                    .map(|key| format!("`{key}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                match self {
                    Self::En => format!(
                        "{name} has [limits] and also the top-level keys {keys}: put every table under [limits], or none."
                    ),
                    Self::PtBr => format!(
                        "{name} tem [limits] e também as chaves de nível superior {keys}: coloque todas as tabelas sob [limits], ou nenhuma."
                    ),
                }
            }
        }
    }

    /// Names the input of a limits file: its path, or standard input.
    fn input_name(self, input: &Input) -> String {
        match (self, input) {
            (_, Input::File(path)) => path.display().to_string(),
            (Self::En, Input::Stdin) => "standard input".to_owned(),
            (Self::PtBr, Input::Stdin) => "entrada padrão".to_owned(),
        }
    }

    fn describe_broken_chain(self, first_broken: Option<&BrokenEntry>) -> String {
        match (self, first_broken) {
            (Self::En, Some(BrokenEntry { seq, reason })) => {
                format!("the audit chain is broken at entry {seq}: {reason}")
            }
            (Self::En, None) => {
                "the audit chain is invalid, and the server named no broken entry.".to_owned()
            }
            (Self::PtBr, Some(BrokenEntry { seq, reason })) => {
                format!("a cadeia de auditoria está quebrada na entrada {seq}: {reason}")
            }
            (Self::PtBr, None) => {
                "a cadeia de auditoria é inválida, e o servidor não indicou a entrada quebrada."
                    .to_owned()
            }
        }
    }
}

fn describe_config_en(error: &ConfigError) -> String {
    match error {
        ConfigError::NoLocation => {
            "cannot locate the config file: set HOME or XDG_CONFIG_HOME.".to_owned()
        }
        ConfigError::Read { path, source } => {
            format!("cannot read the config file {}: {source}", path.display())
        }
        ConfigError::Parse { path, source } => format!(
            "the config file {} is invalid, so it was left unchanged. Fix or remove it: {}",
            path.display(),
            one_line(&source.to_string())
        ),
        ConfigError::Write { path, source } => format!(
            "cannot write the config file {}: {source}. The previous file is unchanged.",
            path.display()
        ),
        ConfigError::Encode { path, source } => {
            format!("cannot encode the config file {}: {source}", path.display())
        }
        ConfigError::Context { path, source } => {
            let path = path.display();
            match source {
                ContextError::NotFound(name) => format!(
                    "no context is named `{name}` in {path}. Run `synaxisctl context list` to see the contexts."
                ),
                ContextError::Exists(name) => format!(
                    "a context named `{name}` already exists in {path}. Pass --replace to replace it."
                ),
                ContextError::UnknownCurrent(name) => format!(
                    "the current context `{name}` is not defined in {path}. Run `synaxisctl context use NAME` to choose another one."
                ),
            }
        }
    }
}

fn describe_config_pt_br(error: &ConfigError) -> String {
    match error {
        ConfigError::NoLocation => {
            "não foi possível localizar o arquivo de configuração: defina HOME ou XDG_CONFIG_HOME."
                .to_owned()
        }
        ConfigError::Read { path, source } => format!(
            "não foi possível ler o arquivo de configuração {}: {source}",
            path.display()
        ),
        ConfigError::Parse { path, source } => format!(
            "o arquivo de configuração {} é inválido e não foi alterado. Corrija-o ou remova-o: {}",
            path.display(),
            one_line(&source.to_string())
        ),
        ConfigError::Write { path, source } => format!(
            "não foi possível gravar o arquivo de configuração {}: {source}. O arquivo anterior não foi alterado.",
            path.display()
        ),
        ConfigError::Encode { path, source } => format!(
            "não foi possível codificar o arquivo de configuração {}: {source}",
            path.display()
        ),
        ConfigError::Context { path, source } => {
            let path = path.display();
            match source {
                ContextError::NotFound(name) => format!(
                    "nenhum contexto se chama `{name}` em {path}. Execute `synaxisctl context list` para ver os contextos."
                ),
                ContextError::Exists(name) => format!(
                    "já existe um contexto chamado `{name}` em {path}. Use --replace para substituí-lo."
                ),
                ContextError::UnknownCurrent(name) => format!(
                    "o contexto atual `{name}` não está definido em {path}. Execute `synaxisctl context use NOME` para escolher outro."
                ),
            }
        }
    }
}

/// Joins the lines of a multi-line error, such as a TOML error with its source excerpt,
/// so that the message stays on one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_client_en(error: &ClientError) -> String {
    let cause = error.root_cause();
    match error {
        ClientError::Build(_) => format!("failed to build the HTTP client: {cause}"),
        ClientError::InvalidToken => {
            "the token is not a valid HTTP header value: check --token, SYNAXIS_TOKEN or the current context."
                .to_owned()
        }
        ClientError::InvalidEndpoint { endpoint } => {
            format!(
                "the endpoint {endpoint} is not a base URL: check --endpoint or SYNAXIS_ENDPOINT."
            )
        }
        ClientError::CaCert { path, reason } => format!(
            "cannot use the CA certificates in {path}: {reason}. Point SYNAXIS_CA_CERT at a PEM file, or unset it."
        ),
        ClientError::Connect { endpoint, .. } if cause.contains("certificate") => {
            match std::env::var(crate::client::CA_CERT_ENV) {
                Ok(path) if !path.is_empty() => format!(
                    "cannot connect to {endpoint}: {cause}. No CA in SYNAXIS_CA_CERT ({path}) signed the server's certificate: point it at the CA that did."
                ),
                _ => format!(
                    "cannot connect to {endpoint}: {cause}. When a private CA signed the server's certificate, set SYNAXIS_CA_CERT to the CA's PEM file."
                ),
            }
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
            "o token não é um valor de cabeçalho HTTP válido: verifique --token, SYNAXIS_TOKEN ou o contexto atual."
                .to_owned()
        }
        ClientError::InvalidEndpoint { endpoint } => {
            format!("o endpoint {endpoint} não é uma URL base: verifique --endpoint ou SYNAXIS_ENDPOINT.")
        }
        ClientError::CaCert { path, reason } => format!(
            "não foi possível usar os certificados de CA em {path}: {reason}. Aponte SYNAXIS_CA_CERT para um arquivo PEM, ou remova a variável."
        ),
        ClientError::Connect { endpoint, .. } if cause.contains("certificate") => {
            match std::env::var(crate::client::CA_CERT_ENV) {
                Ok(path) if !path.is_empty() => format!(
                    "não foi possível conectar a {endpoint}: {cause}. Nenhuma CA de SYNAXIS_CA_CERT ({path}) assinou o certificado do servidor: aponte-a para a CA que assinou."
                ),
                _ => format!(
                    "não foi possível conectar a {endpoint}: {cause}. Quando uma CA privada assinou o certificado do servidor, defina SYNAXIS_CA_CERT com o arquivo PEM da CA."
                ),
            }
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
    use std::path::PathBuf;

    use reqwest::StatusCode;

    use super::*;
    use crate::prompt::Field;

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
    fn describe_missing_value_names_flag() {
        let error = CommandError::Prompt(PromptError::Missing(Field::OrgId));
        assert_eq!(
            Language::En.describe(&error),
            "missing --org: pass --org ORG_ID"
        );
        assert_eq!(
            Language::PtBr.describe(&error),
            "--org ausente: use --org ORG_ID"
        );
    }

    #[test]
    fn describe_broken_chain_names_entry() {
        let error = CommandError::AuditChainBroken {
            first_broken: Some(BrokenEntry {
                seq: 42,
                reason: "hash mismatch".to_owned(),
            }),
        };
        assert_eq!(
            Language::En.describe(&error),
            "the audit chain is broken at entry 42: hash mismatch"
        );
        assert!(
            Language::PtBr
                .describe(&error)
                .contains("entrada 42: hash mismatch")
        );
    }

    #[test]
    fn describe_parse_error_one_line() -> Result<(), Box<dyn std::error::Error>> {
        let source = toml::from_str::<toml::Table>("current = [").expect_err("invalid TOML");
        let error = CommandError::Config(ConfigError::Parse {
            path: PathBuf::from("/home/ana/.config/synaxis/config.toml"),
            source: Box::new(source),
        });

        for language in [Language::En, Language::PtBr] {
            let message = language.describe(&error);
            assert!(
                message.contains("/home/ana/.config/synaxis/config.toml"),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
        Ok(())
    }

    #[test]
    fn describe_invalid_limits_names_place_and_fix() {
        let error = CommandError::LimitsFile(LimitsFileError::Invalid {
            input: Input::File(PathBuf::from("/etc/acme/limits.toml")),
            line: Some(3),
            key: Some("requests.per_minute.limit".to_owned()),
            message: "invalid type: string \"many\", expected u64".to_owned(),
        });
        let english = Language::En.describe(&error);
        assert!(
            english.starts_with(
                "invalid limits in /etc/acme/limits.toml, line 3, key `requests.per_minute.limit`: invalid type"
            ),
            "{english}"
        );
        assert!(english.contains("Fix it:"), "{english}");
        let portuguese = Language::PtBr.describe(&error);
        assert!(
            portuguese
                .contains("/etc/acme/limits.toml, linha 3, chave `requests.per_minute.limit`"),
            "{portuguese}"
        );
        assert!(portuguese.contains("Corrija:"), "{portuguese}");
    }

    #[test]
    fn describe_mixed_limits_names_keys() {
        let error = CommandError::LimitsFile(LimitsFileError::Mixed {
            input: Input::Stdin,
            keys: vec!["requests".to_owned()],
        });
        assert_eq!(
            Language::En.describe(&error),
            "standard input has [limits] and also the top-level keys `requests`: put every table under [limits], or none."
        );
        assert!(
            Language::PtBr
                .describe(&error)
                .starts_with("entrada padrão tem")
        );
    }

    #[test]
    fn describe_context_errors_name_file() {
        let path = PathBuf::from("/x/config.toml");
        let sources = [
            ContextError::NotFound("prod".to_owned()),
            ContextError::Exists("prod".to_owned()),
            ContextError::UnknownCurrent("prod".to_owned()),
        ];
        for source in sources {
            let error = CommandError::Config(ConfigError::Context {
                path: path.clone(),
                source,
            });
            for language in [Language::En, Language::PtBr] {
                let message = language.describe(&error);
                assert!(message.contains("`prod`"), "{message}");
                assert!(message.contains("/x/config.toml"), "{message}");
            }
        }
    }
}

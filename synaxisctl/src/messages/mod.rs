//! User-facing text in English and Brazilian Portuguese. clap's own help and usage errors,
//! the `--help` text below and the messages of value parsers are in English only.

mod errors;

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;

use crate::config::Added;
use crate::language::Language;
use crate::prompt::Field;

/// The end of `--help`: configuration, environment variables, prompts and exit codes.
pub const AFTER_HELP: &str = "\
Endpoint and token:
  Each comes from its flag, else from SYNAXIS_ENDPOINT or SYNAXIS_TOKEN, else from the
  current context of the config file. The endpoint defaults to http://127.0.0.1:8080.
  The config file is $XDG_CONFIG_HOME/synaxis/config.toml, or
  $HOME/.config/synaxis/config.toml when XDG_CONFIG_HOME is unset. `synaxisctl context`
  manages it and writes it with mode 600, because it contains tokens.

Environment:
  SYNAXIS_ENDPOINT       Base URL of the control API, used when --endpoint is omitted.
  SYNAXIS_TOKEN          Token, used when --token is omitted.
  SYNAXIS_JUSTIFICATION  Same as --justification.
  SYNAXIS_TIMEOUT        Same as --timeout.
  SYNAXIS_LANG           Language of messages, `en` or `pt-BR`. When unset, `LANG` selects
                         Portuguese if it starts with `pt`, and English otherwise. The value
                         is also sent as Accept-Language, so server errors use the same
                         language.

Missing values:
  When a required flag such as --name is missing and both standard input and standard
  error are terminals, synaxisctl asks for the value. Otherwise it exits with status 2.

Exit codes:
  0  Success.
  1  Failure: connection error, timeout, invalid request (HTTP 400), server error
     (HTTP 5xx), a broken audit chain (`audit verify`) or any other error.
  2  Usage error: invalid arguments, a missing required value or token, or an invalid
     config file or limits file.
  3  Not found (HTTP 404), or no context of that name.
  4  Denied: invalid token (HTTP 401), or an action that the token's role does not
     permit (HTTP 403).
  5  Conflict or limit: conflict (HTTP 409), payment required (HTTP 402), too many
     requests (HTTP 429), or a context of that name already exists.";

/// The end of `synaxisctl limits set --help`: the form of the limits file.
pub const LIMITS_FILE_HELP: &str = "\
Limits file:
  TOML with at most one limit per window length (per_minute, per_hour, per_day, per_month)
  for each metric, requests and tokens. A limit has a `limit` from 1 to 2^53 - 1, a
  `window` kind (`fixed`, the default, or `sliding`) and an `action` (`throttle`, `block`
  or `credit_charge`). Only an organization has `concurrent_requests`. The same keys and
  tables may also sit under [limits], as in [limits.requests] and [limits.tokens]:

    concurrent_requests = 20

    [requests]
    per_minute = { limit = 100, window = \"sliding\", action = \"throttle\" }
    per_day    = { limit = 100000, window = \"fixed\", action = \"block\" }

    [tokens]
    per_month  = { limit = 10000000, window = \"fixed\", action = \"credit_charge\" }

  The file replaces the whole set: a limit left out is removed. A file without limits removes
  the scope's own set, so that synaxisd's configured limits for such scopes apply.";

impl Language {
    /// Returns the note printed on standard error when a scope has no limit set of its own.
    pub fn no_stored_limits(self) -> &'static str {
        match self {
            Self::En => {
                "No limit set is stored for this scope, so synaxisd applies its configured limits for such scopes ([limits.org], [limits.team] or [limits.user] of its config)."
            }
            Self::PtBr => {
                "Nenhum conjunto de limites está guardado para este escopo, então o synaxisd aplica os limites configurados para esses escopos ([limits.org], [limits.team] ou [limits.user] da configuração dele)."
            }
        }
    }

    /// Names the source of an entitlement that comes from the org's plan version.
    pub fn plan_source(self, plan: &str, version: u32) -> String {
        match self {
            Self::En => format!("plan {plan} v{version}"),
            Self::PtBr => format!("plano {plan} v{version}"),
        }
    }

    /// Names the source of an entitlement that an override sets.
    pub fn override_source(self) -> String {
        match self {
            Self::En => "override".to_owned(),
            Self::PtBr => "exceção (override)".to_owned(),
        }
    }

    pub fn missing_token(self) -> &'static str {
        match self {
            Self::En => {
                "missing token: pass --token TOKEN, set SYNAXIS_TOKEN, or save a context with `synaxisctl context add NAME --endpoint URL --token TOKEN`."
            }
            Self::PtBr => {
                "token ausente: use --token TOKEN, defina SYNAXIS_TOKEN ou salve um contexto com `synaxisctl context add NOME --endpoint URL --token TOKEN`."
            }
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

    /// Returns the line printed before the new secret of a rotated key. `previous_until` is
    /// the end of the previous secret's grace period, if it has one.
    pub fn rotated_secret_notice(self, previous_until: Option<&DateTime<Utc>>) -> String {
        let until = previous_until.map(|time| time.to_rfc3339_opts(SecondsFormat::Secs, true));
        match (self, until) {
            (Self::En, Some(until)) => format!(
                "New secret of the key, shown only once. Store it now, because it cannot be shown again. The previous secret keeps working until {until}:"
            ),
            (Self::En, None) => "New secret of the key, shown only once. Store it now, because it cannot be shown again. The previous secret no longer works:".to_owned(),
            (Self::PtBr, Some(until)) => format!(
                "Novo segredo da chave, exibido apenas uma vez. Guarde-o agora, pois ele não pode ser exibido novamente. O segredo anterior continua funcionando até {until}:"
            ),
            (Self::PtBr, None) => "Novo segredo da chave, exibido apenas uma vez. Guarde-o agora, pois ele não pode ser exibido novamente. O segredo anterior não funciona mais:".to_owned(),
        }
    }

    /// Returns the value shown for an empty list of allowed models.
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

    /// Returns the text of the prompt for a missing required value.
    pub fn prompt(self, field: Field) -> &'static str {
        match (self, field) {
            (Self::En, Field::OrgName) => "Organization name",
            (Self::En, Field::TeamName) => "Team name",
            (Self::En, Field::OrgId) => "Organization id (UUID)",
            (Self::En, Field::UserId) => "User id (UUID)",
            (Self::En, Field::Email) => "User email",
            (Self::En, Field::Endpoint) => "Endpoint URL",
            (Self::En, Field::Justification) => "Justification, kept in the audit log",
            (Self::PtBr, Field::OrgName) => "Nome da organização",
            (Self::PtBr, Field::TeamName) => "Nome da equipe",
            (Self::PtBr, Field::OrgId) => "Id da organização (UUID)",
            (Self::PtBr, Field::UserId) => "Id do usuário (UUID)",
            (Self::PtBr, Field::Email) => "E-mail do usuário",
            (Self::PtBr, Field::Endpoint) => "URL do endpoint",
            (Self::PtBr, Field::Justification) => "Justificativa, guardada no log de auditoria",
        }
    }

    pub fn context_added(self, name: &str, added: Added, path: &Path) -> String {
        let path = path.display();
        match (self, added) {
            (Self::En, Added::NewCurrent) => {
                format!("Saved the context `{name}` to {path}. It is now the current context.")
            }
            (Self::En, Added::New) => format!(
                "Saved the context `{name}` to {path}. Run `synaxisctl context use {name}` to make it the current context."
            ),
            (Self::En, Added::Replaced) => {
                format!("Replaced the context `{name}` in {path}.")
            }
            (Self::PtBr, Added::NewCurrent) => {
                format!("Contexto `{name}` salvo em {path}. Agora ele é o contexto atual.")
            }
            (Self::PtBr, Added::New) => format!(
                "Contexto `{name}` salvo em {path}. Execute `synaxisctl context use {name}` para torná-lo o contexto atual."
            ),
            (Self::PtBr, Added::Replaced) => {
                format!("Contexto `{name}` substituído em {path}.")
            }
        }
    }

    pub fn context_used(self, name: &str, endpoint: &Url) -> String {
        match self {
            Self::En => format!("The current context is now `{name}` ({endpoint})."),
            Self::PtBr => format!("O contexto atual agora é `{name}` ({endpoint})."),
        }
    }

    pub fn context_removed(self, name: &str, was_current: bool) -> String {
        match (self, was_current) {
            (Self::En, false) => format!("Removed the context `{name}`."),
            (Self::En, true) => format!(
                "Removed the context `{name}`. No context is current now: run `synaxisctl context use NAME` to choose one."
            ),
            (Self::PtBr, false) => format!("Contexto `{name}` removido."),
            (Self::PtBr, true) => format!(
                "Contexto `{name}` removido. Nenhum contexto é o atual agora: execute `synaxisctl context use NOME` para escolher um."
            ),
        }
    }

    /// Returns the warning printed when the token comes from a config file that other users
    /// may read.
    pub fn exposed_config_warning(self, path: &Path, mode: u32) -> String {
        let path = path.display();
        match self {
            Self::En => format!(
                "warning: other users may read the config file {path} (mode {mode:o}), which contains tokens. Run `chmod 600 {path}`."
            ),
            Self::PtBr => format!(
                "aviso: outros usuários podem ler o arquivo de configuração {path} (modo {mode:o}), que contém tokens. Execute `chmod 600 {path}`."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_lists_every_source() {
        for language in [Language::En, Language::PtBr] {
            let message = language.missing_token();
            assert!(message.contains("--token"), "{message}");
            assert!(message.contains("SYNAXIS_TOKEN"), "{message}");
            assert!(message.contains("context add"), "{message}");
        }
    }

    #[test]
    fn prompts_exist_in_both_languages() {
        let fields = [
            Field::OrgName,
            Field::TeamName,
            Field::OrgId,
            Field::UserId,
            Field::Email,
            Field::Endpoint,
            Field::Justification,
        ];
        for field in fields {
            assert_ne!(Language::En.prompt(field), Language::PtBr.prompt(field));
        }
    }

    #[test]
    fn exposed_config_warning_shows_octal_mode() {
        let message = Language::En.exposed_config_warning(Path::new("/h/config.toml"), 0o644);
        assert!(message.contains("(mode 644)"), "{message}");
        assert!(message.contains("chmod 600 /h/config.toml"), "{message}");
    }
}

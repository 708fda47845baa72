//! Values that a command requires: taken from the flag, else typed at a prompt when a person
//! is at the terminal, else a usage error.

use std::io::{self, IsTerminal};

use dialoguer::Input;
use reqwest::Url;
use synaxis_shared::{OrgId, UserId};

use crate::cli::{Justification, parse_endpoint, parse_justification};
use crate::language::Language;

/// A required value that may be asked for when its flag is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    OrgName,
    TeamName,
    OrgId,
    UserId,
    Email,
    Endpoint,
    Justification,
}

impl Field {
    /// Returns the flag that sets the value.
    pub fn flag(self) -> &'static str {
        match self {
            Self::OrgName | Self::TeamName => "--name",
            Self::OrgId => "--org",
            Self::UserId => "--user",
            Self::Email => "--email",
            Self::Endpoint => "--endpoint",
            Self::Justification => "--justification",
        }
    }

    /// Returns the placeholder of the value in usage text, as `--help` shows it.
    pub fn value_name(self) -> &'static str {
        match self {
            Self::OrgName | Self::TeamName => "NAME",
            Self::OrgId => "ORG_ID",
            Self::UserId => "USER_ID",
            Self::Email => "EMAIL",
            Self::Endpoint => "URL",
            Self::Justification => "TEXT",
        }
    }
}

/// An error of resolving a required value.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("missing {}: pass {} {}", .0.flag(), .0.flag(), .0.value_name())]
    Missing(Field),
    #[error("failed to read {} from the terminal", field.flag())]
    Terminal {
        field: Field,
        #[source]
        source: io::Error,
    },
}

/// A value type that a prompt can read.
pub trait Prompted: Sized {
    /// Parses the typed text, or returns the message shown before asking again.
    fn parse_typed(text: &str) -> Result<Self, String>;
}

impl Prompted for String {
    fn parse_typed(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("enter a value".to_owned());
        }
        Ok(text.to_owned())
    }
}

impl Prompted for OrgId {
    fn parse_typed(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|error| format!("invalid UUID: {error}"))
    }
}

impl Prompted for UserId {
    fn parse_typed(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|error| format!("invalid UUID: {error}"))
    }
}

impl Prompted for Url {
    fn parse_typed(text: &str) -> Result<Self, String> {
        parse_endpoint(text)
    }
}

impl Prompted for Justification {
    fn parse_typed(text: &str) -> Result<Self, String> {
        parse_justification(text)
    }
}

/// Resolves required values, asking for missing ones only when both standard input and
/// standard error are terminals, so that scripts and pipes get a usage error at once.
#[derive(Clone, Copy, Debug)]
pub struct Prompter {
    interactive: bool,
    language: Language,
}

impl Prompter {
    pub fn new(interactive: bool, language: Language) -> Self {
        Self {
            interactive,
            language,
        }
    }

    /// Builds a prompter that prompts only when a person is at the terminal.
    pub fn for_terminal(language: Language) -> Self {
        let interactive = io::stdin().is_terminal() && io::stderr().is_terminal();
        Self::new(interactive, language)
    }

    /// Returns `value` when the flag gave it, else the value typed at a prompt on standard
    /// error. Typed text is trimmed, and invalid text is asked for again.
    pub fn require<T: Prompted>(&self, value: Option<T>, field: Field) -> Result<T, PromptError> {
        if let Some(value) = value {
            return Ok(value);
        }
        if !self.interactive {
            return Err(PromptError::Missing(field));
        }

        let terminal_error = |source| PromptError::Terminal { field, source };
        let text: String = Input::new()
            .with_prompt(self.language.prompt(field))
            .validate_with(|input: &String| T::parse_typed(input.trim()).map(drop))
            .interact_text()
            .map_err(|error| terminal_error(io::Error::from(error)))?;

        // The validator accepted this text, so it parses.
        T::parse_typed(text.trim()).map_err(|message| terminal_error(io::Error::other(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_returns_given_value() -> Result<(), PromptError> {
        let prompter = Prompter::new(false, Language::En);
        let name = prompter.require(Some("Acme".to_owned()), Field::OrgName)?;
        assert_eq!(name, "Acme");
        Ok(())
    }

    #[test]
    fn require_without_terminal_names_flag() {
        let prompter = Prompter::new(false, Language::En);
        let error = prompter
            .require::<String>(None, Field::OrgName)
            .expect_err("no value and no terminal");
        assert_eq!(error.to_string(), "missing --name: pass --name NAME");
    }

    #[test]
    fn fields_name_their_flags() {
        let cases = [
            (Field::OrgName, "--name", "NAME"),
            (Field::TeamName, "--name", "NAME"),
            (Field::OrgId, "--org", "ORG_ID"),
            (Field::UserId, "--user", "USER_ID"),
            (Field::Email, "--email", "EMAIL"),
            (Field::Endpoint, "--endpoint", "URL"),
            (Field::Justification, "--justification", "TEXT"),
        ];
        for (field, flag, value_name) in cases {
            assert_eq!(field.flag(), flag, "{field:?}");
            assert_eq!(field.value_name(), value_name, "{field:?}");
        }
    }

    #[test]
    fn typed_values_are_checked() {
        assert!(String::parse_typed("").is_err());
        assert!(OrgId::parse_typed("not-a-uuid").is_err());
        assert!(OrgId::parse_typed("5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11").is_ok());
        assert!(UserId::parse_typed("5f1c1f5e").is_err());
        assert!(Url::parse_typed("ftp://example.com").is_err());
        assert!(Url::parse_typed("https://synaxis.example.com").is_ok());
        assert!(Justification::parse_typed("ticket OPS-7").is_ok());
        assert!(Justification::parse_typed("manutenção").is_err());
    }
}

//! Languages of user-facing text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A language for messages: English or Brazilian Portuguese.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Locale {
    #[default]
    #[serde(rename = "en")]
    En,
    #[serde(rename = "pt-BR")]
    PtBr,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::PtBr => "pt-BR",
        }
    }

    /// Picks the first supported language of an `Accept-Language` header value, or `None`
    /// when it names none.
    pub fn from_accept_language(value: &str) -> Option<Self> {
        for range in value.split(',') {
            let tag = range
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag == "pt" || tag.starts_with("pt-") {
                return Some(Self::PtBr);
            }
            if tag == "en" || tag.starts_with("en-") {
                return Some(Self::En);
            }
        }
        None
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a string names no supported locale.
#[derive(Debug, thiserror::Error)]
#[error("invalid locale `{0}`: use `en` or `pt-BR`")]
pub struct InvalidLocale(pub String);

impl FromStr for Locale {
    type Err = InvalidLocale;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "en" => Ok(Self::En),
            "pt-BR" => Ok(Self::PtBr),
            other => Err(InvalidLocale(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_first_supported() {
        assert_eq!(
            Locale::from_accept_language("pt-BR,pt;q=0.9"),
            Some(Locale::PtBr)
        );
        assert_eq!(
            Locale::from_accept_language("de-DE, en;q=0.5"),
            Some(Locale::En)
        );
        assert_eq!(Locale::from_accept_language("fr"), None);
        assert_eq!(
            Locale::from_accept_language("en-US, pt-BR"),
            Some(Locale::En)
        );
    }

    #[test]
    fn locale_round_trips_through_text() {
        for locale in [Locale::En, Locale::PtBr] {
            assert_eq!(locale.as_str().parse::<Locale>().ok(), Some(locale));
        }
        assert!("pt".parse::<Locale>().is_err());
    }
}

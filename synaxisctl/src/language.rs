//! The language of user-facing output, chosen from the environment.

use std::env;

/// Environment variable that selects the language: `en` or `pt-BR`.
pub const LANGUAGE_VAR: &str = "SYNAXIS_LANG";

/// A language that synaxisctl and the control API both speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Language {
    #[default]
    En,
    PtBr,
}

impl Language {
    /// Reads `SYNAXIS_LANG` and `LANG` and chooses a language with [`Language::detect`].
    pub fn from_env() -> Self {
        let synaxis_lang = env::var(LANGUAGE_VAR).ok();
        let lang = env::var("LANG").ok();
        Self::detect(synaxis_lang.as_deref(), lang.as_deref())
    }

    /// Chooses the language named by `synaxis_lang`, else by the POSIX `lang` locale, else
    /// English. Values that name neither English nor Portuguese are ignored, and every
    /// Portuguese variant (`pt`, `pt_PT`) selects Brazilian Portuguese.
    pub fn detect(synaxis_lang: Option<&str>, lang: Option<&str>) -> Self {
        synaxis_lang
            .and_then(Self::parse)
            .or_else(|| lang.and_then(Self::parse))
            .unwrap_or_default()
    }

    /// Returns the language tag sent in the `Accept-Language` request header.
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::PtBr => "pt-BR",
        }
    }

    /// Parses a language tag (`pt-BR`) or a POSIX locale name (`pt_BR.UTF-8`, `en_US@euro`)
    /// by its primary language subtag.
    fn parse(value: &str) -> Option<Self> {
        let lowercase = value.trim().to_ascii_lowercase();
        let primary = lowercase.split(['-', '_', '.', '@']).next().unwrap_or("");
        match primary {
            "en" => Some(Self::En),
            "pt" => Some(Self::PtBr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_defaults_to_english() {
        assert_eq!(Language::detect(None, None), Language::En);
    }

    #[test]
    fn detect_reads_synaxis_lang() {
        assert_eq!(Language::detect(Some("pt-BR"), None), Language::PtBr);
        assert_eq!(Language::detect(Some("pt-br"), None), Language::PtBr);
        assert_eq!(Language::detect(Some("en"), None), Language::En);
    }

    #[test]
    fn detect_prefers_synaxis_lang_over_lang() {
        assert_eq!(
            Language::detect(Some("en"), Some("pt_BR.UTF-8")),
            Language::En
        );
        assert_eq!(
            Language::detect(Some("pt-BR"), Some("en_US.UTF-8")),
            Language::PtBr
        );
    }

    #[test]
    fn detect_falls_back_to_lang() {
        assert_eq!(Language::detect(None, Some("pt_BR.UTF-8")), Language::PtBr);
        assert_eq!(Language::detect(None, Some("pt_PT")), Language::PtBr);
        assert_eq!(Language::detect(None, Some("en_GB.UTF-8")), Language::En);
    }

    #[test]
    fn detect_ignores_unsupported_values() {
        assert_eq!(Language::detect(Some("fr"), Some("pt_BR")), Language::PtBr);
        assert_eq!(Language::detect(Some(""), None), Language::En);
        assert_eq!(Language::detect(None, Some("C")), Language::En);
        assert_eq!(Language::detect(None, Some("de_DE.UTF-8")), Language::En);
        assert_eq!(Language::detect(None, Some("ptx")), Language::En);
    }

    #[test]
    fn tag_matches_accept_language_values() {
        assert_eq!(Language::En.tag(), "en");
        assert_eq!(Language::PtBr.tag(), "pt-BR");
    }
}

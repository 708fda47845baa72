//! Model access policies: lists of exact model names or globs (`gpt-4o*`) on keys, teams and
//! orgs. A model is allowed when every non-empty list in force admits it. Lists are stored in
//! lowercase and matched against the canonical model name in lowercase, so that a change of
//! case cannot bypass them.

use glob::Pattern;

/// Normalizes a policy: trims and lowercases each entry, drops duplicates, and checks that each
/// entry is a valid glob. The error names the invalid entry.
pub fn normalize(entries: Vec<String>) -> Result<Vec<String>, String> {
    let mut normalized: Vec<String> = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = entry.trim().to_lowercase();
        if entry.is_empty() {
            return Err("a model name is empty".to_owned());
        }
        if let Err(error) = Pattern::new(&entry) {
            return Err(format!(
                "`{entry}` is not a valid model name or glob: {error}"
            ));
        }
        if !normalized.contains(&entry) {
            normalized.push(entry);
        }
    }
    Ok(normalized)
}

/// Returns whether `policy` admits `model`; an empty policy admits every model.
pub fn admits(policy: &[String], model: &str) -> bool {
    if policy.is_empty() {
        return true;
    }
    let model = model.to_lowercase();
    policy.iter().any(|entry| {
        entry == &model || Pattern::new(entry).is_ok_and(|pattern| pattern.matches(&model))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> Vec<String> {
        normalize(entries.iter().map(|entry| (*entry).to_owned()).collect()).expect("valid")
    }

    #[test]
    fn exact_names_match_in_any_case() {
        let allowed = policy(&["GPT-4o-mini"]);
        assert!(admits(&allowed, "gpt-4o-mini"));
        assert!(admits(&allowed, "GPT-4O-MINI"));
        assert!(!admits(&allowed, "gpt-4o"));
    }

    #[test]
    fn globs_match_prefixes() {
        let allowed = policy(&["gpt-4o-mini*"]);
        assert!(admits(&allowed, "gpt-4o-mini"));
        assert!(admits(&allowed, "gpt-4o-mini-2024"));
        assert!(!admits(&allowed, "gpt-4o"));
    }

    #[test]
    fn empty_policy_admits_all() {
        assert!(admits(&[], "anything"));
    }

    #[test]
    fn invalid_glob_is_named() {
        let error = normalize(vec!["gpt-[4".to_owned()]).expect_err("invalid glob");
        assert!(error.contains("gpt-[4"), "{error}");
    }
}

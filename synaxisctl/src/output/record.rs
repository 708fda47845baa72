//! Table fields of each resource.

use chrono::{DateTime, SecondsFormat, Utc};
use synaxis_shared::api::{Key, Org, User};

use crate::language::Language;

/// The value shown for an absent optional field.
const NONE: &str = "-";

/// A resource shown in tables. Field names are the JSON field names, so the table and
/// `--output json` use the same words.
pub trait Record {
    /// Columns of a list table: a subset of the names that `fields` returns, in its order.
    const COLUMNS: &'static [&'static str];

    /// Returns every field as a name and a display value, for the table of a single item.
    fn fields(&self, language: Language) -> Vec<(&'static str, String)>;

    /// Returns the values of `COLUMNS`, for the row of a list table.
    fn row(&self, language: Language) -> Vec<String> {
        let mut fields = self.fields(language);
        fields.retain(|(name, _)| Self::COLUMNS.contains(name));
        fields.into_iter().map(|(_, value)| value).collect()
    }
}

impl Record for Org {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "slug",
        "name",
        "primary_region",
        "active",
        "created_at",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("slug", self.slug.clone()),
            ("name", self.name.clone()),
            ("primary_region", self.primary_region.to_string()),
            ("active", self.active.to_string()),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for User {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "email",
        "role",
        "data_residency_region",
        "active",
        "created_at",
    ];

    fn fields(&self, _language: Language) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("email", self.email.clone()),
            ("role", self.role.to_string()),
            (
                "data_residency_region",
                self.data_residency_region.to_string(),
            ),
            ("active", self.active.to_string()),
            ("created_at", timestamp(&self.created_at)),
        ]
    }
}

impl Record for Key {
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "name",
        "region",
        "allowed_models",
        "active",
        "expires_at",
    ];

    fn fields(&self, language: Language) -> Vec<(&'static str, String)> {
        let allowed_models = if self.allowed_models.is_empty() {
            language.all_models().to_owned()
        } else {
            self.allowed_models.join(", ")
        };
        vec![
            ("id", self.id.to_string()),
            ("org_id", self.org_id.to_string()),
            ("user_id", self.user_id.to_string()),
            ("name", self.name.clone()),
            ("region", self.region.to_string()),
            ("allowed_models", allowed_models),
            ("active", self.active.to_string()),
            ("expires_at", optional_timestamp(self.expires_at.as_ref())),
            ("created_at", timestamp(&self.created_at)),
            ("revoked_at", optional_timestamp(self.revoked_at.as_ref())),
        ]
    }
}

/// Formats a timestamp as RFC 3339 in UTC, to the second.
fn timestamp(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn optional_timestamp(value: Option<&DateTime<Utc>>) -> String {
    value.map_or_else(|| NONE.to_owned(), timestamp)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use synaxis_shared::{KeyId, OrgId, RegionId, Role, UserId};

    use super::*;

    /// Asserts that every column names a field, in the order of the fields.
    fn assert_columns_are_ordered_fields<T: Record>(item: &T) {
        let names: Vec<&str> = item
            .fields(Language::En)
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| T::COLUMNS.contains(name))
            .collect();
        assert_eq!(names, T::COLUMNS);
    }

    fn created_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
            .single()
            .unwrap_or_default()
    }

    fn region() -> Result<RegionId, Box<dyn std::error::Error>> {
        Ok("eu-west-1".parse()?)
    }

    #[test]
    fn org_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let org = Org {
            id: OrgId::new(),
            slug: "acme".to_owned(),
            name: "Acme".to_owned(),
            primary_region: region()?,
            active: true,
            created_at: created_at(),
        };
        assert_columns_are_ordered_fields(&org);
        Ok(())
    }

    #[test]
    fn user_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let user = User {
            id: UserId::new(),
            org_id: OrgId::new(),
            email: "dev@example.com".to_owned(),
            role: Role::Developer,
            data_residency_region: region()?,
            active: true,
            created_at: created_at(),
        };
        assert_columns_are_ordered_fields(&user);
        Ok(())
    }

    #[test]
    fn key_columns_are_fields() -> Result<(), Box<dyn std::error::Error>> {
        let key = Key {
            id: KeyId::new(),
            org_id: OrgId::new(),
            user_id: UserId::new(),
            name: "ci".to_owned(),
            region: region()?,
            allowed_models: vec!["gpt-4o".to_owned(), "claude".to_owned()],
            active: false,
            expires_at: None,
            created_at: created_at(),
            revoked_at: Some(created_at()),
        };
        assert_columns_are_ordered_fields(&key);

        let row = key.row(Language::En);
        assert_eq!(row.len(), Key::COLUMNS.len());
        assert!(row.contains(&"gpt-4o, claude".to_owned()));
        assert!(row.contains(&NONE.to_owned()));
        Ok(())
    }
}

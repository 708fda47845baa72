//! Organizations, users and virtual keys: the rules for creating them, and key authentication.

pub mod keys;

use std::sync::Arc;

use secrecy::ExposeSecret;
use synaxis_shared::api::{
    CreateKeyRequest, CreateOrgRequest, CreateUserRequest, CreatedKey, Key, Org, User,
};
use synaxis_shared::{KeyId, OrgId, RegionId, UserId};

use crate::clock::Clock;
use crate::store::{KeyFilter, Store, StoreError};
use keys::KeyHasher;

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("invalid `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TenancyError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// The tenancy service of one region.
#[derive(Clone, Debug)]
pub struct Tenancy {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: KeyHasher,
    region: RegionId,
    key_prefix: String,
}

impl Tenancy {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        hasher: KeyHasher,
        region: RegionId,
        key_prefix: String,
    ) -> Self {
        Self {
            store,
            clock,
            hasher,
            region,
            key_prefix,
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    pub async fn create_org(&self, request: CreateOrgRequest) -> Result<Org, TenancyError> {
        let name = request.name.trim();
        if name.is_empty() {
            return Err(TenancyError::invalid(
                "name",
                "the organization name is empty",
            ));
        }
        let slug = match request.slug {
            Some(slug) => slug,
            None => slugify(name),
        };
        validate_slug(&slug)?;

        let org = Org {
            id: OrgId::new(),
            slug,
            name: name.to_owned(),
            primary_region: self.region.clone(),
            active: true,
            created_at: self.clock.now(),
        };
        self.store.create_org(&org).await?;
        Ok(org)
    }

    /// Finds an organization by id or, when `id_or_slug` is not a UUID, by slug.
    pub async fn find_org(&self, id_or_slug: &str) -> Result<Org, TenancyError> {
        let org = match id_or_slug.parse::<OrgId>() {
            Ok(id) => self.store.get_org(id).await?,
            Err(_) => self.store.get_org_by_slug(id_or_slug).await?,
        };
        Ok(org)
    }

    pub async fn create_user(&self, request: CreateUserRequest) -> Result<User, TenancyError> {
        let email = request.email.trim();
        validate_email(email)?;
        let org = self.store.get_org(request.org_id).await?;

        let user = User {
            id: UserId::new(),
            org_id: org.id,
            email: email.to_owned(),
            role: request.role,
            data_residency_region: org.primary_region,
            active: true,
            created_at: self.clock.now(),
        };
        self.store.create_user(&user).await?;
        Ok(user)
    }

    /// Creates a key for a user and returns it with its secret, which is not stored.
    pub async fn create_key(&self, request: CreateKeyRequest) -> Result<CreatedKey, TenancyError> {
        let user = self.store.get_user(request.user_id).await?;
        let now = self.clock.now();
        if let Some(expires_at) = request.expires_at
            && expires_at <= now
        {
            return Err(TenancyError::invalid(
                "expires_at",
                format!("{expires_at} is not in the future"),
            ));
        }
        let allowed_models = normalize_models(request.allowed_models)?;

        let secret = keys::generate(&self.key_prefix);
        let key = Key {
            id: KeyId::new(),
            org_id: user.org_id,
            user_id: user.id,
            name: request.name.unwrap_or_else(|| "default".to_owned()),
            region: self.region.clone(),
            allowed_models,
            active: true,
            expires_at: request.expires_at,
            created_at: now,
            revoked_at: None,
        };
        let hash = self.hasher.hash(secret.expose_secret());
        self.store.create_key(&key, &hash).await?;

        Ok(CreatedKey {
            key,
            secret: secret.expose_secret().to_owned(),
        })
    }

    pub async fn revoke_key(&self, id: KeyId) -> Result<Key, TenancyError> {
        Ok(self.store.revoke_key(id, self.clock.now()).await?)
    }

    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Key>, TenancyError> {
        Ok(self.store.list_keys(filter).await?)
    }

    /// Returns the usable key that `presented` is the secret of, or `None` for a malformed,
    /// unknown, revoked or expired key, or one of another region.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Key>, StoreError> {
        if keys::region_prefix(presented) != Some(self.key_prefix.as_str()) {
            return Ok(None);
        }
        let hash = self.hasher.hash(presented);
        self.store.find_usable_key(&hash, self.clock.now()).await
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Derives a slug from a name: lowercase ASCII letters and digits, other runs become `-`.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

fn validate_slug(slug: &str) -> Result<(), TenancyError> {
    let valid = (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(TenancyError::invalid(
            "slug",
            format!(
                "`{slug}` must be 2 to 63 lowercase letters, digits and inner hyphens, such as `acme-labs`"
            ),
        ))
    }
}

fn validate_email(email: &str) -> Result<(), TenancyError> {
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(TenancyError::invalid(
            "email",
            format!("`{email}` is not an email address such as `ana@example.com`"),
        ))
    }
}

fn normalize_models(models: Vec<String>) -> Result<Vec<String>, TenancyError> {
    let mut normalized = Vec::with_capacity(models.len());
    for model in models {
        let model = model.trim().to_lowercase();
        if model.is_empty() {
            return Err(TenancyError::invalid(
                "allowed_models",
                "a model name is empty",
            ));
        }
        if !normalized.contains(&model) {
            normalized.push(model);
        }
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_keeps_letters_and_digits() {
        assert_eq!(slugify("Acme Labs, Inc."), "acme-labs-inc");
        assert_eq!(slugify("  Ação 42 "), "a-o-42");
    }

    #[test]
    fn email_validation() {
        assert!(validate_email("ana@example.com").is_ok());
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana @example.com",
            "ana@localhost",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
    }
}

//! Row types whose columns decode the same way on PostgreSQL and SQLite.

use chrono::{DateTime, Utc};
use synaxis_shared::api::{Org, User};
use uuid::Uuid;

use super::{StoreError, parse_region, parse_role};

#[derive(sqlx::FromRow)]
pub(crate) struct OrgRow {
    id: Uuid,
    slug: String,
    name: String,
    primary_region: String,
    active: bool,
    created_at: DateTime<Utc>,
}

impl TryFrom<OrgRow> for Org {
    type Error = StoreError;

    fn try_from(row: OrgRow) -> Result<Self, StoreError> {
        Ok(Org {
            id: row.id.into(),
            slug: row.slug,
            name: row.name,
            primary_region: parse_region(row.primary_region)?,
            active: row.active,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    org_id: Uuid,
    email: String,
    role: String,
    data_residency_region: String,
    active: bool,
    created_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: row.id.into(),
            org_id: row.org_id.into(),
            email: row.email,
            role: parse_role(&row.role)?,
            data_residency_region: parse_region(row.data_residency_region)?,
            active: row.active,
            created_at: row.created_at,
        })
    }
}

/// Converts every row, failing on the first that does not convert.
pub(crate) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

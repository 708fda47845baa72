//! The SQL of both stores, written once. PostgreSQL and SQLite accept the same statements here:
//! parameters are `$N` (sqlx binds them by number on SQLite too), and the columns whose types
//! differ go through [`ModelList`](super::types::ModelList) and [`Money`](super::types::Money).
//! [`impl_store_queries!`] implements the store traits for one pool type. The one statement
//! written per database is the batch insert of request records, which binds arrays on
//! PostgreSQL: each store provides it as `insert_request_batch`.

pub(crate) const ORG_COLUMNS: &str =
    "id, slug, name, primary_region, allowed_models, active, created_at, plan, plan_version,
     plan_overrides, billing_currency, trial_ends_at, transfer_mechanism";
pub(crate) const TEAM_COLUMNS: &str = "id, org_id, name, allowed_models, created_at, suspended_at";
pub(crate) const USER_COLUMNS: &str =
    "id, org_id, team_id, email, role, locale, data_residency_region, active, created_at";
pub(crate) const KEY_COLUMNS: &str = "id, org_id, user_id, name, scope, region, allowed_models, \
     rpm_limit, tpm_limit, active, expires_at, created_at, rotated_at, previous_key_expires_at, \
     revoked_at";
pub(crate) const REQUEST_COLUMNS: &str = "id, stored_region, request_id, org_id, user_id, key_id, \
     endpoint, model, stream, status_code, error_code, prompt_tokens, completion_tokens, \
     cost_usd, started_at, duration_ms";
pub(crate) const AUDIT_COLUMNS: &str = "seq, id, at, actor_kind, actor_id, action, target_kind, \
     target_id, org_id, source_ip, region, result, justification, prev_hash, hash";

/// Implements `TenancyStore`, `AuditStore` and `RequestStore` for `$store`, a struct with a
/// `pool: sqlx::Pool<$db>` field.
macro_rules! impl_store_queries {
    ($store:ty, $db:ty) => {
        use async_trait::async_trait;
        use chrono::{DateTime, Utc};
        use sqlx::{QueryBuilder, Transaction};
        use synaxis_shared::api::{AuditEntry, Key, Org, Team, User};
        use rust_decimal::Decimal;
        use synaxis_shared::credits::{AutoTopup, CreditEntry, CreditKind};
        use synaxis_shared::InvoiceId;
        use synaxis_shared::invoices::{FxRate, Invoice};
        use synaxis_shared::money::Currency;
        use synaxis_shared::limits::LimitSet;
        use synaxis_shared::{KeyId, OrgId, TeamId, UserId};

        use crate::audit::{AuditDraft, AuditHead};
        use crate::config::MAX_HOLD_TTL_SECS;
        use crate::store::queries::{
            budget_ref, AUDIT_COLUMNS, KEY_COLUMNS, ORG_COLUMNS, REQUEST_COLUMNS, TEAM_COLUMNS, USER_COLUMNS,
        };
        use crate::store::rows::{
            AuditRow, AuthRow, BudgetRow, ConsentRow, DirectoryRow, TransferRow, parse_directory_entry, CreditRow, FxRow, InvoiceItemRow, InvoiceRow, KeyRow, OrgRow, RequestRow, TeamRow, UserRow, convert_all,
            encode_limits, encode_overrides, parse_limits,
        };
        use crate::store::types::{ModelList, Money};
        use std::collections::BTreeMap;

        use synaxis_shared::RequestId;
        use synaxis_shared::budgets::{Budget, BudgetRef, to_micros, to_micros_ceil};

        use crate::store::{
            BillingStore, BudgetCharge, ConsentStore, DirectoryStore, NewConsent, ResidencyStore,
            TransferStore, BudgetReservation, BudgetStore, LifecycleStore,
            ResourceCaps, ResourceCounts,
            AuditFilter, AuditStore, AuthenticatedKey, CreditStore, KeyFilter, KeyRotation, LimitScope, NewCredit,
            RequestFilter, RequestRecord, RequestStore, SettingsStore, StoreError, TenancyStore,
            UserFilter, conflict_on_unique,
        };

        impl $store {
            /// Fails with [`StoreError::CapReached`] when `cap` is set and the row `id` of
            /// `table` already has `cap` children or more, counted by `count` as in
            /// [`Self::count_locked`]. Without a cap or a row, it does nothing.
            async fn check_cap(
                tx: &mut Transaction<'_, $db>,
                cap: Option<u64>,
                table: &'static str,
                id: Option<uuid::Uuid>,
                count: &'static str,
            ) -> Result<(), StoreError> {
                let (Some(cap), Some(id)) = (cap, id) else {
                    return Ok(());
                };
                let count = Self::count_locked(tx, table, id, count).await?;
                if count >= cap {
                    return Err(StoreError::CapReached { count });
                }
                Ok(())
            }

            /// Takes the write lock on row `id` of `table` inside `tx`, then runs `count`, a
            /// `SELECT COUNT(*)` bound to `id`. Creations under the same row that check a cap
            /// this way run one at a time, so none can pass the cap.
            async fn count_locked(
                tx: &mut Transaction<'_, $db>,
                table: &'static str,
                id: uuid::Uuid,
                count: &'static str,
            ) -> Result<u64, StoreError> {
                Self::lock_row(tx, table, id).await?;
                let (count,): (i64,) = sqlx::query_as(count).bind(id).fetch_one(&mut **tx).await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            /// Takes the write lock on row `id` of `table` until `tx` ends, with an update that
            /// changes nothing, which both databases accept. A missing row is not found.
            async fn lock_row(
                tx: &mut Transaction<'_, $db>,
                table: &'static str,
                id: uuid::Uuid,
            ) -> Result<(), StoreError> {
                let mut lock = QueryBuilder::<$db>::new("UPDATE ");
                lock.push(table).push(" SET id = id WHERE id = ").push_bind(id);
                let locked = lock.build().execute(&mut **tx).await?;
                if locked.rows_affected() == 0 {
                    return Err(StoreError::not_found(table.trim_end_matches('s'), id));
                }
                Ok(())
            }

            /// Appends `draft` to the chain inside `tx`. Moving the head first takes the
            /// database's write lock on it, so that concurrent appends queue in order.
            async fn append_audit_in(
                tx: &mut Transaction<'_, $db>,
                draft: &AuditDraft,
            ) -> Result<AuditEntry, StoreError> {
                let (seq, prev_hash): (i64, String) = sqlx::query_as(
                    "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash",
                )
                .fetch_one(&mut **tx)
                .await?;
                let entry = draft.seal(seq, &prev_hash);

                sqlx::query(
                    "INSERT INTO audit_log (seq, id, at, actor_kind, actor_id, action, target_kind,
                                            target_id, org_id, source_ip, region, result,
                                            justification, prev_hash, hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(entry.seq)
                .bind(entry.id)
                .bind(entry.at)
                .bind(entry.actor_kind.as_str())
                .bind(&entry.actor_id)
                .bind(&entry.action)
                .bind(&entry.target_kind)
                .bind(&entry.target_id)
                .bind(entry.org_id.map(|id| id.0))
                .bind(&entry.source_ip)
                .bind(entry.region.as_str())
                .bind(entry.result.as_str())
                .bind(&entry.justification)
                .bind(&entry.prev_hash)
                .bind(&entry.hash)
                .execute(&mut **tx)
                .await?;

                sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
                    .bind(&entry.hash)
                    .execute(&mut **tx)
                    .await?;
                Ok(entry)
            }
        }

        #[async_trait]
        impl TenancyStore for $store {
            async fn create_org(&self, org: &Org, audit: &AuditDraft) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO organizations (id, slug, name, primary_region, allowed_models,
                                                active, created_at, plan, plan_version,
                                                plan_overrides, billing_currency, trial_ends_at,
                                                transfer_mechanism)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(org.id.0)
                .bind(&org.slug)
                .bind(&org.name)
                .bind(org.primary_region.as_str())
                .bind(ModelList(org.allowed_models.clone()))
                .bind(org.active)
                .bind(org.created_at)
                .bind(&org.plan)
                .bind(i64::from(org.plan_version))
                .bind(encode_overrides(&org.plan_overrides))
                .bind(org.billing_currency.code())
                .bind(org.trial_ends_at)
                .bind(org.transfer_mechanism.map(|mechanism| mechanism.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(|error| {
                    conflict_on_unique(error, || {
                        format!(
                            "an organization with slug `{}` already exists: choose another slug",
                            org.slug
                        )
                    })
                })?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_org(&self, id: OrgId) -> Result<Org, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(ORG_COLUMNS).push(" FROM organizations WHERE id = ").push_bind(id.0);
                query
                    .build_query_as::<OrgRow>()
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("organization", id))?
                    .try_into()
            }

            async fn get_org_by_slug(&self, slug: &str) -> Result<Org, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(ORG_COLUMNS).push(" FROM organizations WHERE slug = ").push_bind(slug);
                query
                    .build_query_as::<OrgRow>()
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("organization", slug))?
                    .try_into()
            }

            async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(ORG_COLUMNS).push(" FROM organizations ORDER BY created_at, id");
                let rows = query.build_query_as::<OrgRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn update_org(&self, org: &Org, audit: &AuditDraft) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE organizations SET name = $2, allowed_models = $3, active = $4,
                                              plan = $5, plan_version = $6, plan_overrides = $7,
                                              billing_currency = $8, trial_ends_at = $9,
                                              transfer_mechanism = $10
                     WHERE id = $1",
                )
                .bind(org.id.0)
                .bind(&org.name)
                .bind(ModelList(org.allowed_models.clone()))
                .bind(org.active)
                .bind(&org.plan)
                .bind(i64::from(org.plan_version))
                .bind(encode_overrides(&org.plan_overrides))
                .bind(org.billing_currency.code())
                .bind(org.trial_ends_at)
                .bind(org.transfer_mechanism.map(|mechanism| mechanism.as_str()))
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::not_found("organization", org.id));
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_team(
                &self,
                team: &Team,
                cap: Option<u64>,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::check_cap(
                    &mut tx,
                    cap,
                    "organizations",
                    Some(team.org_id.0),
                    "SELECT COUNT(*) FROM teams WHERE org_id = $1",
                )
                .await?;
                sqlx::query(
                    "INSERT INTO teams (id, org_id, name, allowed_models, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(team.id.0)
                .bind(team.org_id.0)
                .bind(&team.name)
                .bind(ModelList(team.allowed_models.clone()))
                .bind(team.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|error| {
                    conflict_on_unique(error, || {
                        format!("a team named `{}` already exists in this organization", team.name)
                    })
                })?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_team(&self, id: TeamId) -> Result<Team, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(TEAM_COLUMNS).push(" FROM teams WHERE id = ").push_bind(id.0);
                query
                    .build_query_as::<TeamRow>()
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("team", id))?
                    .try_into()
            }

            async fn list_teams(&self, org_id: OrgId) -> Result<Vec<Team>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(TEAM_COLUMNS).push(" FROM teams WHERE org_id = ").push_bind(org_id.0);
                query.push(" ORDER BY created_at, id");
                let rows = query.build_query_as::<TeamRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn update_team(&self, team: &Team, audit: &AuditDraft) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE teams SET name = $2, allowed_models = $3 WHERE id = $1",
                )
                .bind(team.id.0)
                .bind(&team.name)
                .bind(ModelList(team.allowed_models.clone()))
                .execute(&mut *tx)
                .await
                .map_err(|error| {
                    conflict_on_unique(error, || {
                        format!("a team named `{}` already exists in this organization", team.name)
                    })
                })?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::not_found("team", team.id));
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_user(
                &self,
                user: &User,
                cap: Option<u64>,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::check_cap(
                    &mut tx,
                    cap,
                    "teams",
                    user.team_id.map(|id| id.0),
                    "SELECT COUNT(*) FROM users WHERE team_id = $1 AND active",
                )
                .await?;
                sqlx::query(
                    "INSERT INTO users (id, org_id, team_id, email, role, locale,
                                        data_residency_region, active, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(user.id.0)
                .bind(user.org_id.0)
                .bind(user.team_id.map(|id| id.0))
                .bind(&user.email)
                .bind(user.role.as_str())
                .bind(user.locale.as_str())
                .bind(user.data_residency_region.as_str())
                .bind(user.active)
                .bind(user.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|error| {
                    conflict_on_unique(error, || {
                        format!("a user with email `{}` already exists in this region", user.email)
                    })
                })?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(USER_COLUMNS).push(" FROM users WHERE id = ").push_bind(id.0);
                query
                    .build_query_as::<UserRow>()
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("user", id))?
                    .try_into()
            }

            async fn list_users(&self, filter: &UserFilter) -> Result<Vec<User>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(USER_COLUMNS).push(" FROM users WHERE TRUE");
                if let Some(org_id) = filter.org_id {
                    query.push(" AND org_id = ").push_bind(org_id.0);
                }
                if let Some(team_id) = filter.team_id {
                    query.push(" AND team_id = ").push_bind(team_id.0);
                }
                query.push(" ORDER BY created_at, id");
                let rows = query.build_query_as::<UserRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn update_user(
                &self,
                user: &User,
                cap: Option<u64>,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::check_cap(
                    &mut tx,
                    cap,
                    "teams",
                    user.team_id.map(|id| id.0),
                    "SELECT COUNT(*) FROM users WHERE team_id = $1 AND active",
                )
                .await?;
                let updated = sqlx::query(
                    "UPDATE users SET team_id = $2, role = $3, locale = $4, active = $5
                     WHERE id = $1",
                )
                .bind(user.id.0)
                .bind(user.team_id.map(|id| id.0))
                .bind(user.role.as_str())
                .bind(user.locale.as_str())
                .bind(user.active)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::not_found("user", user.id));
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_key(
                &self,
                key: &Key,
                key_hash: &str,
                cap: Option<u64>,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::check_cap(
                    &mut tx,
                    cap,
                    "users",
                    Some(key.user_id.0),
                    "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND active",
                )
                .await?;
                sqlx::query(
                    "INSERT INTO api_keys (id, org_id, user_id, name, key_hash, scope, region,
                                           allowed_models, rpm_limit, tpm_limit, active,
                                           expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(key.id.0)
                .bind(key.org_id.0)
                .bind(key.user_id.0)
                .bind(&key.name)
                .bind(key_hash)
                .bind(key.scope.as_str())
                .bind(key.region.as_str())
                .bind(ModelList(key.allowed_models.clone()))
                .bind(key_limit(key.rpm_limit, "rpm_limit")?)
                .bind(key_limit(key.tpm_limit, "tpm_limit")?)
                .bind(key.active)
                .bind(key.expires_at)
                .bind(key.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|error| conflict_on_unique(error, || format!("key `{}` already exists", key.id)))?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_key(&self, id: KeyId) -> Result<Key, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(KEY_COLUMNS).push(" FROM api_keys WHERE id = ").push_bind(id.0);
                query
                    .build_query_as::<KeyRow>()
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("key", id))?
                    .try_into()
            }

            async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<Key>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(KEY_COLUMNS).push(" FROM api_keys WHERE TRUE");
                if let Some(org_id) = filter.org_id {
                    query.push(" AND org_id = ").push_bind(org_id.0);
                }
                if let Some(user_id) = filter.user_id {
                    query.push(" AND user_id = ").push_bind(user_id.0);
                }
                query.push(" ORDER BY created_at, id");
                let rows = query.build_query_as::<KeyRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn update_key(&self, key: &Key, audit: &AuditDraft) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE api_keys SET name = $2, allowed_models = $3, expires_at = $4,
                                         rpm_limit = $5, tpm_limit = $6
                     WHERE id = $1",
                )
                .bind(key.id.0)
                .bind(&key.name)
                .bind(ModelList(key.allowed_models.clone()))
                .bind(key.expires_at)
                .bind(key_limit(key.rpm_limit, "rpm_limit")?)
                .bind(key_limit(key.tpm_limit, "tpm_limit")?)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::not_found("key", key.id));
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_key(
                &self,
                rotation: &KeyRotation,
                audit: &AuditDraft,
            ) -> Result<Key, StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut query = QueryBuilder::<$db>::new(
                    "UPDATE api_keys SET previous_key_hash = CASE WHEN ",
                );
                query.push_bind(rotation.grace_until.is_some());
                query.push(" THEN key_hash ELSE NULL END, previous_key_expires_at = ");
                query.push_bind(rotation.grace_until);
                query.push(", key_hash = ").push_bind(&rotation.new_hash);
                query.push(", rotated_at = ").push_bind(rotation.at);
                query.push(" WHERE active AND id = ").push_bind(rotation.id.0);
                query.push(" RETURNING ").push(KEY_COLUMNS);
                let row = query
                    .build_query_as::<KeyRow>()
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Err(StoreError::Conflict(format!(
                        "key `{}` is revoked or does not exist, so it cannot be rotated",
                        rotation.id
                    )));
                };
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn revoke_key(
                &self,
                id: KeyId,
                at: DateTime<Utc>,
                audit: &AuditDraft,
            ) -> Result<Key, StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut query = QueryBuilder::<$db>::new(
                    "UPDATE api_keys SET active = FALSE, previous_key_hash = NULL, suspended_at = NULL,
                     revoked_at = COALESCE(revoked_at, ",
                );
                query.push_bind(at).push(") WHERE id = ").push_bind(id.0);
                query.push(" RETURNING ").push(KEY_COLUMNS);
                let row = query
                    .build_query_as::<KeyRow>()
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found("key", id))?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn find_usable_key(
                &self,
                key_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<AuthenticatedKey>, StoreError> {
                let row = sqlx::query_as::<_, AuthRow>(
                    "SELECT k.id, k.org_id, k.user_id, k.name, k.scope, k.region, k.allowed_models,
                            k.rpm_limit, k.tpm_limit, k.active, k.expires_at, k.created_at,
                            k.rotated_at, k.previous_key_expires_at, k.revoked_at,
                            u.role AS user_role, u.team_id AS user_team_id,
                            u.locale AS user_locale, u.limits AS user_limits,
                            t.allowed_models AS team_allowed_models, t.limits AS team_limits,
                            o.allowed_models AS org_allowed_models, o.limits AS org_limits,
                            o.plan AS org_plan, o.plan_version AS org_plan_version,
                            o.plan_overrides AS org_plan_overrides,
                            EXISTS (SELECT 1 FROM budgets b
                                    WHERE b.scope = 'key' AND b.scope_id = k.id) AS key_budget,
                            EXISTS (SELECT 1 FROM budgets b
                                    WHERE b.scope = 'team' AND b.scope_id = u.team_id)
                                AS team_budget,
                            EXISTS (SELECT 1 FROM budgets b
                                    WHERE b.scope = 'org' AND b.scope_id = k.org_id) AS org_budget
                     FROM api_keys k
                     JOIN users u ON u.id = k.user_id
                     JOIN organizations o ON o.id = k.org_id
                     LEFT JOIN teams t ON t.id = u.team_id
                     WHERE (k.key_hash = $1
                            OR (k.previous_key_hash = $1 AND k.previous_key_expires_at > $2))
                       AND k.active AND u.active AND o.active
                       AND (k.expires_at IS NULL OR k.expires_at > $2)",
                )
                .bind(key_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(AuthenticatedKey::try_from).transpose()
            }

            async fn get_limits(&self, scope: LimitScope) -> Result<LimitSet, StoreError> {
                let (table, id) = limits_row(scope);
                let mut query = QueryBuilder::<$db>::new("SELECT limits FROM ");
                query.push(table).push(" WHERE id = ").push_bind(id);
                let (stored,): (Option<String>,) = query
                    .build_query_as()
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found(scope.entity(), scope.id()))?;
                parse_limits(&format!("{table}.limits"), stored.as_deref())
            }

            async fn set_limits(
                &self,
                scope: LimitScope,
                limits: &LimitSet,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let (table, id) = limits_row(scope);
                let mut tx = self.pool.begin().await?;
                let mut query = QueryBuilder::<$db>::new("UPDATE ");
                query.push(table).push(" SET limits = ").push_bind(encode_limits(limits));
                query.push(" WHERE id = ").push_bind(id);
                let updated = query.build().execute(&mut *tx).await?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::not_found(scope.entity(), scope.id()));
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }
        }

        /// Returns the table that stores the limit set of `scope`, and the row's id.
        fn limits_row(scope: LimitScope) -> (&'static str, uuid::Uuid) {
            match scope {
                LimitScope::Org(id) => ("organizations", id.0),
                LimitScope::Team(id) => ("teams", id.0),
                LimitScope::User(id) => ("users", id.0),
            }
        }

        /// Converts a key's per-minute limit to the `BIGINT` it is stored as.
        fn key_limit(limit: Option<u64>, column: &str) -> Result<Option<i64>, StoreError> {
            limit
                .map(|limit| {
                    i64::try_from(limit).map_err(|_| {
                        StoreError::Corrupt(format!("`{column}` {limit} does not fit a BIGINT"))
                    })
                })
                .transpose()
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn append_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
                let mut tx = self.pool.begin().await?;
                let entry = Self::append_audit_in(&mut tx, draft).await?;
                tx.commit().await?;
                Ok(entry)
            }

            async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(AUDIT_COLUMNS).push(" FROM audit_log WHERE seq > ");
                query.push_bind(filter.after_seq);
                if let Some(org_id) = filter.org_id {
                    query.push(" AND org_id = ").push_bind(org_id.0);
                }
                query.push(" ORDER BY seq LIMIT ").push_bind(filter.limit);
                let rows = query.build_query_as::<AuditRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn audit_head(&self) -> Result<AuditHead, StoreError> {
                let (seq, hash): (i64, String) =
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(AuditHead { seq, hash })
            }
        }

        impl $store {
            /// Appends `credit` after its org's last entry inside `tx`. The org's row lock
            /// orders concurrent appends, so each reads the balance that the one before it
            /// wrote.
            async fn append_credit_in(
                tx: &mut Transaction<'_, $db>,
                credit: &NewCredit,
            ) -> Result<CreditEntry, StoreError> {
                Self::lock_row(tx, "organizations", credit.org_id.0).await?;

                let last: Option<(i64, Money)> = sqlx::query_as(
                    "SELECT seq, balance_usd FROM credit_ledger WHERE org_id = $1
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(credit.org_id.0)
                .fetch_optional(&mut **tx)
                .await?;
                let (last_seq, balance) = last.map_or((0, Decimal::ZERO), |(seq, balance)| (seq, balance.0));
                let seq = last_seq + 1;
                let balance = balance + credit.amount_usd;

                sqlx::query(
                    "INSERT INTO credit_ledger (id, org_id, seq, kind, amount_usd, balance_usd,
                                                reference, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(uuid::Uuid::new_v4())
                .bind(credit.org_id.0)
                .bind(seq)
                .bind(credit.kind.as_str())
                .bind(Money(credit.amount_usd))
                .bind(Money(balance))
                .bind(credit.reference.as_deref())
                .bind(credit.created_at)
                .execute(&mut **tx)
                .await?;

                Ok(CreditEntry {
                    org_id: credit.org_id,
                    seq: u64::try_from(seq).unwrap_or(0),
                    kind: credit.kind,
                    amount_usd: credit.amount_usd,
                    balance_usd: balance,
                    reference: credit.reference.clone(),
                    created_at: credit.created_at,
                })
            }
        }

        #[async_trait]
        impl CreditStore for $store {
            async fn append_credit(
                &self,
                credit: &NewCredit,
                audit: Option<&AuditDraft>,
            ) -> Result<CreditEntry, StoreError> {
                let mut tx = self.pool.begin().await?;
                let entry = Self::append_credit_in(&mut tx, credit).await?;
                if let Some(audit) = audit {
                    Self::append_audit_in(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(entry)
            }

            async fn credit_balance(&self, org_id: OrgId) -> Result<(Decimal, u64), StoreError> {
                let last: Option<(i64, Money)> = sqlx::query_as(
                    "SELECT seq, balance_usd FROM credit_ledger WHERE org_id = $1
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(org_id.0)
                .fetch_optional(&self.pool)
                .await?;
                Ok(last.map_or((Decimal::ZERO, 0), |(seq, balance)| {
                    (balance.0, u64::try_from(seq).unwrap_or(0))
                }))
            }

            async fn list_credits(
                &self,
                org_id: OrgId,
                after_seq: u64,
                limit: u64,
            ) -> Result<Vec<CreditEntry>, StoreError> {
                let rows = sqlx::query_as::<_, CreditRow>(
                    "SELECT org_id, seq, kind, amount_usd, balance_usd, reference, created_at
                     FROM credit_ledger WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(org_id.0)
                .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                convert_all(rows)
            }

            async fn get_auto_topup(&self, org_id: OrgId) -> Result<Option<AutoTopup>, StoreError> {
                let (threshold, amount): (Option<Money>, Option<Money>) = sqlx::query_as(
                    "SELECT auto_topup_threshold_usd, auto_topup_amount_usd
                     FROM organizations WHERE id = $1",
                )
                .bind(org_id.0)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::not_found("organization", org_id))?;
                Ok(threshold.zip(amount).map(|(threshold, amount)| AutoTopup {
                    threshold_usd: threshold.0,
                    amount_usd: amount.0,
                }))
            }

            async fn set_auto_topup(
                &self,
                org_id: OrgId,
                auto_topup: Option<AutoTopup>,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE organizations
                     SET auto_topup_threshold_usd = $1, auto_topup_amount_usd = $2
                     WHERE id = $3",
                )
                .bind(auto_topup.map(|settings| Money(settings.threshold_usd)))
                .bind(auto_topup.map(|settings| Money(settings.amount_usd)))
                .bind(org_id.0)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::not_found("organization", org_id));
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn invoice_topup(
                &self,
                org_id: OrgId,
                threshold_usd: Decimal,
                amount_usd: Decimal,
                now: DateTime<Utc>,
            ) -> Result<Option<CreditEntry>, StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_row(&mut tx, "organizations", org_id.0).await?;
                let last: Option<(Money,)> = sqlx::query_as(
                    "SELECT balance_usd FROM credit_ledger WHERE org_id = $1
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(org_id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let balance = last.map_or(Decimal::ZERO, |(balance,)| balance.0);
                if balance >= threshold_usd {
                    return Ok(None);
                }
                let line = uuid::Uuid::new_v4();
                sqlx::query(
                    "INSERT INTO invoice_lines (id, org_id, kind, amount_usd, status, created_at)
                     VALUES ($1, $2, 'auto_topup', $3, 'pending', $4)",
                )
                .bind(line)
                .bind(org_id.0)
                .bind(Money(amount_usd))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let credit = NewCredit {
                    org_id,
                    kind: CreditKind::AutoTopup,
                    amount_usd,
                    reference: Some(format!("invoice line {line}")),
                    created_at: now,
                };
                let entry = Self::append_credit_in(&mut tx, &credit).await?;
                tx.commit().await?;
                Ok(Some(entry))
            }
        }

        impl $store {
            /// Settles `charges` inside `tx`. It deletes each request's holds, adds the request's
            /// cost to the spend of those budgets, and takes the released amounts off their
            /// reservations. Budgets are updated in sorted order, the order reservations lock them.
            async fn settle_in(
                tx: &mut Transaction<'_, $db>,
                charges: &[BudgetCharge],
            ) -> Result<(), StoreError> {
                // Per budget: the spend to add and the reservation to release.
                let mut changes: BTreeMap<BudgetRef, (i64, i64)> = BTreeMap::new();
                for charge in charges {
                    let held: Vec<(String, uuid::Uuid, i64, bool)> = sqlx::query_as(
                        "DELETE FROM budget_holds WHERE request_id = $1
                         RETURNING scope, scope_id, amount_micros, released",
                    )
                    .bind(charge.request_id.0)
                    .fetch_all(&mut **tx)
                    .await?;
                    let cost = to_micros(charge.cost_usd)
                        .unwrap_or_else(|| to_micros_ceil(charge.cost_usd));
                    for (scope, id, amount, released) in held {
                        let change = changes.entry(budget_ref(&scope, id)?).or_default();
                        change.0 += cost;
                        if !released {
                            change.1 += amount;
                        }
                    }
                }
                Self::apply_budget_changes(tx, &changes).await
            }

            async fn apply_budget_changes(
                tx: &mut Transaction<'_, $db>,
                changes: &BTreeMap<BudgetRef, (i64, i64)>,
            ) -> Result<(), StoreError> {
                for (budget, (spent, released)) in changes {
                    if *spent == 0 && *released == 0 {
                        continue;
                    }
                    sqlx::query(
                        "UPDATE budgets SET spent_micros = spent_micros + $1,
                                            reserved_micros = reserved_micros - $2
                         WHERE scope = $3 AND scope_id = $4",
                    )
                    .bind(spent)
                    .bind(released)
                    .bind(budget.scope.as_str())
                    .bind(budget.id)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            async fn budget_row(
                executor: impl sqlx::Executor<'_, Database = $db>,
                budget: BudgetRef,
            ) -> Result<Option<Budget>, StoreError> {
                let row = sqlx::query_as::<_, BudgetRow>(
                    "SELECT scope, scope_id, org_id, max_micros, spent_micros, reserved_micros,
                            updated_at
                     FROM budgets WHERE scope = $1 AND scope_id = $2",
                )
                .bind(budget.scope.as_str())
                .bind(budget.id)
                .fetch_optional(executor)
                .await?;
                row.map(Budget::try_from).transpose()
            }
        }

        #[async_trait]
        impl BudgetStore for $store {
            async fn set_budget(
                &self,
                budget: BudgetRef,
                org_id: OrgId,
                max_micros: i64,
                reset_spend: bool,
                now: DateTime<Utc>,
                audit: &AuditDraft,
            ) -> Result<Budget, StoreError> {
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query_as::<_, BudgetRow>(
                    "INSERT INTO budgets (scope, scope_id, org_id, max_micros, spent_micros,
                                          reserved_micros, updated_at)
                     VALUES ($1, $2, $3, $4, 0, 0, $5)
                     ON CONFLICT (scope, scope_id) DO UPDATE
                     SET max_micros = excluded.max_micros,
                         updated_at = excluded.updated_at,
                         spent_micros = CASE WHEN $6 THEN 0 ELSE budgets.spent_micros END
                     RETURNING scope, scope_id, org_id, max_micros, spent_micros,
                               reserved_micros, updated_at",
                )
                .bind(budget.scope.as_str())
                .bind(budget.id)
                .bind(org_id.0)
                .bind(max_micros)
                .bind(now)
                .bind(reset_spend)
                .fetch_one(&mut *tx)
                .await?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Budget::try_from(row)
            }

            async fn get_budget(&self, budget: BudgetRef) -> Result<Option<Budget>, StoreError> {
                Self::budget_row(&self.pool, budget).await
            }

            async fn remove_budget(
                &self,
                budget: BudgetRef,
                audit: &AuditDraft,
            ) -> Result<Option<Budget>, StoreError> {
                let mut tx = self.pool.begin().await?;
                // Holds first, then the budget: the order in which settlements lock them.
                sqlx::query("DELETE FROM budget_holds WHERE scope = $1 AND scope_id = $2")
                    .bind(budget.scope.as_str())
                    .bind(budget.id)
                    .execute(&mut *tx)
                    .await?;
                let removed = sqlx::query_as::<_, BudgetRow>(
                    "DELETE FROM budgets WHERE scope = $1 AND scope_id = $2
                     RETURNING scope, scope_id, org_id, max_micros, spent_micros,
                               reserved_micros, updated_at",
                )
                .bind(budget.scope.as_str())
                .bind(budget.id)
                .fetch_optional(&mut *tx)
                .await?;
                if removed.is_none() {
                    return Ok(None);
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                removed.map(Budget::try_from).transpose()
            }

            async fn reserve_budgets(
                &self,
                request_id: RequestId,
                budgets: &[BudgetRef],
                amount_micros: i64,
                expires_at: DateTime<Utc>,
            ) -> Result<BudgetReservation, StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut held = Vec::with_capacity(budgets.len());
                for budget in budgets {
                    // The condition is checked on the locked row, so concurrent reservations
                    // queue and each one counts the amounts reserved before it.
                    let reserved = sqlx::query(
                        "UPDATE budgets SET reserved_micros = reserved_micros + $1
                         WHERE scope = $2 AND scope_id = $3
                           AND spent_micros + reserved_micros + $1 <= max_micros",
                    )
                    .bind(amount_micros)
                    .bind(budget.scope.as_str())
                    .bind(budget.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        > 0;
                    if reserved {
                        held.push(*budget);
                        continue;
                    }
                    if let Some(exceeded) = Self::budget_row(&mut *tx, *budget).await? {
                        tx.rollback().await?;
                        return Ok(BudgetReservation::Exceeded(exceeded));
                    }
                }
                for budget in &held {
                    sqlx::query(
                        "INSERT INTO budget_holds (request_id, scope, scope_id, amount_micros,
                                                   expires_at)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(request_id.0)
                    .bind(budget.scope.as_str())
                    .bind(budget.id)
                    .bind(amount_micros)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(BudgetReservation::Held(held))
            }

            async fn settle_budgets(&self, charges: &[BudgetCharge]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::settle_in(&mut tx, charges).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn release_expired_budget_holds(
                &self,
                now: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                // Released holds that expired a day ago belong to requests that never ended.
                let forget_before =
                    now - chrono::Duration::seconds(i64::try_from(MAX_HOLD_TTL_SECS).unwrap_or(0));
                sqlx::query("DELETE FROM budget_holds WHERE expires_at <= $1 AND released")
                    .bind(forget_before)
                    .execute(&mut *tx)
                    .await?;
                let released: Vec<(String, uuid::Uuid, i64)> = sqlx::query_as(
                    "UPDATE budget_holds SET released = TRUE
                     WHERE expires_at <= $1 AND NOT released
                     RETURNING scope, scope_id, amount_micros",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let count = u64::try_from(released.len()).unwrap_or(u64::MAX);
                let mut changes: BTreeMap<BudgetRef, (i64, i64)> = BTreeMap::new();
                for (scope, id, amount) in released {
                    changes.entry(budget_ref(&scope, id)?).or_default().1 += amount;
                }
                Self::apply_budget_changes(&mut tx, &changes).await?;
                tx.commit().await?;
                Ok(count)
            }
        }

        impl $store {
            /// Returns the ids of `select`, a query bound to `id` that lists rows newest first,
            /// past the first `cap`.
            async fn past_cap(
                tx: &mut Transaction<'_, $db>,
                select: &'static str,
                id: uuid::Uuid,
                cap: u64,
            ) -> Result<Vec<uuid::Uuid>, StoreError> {
                let rows: Vec<(uuid::Uuid,)> =
                    sqlx::query_as(select).bind(id).fetch_all(&mut **tx).await?;
                let keep = usize::try_from(cap).unwrap_or(usize::MAX);
                let excess = rows.len().saturating_sub(keep);
                // Rows are newest first, so the newest are past the cap.
                Ok(rows.into_iter().take(excess).map(|(id,)| id).collect())
            }
        }

        #[async_trait]
        impl LifecycleStore for $store {
            async fn orgs_with_ended_trials(
                &self,
                now: DateTime<Utc>,
            ) -> Result<Vec<Org>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(ORG_COLUMNS)
                    .push(" FROM organizations WHERE active AND trial_ends_at <= ")
                    .push_bind(now);
                let rows = query.build_query_as::<OrgRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn suspend_over_caps(
                &self,
                org_id: OrgId,
                caps: ResourceCaps,
                now: DateTime<Utc>,
                audit: &AuditDraft,
            ) -> Result<ResourceCounts, StoreError> {
                let mut tx = self.pool.begin().await?;
                // The org's lock orders this with the creations that check the same caps.
                Self::lock_row(&mut tx, "organizations", org_id.0).await?;
                let mut counts = ResourceCounts::default();
                if let Some(cap) = caps.teams {
                    let teams = Self::past_cap(
                        &mut tx,
                        "SELECT id FROM teams WHERE org_id = $1 AND suspended_at IS NULL
                         ORDER BY created_at DESC, id DESC",
                        org_id.0,
                        cap,
                    )
                    .await?;
                    for team in teams {
                        sqlx::query("UPDATE teams SET suspended_at = $1 WHERE id = $2")
                            .bind(now)
                            .bind(team)
                            .execute(&mut *tx)
                            .await?;
                        let users = sqlx::query(
                            "UPDATE users SET active = FALSE, suspended_at = $1
                             WHERE team_id = $2 AND active",
                        )
                        .bind(now)
                        .bind(team)
                        .execute(&mut *tx)
                        .await?;
                        counts.teams += 1;
                        counts.users += users.rows_affected();
                    }
                }
                if let Some(cap) = caps.users_per_team {
                    let teams: Vec<(uuid::Uuid,)> = sqlx::query_as(
                        "SELECT id FROM teams WHERE org_id = $1 AND suspended_at IS NULL",
                    )
                    .bind(org_id.0)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (team,) in teams {
                        let users = Self::past_cap(
                            &mut tx,
                            "SELECT id FROM users WHERE team_id = $1 AND active
                             ORDER BY created_at DESC, id DESC",
                            team,
                            cap,
                        )
                        .await?;
                        for user in users {
                            sqlx::query(
                                "UPDATE users SET active = FALSE, suspended_at = $1 WHERE id = $2",
                            )
                            .bind(now)
                            .bind(user)
                            .execute(&mut *tx)
                            .await?;
                            counts.users += 1;
                        }
                    }
                }
                if let Some(cap) = caps.keys_per_user {
                    let users: Vec<(uuid::Uuid,)> =
                        sqlx::query_as("SELECT id FROM users WHERE org_id = $1 AND active")
                            .bind(org_id.0)
                            .fetch_all(&mut *tx)
                            .await?;
                    for (user,) in users {
                        let keys = Self::past_cap(
                            &mut tx,
                            "SELECT id FROM api_keys WHERE user_id = $1 AND active
                             ORDER BY created_at DESC, id DESC",
                            user,
                            cap,
                        )
                        .await?;
                        for key in keys {
                            sqlx::query(
                                "UPDATE api_keys SET active = FALSE, suspended_at = $1 WHERE id = $2",
                            )
                            .bind(now)
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                            counts.keys += 1;
                        }
                    }
                }
                if !counts.is_empty() {
                    Self::append_audit_in(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(counts)
            }

            async fn discard_org(&self, org_id: OrgId, audit: &AuditDraft) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for table in ["api_keys", "users", "organizations"] {
                    let column = if table == "organizations" { "id" } else { "org_id" };
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM ");
                    query
                        .push(table)
                        .push(" WHERE ")
                        .push(column)
                        .push(" = ")
                        .push_bind(org_id.0);
                    query.build().execute(&mut *tx).await?;
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn forget_user_suspension(&self, user_id: UserId) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET suspended_at = NULL WHERE id = $1")
                    .bind(user_id.0)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn restore_suspended(
                &self,
                org_id: OrgId,
                audit: &AuditDraft,
            ) -> Result<ResourceCounts, StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_row(&mut tx, "organizations", org_id.0).await?;
                let mut counts = ResourceCounts::default();
                for (table, reactivate, count) in [
                    ("teams", "", &mut counts.teams),
                    ("users", "active = TRUE, ", &mut counts.users),
                    ("api_keys", "active = TRUE, ", &mut counts.keys),
                ] {
                    let mut query = QueryBuilder::<$db>::new("UPDATE ");
                    query
                        .push(table)
                        .push(" SET ")
                        .push(reactivate)
                        .push("suspended_at = NULL WHERE org_id = ")
                        .push_bind(org_id.0)
                        .push(" AND suspended_at IS NOT NULL");
                    *count = query.build().execute(&mut *tx).await?.rows_affected();
                }
                if !counts.is_empty() {
                    Self::append_audit_in(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(counts)
            }

            async fn orgs_with_suspensions(
                &self,
                before: DateTime<Utc>,
            ) -> Result<Vec<OrgId>, StoreError> {
                let rows: Vec<(uuid::Uuid,)> = sqlx::query_as(
                    "SELECT org_id FROM teams WHERE suspended_at <= $1
                     UNION SELECT org_id FROM users WHERE suspended_at <= $1
                     UNION SELECT org_id FROM api_keys WHERE suspended_at <= $1",
                )
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(id,)| id.into()).collect())
            }

            async fn purge_suspended(
                &self,
                org_id: OrgId,
                before: DateTime<Utc>,
                audit: &AuditDraft,
            ) -> Result<ResourceCounts, StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::lock_row(&mut tx, "organizations", org_id.0).await?;
                let mut counts = ResourceCounts::default();
                // Keys first, then users, then teams, as each refers to the next.
                counts.keys = sqlx::query(
                    "DELETE FROM api_keys WHERE org_id = $1
                       AND (suspended_at <= $2
                            OR user_id IN (SELECT id FROM users
                                           WHERE org_id = $1 AND suspended_at <= $2))",
                )
                .bind(org_id.0)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                counts.users = sqlx::query(
                    "DELETE FROM users WHERE org_id = $1 AND suspended_at <= $2",
                )
                .bind(org_id.0)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Users that stay, such as revoked ones, leave the teams that go.
                sqlx::query(
                    "UPDATE users SET team_id = NULL
                     WHERE team_id IN (SELECT id FROM teams
                                       WHERE org_id = $1 AND suspended_at <= $2)",
                )
                .bind(org_id.0)
                .bind(before)
                .execute(&mut *tx)
                .await?;
                counts.teams = sqlx::query(
                    "DELETE FROM teams WHERE org_id = $1 AND suspended_at <= $2",
                )
                .bind(org_id.0)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if !counts.is_empty() {
                    Self::append_audit_in(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(counts)
            }
        }

        #[async_trait]
        impl BillingStore for $store {
            async fn insert_fx_rates(
                &self,
                rates: &[FxRate],
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for rate in rates {
                    sqlx::query(
                        "INSERT INTO fx_rates (id, currency, rate, effective_at, created_at)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(uuid::Uuid::new_v4())
                    .bind(rate.currency.code())
                    .bind(Money(rate.rate))
                    .bind(rate.effective_at)
                    .bind(rate.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|error| {
                        conflict_on_unique(error, || {
                            format!(
                                "{} already has a rate taking effect at {}: rates are never changed, so give another effective time",
                                rate.currency,
                                rate.effective_at.to_rfc3339()
                            )
                        })
                    })?;
                }
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_fx_rates(
                &self,
                currency: Option<Currency>,
            ) -> Result<Vec<FxRate>, StoreError> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT currency, rate, effective_at, created_at FROM fx_rates WHERE TRUE",
                );
                if let Some(currency) = currency {
                    query.push(" AND currency = ").push_bind(currency.code());
                }
                query.push(" ORDER BY effective_at DESC, currency");
                let rows = query.build_query_as::<FxRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn fx_rate_at(
                &self,
                currency: Currency,
                at: DateTime<Utc>,
            ) -> Result<Option<FxRate>, StoreError> {
                let row = sqlx::query_as::<_, FxRow>(
                    "SELECT currency, rate, effective_at, created_at FROM fx_rates
                     WHERE currency = $1 AND effective_at <= $2
                     ORDER BY effective_at DESC LIMIT 1",
                )
                .bind(currency.code())
                .bind(at)
                .fetch_optional(&self.pool)
                .await?;
                row.map(FxRate::try_from).transpose()
            }

            async fn credits_between(
                &self,
                org_id: OrgId,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<CreditEntry>, StoreError> {
                let rows = sqlx::query_as::<_, CreditRow>(
                    "SELECT org_id, seq, kind, amount_usd, balance_usd, reference, created_at
                     FROM credit_ledger
                     WHERE org_id = $1 AND created_at >= $2 AND created_at < $3
                     ORDER BY seq",
                )
                .bind(org_id.0)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
                convert_all(rows)
            }

            async fn insert_invoice(
                &self,
                invoice: &Invoice,
                audit: &AuditDraft,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO invoices (id, org_id, period, period_start, period_end,
                                           currency, fx_rate, fx_effective_at, total, issued_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(invoice.id.0)
                .bind(invoice.org_id.0)
                .bind(&invoice.period)
                .bind(invoice.period_start)
                .bind(invoice.period_end)
                .bind(invoice.currency.code())
                .bind(Money(invoice.fx_rate))
                .bind(invoice.fx_effective_at)
                .bind(Money(invoice.total))
                .bind(invoice.issued_at)
                .execute(&mut *tx)
                .await
                .map_err(|error| {
                    conflict_on_unique(error, || {
                        format!(
                            "the invoice of {} is already issued: show it with `synaxisctl invoice list`",
                            invoice.period
                        )
                    })
                })?;
                for (position, line) in invoice.lines.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO invoice_items (invoice_id, position, kind, amount_usd, amount,
                                                    charged)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(invoice.id.0)
                    .bind(i32::try_from(position).unwrap_or(i32::MAX))
                    .bind(line.kind.as_str())
                    .bind(Money(line.amount_usd))
                    .bind(Money(line.amount))
                    .bind(line.charged)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "UPDATE invoice_lines SET status = 'invoiced'
                     WHERE org_id = $1 AND status = 'pending'
                       AND created_at >= $2 AND created_at < $3",
                )
                .bind(invoice.org_id.0)
                .bind(invoice.period_start)
                .bind(invoice.period_end)
                .execute(&mut *tx)
                .await?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_invoice(&self, id: InvoiceId) -> Result<Invoice, StoreError> {
                let row = sqlx::query_as::<_, InvoiceRow>(
                    "SELECT id, org_id, period, period_start, period_end, currency, fx_rate,
                            fx_effective_at, total, issued_at
                     FROM invoices WHERE id = $1",
                )
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::not_found("invoice", id))?;
                self.invoice_with_items(row).await
            }

            async fn list_invoices(&self, org_id: OrgId) -> Result<Vec<Invoice>, StoreError> {
                let rows = sqlx::query_as::<_, InvoiceRow>(
                    "SELECT id, org_id, period, period_start, period_end, currency, fx_rate,
                            fx_effective_at, total, issued_at
                     FROM invoices WHERE org_id = $1 ORDER BY period_start DESC",
                )
                .bind(org_id.0)
                .fetch_all(&self.pool)
                .await?;
                let mut invoices = Vec::with_capacity(rows.len());
                for row in rows {
                    invoices.push(self.invoice_with_items(row).await?);
                }
                Ok(invoices)
            }
        }

        impl $store {
            async fn invoice_with_items(&self, row: InvoiceRow) -> Result<Invoice, StoreError> {
                let items = sqlx::query_as::<_, InvoiceItemRow>(
                    "SELECT kind, amount_usd, amount, charged FROM invoice_items
                     WHERE invoice_id = $1 ORDER BY position",
                )
                .bind(row.id)
                .fetch_all(&self.pool)
                .await?;
                row.with_items(items)
            }
        }

        #[async_trait]
        impl SettingsStore for $store {
            async fn put_setting_if_absent(
                &self,
                name: &str,
                value: &str,
            ) -> Result<String, StoreError> {
                sqlx::query(
                    "INSERT INTO server_settings (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(value)
                .execute(&self.pool)
                .await?;
                let (stored,): (String,) =
                    sqlx::query_as("SELECT value FROM server_settings WHERE name = $1")
                        .bind(name)
                        .fetch_one(&self.pool)
                        .await?;
                Ok(stored)
            }
        }

        #[async_trait]
        impl RequestStore for $store {
            async fn insert_request(&self, record: &RequestRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO requests (id, stored_region, request_id, org_id, user_id, key_id,
                                           endpoint, model, stream, status_code, error_code,
                                           prompt_tokens, completion_tokens, cost_usd, started_at,
                                           duration_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(record.id.0)
                .bind(record.stored_region.as_str())
                .bind(&record.request_id)
                .bind(record.org_id.0)
                .bind(record.user_id.0)
                .bind(record.key_id.0)
                .bind(&record.endpoint)
                .bind(&record.model)
                .bind(record.stream)
                .bind(i32::from(record.status_code))
                .bind(&record.error_code)
                .bind(record.prompt_tokens)
                .bind(record.completion_tokens)
                .bind(Money(record.cost_usd))
                .bind(record.started_at)
                .bind(record.duration_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn insert_requests(
                &self,
                records: &[RequestRecord],
                charges: &[BudgetCharge],
                credits: &[NewCredit],
            ) -> Result<(), StoreError> {
                if records.is_empty() && charges.is_empty() && credits.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                if !records.is_empty() {
                    Self::insert_request_batch(&mut tx, records).await?;
                }
                Self::settle_in(&mut tx, charges).await?;
                // Orgs are locked in id order, the same in every batch, so that two batches
                // cannot wait on each other's org locks.
                let mut credits: Vec<&NewCredit> = credits.iter().collect();
                credits.sort_by_key(|credit| credit.org_id);
                for credit in credits {
                    Self::append_credit_in(&mut tx, credit).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list_requests(
                &self,
                filter: &RequestFilter,
            ) -> Result<Vec<RequestRecord>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query.push(REQUEST_COLUMNS).push(" FROM requests WHERE TRUE");
                if let Some(org_id) = filter.org_id {
                    query.push(" AND org_id = ").push_bind(org_id.0);
                }
                if let Some(key_id) = filter.key_id {
                    query.push(" AND key_id = ").push_bind(key_id.0);
                }
                query
                    .push(" ORDER BY started_at DESC, id DESC LIMIT ")
                    .push_bind(filter.limit);
                let rows = query.build_query_as::<RequestRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn held_requests(
                &self,
                region: &synaxis_shared::RegionId,
                org_id: Option<OrgId>,
                limit: i64,
            ) -> Result<Vec<RequestRecord>, StoreError> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(REQUEST_COLUMNS)
                    .push(" FROM requests WHERE stored_region = ")
                    .push_bind(region.as_str());
                if let Some(org_id) = org_id {
                    query.push(" AND org_id = ").push_bind(org_id.0);
                }
                query.push(" ORDER BY started_at, id LIMIT ").push_bind(limit);
                let rows = query.build_query_as::<RequestRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }

            async fn release_held_requests(
                &self,
                region: &synaxis_shared::RegionId,
                ids: &[synaxis_shared::RequestId],
            ) -> Result<u64, StoreError> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut query = QueryBuilder::<$db>::new("DELETE FROM requests WHERE stored_region = ");
                query.push_bind(region.as_str()).push(" AND id IN (");
                let mut separated = query.separated(", ");
                for id in ids {
                    separated.push_bind(id.0);
                }
                query.push(")");
                let done = query.build().execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn accept_held_requests(
                &self,
                records: &[RequestRecord],
            ) -> Result<u64, StoreError> {
                if records.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.pool.begin().await?;
                let inserted = Self::insert_new_requests(&mut tx, records).await?;
                // The cost of each record stored now counts against the budgets of its key,
                // its user's team and its org, as if it had been served here.
                let mut changes: BTreeMap<BudgetRef, (i64, i64)> = BTreeMap::new();
                for record in records.iter().filter(|record| inserted.contains(&record.id.0)) {
                    let cost = to_micros(record.cost_usd)
                        .unwrap_or_else(|| to_micros_ceil(record.cost_usd));
                    let team: Option<(Option<uuid::Uuid>,)> =
                        sqlx::query_as("SELECT team_id FROM users WHERE id = $1")
                            .bind(record.user_id.0)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let owners = [
                        Some((synaxis_shared::budgets::BudgetScope::Key, record.key_id.0)),
                        team.and_then(|(team,)| team).map(|team| (synaxis_shared::budgets::BudgetScope::Team, team)),
                        Some((synaxis_shared::budgets::BudgetScope::Org, record.org_id.0)),
                    ];
                    for (scope, id) in owners.into_iter().flatten() {
                        changes.entry(BudgetRef { scope, id }).or_default().0 += cost;
                    }
                }
                Self::apply_budget_changes(&mut tx, &changes).await?;
                tx.commit().await?;
                Ok(u64::try_from(inserted.len()).unwrap_or(u64::MAX))
            }

            async fn count_requests_by_id(
                &self,
                request_ids: &[String],
            ) -> Result<Vec<(String, synaxis_shared::RegionId, i64)>, StoreError> {
                let mut counts = Vec::new();
                for chunk in request_ids.chunks(1000) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT request_id, stored_region, count(*) FROM requests WHERE request_id IN (",
                    );
                    let mut separated = query.separated(", ");
                    for id in chunk {
                        separated.push_bind(id.as_str());
                    }
                    query.push(") GROUP BY request_id, stored_region ORDER BY request_id, stored_region");
                    let rows: Vec<(String, String, i64)> =
                        query.build_query_as().fetch_all(&self.pool).await?;
                    for (request_id, region, count) in rows {
                        counts.push((request_id, super::parse_region(region)?, count));
                    }
                }
                Ok(counts)
            }
        }

        #[async_trait]
        impl ResidencyStore for $store {
            async fn check_residency(
                &self,
                region: &synaxis_shared::RegionId,
            ) -> Result<synaxis_shared::compliance::ResidencyReport, StoreError> {
                let (checked,): (i64,) = sqlx::query_as("SELECT count(*) FROM requests")
                    .fetch_one(&self.pool)
                    .await?;
                let (pending,): (i64,) =
                    sqlx::query_as("SELECT count(*) FROM requests WHERE stored_region <> $1")
                        .bind(region.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                let rows: Vec<(uuid::Uuid, String, uuid::Uuid, Option<String>)> = sqlx::query_as(
                    "SELECT r.id, r.request_id, r.user_id, u.data_residency_region
                     FROM requests r LEFT JOIN users u ON u.id = r.user_id
                     WHERE r.stored_region = $1
                       AND (u.id IS NULL OR u.data_residency_region <> $1)
                     ORDER BY r.started_at, r.id LIMIT 1000",
                )
                .bind(region.as_str())
                .fetch_all(&self.pool)
                .await?;
                let violations = rows
                    .into_iter()
                    .map(|(record_id, request_id, user_id, user_region)| {
                        Ok(synaxis_shared::compliance::ResidencyViolation {
                            record_id,
                            request_id,
                            user_id: user_id.into(),
                            user_region: user_region.map(crate::store::parse_region).transpose()?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(synaxis_shared::compliance::ResidencyReport {
                    region: region.clone(),
                    records_checked: u64::try_from(checked).unwrap_or_default(),
                    violations,
                    pending_transfers: u64::try_from(pending).unwrap_or_default(),
                    error: None,
                })
            }
        }

        #[async_trait]
        impl TransferStore for $store {
            async fn record_transfer(
                &self,
                transfer: &synaxis_shared::compliance::TransferRecord,
            ) -> Result<(), StoreError> {
                let basis = serde_json::to_string(&transfer.legal_basis).map_err(|error| {
                    StoreError::Corrupt(format!("cannot encode a legal basis: {error}"))
                })?;
                sqlx::query(
                    "INSERT INTO transfers (id, request_id, user_id, org_id, from_region,
                                            to_region, regulation, legal_basis, citation, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(transfer.id)
                .bind(&transfer.request_id)
                .bind(transfer.user_id.0)
                .bind(transfer.org_id.0)
                .bind(transfer.from_region.as_str())
                .bind(transfer.to_region.as_str())
                .bind(&transfer.regulation)
                .bind(basis)
                .bind(&transfer.citation)
                .bind(transfer.at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_transfers(
                &self,
                user_id: Option<UserId>,
                limit: i64,
            ) -> Result<Vec<synaxis_shared::compliance::TransferRecord>, StoreError> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT id, request_id, user_id, org_id, from_region, to_region, regulation,
                            legal_basis, citation, at FROM transfers",
                );
                if let Some(user_id) = user_id {
                    query.push(" WHERE user_id = ").push_bind(user_id.0);
                }
                query.push(" ORDER BY at, id LIMIT ").push_bind(limit);
                let rows = query.build_query_as::<TransferRow>().fetch_all(&self.pool).await?;
                convert_all(rows)
            }
        }

        #[async_trait]
        impl ConsentStore for $store {
            async fn record_consent(
                &self,
                change: &NewConsent,
                audit: &AuditDraft,
            ) -> Result<synaxis_shared::compliance::ConsentRecord, StoreError> {
                let regions = serde_json::to_string(&change.regions).map_err(|error| {
                    StoreError::Corrupt(format!("cannot encode consent regions: {error}"))
                })?;
                let source = match change.source {
                    synaxis_shared::compliance::ConsentSource::User => "user",
                    synaxis_shared::compliance::ConsentSource::Operator => "operator",
                };
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query_as::<_, ConsentRow>(
                    "INSERT INTO consents (user_id, scope, version, granted, regions, source, recorded_at)
                     SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5, $6
                     FROM consents WHERE user_id = $1 AND scope = $2
                     RETURNING user_id, scope, version, granted, regions, source, recorded_at",
                )
                .bind(change.user_id.0)
                .bind(change.scope.as_str())
                .bind(change.granted)
                .bind(regions)
                .bind(source)
                .bind(change.at)
                .fetch_one(&mut *tx)
                .await
                .map_err(|error| {
                    conflict_on_unique(error, || "the consent changed at the same time: try again".to_owned())
                })?;
                Self::append_audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn consent_history(
                &self,
                user_id: UserId,
                scope: synaxis_shared::compliance::ConsentScope,
            ) -> Result<Vec<synaxis_shared::compliance::ConsentRecord>, StoreError> {
                let rows = sqlx::query_as::<_, ConsentRow>(
                    "SELECT user_id, scope, version, granted, regions, source, recorded_at
                     FROM consents WHERE user_id = $1 AND scope = $2 ORDER BY version",
                )
                .bind(user_id.0)
                .bind(scope.as_str())
                .fetch_all(&self.pool)
                .await?;
                convert_all(rows)
            }
        }

        #[async_trait]
        impl DirectoryStore for $store {
            async fn directory_entries(
                &self,
                selector: crate::directory::DirectorySelector,
                version: i64,
            ) -> Result<Vec<crate::directory::DirectoryEntry>, StoreError> {
                use crate::directory::DirectorySelector;
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT k.id, k.org_id, k.user_id, k.name, k.scope, k.region, k.allowed_models,
                            k.rpm_limit, k.tpm_limit, k.active, k.expires_at, k.created_at,
                            k.rotated_at, k.previous_key_expires_at, k.revoked_at,
                            k.key_hash, k.previous_key_hash,
                            u.role AS user_role, u.team_id AS user_team_id,
                            u.locale AS user_locale, u.limits AS user_limits, u.active AS user_active,
                            t.allowed_models AS team_allowed_models, t.limits AS team_limits,
                            o.allowed_models AS org_allowed_models, o.limits AS org_limits,
                            o.active AS org_active,
                            o.transfer_mechanism AS org_transfer_mechanism,
                            o.plan AS org_plan, o.plan_version AS org_plan_version,
                            o.plan_overrides AS org_plan_overrides,
                            FALSE AS key_budget, FALSE AS team_budget, FALSE AS org_budget,
                            (SELECT c.granted FROM consents c
                             WHERE c.user_id = k.user_id AND c.scope = 'cross_border_failover'
                             ORDER BY c.version DESC LIMIT 1) AS consent_granted,
                            (SELECT c.regions FROM consents c
                             WHERE c.user_id = k.user_id AND c.scope = 'cross_border_failover'
                             ORDER BY c.version DESC LIMIT 1) AS consent_regions
                     FROM api_keys k
                     JOIN users u ON u.id = k.user_id
                     JOIN organizations o ON o.id = k.org_id
                     LEFT JOIN teams t ON t.id = u.team_id",
                );
                match selector {
                    DirectorySelector::Key(id) => {
                        query.push(" WHERE k.id = ").push_bind(id.0);
                    }
                    DirectorySelector::User(id) => {
                        query.push(" WHERE k.user_id = ").push_bind(id.0);
                    }
                    DirectorySelector::Team(id) => {
                        query.push(" WHERE u.team_id = ").push_bind(id.0);
                    }
                    DirectorySelector::Org(id) => {
                        query.push(" WHERE k.org_id = ").push_bind(id.0);
                    }
                    DirectorySelector::All => {}
                }
                query.push(" ORDER BY k.id");
                let rows = query.build_query_as::<DirectoryRow>().fetch_all(&self.pool).await?;
                let mut entries: Vec<crate::directory::DirectoryEntry> = rows
                    .into_iter()
                    .map(|row| row.into_entry(version))
                    .collect::<Result<_, _>>()?;

                // The budgets of the entries' keys, teams and orgs, as they stand now.
                let mut orgs: Vec<uuid::Uuid> = entries.iter().map(|entry| entry.org_id.0).collect();
                orgs.sort_unstable();
                orgs.dedup();
                let mut budgets = Vec::new();
                for chunk in orgs.chunks(1000) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT scope, scope_id, org_id, max_micros, spent_micros, reserved_micros,
                                updated_at
                         FROM budgets WHERE org_id IN (",
                    );
                    let mut separated = query.separated(", ");
                    for org in chunk {
                        separated.push_bind(*org);
                    }
                    query.push(")");
                    let rows = query.build_query_as::<BudgetRow>().fetch_all(&self.pool).await?;
                    budgets.extend(convert_all::<_, Budget>(rows)?);
                }
                for entry in &mut entries {
                    entry.budgets = budgets
                        .iter()
                        .filter(|budget| entry.owns_budget(budget))
                        .cloned()
                        .collect();
                }
                Ok(entries)
            }

            async fn apply_directory_entries(
                &self,
                entries: &[crate::directory::DirectoryEntry],
            ) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut applied = 0;
                for entry in entries {
                    let text = serde_json::to_string(entry).map_err(|error| {
                        StoreError::Corrupt(format!("cannot encode a directory entry: {error}"))
                    })?;
                    let result = sqlx::query(
                        "INSERT INTO key_directory
                             (key_id, home_region, key_hash, previous_key_hash, version, entry)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (key_id) DO UPDATE SET
                             home_region = excluded.home_region,
                             key_hash = excluded.key_hash,
                             previous_key_hash = excluded.previous_key_hash,
                             version = excluded.version,
                             entry = excluded.entry
                         WHERE key_directory.version < excluded.version",
                    )
                    .bind(entry.key_id.to_string())
                    .bind(entry.home_region.as_str())
                    .bind(&entry.key_hash)
                    .bind(entry.previous_key_hash.as_deref())
                    .bind(entry.version)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
                    applied += result.rows_affected();
                }
                tx.commit().await?;
                Ok(applied)
            }

            async fn find_directory_entry(
                &self,
                key_hash: &str,
            ) -> Result<Option<crate::directory::DirectoryEntry>, StoreError> {
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT entry FROM key_directory
                     WHERE key_hash = $1 OR previous_key_hash = $1
                     ORDER BY key_hash = $1 DESC LIMIT 1",
                )
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(text,)| parse_directory_entry(&text)).transpose()
            }
        }
    };
}

pub(crate) use impl_store_queries;

/// Reads a budget reference from a hold's `scope` and `scope_id` columns.
pub(crate) fn budget_ref(
    scope: &str,
    id: uuid::Uuid,
) -> Result<synaxis_shared::budgets::BudgetRef, super::StoreError> {
    let scope = scope
        .parse()
        .map_err(|_| super::StoreError::Corrupt(format!("budget_holds.scope `{scope}`")))?;
    Ok(synaxis_shared::budgets::BudgetRef { scope, id })
}

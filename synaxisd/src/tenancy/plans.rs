//! The plan catalog, and the calls that read an org's entitlements, set its overrides and move
//! it to another plan version. Entitlements are checked where teams, users and keys are created
//! and where limit sets are stored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use synaxis_shared::api::{JUSTIFICATION_HEADER, Org};
use synaxis_shared::plans::{Entitlements, MigratePlanRequest, OrgEntitlements, Quota};

use super::rbac::Action;
use super::{Caller, Tenancy, TenancyError, check, org_target};
use crate::store::StoreError;

/// The plan catalog as written in `plans.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    default_plan: String,
    plans: BTreeMap<String, PlanFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    rank: u32,
    /// Entitlements by version number, written as table keys such as `[plans.free.versions.1]`.
    versions: BTreeMap<String, Entitlements>,
}

/// One plan: its display name, rank and versions.
#[derive(Clone, Debug)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub rank: u32,
    pub versions: BTreeMap<u32, Entitlements>,
}

impl Plan {
    /// Returns the newest version number and its entitlements.
    pub fn latest(&self) -> (u32, &Entitlements) {
        let (version, entitlements) = self
            .versions
            .last_key_value()
            .unwrap_or_else(|| unreachable!("a loaded plan has at least one version"));
        (*version, entitlements)
    }
}

/// Every plan of the service, read once at start.
#[derive(Clone, Debug)]
pub struct PlanCatalog {
    default_plan: String,
    plans: BTreeMap<String, Plan>,
}

/// The catalog built into the binary, the same as `config/plans.toml`.
const BUILTIN: &str = include_str!("../../../config/plans.toml");

/// An error in reading the plan catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the plan catalog {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid plan catalog {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl PlanCatalog {
    /// Returns the catalog built into the binary.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(BUILTIN, "built into synaxisd")
    }

    /// Reads the catalog from a TOML file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a catalog; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let file: CatalogFile = toml::from_str(text).map_err(|error| invalid(error.to_string()))?;
        let mut plans = BTreeMap::new();
        for (id, plan) in file.plans {
            let mut versions = BTreeMap::new();
            for (version, entitlements) in plan.versions {
                let number = version.parse::<u32>().ok().filter(|number| *number > 0);
                let Some(number) = number else {
                    return Err(invalid(format!(
                        "plan `{id}` has version `{version}`: versions are whole numbers from 1, as in [plans.{id}.versions.1]"
                    )));
                };
                versions.insert(number, entitlements);
            }
            if versions.is_empty() {
                return Err(invalid(format!(
                    "plan `{id}` has no version: add one as [plans.{id}.versions.1]"
                )));
            }
            let plan = Plan {
                id: id.clone(),
                name: plan.name,
                rank: plan.rank,
                versions,
            };
            plans.insert(id, plan);
        }
        if !plans.contains_key(&file.default_plan) {
            return Err(invalid(format!(
                "default_plan `{}` is not a plan of the catalog: use one of {}",
                file.default_plan,
                plans.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Self {
            default_plan: file.default_plan,
            plans,
        })
    }

    pub fn default_plan(&self) -> &str {
        &self.default_plan
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.get(id)
    }

    pub fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.plans.values()
    }

    /// Returns the plan of `id`, or an invalid-field error naming the known plans.
    pub fn require(&self, field: &str, id: &str) -> Result<&Plan, TenancyError> {
        self.plan(id).ok_or_else(|| {
            TenancyError::invalid(
                field,
                format!(
                    "unknown plan `{id}`: use one of {}",
                    self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Returns the entitlements of `version` of plan `plan`, when the catalog has them.
    pub fn version(&self, plan: &str, version: u32) -> Option<&Entitlements> {
        self.plans.get(plan)?.versions.get(&version)
    }

    /// Returns the plan of `org` and the entitlements of its version, before its overrides.
    pub fn version_of(&self, org: &Org) -> Result<(&Plan, &Entitlements), TenancyError> {
        let plan = self.plan(&org.plan).ok_or_else(|| {
            TenancyError::invalid(
                "plan",
                format!(
                    "organization `{}` is on plan `{}`, which the plan catalog no longer has: add it back, or move the org with `synaxisctl plan migrate`",
                    org.slug, org.plan
                ),
            )
        })?;
        let entitlements = plan.versions.get(&org.plan_version).ok_or_else(|| {
            TenancyError::invalid(
                "plan_version",
                format!(
                    "organization `{}` is on version {} of plan `{}`, which the plan catalog no longer has: add it back, or move the org with `synaxisctl plan migrate`",
                    org.slug, org.plan_version, org.plan
                ),
            )
        })?;
        Ok((plan, entitlements))
    }

    /// Returns the effective entitlements of `org`: its plan version's with its overrides.
    pub fn entitlements_of(&self, org: &Org) -> Result<(Entitlements, &Plan), TenancyError> {
        let (plan, entitlements) = self.version_of(org)?;
        Ok((entitlements.with_overrides(&org.plan_overrides), plan))
    }

    /// Returns the lowest-ranked plan above `current` whose newest version allows more than
    /// `quota` for the field that `field` reads, with that plan's value.
    pub fn lifting_plan(
        &self,
        current: &Plan,
        quota: Quota,
        field: impl Fn(&Entitlements) -> Quota,
    ) -> Option<(&Plan, Quota)> {
        self.plans
            .values()
            .filter(|plan| plan.rank > current.rank)
            .map(|plan| (plan, field(plan.latest().1)))
            .filter(|(_, offered)| offered.exceeds(quota))
            .min_by_key(|(plan, _)| plan.rank)
    }
}

/// A limit of a plan that a creation or a limit set would pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanLimit {
    /// The entitlement's field, such as `teams`.
    pub field: &'static str,
    pub plan_name: String,
    /// The limit, or `None` for an entitlement that is not a count.
    pub limit: Option<u64>,
    /// The refused value of an entitlement that is not a count, such as a currency code.
    pub value: Option<String>,
    /// The plan that lifts the limit, and its value there.
    pub lifted_by: Option<(String, Quota)>,
}

impl Tenancy {
    /// Returns the effective entitlements of an org, with the source of each value.
    pub async fn org_entitlements(
        &self,
        caller: &Caller,
        id_or_slug: &str,
    ) -> Result<OrgEntitlements, TenancyError> {
        let org = self.load_org(id_or_slug).await?;
        check(
            &caller.actor,
            Action::OrgRead,
            &org_target(org.id, "organization", id_or_slug),
        )?;
        self.describe_entitlements(&org)
    }

    fn describe_entitlements(&self, org: &Org) -> Result<OrgEntitlements, TenancyError> {
        let (plan, entitlements) = self.plans.version_of(org)?;
        Ok(OrgEntitlements::new(
            &plan.id,
            &plan.name,
            org.plan_version,
            plan.latest().0,
            entitlements,
            &org.plan_overrides,
        ))
    }

    /// Runs `change` on an org's plan fields as `action`, which requires a justification
    /// (`reason` names the change in the error), stores the org and returns its entitlements.
    async fn change_plan(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        action: Action,
        reason: &str,
        change: impl FnOnce(&mut Org) -> Result<(), TenancyError>,
    ) -> Result<OrgEntitlements, TenancyError> {
        let mut draft = self.draft(caller, action, "organization");
        let result = async {
            let mut org = self.load_org(id_or_slug).await?;
            draft.target_id = Some(org.id.to_string());
            draft.org_id = Some(org.id);
            check(
                &caller.actor,
                action,
                &org_target(org.id, "organization", id_or_slug),
            )?;
            require_justification(caller, reason)?;

            // An org whose version left the catalog has no previous caps to compare.
            let previous = self
                .plans
                .entitlements_of(&org)
                .ok()
                .map(|(previous, _)| previous);
            change(&mut org)?;
            let described = self.describe_entitlements(&org)?;
            self.store.update_org(&org, &draft).await?;
            self.auth_cache.evict_org(org.id);
            Ok((described, previous, org))
        }
        .await;
        let (described, previous, org) = self.audited(draft, result).await?;
        self.apply_caps(caller, previous.as_ref(), &org).await?;
        Ok(described)
    }

    /// Sets or removes per-field overrides of an org's plan. `changes` is a JSON object from
    /// field name to value, where `null` removes the field's override. The call requires a
    /// justification.
    pub async fn set_overrides(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        changes: Result<serde_json::Value, TenancyError>,
    ) -> Result<OrgEntitlements, TenancyError> {
        self.change_plan(
            caller,
            id_or_slug,
            Action::PlanOverride,
            "overriding a plan's entitlements",
            |org| {
                org.plan_overrides
                    .apply(&changes?)
                    .map_err(|message| TenancyError::invalid("overrides", message))
            },
        )
        .await
    }

    /// Moves an org to a version of a plan (its own plan and the newest version by default).
    /// Its overrides stay. The call requires a justification.
    pub async fn migrate_plan(
        &self,
        caller: &Caller,
        id_or_slug: &str,
        request: MigratePlanRequest,
    ) -> Result<OrgEntitlements, TenancyError> {
        let catalog = &self.plans;
        self.change_plan(
            caller,
            id_or_slug,
            Action::PlanMigrate,
            "moving an organization to another plan",
            |org| {
                let plan_id = request.plan.unwrap_or_else(|| org.plan.clone());
                let plan = catalog.require("plan", &plan_id)?;
                let version = match request.version {
                    Some(version) if plan.versions.contains_key(&version) => version,
                    Some(version) => {
                        let known: Vec<String> = plan.versions.keys().map(u32::to_string).collect();
                        return Err(TenancyError::invalid(
                            "version",
                            format!(
                                "plan `{plan_id}` has no version {version}: use one of {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    None => plan.latest().0,
                };
                org.plan = plan.id.clone();
                org.plan_version = version;
                // A chosen plan ends a trial.
                org.trial_ends_at = None;
                Ok(())
            },
        )
        .await
    }

    /// Returns the cap that the plan of `org` sets on one kind of resource, read by `field`,
    /// and the error to return when the store reports the cap reached.
    pub(super) fn resource_cap(
        &self,
        org: &Org,
        name: &'static str,
        field: fn(&Entitlements) -> Quota,
    ) -> Result<(Option<u64>, PlanLimit), TenancyError> {
        let (entitlements, plan) = self.plans.entitlements_of(org)?;
        let quota = field(&entitlements);
        let lifted_by = self
            .plans
            .lifting_plan(plan, quota, field)
            .map(|(plan, offered)| (plan.name.clone(), offered));
        let limit = PlanLimit {
            field: name,
            plan_name: plan.name.clone(),
            limit: quota.limit(),
            value: None,
            lifted_by,
        };
        Ok((quota.limit(), limit))
    }
}

/// Turns the store's report of a reached cap into the plan limit it stands for.
pub(super) fn over_cap(error: StoreError, limit: PlanLimit) -> TenancyError {
    match error {
        StoreError::CapReached { .. } => TenancyError::PlanLimit(Box::new(limit)),
        other => other.into(),
    }
}

pub(super) fn require_justification(caller: &Caller, change: &str) -> Result<(), TenancyError> {
    if caller.justification.is_some() {
        return Ok(());
    }
    Err(TenancyError::invalid(
        JUSTIFICATION_HEADER,
        format!(
            "{change} requires a justification: send it in the `{JUSTIFICATION_HEADER}` header, or pass --justification \"TEXT\" to synaxisctl"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_three_plans() {
        let catalog = PlanCatalog::builtin().expect("built-in catalog");
        assert_eq!(catalog.default_plan(), "free");
        let free = catalog.plan("free").expect("free");
        assert_eq!(free.latest().1.teams, Quota::Limited(1));
        let (lifter, offered) = catalog
            .lifting_plan(free, Quota::Limited(1), |entitlements| entitlements.teams)
            .expect("a plan lifts the team limit");
        assert_eq!(lifter.name, "Pro");
        assert_eq!(offered, Quota::Limited(5));
        let enterprise = catalog.plan("enterprise").expect("enterprise");
        assert_eq!(
            enterprise.latest().1.overage_per_token_usd.to_string(),
            "0.0001"
        );
    }

    #[test]
    fn catalog_rejects_bad_version_and_default() {
        let bad_version = BUILTIN.replace("[plans.free.versions.1]", "[plans.free.versions.v1]");
        let error = PlanCatalog::parse(&bad_version, "test").expect_err("bad version");
        assert!(error.to_string().contains("version `v1`"), "{error}");

        let bad_default = BUILTIN.replace("default_plan = \"free\"", "default_plan = \"gold\"");
        let error = PlanCatalog::parse(&bad_default, "test").expect_err("bad default");
        assert!(error.to_string().contains("default_plan `gold`"), "{error}");
    }
}

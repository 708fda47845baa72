//! Role-based access control of the control API. `docs/permissions.md` lists the same rules as
//! a table, and the role matrix test checks every route against it.

use std::fmt;

use synaxis_shared::{OrgId, Role, TeamId, UserId};

use crate::store::LimitScope;

/// The actor of a control call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The holder of the operator token.
    Operator,
    /// A user acting through a management key, with the permissions of their role.
    Member(Member),
    /// A self-service signup, which creates an org, its owner and the owner's first key.
    Signup,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user_id: UserId,
    pub org_id: OrgId,
    pub role: Role,
    /// The user's team, whose limits bind the user.
    pub team_id: Option<TeamId>,
}

/// A control action, named as in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    OrgCreate,
    OrgRead,
    OrgUpdate,
    OrgRevoke,
    TeamCreate,
    TeamRead,
    TeamUpdate,
    UserCreate,
    UserRead,
    UserUpdate,
    UserRevoke,
    KeyCreate,
    KeyRead,
    KeyUpdate,
    KeyRotate,
    KeyRevoke,
    LimitsRead,
    LimitsSet,
    PlanOverride,
    PlanMigrate,
    PlanLifecycle,
    PlanTrialEnd,
    PlanSuspend,
    PlanRestore,
    PlanPurge,
    CreditsRead,
    CreditsAdd,
    CreditsAutoTopup,
    BudgetRead,
    BudgetSet,
    BudgetRemove,
    FxRead,
    FxSet,
    InvoiceRead,
    InvoiceIssue,
    AuditRead,
    AuditVerify,
    ConsentRead,
    ConsentGrant,
    ConsentWithdraw,
    FailoverDrill,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::OrgCreate => "org.create",
            Self::OrgRead => "org.read",
            Self::OrgUpdate => "org.update",
            Self::OrgRevoke => "org.revoke",
            Self::TeamCreate => "team.create",
            Self::TeamRead => "team.read",
            Self::TeamUpdate => "team.update",
            Self::UserCreate => "user.create",
            Self::UserRead => "user.read",
            Self::UserUpdate => "user.update",
            Self::UserRevoke => "user.revoke",
            Self::KeyCreate => "key.create",
            Self::KeyRead => "key.read",
            Self::KeyUpdate => "key.update",
            Self::KeyRotate => "key.rotate",
            Self::KeyRevoke => "key.revoke",
            Self::LimitsRead => "limits.read",
            Self::LimitsSet => "limits.set",
            Self::PlanOverride => "plan.override",
            Self::PlanMigrate => "plan.migrate",
            Self::PlanLifecycle => "plan.lifecycle",
            Self::PlanTrialEnd => "plan.trial_end",
            Self::PlanSuspend => "plan.suspend",
            Self::PlanRestore => "plan.restore",
            Self::PlanPurge => "plan.purge",
            Self::CreditsRead => "credits.read",
            Self::CreditsAdd => "credits.add",
            Self::CreditsAutoTopup => "credits.auto_topup",
            Self::BudgetRead => "budget.read",
            Self::BudgetSet => "budget.set",
            Self::BudgetRemove => "budget.remove",
            Self::FxRead => "fx.read",
            Self::FxSet => "fx.set",
            Self::InvoiceRead => "invoice.read",
            Self::InvoiceIssue => "invoice.issue",
            Self::AuditRead => "audit.read",
            Self::AuditVerify => "audit.verify",
            Self::ConsentRead => "consent.read",
            Self::ConsentGrant => "consent.grant",
            Self::ConsentWithdraw => "consent.withdraw",
            Self::FailoverDrill => "failover.drill",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The resource of an action, described by the facts that permissions depend on.
#[derive(Clone, Debug)]
pub struct Target {
    /// The organization the resource belongs to; `None` only for org creation and the global
    /// audit check.
    pub org_id: Option<OrgId>,
    /// The user the resource is or belongs to (the user of a key), with their role.
    pub subject: Option<(UserId, Role)>,
    /// A role the action gives a user.
    pub grants_role: Option<Role>,
    /// Whether the action changes a user's role or team.
    pub changes_privileges: bool,
    /// Whether the action creates a management key.
    pub management_key: bool,
    /// The scope whose limit set the action reads or replaces.
    pub limits_of: Option<LimitScope>,
    /// The resource as the caller named it, such as `("user", id)`. A resource of another
    /// organization is reported as not found under this name, exactly like a missing one.
    pub named: (&'static str, String),
}

impl Default for Target {
    fn default() -> Self {
        Self {
            org_id: None,
            subject: None,
            grants_role: None,
            changes_privileges: false,
            management_key: false,
            limits_of: None,
            named: ("resource", String::new()),
        }
    }
}

/// The reason an action was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The resource belongs to another organization; callers return "not found" so that its
    /// existence is not revealed.
    OtherOrg,
    Forbidden(String),
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 3,
        Role::Admin => 2,
        Role::Developer | Role::Billing | Role::Viewer => 1,
    }
}

fn is_manager(role: Role) -> bool {
    matches!(role, Role::Owner | Role::Admin)
}

/// Decides whether `actor` may perform `action` on `target`.
pub fn authorize(actor: &Actor, action: Action, target: &Target) -> Result<(), Denial> {
    let member = match actor {
        Actor::Operator => return Ok(()),
        Actor::Signup => {
            return match action {
                Action::OrgCreate | Action::UserCreate | Action::KeyCreate => Ok(()),
                _ => Err(Denial::Forbidden(format!(
                    "a signup may not perform `{action}`"
                ))),
            };
        }
        Actor::Member(member) => member,
    };
    if let Some(org_id) = target.org_id
        && org_id != member.org_id
    {
        return Err(Denial::OtherOrg);
    }

    let role = member.role;
    let is_self = target
        .subject
        .is_some_and(|(user_id, _)| user_id == member.user_id);
    let outranks_subject = target
        .subject
        .is_none_or(|(_, subject_role)| rank(role) >= rank(subject_role));
    let may_grant = target
        .grants_role
        .is_none_or(|granted| rank(role) >= rank(granted));
    let forbid = |requirement: &str| {
        Err(Denial::Forbidden(format!(
            "role `{role}` may not perform `{action}`: {requirement}"
        )))
    };

    match action {
        Action::OrgCreate
        | Action::OrgRevoke
        | Action::PlanOverride
        | Action::PlanMigrate
        | Action::PlanLifecycle
        | Action::PlanTrialEnd
        | Action::PlanSuspend
        | Action::PlanRestore
        | Action::PlanPurge
        | Action::CreditsAdd
        | Action::FxSet
        | Action::InvoiceIssue
        | Action::AuditVerify
        | Action::FailoverDrill => forbid("only the operator may"),
        // Consent is the user's own decision; managers may see it.
        Action::ConsentGrant | Action::ConsentWithdraw if is_self => Ok(()),
        Action::ConsentGrant | Action::ConsentWithdraw => {
            forbid("only the user may give or withdraw their consent")
        }
        Action::ConsentRead if is_self || is_manager(role) => Ok(()),
        Action::ConsentRead => forbid("it requires the owner or admin role, or one's own consent"),
        Action::CreditsRead if matches!(role, Role::Owner | Role::Admin | Role::Billing) => Ok(()),
        Action::CreditsRead => forbid("it requires the owner, admin or billing role"),
        Action::InvoiceRead if matches!(role, Role::Owner | Role::Admin | Role::Billing) => Ok(()),
        Action::InvoiceRead => forbid("it requires the owner, admin or billing role"),
        Action::CreditsAutoTopup if matches!(role, Role::Owner | Role::Billing) => Ok(()),
        Action::CreditsAutoTopup => forbid("it requires the owner or billing role"),
        Action::OrgRead
        | Action::TeamRead
        | Action::UserRead
        | Action::KeyRead
        | Action::LimitsRead
        | Action::BudgetRead
        | Action::FxRead => Ok(()),
        Action::OrgUpdate if role == Role::Owner => Ok(()),
        Action::OrgUpdate => forbid("it requires the owner role"),
        Action::TeamCreate | Action::TeamUpdate | Action::AuditRead if is_manager(role) => Ok(()),
        Action::TeamCreate | Action::TeamUpdate | Action::AuditRead => {
            forbid("it requires the owner or admin role")
        }
        Action::UserCreate if is_manager(role) && may_grant => Ok(()),
        Action::UserCreate if is_manager(role) => forbid("only an owner may create an owner"),
        Action::UserCreate => forbid("it requires the owner or admin role"),
        Action::UserUpdate if is_self && target.changes_privileges => {
            forbid("nobody may change their own role or team")
        }
        Action::UserUpdate if is_self => Ok(()),
        Action::UserUpdate if is_manager(role) && outranks_subject && may_grant => Ok(()),
        Action::UserUpdate if is_manager(role) => {
            forbid("only an owner may change or grant the owner role")
        }
        Action::UserUpdate => forbid("it requires the owner or admin role"),
        Action::UserRevoke if is_self => forbid("nobody may revoke their own user"),
        Action::UserRevoke if is_manager(role) && outranks_subject => Ok(()),
        Action::UserRevoke if is_manager(role) => forbid("only an owner may revoke an owner"),
        Action::UserRevoke => forbid("it requires the owner or admin role"),
        Action::KeyCreate if target.management_key && is_manager(role) && outranks_subject => {
            Ok(())
        }
        Action::KeyCreate if target.management_key => forbid(
            "management keys require the owner or admin role, and an admin may not make one for an owner",
        ),
        Action::KeyRotate | Action::KeyRevoke | Action::KeyCreate
            if is_self && (is_manager(role) || role == Role::Developer) =>
        {
            Ok(())
        }
        Action::KeyCreate | Action::KeyUpdate | Action::KeyRotate | Action::KeyRevoke
            if is_manager(role) && outranks_subject =>
        {
            Ok(())
        }
        Action::KeyCreate | Action::KeyRotate | Action::KeyRevoke
            if !is_self && is_manager(role) =>
        {
            forbid("only an owner may act on an owner's keys")
        }
        Action::KeyCreate | Action::KeyRotate | Action::KeyRevoke => {
            forbid("it requires the owner or admin role, or the developer role on one's own keys")
        }
        Action::KeyUpdate => forbid("it requires the owner or admin role"),
        // Limits and budgets that bind the caller are set by someone above them: an admin sets
        // neither the org's, nor their own team's, nor their own (a key's bind its user).
        Action::LimitsSet | Action::BudgetSet | Action::BudgetRemove if role == Role::Owner => {
            Ok(())
        }
        Action::LimitsSet | Action::BudgetSet | Action::BudgetRemove => {
            let what = if action == Action::LimitsSet {
                "limits"
            } else {
                "budgets"
            };
            match target.limits_of {
                Some(LimitScope::Org(_)) | None => {
                    forbid(&format!("the organization's {what} require the owner role"))
                }
                _ if role != Role::Admin => forbid("it requires the owner or admin role"),
                Some(LimitScope::Team(team_id)) if member.team_id == Some(team_id) => forbid(
                    &format!("an admin may not set the {what} of their own team"),
                ),
                Some(LimitScope::Team(_)) => Ok(()),
                Some(LimitScope::User(_)) if is_self => {
                    forbid(&format!("an admin may not set their own {what}"))
                }
                Some(LimitScope::User(_)) if outranks_subject => Ok(()),
                Some(LimitScope::User(_)) => {
                    forbid(&format!("only an owner may set an owner's {what}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: Role) -> (Actor, UserId, OrgId) {
        let user_id = UserId::new();
        let org_id = OrgId::new();
        let actor = Actor::Member(Member {
            user_id,
            org_id,
            role,
            team_id: None,
        });
        (actor, user_id, org_id)
    }

    #[test]
    fn other_org_is_hidden() {
        let (actor, _, _) = member(Role::Owner);
        let target = Target {
            org_id: Some(OrgId::new()),
            ..Target::default()
        };
        assert_eq!(
            authorize(&actor, Action::OrgRead, &target),
            Err(Denial::OtherOrg)
        );
    }

    #[test]
    fn operator_may_do_everything() {
        assert!(authorize(&Actor::Operator, Action::OrgCreate, &Target::default()).is_ok());
        assert!(authorize(&Actor::Operator, Action::AuditVerify, &Target::default()).is_ok());
    }

    #[test]
    fn developer_may_rotate_only_own_keys() {
        let (actor, user_id, org_id) = member(Role::Developer);
        let own = Target {
            org_id: Some(org_id),
            subject: Some((user_id, Role::Developer)),
            ..Target::default()
        };
        let other = Target {
            subject: Some((UserId::new(), Role::Developer)),
            ..own.clone()
        };
        assert!(authorize(&actor, Action::KeyRotate, &own).is_ok());
        assert!(authorize(&actor, Action::KeyRotate, &other).is_err());
        assert!(authorize(&actor, Action::KeyUpdate, &own).is_err());
    }

    #[test]
    fn admin_cannot_touch_owner() {
        let (actor, _, org_id) = member(Role::Admin);
        let owner_key = Target {
            org_id: Some(org_id),
            subject: Some((UserId::new(), Role::Owner)),
            ..Target::default()
        };
        assert!(authorize(&actor, Action::KeyRotate, &owner_key).is_err());
        let grant_owner = Target {
            org_id: Some(org_id),
            grants_role: Some(Role::Owner),
            ..Target::default()
        };
        assert!(authorize(&actor, Action::UserCreate, &grant_owner).is_err());
    }

    fn limits_target(org_id: OrgId, scope: LimitScope, subject: Option<(UserId, Role)>) -> Target {
        Target {
            org_id: Some(org_id),
            subject,
            limits_of: Some(scope),
            ..Target::default()
        }
    }

    #[test]
    fn admin_sets_limits_that_do_not_bind_them() {
        let user_id = UserId::new();
        let org_id = OrgId::new();
        let own_team = TeamId::new();
        let admin = Actor::Member(Member {
            user_id,
            org_id,
            role: Role::Admin,
            team_id: Some(own_team),
        });
        let other = UserId::new();
        let cases = [
            (limits_target(org_id, LimitScope::Org(org_id), None), false),
            (
                limits_target(org_id, LimitScope::Team(own_team), None),
                false,
            ),
            (
                limits_target(org_id, LimitScope::Team(TeamId::new()), None),
                true,
            ),
            (
                limits_target(
                    org_id,
                    LimitScope::User(user_id),
                    Some((user_id, Role::Admin)),
                ),
                false,
            ),
            (
                limits_target(
                    org_id,
                    LimitScope::User(other),
                    Some((other, Role::Developer)),
                ),
                true,
            ),
            (
                limits_target(org_id, LimitScope::User(other), Some((other, Role::Owner))),
                false,
            ),
        ];
        for (target, allowed) in cases {
            let verdict = authorize(&admin, Action::LimitsSet, &target);
            assert_eq!(
                verdict.is_ok(),
                allowed,
                "{:?}: {verdict:?}",
                target.limits_of
            );
        }
    }

    #[test]
    fn owner_sets_every_limit_of_their_org() {
        let (owner, user_id, org_id) = member(Role::Owner);
        for (scope, subject) in [
            (LimitScope::Org(org_id), None),
            (LimitScope::Team(TeamId::new()), None),
            (LimitScope::User(user_id), Some((user_id, Role::Owner))),
        ] {
            let target = limits_target(org_id, scope, subject);
            assert!(
                authorize(&owner, Action::LimitsSet, &target).is_ok(),
                "{scope:?}"
            );
        }
        let elsewhere = limits_target(OrgId::new(), LimitScope::Team(TeamId::new()), None);
        assert_eq!(
            authorize(&owner, Action::LimitsSet, &elsewhere),
            Err(Denial::OtherOrg)
        );
    }

    #[test]
    fn other_roles_read_but_never_set_limits() {
        for role in [Role::Developer, Role::Billing, Role::Viewer] {
            let (actor, user_id, org_id) = member(role);
            let own = limits_target(org_id, LimitScope::User(user_id), Some((user_id, role)));
            assert!(
                authorize(&actor, Action::LimitsRead, &own).is_ok(),
                "{role}"
            );
            assert!(
                authorize(&actor, Action::LimitsSet, &own).is_err(),
                "{role}"
            );
            let org = limits_target(org_id, LimitScope::Org(org_id), None);
            assert!(
                authorize(&actor, Action::LimitsSet, &org).is_err(),
                "{role}"
            );
        }
    }
}

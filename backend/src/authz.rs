//! Authorization of every API call through the policy engine: builds the
//! Cedar entities of the caller, its tenant and the resource from our rows,
//! evaluates, logs the decision and turns a deny into 403.

use serde_json::{Value, json};
use tollgate_identity::decision::{Decided, DecidedBy, log_decision, new_decision_id};
use tollgate_identity::entities::{principal_entities, standard_context, tenant_entity, tenant_ref};
use tollgate_identity::principal::{Actor, Principal, Tenant};
use tollgate_policies::{EntityRef, EntitySpec, PolicyRequest};

use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::problem::ApiError;
use crate::state::AppState;
use tollgate_identity::layers::LAYER_UNAVAILABLE;

/// The platform API's actions, each with the API key scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AccountRead,
    AccountUpdate,
    TenantCreate,
    TenantRead,
    TenantUpdate,
    TenantDelete,
    TenantSuspend,
    TenantReactivate,
    MemberList,
    MemberUpdateRole,
    MemberRemove,
    InvitationCreate,
    InvitationList,
    InvitationRevoke,
    ApiKeyCreate,
    ApiKeyList,
    ApiKeyRevoke,
    ServiceAccountCreate,
    ServiceAccountList,
    RoleCreate,
    RoleList,
    PdpQuery,
    PolicyRead,
    PolicyManage,
    GroupList,
    GroupManage,
    TenantSetPlan,
    UsageRead,
    UsageReport,
    ScimManage,
    SsoManage,
}

/// The scopes an API key may be given.
pub const SCOPES: &[&str] = &[
    "*",
    "authorize",
    "account:read",
    "tenant:read",
    "tenant:write",
    "members:read",
    "members:write",
    "keys:read",
    "keys:write",
    "roles:read",
    "roles:write",
    "policies:read",
    "policies:write",
    "groups:read",
    "groups:write",
    "usage:read",
    "usage:write",
    "scim:write",
    "sso:write",
];

/// Whether `scope` may be given to an API key: a platform scope, or a
/// product action id (`contact.read`), which the gateway checks against the
/// action of each route.
pub fn is_valid_scope(scope: &str) -> bool {
    if SCOPES.contains(&scope) {
        return true;
    }
    let Some((resource, verb)) = scope.split_once('.') else {
        return false;
    };
    let part = |p: &str| {
        !p.is_empty()
            && p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    scope.len() <= 64 && part(resource) && part(verb)
}

impl Action {
    /// Every platform action, which the decision point does not answer for.
    pub const ALL: [Action; 31] = [
        Action::AccountRead,
        Action::AccountUpdate,
        Action::TenantCreate,
        Action::TenantRead,
        Action::TenantUpdate,
        Action::TenantDelete,
        Action::TenantSuspend,
        Action::TenantReactivate,
        Action::MemberList,
        Action::MemberUpdateRole,
        Action::MemberRemove,
        Action::InvitationCreate,
        Action::InvitationList,
        Action::InvitationRevoke,
        Action::ApiKeyCreate,
        Action::ApiKeyList,
        Action::ApiKeyRevoke,
        Action::ServiceAccountCreate,
        Action::ServiceAccountList,
        Action::RoleCreate,
        Action::RoleList,
        Action::PdpQuery,
        Action::PolicyRead,
        Action::PolicyManage,
        Action::GroupList,
        Action::GroupManage,
        Action::TenantSetPlan,
        Action::UsageRead,
        Action::UsageReport,
        Action::ScimManage,
        Action::SsoManage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::AccountRead => "account.read",
            Action::AccountUpdate => "account.update",
            Action::TenantCreate => "tenant.create",
            Action::TenantRead => "tenant.read",
            Action::TenantUpdate => "tenant.update",
            Action::TenantDelete => "tenant.delete",
            Action::TenantSuspend => "tenant.suspend",
            Action::TenantReactivate => "tenant.reactivate",
            Action::MemberList => "member.list",
            Action::MemberUpdateRole => "member.update_role",
            Action::MemberRemove => "member.remove",
            Action::InvitationCreate => "invitation.create",
            Action::InvitationList => "invitation.list",
            Action::InvitationRevoke => "invitation.revoke",
            Action::ApiKeyCreate => "apikey.create",
            Action::ApiKeyList => "apikey.list",
            Action::ApiKeyRevoke => "apikey.revoke",
            Action::ServiceAccountCreate => "serviceaccount.create",
            Action::ServiceAccountList => "serviceaccount.list",
            Action::RoleCreate => "role.create",
            Action::RoleList => "role.list",
            Action::PdpQuery => "pdp.query",
            Action::PolicyRead => "policy.read",
            Action::PolicyManage => "policy.manage",
            Action::GroupList => "group.list",
            Action::GroupManage => "group.manage",
            Action::TenantSetPlan => "tenant.set_plan",
            Action::UsageRead => "usage.read",
            Action::UsageReport => "usage.report",
            Action::ScimManage => "scim.manage",
            Action::SsoManage => "sso.manage",
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Action::AccountRead => "account:read",
            Action::AccountUpdate => "account:write",
            Action::TenantCreate | Action::TenantSuspend | Action::TenantReactivate | Action::TenantSetPlan => {
                "platform"
            }
            Action::TenantRead => "tenant:read",
            Action::TenantUpdate | Action::TenantDelete => "tenant:write",
            Action::MemberList | Action::InvitationList => "members:read",
            Action::MemberUpdateRole | Action::MemberRemove | Action::InvitationCreate | Action::InvitationRevoke => {
                "members:write"
            }
            Action::ApiKeyList | Action::ServiceAccountList => "keys:read",
            Action::ApiKeyCreate | Action::ApiKeyRevoke | Action::ServiceAccountCreate => "keys:write",
            Action::RoleList => "roles:read",
            Action::RoleCreate => "roles:write",
            Action::PdpQuery => "authorize",
            Action::PolicyRead => "policies:read",
            Action::PolicyManage => "policies:write",
            Action::GroupList => "groups:read",
            Action::GroupManage => "groups:write",
            Action::UsageRead => "usage:read",
            Action::UsageReport => "usage:write",
            Action::ScimManage => "scim:write",
            Action::SsoManage => "sso:write",
        }
    }
}

/// What an action is done to.
#[derive(Debug, Clone)]
pub enum Resource<'a> {
    Platform,
    /// The caller's own account.
    Account(&'a str),
    Tenant(&'a Tenant),
    Member {
        user_id: &'a str,
        rank: i64,
    },
    Invitation {
        id: &'a str,
        rank: i64,
    },
    ApiKey {
        id: &'a str,
        owner: KeyOwner<'a>,
        scopes: &'a [String],
        rank: i64,
    },
}

/// Who an API key belongs to.
#[derive(Debug, Clone, Copy)]
pub enum KeyOwner<'a> {
    User(&'a str),
    ServiceAccount(&'a str),
}

fn resource_entities(p: &Principal, resource: &Resource<'_>, out: &mut Vec<EntitySpec>) -> EntityRef {
    let tenant = tenant_ref(&p.tenant.id);
    match resource {
        Resource::Platform => {
            let uid = EntityRef::new("Platform", "tollgate");
            out.push(EntitySpec::new(uid.clone()));
            uid
        }
        Resource::Account(user_id) => EntityRef::new("User", *user_id),
        Resource::Tenant(row) => {
            let uid = tenant_ref(&row.id);
            if row.id != p.tenant.id {
                out.push(tenant_entity(row, tollgate_store::now()));
            }
            uid
        }
        Resource::Member { user_id, rank } => ranked_in_tenant(EntityRef::new("Member", *user_id), *rank, tenant, out),
        Resource::Invitation { id, rank } => ranked_in_tenant(EntityRef::new("Invitation", *id), *rank, tenant, out),
        Resource::ApiKey { id, owner, scopes, rank } => {
            let uid = EntityRef::new("ApiKey", *id);
            let owner_ref = match owner {
                KeyOwner::User(id) => EntityRef::new("User", *id),
                KeyOwner::ServiceAccount(id) => EntityRef::new("ServiceAccount", *id),
            };
            let principal_is_owner = match &p.actor {
                Actor::User { user, .. } => owner_ref.type_name == "User" && owner_ref.id == user.id,
                Actor::ApiKey { key } => owner_ref.type_name == "ApiKey" && owner_ref.id == key.id,
            };
            if !principal_is_owner {
                // The owner is another entity: give it its type's attributes
                // without any role, which the key does not inherit.
                let entity = match owner {
                    KeyOwner::User(_) => EntitySpec::new(owner_ref.clone())
                        .attr("email", json!(""))
                        .attr("platform_admin", json!(false))
                        .attr("role_rank", json!(0)),
                    KeyOwner::ServiceAccount(_) => EntitySpec::new(owner_ref.clone()).attr("role_rank", json!(0)),
                };
                out.push(entity.parent(tenant.clone()));
            }
            out.push(
                EntitySpec::new(uid.clone())
                    .entity_attr("tenant", &tenant)
                    .attr("scopes", json!(scopes))
                    .attr("role_rank", json!(rank))
                    .parent(owner_ref)
                    .parent(tenant),
            );
            uid
        }
    }
}

/// A resource of the tenant that carries the rank of a role (a membership,
/// an invitation).
fn ranked_in_tenant(uid: EntityRef, rank: i64, tenant: EntityRef, out: &mut Vec<EntitySpec>) -> EntityRef {
    out.push(EntitySpec::new(uid.clone()).entity_attr("tenant", &tenant).attr("role_rank", json!(rank)).parent(tenant));
    uid
}

impl Action {
    /// Whether the action manages the tenant's own policy layer: decided by
    /// the platform's policies alone, so that no layer (nor a layer that no
    /// longer loads) can keep a tenant from repairing it.
    fn manages_layer(self) -> bool {
        matches!(self, Action::PolicyRead | Action::PolicyManage)
    }
}

/// Asks the engine whether `p` may do `action` to `resource`; `granted_rank`
/// is the rank of a role the action grants. The tenant's layer applies to
/// every action but those managing the layer; a layer that cannot be loaded
/// refuses (fail closed). A deny is a 403 with a decision id.
pub fn authorize(
    state: &AppState,
    caller: &Authenticated,
    action: Action,
    resource: Resource<'_>,
    granted_rank: Option<i64>,
) -> Result<(), ApiError> {
    let p = &caller.principal;
    let engine = if action.manages_layer() {
        state.engines.platform()
    } else {
        caller.engine.clone().ok_or_else(|| ApiError::Forbidden { detail: LAYER_UNAVAILABLE.into(), decision: None })?
    };
    let mut entities = Vec::new();
    let principal = principal_entities(p, tollgate_store::now(), &mut entities);
    let resource_uid = resource_entities(p, &resource, &mut entities);
    let (authn, mfa) = p.authn_facts();
    let mut context = standard_context(authn, mfa, action.scope(), None);
    if let Some(rank) = granted_rank {
        context.insert("granted_rank".into(), Value::from(rank));
    }
    let outcome = engine.evaluate_trusted(&PolicyRequest {
        principal,
        action: action.name().to_owned(),
        resource: resource_uid.clone(),
        context,
        entities,
    });
    let decision_id = new_decision_id();
    log_decision(
        &Decided {
            by: DecidedBy::Api,
            decision_id: &decision_id,
            tenant: &p.tenant.id,
            principal: &p.actor_id(),
            action: action.name(),
            resource: &resource_uid.id,
        },
        &outcome,
    );
    if outcome.is_allow() {
        Ok(())
    } else {
        Err(ApiError::Forbidden { detail: format!("not allowed to `{}`", action.name()), decision: Some(decision_id) })
    }
}

/// The common opening of a call on a tenant: another tenant's id is 404,
/// `action` on the tenant must be allowed, and the returned transaction is
/// bound to the tenant.
pub async fn open_tenant(
    state: &AppState,
    p: &Authenticated,
    tenant_id: &str,
    action: Action,
) -> Result<tollgate_store::Tx, ApiError> {
    p.in_tenant(tenant_id)?;
    authorize(state, p, action, Resource::Tenant(&p.tenant), None)?;
    Ok(state.store.tenant_tx(tenant_id).await?)
}

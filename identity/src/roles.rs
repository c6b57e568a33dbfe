//! Roles: the built-in chain owner > admin > member > viewer, and a tenant's
//! custom roles, each extending one built-in role.

use std::sync::Arc;

use tollgate_store::{self as store, StoreError, Tx};

/// A built-in role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [Builtin::Owner, Builtin::Admin, Builtin::Member, Builtin::Viewer];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "owner" => Some(Builtin::Owner),
            "admin" => Some(Builtin::Admin),
            "member" => Some(Builtin::Member),
            "viewer" => Some(Builtin::Viewer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Owner => "owner",
            Builtin::Admin => "admin",
            Builtin::Member => "member",
            Builtin::Viewer => "viewer",
        }
    }

    pub fn rank(self) -> i64 {
        match self {
            Builtin::Viewer => 1,
            Builtin::Member => 2,
            Builtin::Admin => 3,
            Builtin::Owner => 4,
        }
    }

    /// The next role down the chain, the parent in Cedar's role hierarchy.
    pub fn below(self) -> Option<Self> {
        match self {
            Builtin::Owner => Some(Builtin::Admin),
            Builtin::Admin => Some(Builtin::Member),
            Builtin::Member => Some(Builtin::Viewer),
            Builtin::Viewer => None,
        }
    }
}

/// A membership's role as stored (`name`) and the built-in role it amounts
/// to; `base` is `None` for a custom role that no longer exists, which then
/// grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolvedRole {
    pub name: String,
    pub base: Option<Builtin>,
    pub custom: bool,
}

impl ResolvedRole {
    pub fn builtin(role: Builtin) -> Self {
        Self { name: role.name().to_owned(), base: Some(role), custom: false }
    }

    /// The rank of the role: its built-in base's, or 0 when it grants nothing.
    pub fn rank(&self) -> i64 {
        self.base.map_or(0, Builtin::rank)
    }

    /// Resolves a role name within a tenant.
    pub async fn load(tx: &mut Tx, tenant_id: &str, name: &str) -> Result<Self, StoreError> {
        if let Some(role) = Builtin::parse(name) {
            return Ok(Self::builtin(role));
        }
        let custom = store::role_by_name(tx, tenant_id, name).await?;
        Ok(Self { name: name.to_owned(), base: custom.and_then(|r| Builtin::parse(&r.base_role)), custom: true })
    }
}

/// A caller's standing in a tenant: the role it acts with and the groups it
/// belongs to, the parents of its entity in every policy decision. The
/// backend and the gateway load it the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub role: ResolvedRole,
    /// Group ids, sorted.
    pub groups: Arc<[String]>,
}

impl Standing {
    /// A user's standing as a member of the tenant; `None` when they are not one.
    pub async fn of_member(tx: &mut Tx, tenant_id: &str, user_id: &str) -> Result<Option<Self>, StoreError> {
        let Some(membership) = store::membership(tx, tenant_id, user_id).await? else {
            return Ok(None);
        };
        let role = ResolvedRole::load(tx, tenant_id, &membership.role).await?;
        let groups = store::group_ids_of_member(tx, tenant_id, user_id).await?;
        Ok(Some(Self { role, groups: groups.into() }))
    }

    /// A service account's standing: its role; groups hold people only.
    pub async fn of_service_account(tx: &mut Tx, tenant_id: &str, sa_id: &str) -> Result<Option<Self>, StoreError> {
        let Some(account) = store::service_account(tx, tenant_id, sa_id).await? else {
            return Ok(None);
        };
        let role = ResolvedRole::load(tx, tenant_id, &account.role).await?;
        Ok(Some(Self { role, groups: Arc::from([]) }))
    }
}

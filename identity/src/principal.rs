//! Who is calling, as both the gateway and the backend see it: domain types
//! built once from store rows (a user without their password hash, a tenant
//! with its lifecycle status as an enum, an API key with its scopes parsed),
//! the actor behind a call and the principal acting in one tenant.

use std::collections::BTreeSet;
use std::sync::Arc;

use tollgate_store::{ApiKeyRow, StoreError, TenantRow, UserRow};

use crate::plans::Entitlements;
use crate::roles::ResolvedRole;

/// A tenant's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    /// Deletion was requested: reads still work, writes do not.
    PendingDeletion,
    Suspended,
}

impl TenantStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "pending_deletion" => Some(Self::PendingDeletion),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }

    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PendingDeletion => "pending_deletion",
            Self::Suspended => "suspended",
        }
    }
}

/// A tenant as the layers above the store see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    pub plan: String,
    /// Its plan's features and limits with its overrides; loaded with the
    /// tenant by the credential loaders ([`Entitlements::unresolved`], which
    /// grants nothing, when the tenant was read for display only).
    pub entitlements: Arc<Entitlements>,
    /// Whether the tenant requires its people to sign in with a second
    /// factor (`security.mfa_required` in its settings).
    pub mfa_required: bool,
    /// Whether the tenant's people of the domains its SSO connections claim
    /// must sign in through them (`security.sso_required`).
    pub sso_required: bool,
    /// The tenant's settings document (JSON text).
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Whether a tenant's settings document turns `security.<flag>` on.
pub fn security_flag(settings: &serde_json::Value, flag: &str) -> bool {
    settings.get("security").and_then(|s| s.get(flag)).and_then(serde_json::Value::as_bool).unwrap_or(false)
}

impl From<TenantRow> for Tenant {
    /// A status the code does not know is treated as suspended: unknown
    /// states refuse requests rather than let them through.
    fn from(row: TenantRow) -> Self {
        let settings: serde_json::Value = serde_json::from_str(&row.settings).unwrap_or_default();
        Self {
            status: TenantStatus::parse(&row.status).unwrap_or(TenantStatus::Suspended),
            entitlements: Arc::new(Entitlements::unresolved(&row.plan)),
            mfa_required: security_flag(&settings, "mfa_required"),
            sso_required: security_flag(&settings, "sso_required"),
            id: row.id,
            slug: row.slug,
            name: row.name,
            plan: row.plan,
            settings: row.settings,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl Tenant {
    /// Why the tenant's lifecycle state refuses a request, if it does:
    /// suspended tenants refuse everything, tenants pending deletion
    /// everything but reads. The gateway and the backend both apply this one
    /// rule.
    pub fn refusal(&self, read_only_request: bool) -> Option<String> {
        match self.status {
            TenantStatus::Active => None,
            TenantStatus::PendingDeletion if read_only_request => None,
            TenantStatus::PendingDeletion => Some(format!("tenant `{}` is pending deletion and read-only", self.slug)),
            TenantStatus::Suspended => Some(format!("tenant `{}` is suspended", self.slug)),
        }
    }
}

/// What a person without a second factor is told in a tenant that requires one.
pub const SECOND_FACTOR_REQUIRED: &str =
    "this tenant requires a second factor: enrol one at /api/v1/me/mfa/totp, then sign in again";

/// Whether an HTTP method only reads.
pub fn is_read_only(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

/// A person, without their credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub platform_admin: bool,
    /// Whether the person proved they own `email`.
    pub email_verified: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            name: row.name,
            platform_admin: row.platform_admin == 1,
            email_verified: row.email_verified_at.is_some(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The scopes of an API key, parsed once when the key is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses the stored JSON array of scope names.
    pub fn from_json(text: &str) -> Result<Self, StoreError> {
        let names: Vec<String> = serde_json::from_str(text).map_err(|_| StoreError::Corrupt("api_keys.scopes"))?;
        Ok(Self(names.into_iter().collect()))
    }

    /// Whether the key holds `scope`, or every scope (`*`).
    pub fn allows(&self, scope: &str) -> bool {
        self.0.contains("*") || self.0.contains(scope)
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl FromIterator<String> for Scopes {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    User(String),
    ServiceAccount(String),
}

/// An API key, without its secret hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    pub name: String,
    pub owner: KeyOwner,
    pub scopes: Scopes,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl TryFrom<&ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: &ApiKeyRow) -> Result<Self, StoreError> {
        let owner = match (&row.owner_user_id, &row.owner_service_account_id) {
            (Some(user), None) => KeyOwner::User(user.clone()),
            (None, Some(account)) => KeyOwner::ServiceAccount(account.clone()),
            _ => return Err(StoreError::Corrupt("api_keys.owner")),
        };
        Ok(Self {
            id: row.id.clone(),
            tenant_id: row.tenant_id.clone(),
            prefix: row.prefix.clone(),
            name: row.name.clone(),
            owner,
            scopes: Scopes::from_json(&row.scopes)?,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        })
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A person with an access token for one of their sessions (or a token
    /// of a trusted external issuer: `amr` then holds `ext`).
    User { user: User, session_id: String, amr: Vec<String> },
    /// An API key, owned by a user or a service account of the tenant.
    ApiKey { key: ApiKey },
}

/// How a caller authenticated: the `authn` fact of every policy context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authn {
    Password,
    External,
    /// Single sign-on through one of the tenant's identity providers.
    Sso,
    ApiKey,
    /// A question to the decision point, about a principal who is not calling.
    DecisionPoint,
    Anonymous,
}

impl Authn {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::External => "external",
            Self::Sso => "sso",
            Self::ApiKey => "api_key",
            Self::DecisionPoint => "pdp",
            Self::Anonymous => "none",
        }
    }
}

/// Who acts, as logs, assertions and identity headers name them:
/// `user:<id>`, `apikey:<id>` or `anonymous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Name<'a> {
    User(&'a str),
    ApiKey(&'a str),
    Anonymous,
}

impl<'a> Name<'a> {
    /// The name's two parts: its kind's prefix and the id.
    pub fn parts(self) -> (&'static str, &'a str) {
        match self {
            Name::User(id) => ("user:", id),
            Name::ApiKey(id) => ("apikey:", id),
            Name::Anonymous => ("anonymous", ""),
        }
    }

    /// The name as one string.
    pub fn text(self) -> String {
        let (kind, id) = self.parts();
        [kind, id].concat()
    }

    /// Whether `text` is this name.
    pub fn is(self, text: &str) -> bool {
        let (kind, id) = self.parts();
        text.strip_prefix(kind) == Some(id)
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, id) = self.parts();
        f.write_str(kind)?;
        f.write_str(id)
    }
}

/// An authenticated caller acting in one tenant with one role.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    /// Shared with the tenant cache of the gateway, not copied per request.
    pub tenant: Arc<Tenant>,
    pub role: ResolvedRole,
    /// The ids of the tenant's groups the caller belongs to (an API key:
    /// its owner's).
    pub groups: Arc<[String]>,
    pub client_ip: String,
}

impl Principal {
    /// The user behind the call, when a person (not an API key) is calling.
    pub fn user(&self) -> Option<&User> {
        match &self.actor {
            Actor::User { user, .. } => Some(user),
            Actor::ApiKey { .. } => None,
        }
    }

    /// How the caller authenticated, and whether with a second factor.
    pub fn authn_facts(&self) -> (Authn, bool) {
        match &self.actor {
            Actor::User { amr, .. } => {
                let mfa = amr.iter().any(|m| m == "mfa" || m == "otp");
                let authn = if amr.iter().any(|m| m == "ext") {
                    Authn::External
                } else if amr.iter().any(|m| m == "sso") {
                    Authn::Sso
                } else {
                    Authn::Password
                };
                (authn, mfa)
            }
            Actor::ApiKey { .. } => (Authn::ApiKey, false),
        }
    }

    /// Whether the caller is a person of a tenant that requires a second
    /// factor, signed in without one. People of trusted external issuers
    /// and of the tenant's own single sign-on are their provider's to check;
    /// API keys are not people.
    pub fn second_factor_missing(&self) -> bool {
        match &self.actor {
            Actor::User { amr, .. } if self.tenant.mfa_required => {
                let (authn, mfa) = self.authn_facts();
                authn == Authn::Password && !mfa && !amr.iter().any(|m| m == "ext")
            }
            _ => false,
        }
    }

    /// A stable id of the caller for logs, assertions and `created_by` columns.
    pub fn actor_id(&self) -> String {
        self.actor_name().text()
    }

    /// [`Principal::actor_id`], read from the principal without being put
    /// together.
    pub fn actor_name(&self) -> Name<'_> {
        match &self.actor {
            Actor::User { user, .. } => Name::User(&user.id),
            Actor::ApiKey { key } => Name::ApiKey(&key.id),
        }
    }

    /// `user:<id>` of the person the call acts for: the caller, or the owner
    /// of the caller's API key; `None` for service accounts' keys.
    pub fn acting_user(&self) -> Option<String> {
        self.acting_user_name().map(Name::text)
    }

    /// [`Principal::acting_user`], read from the principal without being put
    /// together.
    pub fn acting_user_name(&self) -> Option<Name<'_>> {
        match &self.actor {
            Actor::User { user, .. } => Some(Name::User(&user.id)),
            Actor::ApiKey { key } => match &key.owner {
                KeyOwner::User(id) => Some(Name::User(id)),
                KeyOwner::ServiceAccount(_) => None,
            },
        }
    }

    /// Whether the caller acts in the tenant `tenant_id`.
    pub fn is_in_tenant(&self, tenant_id: &str) -> bool {
        self.tenant.id == tenant_id
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::roles::Builtin;

    pub(crate) fn tenant(id: &str, status: TenantStatus) -> Tenant {
        Tenant {
            id: id.into(),
            slug: id.into(),
            name: id.into(),
            status,
            plan: "free".into(),
            entitlements: Arc::new(crate::plans::Catalog::builtin().plan_entitlements("free")),
            mfa_required: false,
            sso_required: false,
            settings: "{}".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    pub(crate) fn person(id: &str, tenant_id: &str, role: Builtin, amr: &[&str]) -> Principal {
        let user = User {
            id: id.into(),
            email: format!("{id}@x.test"),
            name: id.into(),
            platform_admin: false,
            email_verified: true,
            created_at: 0,
            updated_at: 0,
        };
        Principal {
            actor: Actor::User { user, session_id: "s".into(), amr: amr.iter().map(|s| (*s).to_owned()).collect() },
            tenant: Arc::new(tenant(tenant_id, TenantStatus::Active)),
            role: ResolvedRole::builtin(role),
            groups: Arc::from([]),
            client_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn names_read_as_the_ids_they_stand_for() {
        for (name, text) in
            [(Name::User("u1"), "user:u1"), (Name::ApiKey("k1"), "apikey:k1"), (Name::Anonymous, "anonymous")]
        {
            assert_eq!((name.text(), name.to_string()), (text.to_owned(), text.to_owned()));
            assert!(name.is(text), "{text}");
        }
        for other in ["user:u12", "user:", "apikey:u1", "u1", "user:u1 ", "anonymous:"] {
            assert!(!Name::User("u1").is(other), "{other}");
        }
        assert!(!Name::Anonymous.is("anonymous:"));
        let person = person("u1", "t1", Builtin::Member, &["pwd"]);
        assert_eq!((person.actor_id(), person.acting_user()), ("user:u1".to_owned(), Some("user:u1".to_owned())));
    }

    #[test]
    fn authn_facts_name_how_the_caller_authenticated() {
        let facts = |amr: &[&str]| person("u", "t", Builtin::Member, amr).authn_facts();
        assert_eq!(facts(&["pwd"]), (Authn::Password, false));
        assert_eq!(facts(&["pwd", "otp"]), (Authn::Password, true));
        assert_eq!(facts(&["ext"]), (Authn::External, false), "external issuers are not passwords");
        assert_eq!(facts(&["sso"]), (Authn::Sso, false));
        assert_eq!(facts(&["sso", "mfa"]), (Authn::Sso, true), "the provider said it asked for a second factor");
    }

    #[test]
    fn a_tenant_requiring_mfa_refuses_people_without_it() {
        let mut p = person("u", "t", Builtin::Owner, &["pwd"]);
        assert!(!p.second_factor_missing(), "not required");
        Arc::make_mut(&mut p.tenant).mfa_required = true;
        assert!(p.second_factor_missing());
        let mut strong = person("u", "t", Builtin::Owner, &["pwd", "otp"]);
        strong.tenant = Arc::clone(&p.tenant);
        assert!(!strong.second_factor_missing());
        let mut external = person("u", "t", Builtin::Owner, &["ext"]);
        external.tenant = Arc::clone(&p.tenant);
        assert!(!external.second_factor_missing(), "the issuer's to check");
        let mut row = TenantRow {
            id: "t".into(),
            slug: "t".into(),
            name: "T".into(),
            status: "active".into(),
            plan: "free".into(),
            settings: r#"{"security": {"mfa_required": true}}"#.into(),
            created_at: 0,
            updated_at: 0,
            status_changed_at: 0,
        };
        assert!(Tenant::from(row.clone()).mfa_required);
        assert!(!Tenant::from(row.clone()).sso_required);
        row.settings = r#"{"security": {"sso_required": true, "mfa_required": "yes"}}"#.into();
        let tenant = Tenant::from(row.clone());
        assert!(tenant.sso_required && !tenant.mfa_required, "only a boolean true turns a flag on");
        row.settings = "{}".into();
        assert!(!Tenant::from(row).mfa_required);
    }

    #[test]
    fn unknown_tenant_states_refuse() {
        let mut row = TenantRow {
            id: "t".into(),
            slug: "acme".into(),
            name: "Acme".into(),
            status: "frozen".into(),
            plan: "free".into(),
            settings: "{}".into(),
            created_at: 0,
            updated_at: 0,
            status_changed_at: 0,
        };
        assert_eq!(Tenant::from(row.clone()).status, TenantStatus::Suspended);
        assert!(Tenant::from(row.clone()).refusal(true).is_some());
        row.status = "pending_deletion".into();
        let pending = Tenant::from(row);
        assert_eq!(pending.refusal(true), None, "reads still work");
        assert!(pending.refusal(false).is_some_and(|r| r.contains("read-only")));
    }

    #[test]
    fn scopes_parse_once_and_star_allows_all() {
        let scopes = Scopes::from_json(r#"["members:read", "contact.read"]"#).unwrap();
        assert!(scopes.allows("members:read") && !scopes.allows("members:write"));
        assert!(Scopes::from_json(r#"["*"]"#).unwrap().allows("anything"));
        assert!(Scopes::from_json("not json").is_err());
    }
}

//! The authenticate stage over in-memory look-ups: every way a credential
//! is accepted or refused, without a database. [`Memory`] serves the other
//! stages' tests too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tollgate_identity::credentials::{KeyRecord, Lookups};
use tollgate_identity::principal::{Actor, ApiKey, Tenant, TenantStatus, User};
use tollgate_identity::roles::{Builtin, ResolvedRole, Standing};
use tollgate_identity::secrets;
use tollgate_identity::tokens::AccessClaims;
use tollgate_policies::PolicyEngine;
use tollgate_store::{ApiKeyRow, SessionRow, StoreError, now};

use super::*;
use crate::policy::Engines;

/// Everything the stages look up, in memory.
#[derive(Default)]
pub(crate) struct Memory {
    pub tokens: HashMap<String, Arc<AccessClaims>>,
    pub sessions: HashMap<String, Arc<SessionRow>>,
    pub users: HashMap<String, Arc<User>>,
    pub tenants: HashMap<String, Arc<Tenant>>,
    pub standings: HashMap<(String, String), Standing>,
    pub keys: HashMap<String, Arc<KeyRecord>>,
    pub used: Mutex<Vec<String>>,
    /// How many times a tenant was looked up by a hint.
    pub named_lookups: std::sync::atomic::AtomicUsize,
}

pub(crate) fn tenant(id: &str, slug: &str, status: TenantStatus) -> Tenant {
    Tenant {
        id: id.into(),
        slug: slug.into(),
        name: slug.into(),
        status,
        plan: "free".into(),
        entitlements: Arc::new(tollgate_identity::plans::Catalog::builtin().plan_entitlements("free")),
        mfa_required: false,
        sso_required: false,
        settings: "{}".into(),
        created_at: 0,
        updated_at: 0,
    }
}

impl Memory {
    /// Two tenants, `acme` (t1) with a member u1 and `globex` (t2).
    pub(crate) fn two_tenants() -> Self {
        let mut m = Self::default();
        for t in [tenant("t1", "acme", TenantStatus::Active), tenant("t2", "globex", TenantStatus::Active)] {
            m.tenants.insert(t.id.clone(), Arc::new(t));
        }
        m.add_member("u1", "t1", Builtin::Member);
        m
    }

    pub(crate) fn add_member(&mut self, user: &str, tenant: &str, role: Builtin) {
        let u = User {
            id: user.into(),
            email: format!("{user}@x.test"),
            name: user.into(),
            platform_admin: false,
            email_verified: true,
            created_at: 0,
            updated_at: 0,
        };
        self.users.insert(user.into(), Arc::new(u));
        let standing = Standing { role: ResolvedRole::builtin(role), groups: Arc::from([]) };
        self.standings.insert((tenant.into(), user.into()), standing);
    }

    /// A live session of `user` in `tenant` and an access token for it.
    pub(crate) fn login(&mut self, token: &str, user: &str, tenant: &str) {
        let sid = format!("s-{token}");
        let t = now();
        self.sessions.insert(
            sid.clone(),
            Arc::new(SessionRow {
                id: sid.clone(),
                user_id: user.into(),
                tenant_id: tenant.into(),
                device: String::new(),
                ip: String::new(),
                user_agent: String::new(),
                amr: "[\"pwd\"]".into(),
                created_at: t,
                last_seen_at: t,
                expires_at: t + 3600,
                revoked_at: None,
                sso_connection_id: None,
            }),
        );
        let claims = AccessClaims {
            iss: "https://tollgate.test".into(),
            aud: "tollgate".into(),
            sub: user.into(),
            tid: tenant.into(),
            sid,
            jti: "j".into(),
            roles: Vec::new(),
            amr: vec!["pwd".into()],
            iat: t,
            nbf: t,
            exp: t + 900,
        };
        self.tokens.insert(token.into(), Arc::new(claims));
    }

    /// An API key of `user` in `tenant`; returns its secret.
    pub(crate) fn add_key(&mut self, user: &str, tenant: &str, revoked: bool, expires_at: Option<i64>) -> String {
        let (prefix, secret) = secrets::new_api_key();
        let row = ApiKeyRow {
            id: format!("k-{prefix}"),
            tenant_id: tenant.into(),
            prefix: prefix.clone(),
            secret_hash: secrets::hash(&secret),
            name: "k".into(),
            scopes: "[\"*\"]".into(),
            owner_user_id: Some(user.into()),
            owner_service_account_id: None,
            created_at: 0,
            expires_at,
            last_used_at: None,
            revoked_at: revoked.then_some(1),
        };
        self.keys.insert(prefix, Arc::new(KeyRecord::from_row(&row).unwrap()));
        secret
    }
}

impl Lookups for Memory {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionRow>>, StoreError> {
        Ok(self.sessions.get(id).cloned())
    }
    async fn user(&self, id: &str) -> Result<Option<Arc<User>>, StoreError> {
        Ok(self.users.get(id).cloned())
    }
    async fn tenant(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(self.tenants.get(id).cloned())
    }
    async fn member_standing(&self, tenant_id: &str, user_id: &str) -> Result<Option<Standing>, StoreError> {
        Ok(self.standings.get(&(tenant_id.to_owned(), user_id.to_owned())).cloned())
    }
    async fn service_account_standing(&self, _: &str, _: &str) -> Result<Option<Standing>, StoreError> {
        Ok(None)
    }
    async fn api_key(&self, prefix: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Ok(self.keys.get(prefix).cloned())
    }
    async fn key_used(&self, key: &ApiKey) {
        self.used.lock().unwrap().push(key.id.clone());
    }
}

impl Verifiers for Memory {
    async fn access_token(&self, token: &str) -> Result<Arc<AccessClaims>, Reject> {
        self.tokens.get(token).cloned().ok_or(Reject::Unauthenticated("invalid or expired access token"))
    }
    fn is_external(&self, _: &str) -> bool {
        false
    }
    async fn external_token(&self, _: &str) -> Result<Arc<ExternalIdentity>, Reject> {
        Err(Reject::Unauthenticated("invalid or expired access token"))
    }
}

impl TenantDirectory for Memory {
    async fn tenant_named(&self, id_or_slug: &str) -> Result<Option<Arc<Tenant>>, Reject> {
        self.named_lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let by_id = self.tenants.get(id_or_slug).cloned();
        Ok(by_id.or_else(|| self.tenants.values().find(|t| t.slug == id_or_slug).cloned()))
    }
}

impl Engines for Memory {
    async fn engine_for(&self, _: Option<&Tenant>) -> Result<Arc<PolicyEngine>, Reject> {
        Ok(Arc::new(PolicyEngine::builtin().unwrap()))
    }
}

fn refused(result: Result<Caller, Reject>) -> String {
    match result {
        Err(Reject::Unauthenticated(why)) => why.to_owned(),
        other => panic!("expected a 401, got {other:?}"),
    }
}

pub(crate) fn known(result: Result<Caller, Reject>) -> Principal {
    match result {
        Ok(Caller::Known(p)) => Arc::unwrap_or_clone(p),
        other => panic!("expected a principal, got {other:?}"),
    }
}

#[tokio::test]
async fn no_credential_is_the_anonymous_caller() {
    let m = Memory::two_tenants();
    assert!(matches!(authenticate(&m, None, "10.0.0.1").await, Ok(Caller::Anonymous)));
}

#[tokio::test]
async fn only_bearer_credentials_are_read() {
    let m = Memory::two_tenants();
    assert_eq!(refused(authenticate(&m, Some("Basic dTpw"), "ip").await), "authorization must be a bearer token");
    assert_eq!(refused(authenticate(&m, Some("Bearer"), "ip").await), "malformed authorization header");
    assert_eq!(refused(authenticate(&m, Some("Bearer    "), "ip").await), "authorization must be a bearer token");
}

#[tokio::test]
async fn a_token_of_a_live_session_is_its_user_in_its_tenant() {
    let mut m = Memory::two_tenants();
    m.login("tok", "u1", "t1");
    let p = known(authenticate(&m, Some("bearer tok"), "10.0.0.1").await);
    assert_eq!((p.tenant.id.as_str(), p.role.name.as_str(), p.client_ip.as_str()), ("t1", "member", "10.0.0.1"));
    assert!(matches!(&p.actor, Actor::User { user, .. } if user.id == "u1"));
    assert_eq!(refused(authenticate(&m, Some("Bearer forged"), "ip").await), "invalid or expired access token");
}

#[tokio::test]
async fn ended_sessions_and_removed_members_are_refused() {
    let mut m = Memory::two_tenants();
    m.login("tok", "u1", "t1");
    m.standings.clear();
    assert_eq!(refused(authenticate(&m, Some("Bearer tok"), "ip").await), "membership was removed");
    let session = m.sessions.values().next().unwrap().clone();
    let mut revoked = (*session).clone();
    revoked.revoked_at = Some(now());
    m.sessions.insert(revoked.id.clone(), Arc::new(revoked));
    assert_eq!(refused(authenticate(&m, Some("Bearer tok"), "ip").await), "session is no longer valid");
    // A token whose claims name another tenant than its session's.
    let mut m = Memory::two_tenants();
    m.login("tok", "u1", "t1");
    let mut claims = (*m.tokens["tok"]).clone();
    claims.tid = "t2".into();
    m.tokens.insert("tok".into(), Arc::new(claims));
    assert_eq!(refused(authenticate(&m, Some("Bearer tok"), "ip").await), "session is no longer valid");
}

#[tokio::test]
async fn api_keys_act_for_their_owner_and_record_their_use() {
    let mut m = Memory::two_tenants();
    let secret = m.add_key("u1", "t1", false, None);
    let p = known(authenticate(&m, Some(&format!("Bearer {secret}")), "ip").await);
    assert_eq!(p.acting_user().as_deref(), Some("user:u1"));
    assert!(matches!(&p.actor, Actor::ApiKey { key } if key.scopes.allows("anything")));
    assert_eq!(m.used.lock().unwrap().len(), 1, "the gateway records a key's use like the backend does");
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    assert_eq!(
        refused(authenticate(&m, Some(&format!("Bearer {wrong}")), "ip").await),
        "invalid, revoked or expired API key"
    );
    for key in [m.add_key("u1", "t1", true, None), m.add_key("u1", "t1", false, Some(now() - 1))] {
        let why = refused(authenticate(&m, Some(&format!("Bearer {key}")), "ip").await);
        assert_eq!(why, "invalid, revoked or expired API key");
    }
    // The owner left the tenant: the key no longer works.
    m.standings.clear();
    assert_eq!(
        refused(authenticate(&m, Some(&format!("Bearer {secret}")), "ip").await),
        "invalid, revoked or expired API key"
    );
}

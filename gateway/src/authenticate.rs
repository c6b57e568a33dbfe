//! The authenticate stage: a request's `Authorization` header to a caller.
//! A bearer JWT of ours or of a trusted external issuer, or an API key; no
//! credential at all is the anonymous caller, whom policies may still let
//! through. The credential loaders are the identity core's, run through the
//! look-ups the stage is given (the gateway's caches, or memory in tests).

use std::future::Future;
use std::sync::Arc;

use tollgate_identity::credentials::{
    CredentialError, Lookups, bearer, is_api_key, principal_from_api_key, principal_from_claims,
};
use tollgate_identity::principal::{Actor, Name, Principal, User};
use tollgate_identity::roles::{Builtin, ResolvedRole};
use tollgate_identity::tokens::AccessClaims;
use tollgate_store::now;

use crate::issuers::ExternalIdentity;
use crate::reject::Reject;
use crate::tenant::TenantDirectory;

/// Who is calling, as far as the gateway can tell.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A user or API key acting in the tenant of its credential.
    Known(Arc<Principal>),
    /// No credential: policies decide what anonymous callers may do.
    Anonymous,
}

impl Caller {
    /// The caller's name: `user:<id>`, `apikey:<id>` or `anonymous`.
    pub fn name(&self) -> Name<'_> {
        match self {
            Caller::Known(p) => p.actor_name(),
            Caller::Anonymous => Name::Anonymous,
        }
    }

    /// `user:<id>` of the person the caller acts for: itself, or the owner
    /// of its API key; `None` for service accounts and anonymous callers.
    pub fn acting_user(&self) -> Option<Name<'_>> {
        match self {
            Caller::Known(p) => p.acting_user_name(),
            Caller::Anonymous => None,
        }
    }

    pub fn roles(&self) -> &[String] {
        match self {
            Caller::Known(p) => std::slice::from_ref(&p.role.name),
            Caller::Anonymous => &[],
        }
    }

    /// The ids of the tenant's groups the caller belongs to.
    pub fn groups(&self) -> &[String] {
        match self {
            Caller::Known(p) => &p.groups,
            Caller::Anonymous => &[],
        }
    }

    /// Where the caller's principal is (null for anonymous callers): the
    /// same address, while its `Arc` is held, is the same principal.
    pub fn address(&self) -> *const Principal {
        match self {
            Caller::Known(p) => Arc::as_ptr(p),
            Caller::Anonymous => std::ptr::null(),
        }
    }
}

/// Token verification, cached by the gateway.
pub trait Verifiers: Sync {
    /// The claims of one of our access tokens, verified.
    fn access_token(&self, token: &str) -> impl Future<Output = Result<Arc<AccessClaims>, Reject>> + Send;
    /// Whether the token says it comes from a trusted external issuer.
    fn is_external(&self, token: &str) -> bool;
    /// A trusted external issuer's token, verified against its JWKS.
    fn external_token(&self, token: &str) -> impl Future<Output = Result<Arc<ExternalIdentity>, Reject>> + Send;
    /// The principal of one of our access tokens, for a request from
    /// `client_ip`: the token verified, then its session, user, tenant and
    /// membership looked up (a cache may keep the result no longer than it
    /// keeps those).
    fn token_principal(
        &self,
        token: &str,
        client_ip: &str,
    ) -> impl Future<Output = Result<Arc<Principal>, Reject>> + Send
    where
        Self: Lookups + Sized,
    {
        async move {
            let claims = self.access_token(token).await?;
            Ok(Arc::new(principal_from_claims(self, &claims, client_ip).await?))
        }
    }
    /// The principal of an API key, for a request from `client_ip`: its
    /// record checked, its tenant and owner's standing looked up, its use
    /// recorded (a cache may keep the result no longer than it keeps those).
    fn key_principal(&self, key: &str, client_ip: &str) -> impl Future<Output = Result<Arc<Principal>, Reject>> + Send
    where
        Self: Lookups + Sized,
    {
        async move { Ok(Arc::new(principal_from_api_key(self, key, client_ip).await?)) }
    }
}

impl From<CredentialError> for Reject {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Store(e) => {
                tracing::error!(error = %e, "store error in the gateway");
                Reject::Internal
            }
            CredentialError::Malformed => Reject::Unauthenticated("malformed authorization header"),
            CredentialError::NotBearer => Reject::Unauthenticated("authorization must be a bearer token"),
            CredentialError::BadToken => Reject::Unauthenticated("invalid or expired access token"),
            CredentialError::SessionEnded => Reject::Unauthenticated("session is no longer valid"),
            CredentialError::MembershipRemoved => Reject::Unauthenticated("membership was removed"),
            CredentialError::BadKey => Reject::Unauthenticated("invalid, revoked or expired API key"),
        }
    }
}

/// The caller of a request with this `Authorization` header value.
pub async fn authenticate(
    lookups: &(impl Lookups + Verifiers + TenantDirectory),
    authorization: Option<&str>,
    client_ip: &str,
) -> Result<Caller, Reject> {
    let Some(value) = authorization else {
        return Ok(Caller::Anonymous);
    };
    let token = bearer(value)?;
    let principal = if is_api_key(token) {
        lookups.key_principal(token, client_ip).await?
    } else if lookups.is_external(token) {
        // Boxed, like the look-ups behind a miss: not part of the future of
        // every request.
        Box::pin(async {
            let identity = lookups.external_token(token).await?;
            Ok::<_, Reject>(Arc::new(external_principal(lookups, &identity, client_ip).await?))
        })
        .await?
    } else {
        lookups.token_principal(token, client_ip).await?
    };
    Ok(Caller::Known(principal))
}

/// A trusted external issuer vouches for the subject, its tenant (one of
/// those the issuer may speak for) and its roles; the principal is
/// `User::"<issuer>#<subject>"`, with the highest built-in role named.
async fn external_principal(
    tenants: &impl TenantDirectory,
    identity: &ExternalIdentity,
    client_ip: &str,
) -> Result<Principal, Reject> {
    // The tenant claim holds a slug or an id.
    let tenant = tenants.tenant_named(&identity.tenant).await?.ok_or(CredentialError::BadToken)?;
    let role = identity
        .roles
        .iter()
        .filter_map(|r| Builtin::parse(r))
        .max()
        .map_or(ResolvedRole { name: "none".into(), base: None, custom: false }, ResolvedRole::builtin);
    let user = User {
        id: format!("{}#{}", identity.issuer, identity.subject),
        email: identity.email.clone(),
        name: identity.subject.clone(),
        platform_admin: false,
        email_verified: false,
        created_at: now(),
        updated_at: now(),
    };
    Ok(Principal {
        actor: Actor::User { user, session_id: String::new(), amr: vec!["ext".into()] },
        tenant,
        role,
        groups: Arc::from([]),
        client_ip: client_ip.to_owned(),
    })
}

#[cfg(test)]
pub(crate) mod tests;

//! The `Authenticated` extractor: the request's bearer credential (our access
//! token, checked against its live session, or an API key) turned into a
//! [`Principal`] by the identity core's credential loaders, with the tenant's
//! lifecycle state applied. Its rejection is a problem response.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use tollgate_identity::credentials::{self, CredentialError, bearer, principal_from_api_key, principal_from_claims};
use tollgate_identity::principal::{Principal, SECOND_FACTOR_REQUIRED, User, is_read_only};
use tollgate_policies::PolicyEngine;

use crate::problem::ApiError;
use crate::state::AppState;

/// A caller the API has authenticated: a proof, not an option to check;
/// with the policies its tenant's calls are decided by.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// The platform's policies plus the tenant's layer, or `None` when the
    /// layer cannot be loaded (then only the calls that manage the layer
    /// itself are decided, by the platform's policies alone).
    pub engine: Option<Arc<PolicyEngine>>,
}

impl std::ops::Deref for Authenticated {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

/// What handlers ask of a principal, with the API's answers.
pub trait PrincipalExt {
    /// The user behind the call, or 403 for API keys.
    fn require_user(&self) -> Result<&User, ApiError>;
    /// Fails with 404 unless `tenant_id` is the tenant the caller acts in, so
    /// another tenant's ids look exactly like ids that do not exist.
    fn in_tenant(&self, tenant_id: &str) -> Result<(), ApiError>;
}

impl PrincipalExt for Principal {
    fn require_user(&self) -> Result<&User, ApiError> {
        self.user().ok_or_else(|| ApiError::forbidden("this endpoint needs a person's access token, not an API key"))
    }

    fn in_tenant(&self, tenant_id: &str) -> Result<(), ApiError> {
        if self.is_in_tenant(tenant_id) { Ok(()) } else { Err(ApiError::NotFound) }
    }
}

/// The client's address: as the gateway in front saw it when the request
/// came with its verified assertion, else the connection's peer.
pub fn client_ip(parts: &Parts) -> String {
    if let Some(forwarded) = parts.extensions.get::<crate::ForwardedClient>() {
        return forwarded.0.clone();
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Store(e) => e.into(),
            CredentialError::Malformed => ApiError::Unauthorized("malformed authorization header"),
            CredentialError::NotBearer => ApiError::Unauthorized("authorization must be a bearer token"),
            CredentialError::BadToken => ApiError::Unauthorized("invalid or expired access token"),
            CredentialError::SessionEnded => ApiError::Unauthorized("session is no longer valid"),
            CredentialError::MembershipRemoved => ApiError::Unauthorized("membership was removed"),
            CredentialError::BadKey => ApiError::Unauthorized("invalid, revoked or expired API key"),
        }
    }
}

/// What a person without a second factor may still call in a tenant that
/// requires one: read their account and enrol.
fn enrols_a_second_factor(parts: &Parts) -> bool {
    let path = parts.extensions.get::<axum::extract::OriginalUri>().map_or(parts.uri.path(), |u| u.0.path());
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    matches!(path, "/me" | "/me/mfa/totp" | "/me/mfa/totp/confirm")
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("authentication required"))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed authorization header"))?;
        let token = bearer(value)?;
        let ip = client_ip(parts);
        let principal = if credentials::is_api_key(token) {
            principal_from_api_key(&state.lookups, token, &ip).await?
        } else {
            let claims = state.keys.verify(token).map_err(|_| CredentialError::BadToken)?;
            principal_from_claims(&state.lookups, &claims, &ip).await?
        };
        if let Some(reason) = principal.tenant.refusal(is_read_only(parts.method.as_str())) {
            return Err(ApiError::forbidden(reason));
        }
        if principal.second_factor_missing() && !enrols_a_second_factor(parts) {
            return Err(ApiError::forbidden(SECOND_FACTOR_REQUIRED));
        }
        let engine = state.engines.for_tenant(&state.store, &principal.tenant.id, || {}).await.ok();
        Ok(Authenticated { principal, engine })
    }
}

/// For endpoints open to everyone that act differently for a signed-in
/// caller: no `Authorization` header is `None`; a bad one is still refused.
impl OptionalFromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
        } else {
            Ok(None)
        }
    }
}

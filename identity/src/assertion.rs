//! The upstream identity assertion: the one JWT shape the gateway signs for
//! every permitted request and that the backend and product services verify
//! against the JWKS (`typ: tollgate-assertion+jwt`, EdDSA, short-lived,
//! addressed to one upstream).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::tokens::TokenError;

/// The JWT `typ` of the gateway's identity assertions for upstreams.
pub const ASSERTION_TYPE: &str = "tollgate-assertion+jwt";
/// How long an assertion is valid: one request's worth.
pub const ASSERTION_TTL: i64 = 60;
/// The most group ids an assertion (and the `X-Tollgate-Groups` header)
/// carries, so that neither grows with a caller's memberships.
pub const MAX_ASSERTED_GROUPS: usize = 64;
/// The backend's upstream name in the gateway's routes: the audience of the
/// assertions it trusts.
pub const BACKEND_UPSTREAM: &str = "backend";

/// What the gateway asserts to an upstream about a permitted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assertion {
    pub iss: String,
    /// The upstream's name in the gateway's routes.
    pub aud: String,
    /// The caller: `user:<id>`, `apikey:<id>` or `anonymous`.
    pub sub: String,
    /// `user:<id>` of the person the call acts for: the caller, or the owner
    /// of the caller's key; absent for service accounts and anonymous callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The tenant the request acts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Ids of the tenant's groups the caller belongs to: at most
    /// [`MAX_ASSERTED_GROUPS`] of them (the first, sorted).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the caller belongs to more groups than `groups` holds: a
    /// product that needs the full set asks the decision point.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_truncated: bool,
    /// The client's address as the gateway saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The Cedar action of the route.
    pub act: String,
    /// Not set by the gateway: an assertion serves every request asserting
    /// the same for up to 30 seconds, so the decision id of each request is
    /// in its `X-Tollgate-Decision` header instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// The `kid` of an assertion, after checking that the token claims to be one
/// (our `typ`, EdDSA); products look the key up at the JWKS by it.
pub fn assertion_kid(token: &str) -> Result<String, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(ASSERTION_TYPE) {
        return Err(TokenError::WrongType);
    }
    header.kid.ok_or(TokenError::UnknownKey)
}

/// Verifies an assertion with `key` (from the JWKS, by [`assertion_kid`]):
/// signature, issuer, audience and time claims, with five seconds of leeway.
pub fn verify_assertion(token: &str, key: &DecodingKey, issuer: &str, audience: &str) -> Result<Assertion, TokenError> {
    assertion_kid(token)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    jsonwebtoken::decode::<Assertion>(token, key, &validation).map(|data| data.claims).map_err(|_| TokenError::Invalid)
}

//! Trusted external issuers: identity providers whose JWTs the gateway
//! accepts, each with its audience, JWKS URL, claim mapping and the tenants
//! it may speak for. Keys are fetched from the JWKS, cached, and fetched
//! again (at most every few seconds) when a token names an unknown `kid`.
//!
//! An issuer is found by the token's exact `iss`, never by its `kid`, so a
//! token from anyone else that reuses a trusted `kid` is still refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::metrics;

/// Least time between two fetches of one issuer's JWKS.
const REFETCH_AFTER: Duration = Duration::from_secs(5);

/// One trusted issuer, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    /// The claim naming the subject.
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// The claim naming the tenant (its slug or id).
    pub tenant_claim: String,
    /// The claim listing roles (built-in role names); none grants no role.
    pub roles_claim: Option<String>,
    /// The claim holding the email, when the issuer sends one.
    pub email_claim: Option<String>,
    /// The tenants (slugs) this issuer may speak for.
    pub tenants: Vec<String>,
}

fn default_subject() -> String {
    "sub".into()
}

/// What a verified external token says.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub email: String,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExternalError {
    #[error("the token's issuer is not trusted")]
    Untrusted,
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("the issuer may not speak for this tenant")]
    ForeignTenant,
}

struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

struct Trusted {
    config: IssuerConfig,
    keys: Mutex<KeySet>,
}

/// The trusted issuers and their cached keys.
pub struct Issuers {
    trusted: Vec<Trusted>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuers").field("count", &self.trusted.len()).finish_non_exhaustive()
    }
}

/// A JWK as a key and its algorithm; only asymmetric keys meant for
/// signatures (`use` absent or `sig`).
fn parse_jwk(jwk: &Value) -> Option<(String, DecodingKey, Algorithm)> {
    if jwk.get("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = jwk["kid"].as_str()?.to_owned();
    let (key, alg) = match (jwk["kty"].as_str()?, jwk["alg"].as_str()) {
        ("OKP", None | Some("EdDSA")) if jwk["crv"] == "Ed25519" => {
            (DecodingKey::from_ed_components(jwk["x"].as_str()?).ok()?, Algorithm::EdDSA)
        }
        ("RSA", None | Some("RS256")) => {
            (DecodingKey::from_rsa_components(jwk["n"].as_str()?, jwk["e"].as_str()?).ok()?, Algorithm::RS256)
        }
        ("EC", None | Some("ES256")) if jwk["crv"] == "P-256" => {
            (DecodingKey::from_ec_components(jwk["x"].as_str()?, jwk["y"].as_str()?).ok()?, Algorithm::ES256)
        }
        _ => return None,
    };
    Some((kid, key, alg))
}

/// The `iss` of a JWT, read without verification (to pick the issuer).
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["iss"].as_str().map(str::to_owned)
}

impl Issuers {
    pub fn new(configs: Vec<IssuerConfig>) -> Self {
        let trusted = configs
            .into_iter()
            .map(|config| Trusted { config, keys: Mutex::new(KeySet { keys: HashMap::new(), fetched: None }) })
            .collect();
        // A JWKS is fetched from exactly its configured URL: no redirects.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { trusted, http }
    }

    pub fn is_empty(&self) -> bool {
        self.trusted.is_empty()
    }

    /// Whether the token names a trusted issuer (then only that issuer's
    /// keys may verify it).
    pub fn claims_trusted_issuer(&self, token: &str) -> bool {
        // Without trusted issuers (the usual case) nothing is decoded.
        !self.trusted.is_empty()
            && unverified_issuer(token).is_some_and(|iss| self.trusted.iter().any(|t| t.config.issuer == iss))
    }

    async fn key(&self, trusted: &Trusted, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        let mut set = trusted.keys.lock().await;
        if let Some(found) = set.keys.get(kid) {
            return Some(found.clone());
        }
        if set.fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return None;
        }
        set.fetched = Some(Instant::now());
        metrics::jwks_refresh(&trusted.config.issuer);
        let jwks: Value = self.http.get(&trusted.config.jwks_url).send().await.ok()?.json().await.ok()?;
        set.keys =
            jwks["keys"].as_array()?.iter().filter_map(parse_jwk).map(|(kid, key, alg)| (kid, (key, alg))).collect();
        set.keys.get(kid).cloned()
    }

    /// Verifies a token from a trusted issuer and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<ExternalIdentity, ExternalError> {
        let iss = unverified_issuer(token).ok_or(ExternalError::Invalid)?;
        let trusted = self.trusted.iter().find(|t| t.config.issuer == iss).ok_or(ExternalError::Untrusted)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| ExternalError::Invalid)?;
        let kid = header.kid.ok_or(ExternalError::Invalid)?;
        let (key, alg) = self.key(trusted, &kid).await.ok_or(ExternalError::Invalid)?;
        if header.alg != alg {
            return Err(ExternalError::Invalid);
        }
        let config = &trusted.config;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let claims =
            jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|_| ExternalError::Invalid)?.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let subject = text(&config.subject_claim).filter(|s| !s.is_empty()).ok_or(ExternalError::Invalid)?;
        let tenant = text(&config.tenant_claim).ok_or(ExternalError::Invalid)?;
        if !config.tenants.contains(&tenant) {
            return Err(ExternalError::ForeignTenant);
        }
        let roles = match &config.roles_claim {
            Some(name) => claims
                .get(name)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let email = config.email_claim.as_deref().and_then(text).unwrap_or_default();
        let expires_at = claims.get("exp").and_then(Value::as_i64).ok_or(ExternalError::Invalid)?;
        Ok(ExternalIdentity { issuer: iss, subject, tenant, roles, email, expires_at })
    }
}

/// Shared issuers for the gateway.
pub type SharedIssuers = Arc<Issuers>;

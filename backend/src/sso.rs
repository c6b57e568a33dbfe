//! The OpenID Connect relying party behind tenants' SSO connections, on
//! `openidconnect`: provider discovery (cached), the authorization request
//! (code flow with PKCE S256, state and nonce), and the code exchange whose
//! ID token is checked for signature, issuer, audience, expiry and nonce.
//! Claims the ID token leaves out are read from the user-info endpoint,
//! which must name the same subject.
//!
//! Issuers are `https` URLs; plain `http` on a loopback address only when
//! the configuration allows it (tests run a provider locally). A tenant
//! admin names these URLs, so the backend fetches them only from public
//! addresses: a literal address must be public, a host name is resolved to
//! its public addresses only (loopback too when allowed), and the HTTP
//! client follows no redirects, so neither a name nor a provider can point
//! the backend at its own network.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse as _,
};
use serde_json::{Map, Value};

/// A client made from a provider's discovery document: an authorization
/// endpoint, maybe a token and a user-info endpoint.
type ProviderClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// How long a provider's discovery document and keys are kept.
const METADATA_TTL: Duration = Duration::from_secs(300);
/// How long the backend waits for a provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in through a provider failed. The message goes to the log
/// and the audit trail, never to the browser.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("`{0}` is not an https URL (or an http loopback one where allowed)")]
    Issuer(String),
    #[error("provider discovery failed: {0}")]
    Discovery(String),
    #[error("the provider refused the code: {0}")]
    Exchange(String),
    #[error("the ID token is not acceptable: {0}")]
    IdToken(String),
    #[error("the user-info answer is not acceptable: {0}")]
    UserInfo(String),
}

/// Which claims hold what a connection reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimMap {
    #[serde(default = "default_email")]
    pub email: String,
    #[serde(default = "default_email_verified")]
    pub email_verified: String,
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_email() -> String {
    "email".into()
}
fn default_email_verified() -> String {
    "email_verified".into()
}
fn default_name() -> String {
    "name".into()
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self { email: default_email(), email_verified: default_email_verified(), name: default_name() }
    }
}

/// What the relying party needs of a connection.
#[derive(Debug, Clone)]
pub struct Provider<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scopes: &'a [String],
    pub claims: &'a ClaimMap,
}

/// The redirect to the provider, and what the callback needs to finish.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// Whether the provider says it asked for more than one factor
    /// (`amr` naming `mfa`, `otp` or a hardware key).
    pub mfa: bool,
}

/// Providers' metadata, cached, and the HTTP client that reaches them.
#[derive(Debug)]
pub struct Providers {
    http: reqwest::Client,
    metadata: moka::future::Cache<String, Arc<CoreProviderMetadata>>,
    allow_http_loopback: bool,
}

/// The address a host written in a URL names literally (`[::1]` too).
fn ip_literal(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether `host` (a name or a literal address) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || ip_literal(host).is_some_and(|ip| ip.is_loopback())
}

/// Whether the backend may fetch a tenant's provider at `ip`: a public
/// unicast address, not one of its own networks'.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8
                    || v6.segments()[0] == 0x0064 && v6.segments()[1] == 0xff9b)
            }
        },
    }
}

/// Resolves providers' host names to their public addresses only (and
/// loopback ones when allowed); a name with none fails to resolve.
struct PublicAddresses {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<std::net::SocketAddr> =
                found.filter(|a| is_public(a.ip()) || (allow_loopback && a.ip().is_loopback())).collect();
            if allowed.is_empty() {
                return Err(format!("`{host}` has no public address").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Providers {
    pub fn new(allow_http_loopback: bool) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .dns_resolver(Arc::new(PublicAddresses { allow_loopback: allow_http_loopback }))
            .build()
            .unwrap_or_default();
        let metadata = moka::future::Cache::builder().max_capacity(10_000).time_to_live(METADATA_TTL).build();
        Self { http, metadata, allow_http_loopback }
    }

    /// The issuer as a URL, when it is one the backend may fetch.
    pub fn check_issuer(&self, issuer: &str) -> Result<IssuerUrl, OidcError> {
        let bad = || OidcError::Issuer(issuer.to_owned());
        let url = reqwest::Url::parse(issuer).map_err(|_| bad())?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(bad());
        }
        let host = url.host_str().ok_or_else(bad)?;
        let literal = ip_literal(host);
        let loopback = is_loopback_host(host);
        // A literal address is fetched as written: it must be public (or an
        // allowed loopback one). Names are checked as they resolve.
        if let Some(ip) = literal
            && !is_public(ip)
            && !(loopback && self.allow_http_loopback)
        {
            return Err(bad());
        }
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.allow_http_loopback => {}
            _ => return Err(bad()),
        }
        IssuerUrl::new(issuer.to_owned()).map_err(|_| bad())
    }

    /// The provider's discovery document with its keys, fetched once per
    /// [`METADATA_TTL`].
    pub async fn metadata(&self, issuer: &str) -> Result<Arc<CoreProviderMetadata>, OidcError> {
        let url = self.check_issuer(issuer)?;
        self.metadata
            .try_get_with(issuer.to_owned(), async {
                CoreProviderMetadata::discover_async(url, &self.http)
                    .await
                    .map(Arc::new)
                    .map_err(|e| OidcError::Discovery(error_chain(&e)))
            })
            .await
            .map_err(|e| OidcError::Discovery(e.to_string()))
    }

    /// A document (a SAML provider's metadata) at `url`, which must be a
    /// URL [`Providers::check_issuer`] accepts, of at most `max` bytes.
    pub async fn fetch_document(&self, url: &str, max: usize) -> Result<String, OidcError> {
        self.check_issuer(url)?;
        let mut response = self.http.get(url).send().await.map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(OidcError::Discovery(format!("`{url}` answered {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| OidcError::Discovery(error_chain(&e)))? {
            body.extend_from_slice(&chunk);
            if body.len() > max {
                return Err(OidcError::Discovery(format!("`{url}` is larger than {max} bytes")));
            }
        }
        String::from_utf8(body).map_err(|_| OidcError::Discovery(format!("`{url}` is not UTF-8 text")))
    }

    /// Drops the cached metadata of `issuer` (its keys may have rotated).
    pub async fn forget(&self, issuer: &str) {
        self.metadata.invalidate(issuer).await;
    }

    /// The client of `provider` (from its discovery document), returning
    /// the browser to `redirect`.
    async fn client(&self, provider: &Provider<'_>, redirect: &str) -> Result<ProviderClient, OidcError> {
        let metadata = self.metadata(provider.issuer).await?;
        let redirect = RedirectUrl::new(redirect.to_owned()).map_err(|e| OidcError::Discovery(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(provider.client_id.to_owned()),
            Some(ClientSecret::new(provider.client_secret.to_owned())),
        )
        .set_redirect_uri(redirect))
    }

    /// The authorization request for `provider`, returning to `redirect`.
    pub async fn authorize(
        &self,
        provider: &Provider<'_>,
        redirect: &str,
        login_hint: Option<&str>,
    ) -> Result<Authorization, OidcError> {
        let client = self.client(provider, redirect).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in provider.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(hint) = login_hint {
            request = request.add_extra_param("login_hint", hint.to_owned());
        }
        let (url, state, nonce) = request.url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE `verifier`) and checks the ID token
    /// against `nonce`; reads missing claims from the user-info endpoint.
    pub async fn finish(
        &self,
        provider: &Provider<'_>,
        redirect: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let client = self.client(provider, redirect).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let id_token = token.id_token().ok_or_else(|| OidcError::IdToken("the provider sent no ID token".into()))?;
        let checker = client.id_token_verifier();
        let claims = match id_token.claims(&checker, &Nonce::new(nonce.to_owned())) {
            Ok(claims) => claims,
            Err(e) => {
                // Keys may have rotated since they were cached.
                self.forget(provider.issuer).await;
                return Err(OidcError::IdToken(error_chain(&e)));
            }
        };
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token.signing_alg().map_err(|e| OidcError::IdToken(e.to_string()))?;
            let key = id_token.signing_key(&checker).map_err(|e| OidcError::IdToken(e.to_string()))?;
            let actual = AccessTokenHash::from_token(token.access_token(), alg, key)
                .map_err(|e| OidcError::IdToken(e.to_string()))?;
            if actual != *expected {
                return Err(OidcError::IdToken("the access token does not match `at_hash`".into()));
            }
        }
        let subject = claims.subject().clone();
        let mut values = object(serde_json::to_value(claims).unwrap_or_default());
        let wanted = [&provider.claims.email, &provider.claims.email_verified, &provider.claims.name];
        if wanted.iter().any(|claim| !values.contains_key(claim.as_str()))
            && let Ok(request) = client.user_info(token.access_token().clone(), Some(subject.clone()))
        {
            let info: openidconnect::core::CoreUserInfoClaims =
                request.request_async(&self.http).await.map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
            for (name, value) in object(serde_json::to_value(info).unwrap_or_default()) {
                values.entry(name).or_insert(value);
            }
        }
        let text = |claim: &str| values.get(claim).and_then(Value::as_str).map(str::to_owned);
        let amr: Vec<&str> = values
            .get("amr")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Ok(Identity {
            subject: subject.as_str().to_owned(),
            email: text(&provider.claims.email),
            email_verified: values.get(&provider.claims.email_verified).and_then(Value::as_bool).unwrap_or(false),
            name: text(&provider.claims.name),
            mfa: amr.iter().any(|m| matches!(*m, "mfa" | "otp" | "hwk")),
        })
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// An error with its causes, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_allowed_loopback() {
        let strict = Providers::new(false);
        let lenient = Providers::new(true);
        assert!(strict.check_issuer("https://idp.example.com").is_ok());
        assert!(strict.check_issuer("https://idp.example.com/tenant/v2").is_ok());
        for bad in [
            "http://127.0.0.1:9000",
            "http://idp.example.com",
            "ftp://idp.example.com",
            "https://user:pw@idp.example.com",
            "https://idp.example.com/?x=1",
            "https://idp.example.com/#f",
            "idp.example.com",
            "",
        ] {
            assert!(strict.check_issuer(bad).is_err(), "{bad}");
        }
        assert!(lenient.check_issuer("http://127.0.0.1:9000").is_ok());
        assert!(lenient.check_issuer("http://[::1]:9000").is_ok());
        assert!(lenient.check_issuer("http://localhost:9000").is_ok());
        assert!(lenient.check_issuer("http://10.0.0.1:9000").is_err(), "only loopback may be plain http");
        assert!(lenient.check_issuer("http://idp.example.com").is_err());
        for internal in [
            "https://10.0.0.5",
            "https://169.254.169.254",
            "https://192.168.1.1",
            "https://127.0.0.1",
            "https://[::1]",
            "https://[fd00::1]",
            "https://[::ffff:10.0.0.1]",
            "https://0.0.0.0",
            "https://100.64.0.1",
        ] {
            assert!(strict.check_issuer(internal).is_err(), "{internal}");
        }
        assert!(strict.check_issuer("https://93.184.215.14").is_ok(), "a public address");
        assert!(lenient.check_issuer("https://127.0.0.1:8443").is_ok(), "loopback where allowed");
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for public in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.100.1.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
    }

    /// A host name that resolves to loopback is not fetched unless allowed.
    #[tokio::test]
    async fn names_resolving_inside_are_not_fetched() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = Providers::new(false);
        let err = strict.fetch_document(&format!("https://localhost:{port}/metadata"), 1024).await.unwrap_err();
        assert!(error_chain(&err).contains("no public address"), "{}", error_chain(&err));
    }
}

//! The gateway's configuration: upstreams, routes, trusted issuers and how
//! the tenant of a request is found. The same shape is a routes file of its
//! own (`tollgate gateway --routes FILE`) or the `[gateway]` table of the one
//! config file; the platform's own routes join it as typed values, and none
//! of the user's may collide with them. Validated into a [`RouteTable`] and
//! upstream set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::client::Cidr;
use crate::issuers::IssuerConfig;
use crate::quota::RateLimits;
use crate::route::{PLATFORM_RESOURCE, ResourceId, Route, RouteError, RouteLimit, RouteTable, Template};
use tollgate_identity::plans::is_identifier;

/// The gateway's configuration as written, every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default)]
    pub tenant_from: Option<Vec<String>>,
    #[serde(default)]
    pub base_domain: Option<String>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Address blocks of proxies in front of the gateway whose
    /// `X-Forwarded-For` is believed (none by default).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Rate limits the plans do not set: per client address (anonymous
    /// callers) and per person.
    #[serde(default)]
    pub rate_limits: RateLimitsFile,
}

/// Requests per second; 0 turns a limit off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsFile {
    pub per_ip: Option<u64>,
    pub per_user: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub addresses: Vec<String>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
}

impl UpstreamFile {
    /// One address with the default timeouts.
    pub fn at(address: SocketAddr) -> Self {
        Self { addresses: vec![address.to_string()], connect_timeout_ms: None, read_timeout_ms: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    pub path: String,
    pub upstream: String,
    /// HTTP method -> Cedar action.
    pub methods: BTreeMap<String, String>,
    pub resource: ResourceFile,
    /// Send the caller's `Authorization` header on to the upstream. Off by
    /// default: products get the audience-bound assertion, never a platform
    /// credential they could replay against the control plane.
    #[serde(default)]
    pub forward_authorization: bool,
    /// The upstream authenticates callers with a credential of its own (the
    /// SCIM service's tokens): the gateway admits the request as anonymous
    /// without reading its `Authorization`, which it forwards (so this needs
    /// `forward_authorization`). Policies and rate limits for anonymous
    /// callers apply.
    #[serde(default)]
    pub upstream_authenticates: bool,
    /// A plan feature the tenant must have (`reports`): 402 without it.
    #[serde(default)]
    pub feature: Option<String>,
    /// The route's own rate limits (per client address and in all), for
    /// endpoints that cost much, like sign-in.
    #[serde(default)]
    pub rate_limit: Option<RouteLimit>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceFile {
    #[serde(rename = "type")]
    pub type_name: String,
    /// The path parameter holding the id.
    pub param: Option<String>,
    /// A fixed id, for collections.
    pub id: Option<String>,
}

impl GatewayFile {
    /// Adds routes and upstreams the user's may not touch (the platform's,
    /// the demo's): a user upstream with a reserved name, or a user route
    /// with a reserved name or matching any path a reserved route matches,
    /// is an error naming both.
    pub fn with_reserved(mut self, reserved: GatewayFile) -> Result<Self, ConfigError> {
        if let Some(name) = self.upstreams.keys().find(|n| reserved.upstreams.contains_key(*n)) {
            return Err(ConfigError::Reserved(format!("upstream `{name}` is reserved for Tollgate's own routes")));
        }
        for theirs in &self.routes {
            let template = Template::parse(&theirs.name, &theirs.path)?;
            for ours in &reserved.routes {
                let reserved_template = Template::parse(&ours.name, &ours.path)?;
                if theirs.name == ours.name || template.overlaps(&reserved_template) {
                    return Err(ConfigError::Reserved(format!(
                        "route `{}` ({}) collides with Tollgate's route `{}` ({})",
                        theirs.name, theirs.path, ours.name, ours.path
                    )));
                }
            }
        }
        self.upstreams.extend(reserved.upstreams);
        self.routes.extend(reserved.routes);
        self.issuers.extend(reserved.issuers);
        self.trusted_proxies.extend(reserved.trusted_proxies);
        Ok(self)
    }
}

/// Where a request's tenant comes from, in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// The tenant of the token or API key.
    Credential,
    /// The `X-Tenant` header (slug or id).
    Header,
    /// The first label of the host below `base_domain`.
    Subdomain,
}

/// An upstream: its addresses and timeouts.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub addresses: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// The validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub tenant_from: Vec<TenantSource>,
    pub base_domain: Option<String>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub routes: RouteTable,
    /// Trusted external issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    pub rate_limits: RateLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid gateway config: {0}")]
    Parse(String),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("{0}")]
    Reserved(String),
    #[error("upstream `{name}`: {reason}")]
    Upstream { name: String, reason: String },
    #[error("issuer `{issuer}`: {reason}")]
    Issuer { issuer: String, reason: String },
    #[error("invalid `tenant_from` entry `{0}`: expected credential, header or subdomain")]
    TenantSource(String),
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Whether `url` is plain http to this machine (127.0.0.0/8, `[::1]`,
/// `localhost`): the one place a JWKS may be fetched without TLS.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl GatewayConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: GatewayFile = toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        Self::from_file(file)
    }

    /// Validates a configuration as written.
    pub fn from_file(file: GatewayFile) -> Result<Self, ConfigError> {
        let tenant_from = file
            .tenant_from
            .unwrap_or_else(|| vec!["credential".into(), "header".into(), "subdomain".into()])
            .into_iter()
            .map(|s| match s.as_str() {
                "credential" => Ok(TenantSource::Credential),
                "header" => Ok(TenantSource::Header),
                "subdomain" => Ok(TenantSource::Subdomain),
                _ => Err(ConfigError::TenantSource(s)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut upstreams = BTreeMap::new();
        for (name, u) in file.upstreams {
            let bad = |reason: String| ConfigError::Upstream { name: name.clone(), reason };
            if u.addresses.is_empty() {
                return Err(bad("needs at least one address".into()));
            }
            let addresses = u
                .addresses
                .iter()
                .map(|a| {
                    a.parse::<SocketAddr>().map_err(|_| bad(format!("`{a}` is not an address like 127.0.0.1:9000")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            upstreams.insert(
                name.clone(),
                Upstream {
                    name: name.clone(),
                    addresses,
                    connect_timeout: Duration::from_millis(u.connect_timeout_ms.unwrap_or(1_000)),
                    read_timeout: Duration::from_millis(u.read_timeout_ms.unwrap_or(30_000)),
                },
            );
        }
        let mut routes = Vec::new();
        for r in file.routes {
            let invalid = |reason: String| RouteError::Invalid { route: r.name.clone(), reason };
            if !upstreams.contains_key(&r.upstream) {
                return Err(invalid(format!("upstream `{}` is not configured", r.upstream)).into());
            }
            if let Some(m) = r.methods.keys().find(|m| !METHODS.contains(&m.as_str())) {
                return Err(invalid(format!("method `{m}` is not one of {}", METHODS.join(", "))).into());
            }
            let resource_id = match (r.resource.param, r.resource.id) {
                (Some(p), None) => ResourceId::Param(p),
                (None, Some(id)) => ResourceId::Fixed(Arc::from(id)),
                _ => return Err(invalid("resource needs exactly one of `param` or `id`".into()).into()),
            };
            if let Some(feature) = &r.feature {
                if !is_identifier(feature) {
                    return Err(
                        invalid(format!("feature `{feature}` is not a feature name (a-z, 0-9, _ and -)")).into()
                    );
                }
                if r.resource.type_name == PLATFORM_RESOURCE {
                    return Err(invalid(
                        "a route of the platform's own belongs to no tenant and needs no feature".into(),
                    )
                    .into());
                }
            }
            if let Some(limit) = &r.rate_limit
                && (!(1..=86_400).contains(&limit.window_secs)
                    || limit.per_ip == Some(0)
                    || limit.global == Some(0)
                    || (limit.per_ip.is_none() && limit.global.is_none()))
            {
                return Err(invalid(
                    "rate_limit needs `per_ip` or `global` above 0 and `window_secs` between 1 and 86400".into(),
                )
                .into());
            }
            if r.upstream_authenticates && !r.forward_authorization {
                return Err(invalid("`upstream_authenticates` needs `forward_authorization`".into()).into());
            }
            routes.push(Route {
                rate_limit: r.rate_limit,
                feature: r.feature,
                template: Template::parse(&r.name, &r.path)?,
                name: r.name,
                actions: r.methods.into_iter().map(|(method, action)| (method, action.into())).collect(),
                upstream: r.upstream,
                resource_type: r.resource.type_name.into(),
                resource_id,
                forward_authorization: r.forward_authorization,
                upstream_authenticates: r.upstream_authenticates,
            });
        }
        for i in &file.issuers {
            let bad = |reason: &str| ConfigError::Issuer { issuer: i.issuer.clone(), reason: reason.to_owned() };
            if !(i.jwks_url.starts_with("https://") || is_loopback_http(&i.jwks_url)) {
                return Err(bad("`jwks_url` must be an https URL (plain http only on a loopback address)"));
            }
            if i.tenants.is_empty() {
                return Err(bad("`tenants` must name the tenants it may speak for"));
            }
            if i.issuer.is_empty() || i.audience.is_empty() {
                return Err(bad("`issuer` and `audience` must not be empty"));
            }
        }
        let trusted_proxies = file
            .trusted_proxies
            .iter()
            .map(|c| c.parse::<Cidr>().map_err(|reason| ConfigError::Parse(format!("`trusted_proxies`: {reason}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let defaults = RateLimits::default();
        let limit = |value: Option<u64>, default: Option<u64>| match value {
            Some(0) => None,
            Some(v) => Some(v),
            None => default,
        };
        let rate_limits = RateLimits {
            per_ip: limit(file.rate_limits.per_ip, defaults.per_ip),
            per_user: limit(file.rate_limits.per_user, defaults.per_user),
        };
        Ok(Self {
            rate_limits,
            tenant_from,
            base_domain: file.base_domain,
            upstreams,
            routes: RouteTable::new(routes)?,
            issuers: file.issuers,
            trusted_proxies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        tenant_from = ["credential", "header"]
        [upstreams.crm]
        addresses = ["127.0.0.1:9001", "127.0.0.1:9002"]
        [[routes]]
        name = "contact"
        path = "/crm/contacts/{id}"
        upstream = "crm"
        methods = { GET = "contact.read", PATCH = "contact.update" }
        resource = { type = "Contact", param = "id" }
    "#;

    #[test]
    fn parses_routes_and_upstreams() {
        let c = GatewayConfig::from_toml(GOOD).unwrap();
        assert_eq!(c.tenant_from, [TenantSource::Credential, TenantSource::Header]);
        assert_eq!(c.upstreams["crm"].addresses.len(), 2);
        assert_eq!(&*c.routes.route("PATCH", "/crm/contacts/7").unwrap().action, "contact.update");
    }

    #[test]
    fn refuses_what_cannot_work() {
        for (bad, needle) in [
            (GOOD.replace("upstream = \"crm\"", "upstream = \"nope\""), "`nope` is not configured"),
            (GOOD.replace("PATCH =", "FETCH ="), "`FETCH`"),
            (GOOD.replace("127.0.0.1:9002", "localhost"), "`localhost`"),
            (GOOD.replace("param = \"id\"", "param = \"id\", id = \"x\""), "exactly one"),
            (GOOD.replace("\"header\"", "\"cookie\""), "`cookie`"),
            (GOOD.replace("{id}", "{id}/../x"), "normal form"),
            (GOOD.replace("name = \"contact\"", "nam = \"contact\""), "unknown field"),
            (format!("{GOOD}upstream_authenticates = true\n"), "needs `forward_authorization`"),
        ] {
            let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}

#[cfg(test)]
mod issuer_tests {
    use super::*;

    fn with_jwks(url: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_toml(&format!(
            "[[issuers]]\nissuer = \"https://idp.test\"\naudience = \"a\"\njwks_url = \"{url}\"\n\
             tenant_claim = \"org\"\ntenants = [\"acme\"]\n"
        ))
    }

    #[test]
    fn jwks_urls_need_tls_except_on_loopback() {
        for ok in ["https://idp.test/jwks", "http://127.0.0.1:9000/jwks", "http://[::1]:9000/k", "http://localhost/k"] {
            assert!(with_jwks(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.test/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.evil.test/jwks",
            "http://localhost@evil.test/jwks",
            "ftp://idp.test/jwks",
        ] {
            let err = with_jwks(bad).unwrap_err().to_string();
            assert!(err.contains("must be an https URL"), "{bad}: {err}");
        }
    }
}

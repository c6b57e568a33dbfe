//! The tenant stage: which tenant a request acts in, from the credential,
//! the `X-Tenant` header or the host's subdomain (in the configured order),
//! and whether its lifecycle state lets this request through.

use std::sync::Arc;

use tollgate_backend::auth::principal::tenant_refusal;
use tollgate_backend::store::TenantRow;

use crate::config::TenantSource;
use crate::identity::{Caller, Identity};
use crate::reject::Reject;

/// What the request says about its tenant besides the credential.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantHints<'a> {
    pub header: Option<&'a str>,
    pub host: Option<&'a str>,
}

/// The subdomain label of `host` below `base_domain` (`acme.example.test` ->
/// `acme`), ignoring a port.
fn subdomain<'a>(host: &'a str, base_domain: &str) -> Option<&'a str> {
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let label = host.strip_suffix(base_domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

/// Resolves the request's tenant. A credential fixes the tenant: any other
/// source naming a different tenant is refused, so a token for tenant A can
/// never be pointed at tenant B. Anonymous callers may name a tenant by
/// header or subdomain. `None` when nothing names one.
pub async fn resolve(
    identity: &Identity,
    order: &[TenantSource],
    base_domain: Option<&str>,
    caller: &Caller,
    hints: TenantHints<'_>,
    method: &str,
) -> Result<Option<Arc<TenantRow>>, Reject> {
    let credential = match caller {
        Caller::Known(p) => Some(Arc::clone(&p.tenant)),
        Caller::Anonymous => None,
    };
    let mut chosen: Option<Arc<TenantRow>> = None;
    for source in order {
        let named = match source {
            TenantSource::Credential => credential.clone(),
            TenantSource::Header => match hints.header {
                Some(h) => Some(identity.tenant(h.trim()).await?.ok_or(Reject::NotFound)?),
                None => None,
            },
            TenantSource::Subdomain => match (hints.host, base_domain) {
                (Some(host), Some(base)) => match subdomain(host, base) {
                    Some(label) => Some(identity.tenant(label).await?.ok_or(Reject::NotFound)?),
                    None => None,
                },
                _ => None,
            },
        };
        match (&chosen, named) {
            (None, Some(t)) => chosen = Some(t),
            (Some(c), Some(t)) if c.id != t.id => {
                return Err(Reject::Forbidden {
                    detail: "the request names a tenant other than its credential's".into(),
                    policies: Vec::new(),
                });
            }
            _ => {}
        }
    }
    if credential.is_some() && chosen.as_ref().map(|t| &t.id) != credential.as_ref().map(|t| &t.id) {
        // A credential's tenant always applies, whatever the configured order.
        return Err(Reject::Forbidden {
            detail: "the request names a tenant other than its credential's".into(),
            policies: Vec::new(),
        });
    }
    if let Some(tenant) = &chosen {
        check_state(tenant, method)?;
    }
    Ok(chosen)
}

fn check_state(tenant: &TenantRow, method: &str) -> Result<(), Reject> {
    match tenant_refusal(tenant, method == "GET" || method == "HEAD") {
        None => Ok(()),
        Some(detail) => Err(Reject::Forbidden { detail, policies: Vec::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert_eq!(subdomain("acme.tollgate.test", "tollgate.test"), Some("acme"));
        assert_eq!(subdomain("acme.tollgate.test:8080", "tollgate.test"), Some("acme"));
        assert_eq!(subdomain("tollgate.test", "tollgate.test"), None);
        assert_eq!(subdomain("a.b.tollgate.test", "tollgate.test"), None);
        assert_eq!(subdomain("acme.eviltollgate.test", "tollgate.test"), None);
        assert_eq!(subdomain("acme.tollgate.test.evil", "tollgate.test"), None);
    }
}

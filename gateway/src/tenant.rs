//! The tenant stage: which tenant a request acts in, from the credential,
//! the `X-Tenant` header or the host's subdomain (in the configured order),
//! and whether its lifecycle state lets this request through.

use std::future::Future;
use std::sync::Arc;

use tollgate_identity::principal::{Tenant, is_read_only};

use crate::authenticate::Caller;
use crate::config::TenantSource;
use crate::reject::Reject;

/// Tenants by what a request may call them.
pub trait TenantDirectory: Sync {
    /// The tenant with this id, or else this slug.
    fn tenant_named(&self, id_or_slug: &str) -> impl Future<Output = Result<Option<Arc<Tenant>>, Reject>> + Send;
}

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

/// Whether a hint can name a tenant at all (a slug or an id: 1 to 64 of
/// `a-z`, `0-9`, `-`); anything else is answered without a look-up.
fn plausible_name(hint: &str) -> bool {
    (1..=64).contains(&hint.len()) && hint.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The tenant a hint names: 404 when none does.
async fn named(directory: &impl TenantDirectory, hint: &str) -> Result<Arc<Tenant>, Reject> {
    if !plausible_name(hint) {
        return Err(Reject::NotFound);
    }
    directory.tenant_named(hint).await?.ok_or(Reject::NotFound)
}

/// Resolves the request's tenant. A credential fixes the tenant: any other
/// source naming a different tenant is refused, so a token for tenant A can
/// never be pointed at tenant B. Anonymous callers may name a tenant by
/// header or subdomain. `None` when nothing names one.
pub async fn resolve(
    directory: &impl TenantDirectory,
    order: &[TenantSource],
    base_domain: Option<&str>,
    caller: &Caller,
    hints: TenantHints<'_>,
    method: &str,
) -> Result<Option<Arc<Tenant>>, Reject> {
    let credential = match caller {
        Caller::Known(p) => Some(Arc::clone(&p.tenant)),
        Caller::Anonymous => None,
    };
    let mut chosen: Option<Arc<Tenant>> = None;
    for source in order {
        let named = match source {
            TenantSource::Credential => credential.clone(),
            TenantSource::Header => match hints.header {
                Some(h) => Some(named(directory, h.trim()).await?),
                None => None,
            },
            TenantSource::Subdomain => match (hints.host, base_domain) {
                (Some(host), Some(base)) => match subdomain(host, base) {
                    Some(label) => Some(named(directory, label).await?),
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
                    policies: Arc::default(),
                });
            }
            _ => {}
        }
    }
    if credential.is_some() && chosen.as_ref().map(|t| &t.id) != credential.as_ref().map(|t| &t.id) {
        // A credential's tenant always applies, whatever the configured order.
        return Err(Reject::Forbidden {
            detail: "the request names a tenant other than its credential's".into(),
            policies: Arc::default(),
        });
    }
    if let Some(tenant) = &chosen {
        check_state(tenant, method)?;
    }
    Ok(chosen)
}

fn check_state(tenant: &Tenant, method: &str) -> Result<(), Reject> {
    match tenant.refusal(is_read_only(method)) {
        None => Ok(()),
        Some(detail) => Err(Reject::Forbidden { detail, policies: Arc::default() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticate::tests::Memory;

    #[test]
    fn subdomains() {
        assert_eq!(subdomain("acme.tollgate.test", "tollgate.test"), Some("acme"));
        assert_eq!(subdomain("acme.tollgate.test:8080", "tollgate.test"), Some("acme"));
        assert_eq!(subdomain("tollgate.test", "tollgate.test"), None);
        assert_eq!(subdomain("a.b.tollgate.test", "tollgate.test"), None);
        assert_eq!(subdomain("acme.eviltollgate.test", "tollgate.test"), None);
        assert_eq!(subdomain("acme.tollgate.test.evil", "tollgate.test"), None);
    }

    use crate::authenticate::tests::tenant;
    use tollgate_identity::principal::TenantStatus;

    const ORDER: [TenantSource; 3] = [TenantSource::Credential, TenantSource::Header, TenantSource::Subdomain];

    async fn caller_of(m: &mut Memory, user: &str, tenant: &str) -> Caller {
        m.login("tok", user, tenant);
        crate::authenticate::authenticate(&*m, Some("Bearer tok"), "ip").await.unwrap()
    }

    async fn resolve_with(
        m: &Memory,
        caller: &Caller,
        header: Option<&str>,
        host: Option<&str>,
        method: &str,
    ) -> Result<Option<Arc<Tenant>>, Reject> {
        resolve(m, &ORDER, Some("tollgate.test"), caller, TenantHints { header, host }, method).await
    }

    #[tokio::test]
    async fn a_credential_fixes_the_tenant() {
        let mut m = Memory::two_tenants();
        let caller = caller_of(&mut m, "u1", "t1").await;
        let t = resolve_with(&m, &caller, None, None, "GET").await.unwrap().unwrap();
        assert_eq!(t.id, "t1");
        assert_eq!(
            resolve_with(&m, &caller, Some("acme"), Some("acme.tollgate.test"), "GET").await.unwrap().unwrap().id,
            "t1"
        );
        for (header, host) in [(Some("globex"), None), (Some("t2"), None), (None, Some("globex.tollgate.test"))] {
            let err = resolve_with(&m, &caller, header, host, "GET").await.unwrap_err();
            assert!(matches!(err, Reject::Forbidden { .. }), "{header:?} {host:?}: {err:?}");
        }
    }

    #[tokio::test]
    async fn anonymous_callers_may_name_a_tenant() {
        let m = Memory::two_tenants();
        let anonymous = Caller::Anonymous;
        assert!(resolve_with(&m, &anonymous, None, None, "GET").await.unwrap().is_none());
        assert_eq!(resolve_with(&m, &anonymous, Some(" globex "), None, "GET").await.unwrap().unwrap().id, "t2");
        assert_eq!(
            resolve_with(&m, &anonymous, None, Some("acme.tollgate.test:8080"), "GET").await.unwrap().unwrap().id,
            "t1"
        );
        assert_eq!(resolve_with(&m, &anonymous, Some("nope"), None, "GET").await.unwrap_err(), Reject::NotFound);
        let err = resolve_with(&m, &anonymous, Some("acme"), Some("globex.tollgate.test"), "GET").await.unwrap_err();
        assert!(matches!(err, Reject::Forbidden { .. }), "two sources naming two tenants: {err:?}");
    }

    #[tokio::test]
    async fn implausible_hints_cost_no_look_up() {
        let m = Memory::two_tenants();
        let anonymous = Caller::Anonymous;
        for hint in ["Acme", "acme'--", "a b", "", &"a".repeat(65), "acme.corp"] {
            assert_eq!(
                resolve_with(&m, &anonymous, Some(hint), None, "GET").await.unwrap_err(),
                Reject::NotFound,
                "{hint:?}"
            );
        }
        let host = "EVIL_HOST.tollgate.test";
        assert_eq!(resolve_with(&m, &anonymous, None, Some(host), "GET").await.unwrap_err(), Reject::NotFound);
        assert_eq!(m.named_lookups.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(resolve_with(&m, &anonymous, Some("acme"), None, "GET").await.is_ok());
        assert_eq!(m.named_lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_lifecycle_state_applies() {
        let mut m = Memory::two_tenants();
        m.tenants.insert("t2".into(), Arc::new(tenant("t2", "globex", TenantStatus::PendingDeletion)));
        m.tenants.insert("t3".into(), Arc::new(tenant("t3", "initech", TenantStatus::Suspended)));
        let anonymous = Caller::Anonymous;
        assert!(resolve_with(&m, &anonymous, Some("globex"), None, "GET").await.is_ok(), "reads still work");
        let err = resolve_with(&m, &anonymous, Some("globex"), None, "POST").await.unwrap_err();
        assert!(matches!(&err, Reject::Forbidden { detail, .. } if detail.contains("read-only")), "{err:?}");
        let err = resolve_with(&m, &anonymous, Some("initech"), None, "GET").await.unwrap_err();
        assert!(matches!(&err, Reject::Forbidden { detail, .. } if detail.contains("suspended")), "{err:?}");
    }
}

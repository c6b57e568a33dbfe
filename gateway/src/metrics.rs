//! Prometheus metrics of the gateway and the policies, in the default
//! registry, exposed as text by [`render`] on the admin port. What every
//! request records (its stages, cache look-ups, route and upstream
//! latencies, requests by outcome) goes to handles resolved once, not looked
//! up by label values per request, and striped over threads
//! ([`striped`]), so the workers never write each other's cache lines.

mod striped;

use foldhash::HashMap;
use std::hash::Hash;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use prometheus::{Encoder as _, IntCounterVec, Opts, TextEncoder, register_int_counter_vec};

use striped::{Counter, Family, Histogram};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).unwrap_or_else(|_| {
        // Registered already (a second gateway in one process): an unregistered
        // twin keeps the code path alive without double registration.
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("static metric: {e}"))
    })
}

static REQUESTS: LazyLock<&Family<Counter>> = LazyLock::new(|| {
    Family::registered(
        "tollgate_gateway_requests_total",
        "Requests by route, status and decision",
        &["route", "status", "decision"],
    )
});
static REQUEST_SECONDS: LazyLock<&Family<Histogram>> = LazyLock::new(|| {
    Family::registered("tollgate_gateway_request_seconds", "Whole request latency by route", &["route"])
});
static UPSTREAM_SECONDS: LazyLock<&Family<Histogram>> = LazyLock::new(|| {
    Family::registered(
        "tollgate_gateway_upstream_seconds",
        "Time from choosing an upstream to its response headers",
        &["upstream"],
    )
});
static STAGE_SECONDS: LazyLock<[Arc<Histogram>; Stage::ALL.len()]> = LazyLock::new(|| {
    let family = Family::registered("tollgate_gateway_stage_seconds", "Latency of each pipeline stage", &["stage"]);
    Stage::ALL.map(|stage| family.with_label_values(&[stage.as_str()]))
});
static CACHE_LOOKUPS: LazyLock<[Arc<Counter>; Looked::ALL.len()]> = LazyLock::new(|| {
    let family = Family::registered("tollgate_gateway_cache_lookups_total", "Identity cache look-ups", &["cache"]);
    Looked::ALL.map(|cache| family.with_label_values(&[cache.as_str()]))
});
static CACHE_MISSES: LazyLock<[Arc<Counter>; Looked::ALL.len()]> = LazyLock::new(|| {
    let family = Family::registered(
        "tollgate_gateway_cache_misses_total",
        "Identity cache misses (loads from the store)",
        &["cache"],
    );
    Looked::ALL.map(|cache| family.with_label_values(&[cache.as_str()]))
});

/// The pipeline's stages, as their latencies are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Route,
    Authenticate,
    Tenant,
    Entitlements,
    Policy,
    Quota,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Route, Stage::Authenticate, Stage::Tenant, Stage::Entitlements, Stage::Policy, Stage::Quota];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Route => "route",
            Stage::Authenticate => "authenticate",
            Stage::Tenant => "tenant",
            Stage::Entitlements => "entitlements",
            Stage::Policy => "policy",
            Stage::Quota => "quota",
        }
    }
}

/// The gateway's caches, as their look-ups and misses are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    Tokens,
    ExternalTokens,
    Sessions,
    Users,
    Tenants,
    Standings,
    ApiKeys,
    Layers,
    Principals,
    Admissions,
}

impl Looked {
    pub const ALL: [Looked; 10] = [
        Looked::Tokens,
        Looked::ExternalTokens,
        Looked::Sessions,
        Looked::Users,
        Looked::Tenants,
        Looked::Standings,
        Looked::ApiKeys,
        Looked::Layers,
        Looked::Principals,
        Looked::Admissions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Looked::Tokens => "tokens",
            Looked::ExternalTokens => "external_tokens",
            Looked::Sessions => "sessions",
            Looked::Users => "users",
            Looked::Tenants => "tenants",
            Looked::Standings => "standings",
            Looked::ApiKeys => "api_keys",
            Looked::Layers => "layers",
            Looked::Principals => "principals",
            Looked::Admissions => "admissions",
        }
    }
}

/// Counters of one family by their label values, each resolved once: later
/// increments read a shared map, without the family's lock and copies of
/// the labels per request. Only for label values from a bounded set (so a
/// fast hash will do).
struct Resolved<K> {
    family: &'static LazyLock<&'static Family<Counter>>,
    handles: ArcSwap<HashMap<K, Arc<Counter>>>,
}

impl<K: Hash + Eq + Clone> Resolved<K> {
    fn new(family: &'static LazyLock<&'static Family<Counter>>) -> Self {
        Self { family, handles: ArcSwap::default() }
    }

    /// Adds one to the counter of `key`, whose label values are `labels`.
    fn inc<Q>(&self, key: &Q, labels: &[&str])
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(counter) = self.handles.load().get(key) {
            counter.inc();
            return;
        }
        let counter = self.family.with_label_values(labels);
        counter.inc();
        self.handles.rcu(|handles| {
            let mut handles = HashMap::clone(handles);
            handles.insert(key.to_owned(), Arc::clone(&counter));
            handles
        });
    }
}

impl<K> std::fmt::Debug for Resolved<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved").finish_non_exhaustive()
    }
}

/// The latency handles of one route (and of its upstream), resolved when
/// the gateway starts, and its request counters, resolved at first use.
#[derive(Debug)]
pub struct RouteMetrics {
    name: String,
    seconds: Arc<Histogram>,
    /// `None` for requests that matched no route (they reach no upstream).
    upstream_seconds: Option<Arc<Histogram>>,
    /// By status and decision.
    requests: Resolved<(u16, &'static str)>,
}

impl RouteMetrics {
    pub fn new(route: &str, upstream: &str) -> Self {
        Self {
            name: route.to_owned(),
            seconds: REQUEST_SECONDS.with_label_values(&[route]),
            upstream_seconds: Some(UPSTREAM_SECONDS.with_label_values(&[upstream])),
            requests: Resolved::new(&REQUESTS),
        }
    }

    /// What requests that matched no route are counted under.
    pub fn unrouted() -> &'static Self {
        static NONE: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics {
            name: "none".into(),
            seconds: REQUEST_SECONDS.with_label_values(&["none"]),
            upstream_seconds: None,
            requests: Resolved::new(&REQUESTS),
        });
        &NONE
    }

    /// One finished request.
    pub fn request(&self, status: u16, decision: &'static str, took: Duration) {
        let code = http::StatusCode::from_u16(status).ok();
        let status_text = code.as_ref().map_or("0", http::StatusCode::as_str);
        self.requests.inc(&(status, decision), &[self.name.as_str(), status_text, decision]);
        self.seconds.observe(took);
    }

    /// The upstream's latency up to its response headers.
    pub fn upstream(&self, took: Duration) {
        if let Some(histogram) = &self.upstream_seconds {
            histogram.observe(took);
        }
    }
}
static JWKS_REFRESHES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("tollgate_gateway_jwks_refreshes_total", "JWKS fetches of trusted issuers", &["issuer"]));
static POLICY_RELOADS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("tollgate_policy_reloads_total", "Policy reloads by result", &["result"]));
static LIVENESS_FEED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "tollgate_gateway_liveness_feed_readings_total",
        "Readings of the store's liveness feed: read, or failed (every cached fact dropped)",
        &["result"],
    )
});
static LIVENESS_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "tollgate_gateway_liveness_changes_total",
        "Changes the liveness feed named (a change is named again on each reading within its overlap)",
        &[],
    )
});

static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "tollgate_gateway_rate_limited_total",
        "Requests refused (429) by the policy that was exhausted: ip, user, key, tenant or monthly",
        &["policy"],
    )
});
static PLAN_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "tollgate_gateway_plan_refusals_total",
        "Requests refused (402) for a feature outside the plan",
        &["feature"],
    )
});
static API_CALLS: LazyLock<&Family<Counter>> = LazyLock::new(|| {
    Family::registered(
        "tollgate_usage_api_calls_total",
        "API calls counted against tenants' monthly quotas, by plan",
        &["plan"],
    )
});
static USAGE_FLUSHED: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("tollgate_usage_flushed_total", "API calls written to the store by this gateway", &[]));
static PLAN_LIMITS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    let opts = Opts::new("tollgate_plan_limit", "Each plan's limits (-1: unlimited)");
    let labels = &["plan", "limit"];
    prometheus::register_int_gauge_vec!(opts.clone(), labels).unwrap_or_else(|_| {
        prometheus::IntGaugeVec::new(opts, labels).unwrap_or_else(|e| unreachable!("static metric: {e}"))
    })
});

static WORKER_CONNECTIONS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    let opts = Opts::new("tollgate_gateway_connections", "Client connections each proxy worker serves");
    let labels = &["worker"];
    prometheus::register_int_gauge_vec!(opts.clone(), labels).unwrap_or_else(|_| {
        prometheus::IntGaugeVec::new(opts, labels).unwrap_or_else(|e| unreachable!("static metric: {e}"))
    })
});

/// The count of the connections proxy worker `worker` serves.
pub fn worker_connections(worker: usize) -> prometheus::IntGauge {
    WORKER_CONNECTIONS.with_label_values(&[itoa::Buffer::new().format(worker)])
}

static LOG_LINES_DROPPED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    let opts = Opts::new("tollgate_log_lines_dropped", "Log lines dropped because the log writer fell behind");
    prometheus::register_int_gauge!(opts.clone()).unwrap_or_else(|_| {
        prometheus::IntGauge::with_opts(opts).unwrap_or_else(|e| unreachable!("static metric: {e}"))
    })
});
type DroppedLines = Box<dyn Fn() -> usize + Send + Sync>;
static DROPPED_LINES_SOURCE: std::sync::OnceLock<DroppedLines> = std::sync::OnceLock::new();

/// Where the count of dropped log lines is read, at each scrape.
pub fn count_dropped_log_lines(source: impl Fn() -> usize + Send + Sync + 'static) {
    let _ = DROPPED_LINES_SOURCE.set(Box::new(source));
}

/// A request refused by an exhausted rate limit or the monthly quota.
pub fn rate_limited(policy: &str) {
    RATE_LIMITED.with_label_values(&[policy]).inc();
}

/// A request refused for a feature the tenant's plan lacks.
pub fn plan_refusal(feature: &str) {
    PLAN_REFUSALS.with_label_values(&[feature]).inc();
}

/// An API call of a tenant on `plan`, counted against its quota.
pub fn api_call(plan: &str) {
    static BY_PLAN: LazyLock<Resolved<String>> = LazyLock::new(|| Resolved::new(&API_CALLS));
    BY_PLAN.inc(plan, &[plan]);
}

/// API calls written to the store.
pub fn usage_flushed(n: u64) {
    USAGE_FLUSHED.with_label_values::<&str>(&[]).inc_by(n);
}

/// Publishes the catalog's limits.
pub fn plan_limits(catalog: &tollgate_identity::plans::Catalog) {
    for plan in catalog.plans() {
        for limit in tollgate_identity::plans::LimitName::ALL {
            let value = plan.limits.get(limit).map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
            PLAN_LIMITS.with_label_values(&[plan.name.as_str(), limit.as_str()]).set(value);
        }
    }
}

/// One pipeline stage's latency.
pub fn stage(stage: Stage, took: Duration) {
    STAGE_SECONDS[stage as usize].observe(took);
}

/// A look-up in one of the gateway's caches.
pub fn cache_lookup(cache: Looked) {
    CACHE_LOOKUPS[cache as usize].inc();
}

/// A cache look-up that loaded from the store.
pub fn cache_miss(cache: Looked) {
    CACHE_MISSES[cache as usize].inc();
}

/// A fetch of a trusted issuer's JWKS.
pub fn jwks_refresh(issuer: &str) {
    JWKS_REFRESHES.with_label_values(&[issuer]).inc();
}

/// A policy reload: `ok` or `refused`.
pub fn policy_reload(result: &str) {
    POLICY_RELOADS.with_label_values(&[result]).inc();
}

/// A reading of the liveness feed: `read` (naming `changes`) or `failed`.
pub fn liveness_feed(result: &str, changes: usize) {
    LIVENESS_FEED.with_label_values(&[result]).inc();
    LIVENESS_CHANGES.with_label_values::<&str>(&[]).inc_by(changes as u64);
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    // Touch the families so they appear before their first sample.
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&STAGE_SECONDS);
    LazyLock::force(&UPSTREAM_SECONDS);
    LazyLock::force(&CACHE_LOOKUPS);
    LazyLock::force(&CACHE_MISSES);
    LazyLock::force(&POLICY_RELOADS);
    LazyLock::force(&LIVENESS_FEED);
    LazyLock::force(&LIVENESS_CHANGES);
    LazyLock::force(&JWKS_REFRESHES);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&PLAN_REFUSALS);
    LazyLock::force(&API_CALLS);
    LazyLock::force(&USAGE_FLUSHED);
    LazyLock::force(&PLAN_LIMITS);
    if let Some(source) = DROPPED_LINES_SOURCE.get() {
        LOG_LINES_DROPPED.set(i64::try_from(source()).unwrap_or(i64::MAX));
    }
    let mut out = Vec::new();
    if TextEncoder::new().encode(&prometheus::gather(), &mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolved handles are indexed by the enums' values: each value must
    /// sit at its own index in `ALL`, under a name of its own.
    #[test]
    fn each_stage_and_cache_has_its_own_handle() {
        for (i, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(*stage as usize, i, "{}", stage.as_str());
        }
        for (i, cache) in Looked::ALL.iter().enumerate() {
            assert_eq!(*cache as usize, i, "{}", cache.as_str());
        }
        let mut names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        names.extend(Looked::ALL.iter().map(|c| c.as_str()));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "names are distinct");
        // Other tests in this process record too: values none of them reach.
        stage(Stage::Quota, Duration::from_secs(1_000_000));
        CACHE_MISSES[Looked::Layers as usize].inc_by(1 << 40);
        let text = render();
        let value = |prefix: &str, label: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{prefix}{{{label}}} "))).unwrap_or_default();
            line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
        };
        for s in Stage::ALL {
            let sum = value("tollgate_gateway_stage_seconds_sum", &format!("stage=\"{}\"", s.as_str()));
            assert_eq!(sum >= 1e6, s == Stage::Quota, "{}: {sum}", s.as_str());
        }
        for c in Looked::ALL {
            let misses = value("tollgate_gateway_cache_misses_total", &format!("cache=\"{}\"", c.as_str()));
            assert_eq!(misses >= (1u64 << 40) as f64, c == Looked::Layers, "{}: {misses}", c.as_str());
        }
    }

    /// Counters resolved at first use (by label values no other test uses)
    /// count from there on, each under its own labels.
    #[test]
    fn counters_resolved_at_first_use_are_exposed() {
        for _ in 0..3 {
            api_call("test-plan-a");
        }
        api_call("test-plan-b");
        let route = RouteMetrics::new("test-route", "test-upstream");
        route.request(200, "allow", Duration::from_micros(30));
        route.request(200, "allow", Duration::from_micros(70));
        route.request(403, "deny", Duration::from_micros(5));
        route.upstream(Duration::from_millis(2));
        let text = render();
        for line in [
            "tollgate_usage_api_calls_total{plan=\"test-plan-a\"} 3",
            "tollgate_usage_api_calls_total{plan=\"test-plan-b\"} 1",
            "tollgate_gateway_requests_total{decision=\"allow\",route=\"test-route\",status=\"200\"} 2",
            "tollgate_gateway_requests_total{decision=\"deny\",route=\"test-route\",status=\"403\"} 1",
            "tollgate_gateway_request_seconds_bucket{route=\"test-route\",le=\"0.00001\"} 1",
            "tollgate_gateway_request_seconds_bucket{route=\"test-route\",le=\"0.00005\"} 2",
            "tollgate_gateway_request_seconds_count{route=\"test-route\"} 3",
            "tollgate_gateway_upstream_seconds_bucket{upstream=\"test-upstream\",le=\"0.001\"} 0",
            "tollgate_gateway_upstream_seconds_bucket{upstream=\"test-upstream\",le=\"0.0025\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}

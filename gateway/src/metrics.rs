//! Prometheus metrics of the gateway and the policies, in the default
//! registry, exposed as text by [`render`] on the admin port.

use std::sync::LazyLock;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, TextEncoder, register_histogram_vec,
    register_int_counter_vec,
};

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(Opts::new(name, help), labels).unwrap_or_else(|_| {
        // Registered already (a second gateway in one process): an unregistered
        // twin keeps the code path alive without double registration.
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("static metric: {e}"))
    })
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register_histogram_vec!(opts.clone(), labels)
        .unwrap_or_else(|_| HistogramVec::new(opts, labels).unwrap_or_else(|e| unreachable!("static metric: {e}")))
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "tollgate_gateway_requests_total",
        "Requests by route, status and decision",
        &["route", "status", "decision"],
    )
});
static REQUEST_SECONDS: LazyLock<HistogramVec> =
    LazyLock::new(|| histogram("tollgate_gateway_request_seconds", "Whole request latency by route", &["route"]));
static UPSTREAM_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "tollgate_gateway_upstream_seconds",
        "Time from choosing an upstream to its response headers",
        &["upstream"],
    )
});
static STAGE_SECONDS: LazyLock<HistogramVec> =
    LazyLock::new(|| histogram("tollgate_gateway_stage_seconds", "Latency of each pipeline stage", &["stage"]));
static CACHE_LOOKUPS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("tollgate_gateway_cache_lookups_total", "Identity cache look-ups", &["cache"]));
static CACHE_MISSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("tollgate_gateway_cache_misses_total", "Identity cache misses (loads from the store)", &["cache"])
});
static JWKS_REFRESHES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("tollgate_gateway_jwks_refreshes_total", "JWKS fetches of trusted issuers", &["issuer"]));
static POLICY_RELOADS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("tollgate_policy_reloads_total", "Policy reloads by result", &["result"]));

/// One finished request.
pub fn request(route: &str, status: u16, decision: &str, seconds: f64) {
    REQUESTS.with_label_values(&[route, &status.to_string(), decision]).inc();
    REQUEST_SECONDS.with_label_values(&[route]).observe(seconds);
}

/// An upstream's latency up to its response headers.
pub fn upstream(upstream: &str, seconds: f64) {
    UPSTREAM_SECONDS.with_label_values(&[upstream]).observe(seconds);
}

/// One pipeline stage's latency.
pub fn stage(stage: &str, seconds: f64) {
    STAGE_SECONDS.with_label_values(&[stage]).observe(seconds);
}

/// A cache look-up; `miss` when it loaded from the store.
pub fn cache_lookup(cache: &str) {
    CACHE_LOOKUPS.with_label_values(&[cache]).inc();
}

pub fn cache_miss(cache: &str) {
    CACHE_MISSES.with_label_values(&[cache]).inc();
}

/// A fetch of a trusted issuer's JWKS.
pub fn jwks_refresh(issuer: &str) {
    JWKS_REFRESHES.with_label_values(&[issuer]).inc();
}

/// A policy reload: `ok` or `refused`.
pub fn policy_reload(result: &str) {
    POLICY_RELOADS.with_label_values(&[result]).inc();
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
    LazyLock::force(&JWKS_REFRESHES);
    let mut out = Vec::new();
    if TextEncoder::new().encode(&prometheus::gather(), &mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

//! The authorization hot path, stage by stage: routing, one Cedar decision
//! on prepared entities, the whole policy stage (entities built from the
//! cached caller, evaluated, a Permit made), with and without a tenant layer,
//! the forward stage (a client's request turned into the upstream's, its
//! signed assertion shared with the caller's earlier requests), and a cached
//! access token's verification.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pingora::http::RequestHeader;
use tollgate_bench::{TENANT_ID, USER_ID, crm_read_question, crm_read_request, crm_routes, engine, member, tenant};
use tollgate_gateway::forward::{Assertions, Target, prepare_upstream_request};
use tollgate_gateway::policy::{Facts, PreparedSets, Routed, decide};

fn routing(c: &mut Criterion) {
    let config = crm_routes().unwrap();
    let by_id = "/crm/contacts/3f2c1d9e-7a41-4c55-9d1b-0e6f1f0a9c11";
    let dotted = "/crm/./deals/../contacts//3f2c";
    assert_eq!(config.routes.route("GET", dotted).unwrap().path, "/crm/contacts/3f2c");
    assert!(config.routes.route("GET", by_id).is_ok());
    c.bench_function("route/contact-by-id", |b| b.iter(|| config.routes.route(black_box("GET"), black_box(by_id))));
    c.bench_function("route/dot-segments", |b| b.iter(|| config.routes.route(black_box("GET"), black_box(dotted))));
}

fn cedar(c: &mut Criterion) {
    for (name, layer) in [("platform+crm", 0), ("platform+crm+layer-20", 20)] {
        let engine = engine(layer).unwrap();
        let request = crm_read_request(&member(3));
        assert!(engine.evaluate(&request).is_allow(), "the benchmarked request is allowed");
        c.bench_function(&format!("cedar/evaluate/{name}"), |b| b.iter(|| engine.evaluate(black_box(&request))));
        // As the decision point asks: the product's resource checked, the
        // caller's entities (Tollgate's own) beside it unchecked.
        let (product, trusted) = crm_read_question(&member(3));
        assert!(engine.evaluate_beside_trusted(&product, &trusted).is_allow(), "the split request is allowed");
        c.bench_function(&format!("cedar/evaluate-beside-trusted/{name}"), |b| {
            b.iter(|| engine.evaluate_beside_trusted(black_box(&product), &trusted))
        });
    }
}

fn policy_stage(c: &mut Criterion) {
    let config = crm_routes().unwrap();
    let route = config.routes.route("GET", "/crm/contacts").unwrap();
    let target = std::sync::Arc::new(Target::new(&config.upstreams["crm"]).unwrap());
    let routed = Routed { route, target };
    let facts = Facts { method: "GET", source_ip: "127.0.0.1", time: 1_795_000_000 };
    for (name, layer, groups) in
        [("no-layer/0-groups", 0, 0), ("layer-20/3-groups", 20, 3), ("layer-1000/3-groups", 1000, 3)]
    {
        let engine = engine(layer).unwrap();
        let caller = member(groups);
        let tenant = tenant();
        // One caller's requests: its entities prepared by the first.
        let prepared = PreparedSets::default();
        assert!(decide(&engine, &prepared, &caller, Some(tenant.clone()), routed.clone(), &facts).is_ok());
        c.bench_function(&format!("policy-stage/decide/{name}"), |b| {
            b.iter(|| decide(&engine, &prepared, &caller, Some(tenant.clone()), routed.clone(), &facts))
        });
        // A caller's first request: its entities prepared, then evaluated.
        c.bench_function(&format!("policy-stage/first-request/{name}"), |b| {
            b.iter_batched(
                PreparedSets::default,
                |fresh| decide(&engine, &fresh, &caller, Some(tenant.clone()), routed.clone(), &facts),
                BatchSize::SmallInput,
            )
        });
    }
}

fn forward_stage(c: &mut Criterion) {
    let config = crm_routes().unwrap();
    let route = config.routes.route("GET", "/crm/contacts").unwrap();
    let target = std::sync::Arc::new(Target::new(&config.upstreams["crm"]).unwrap());
    let facts = Facts { method: "GET", source_ip: "127.0.0.1", time: 1_795_000_000 };
    let engine = engine(0).unwrap();
    let permit =
        decide(&engine, &PreparedSets::default(), &member(3), Some(tenant()), Routed { route, target }, &facts)
            .unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-forward-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let assertions = Assertions::new(std::sync::Arc::new(key_ring(&runtime, &dir)));
    // A browser-like request, as a client sends it.
    let mut sent = RequestHeader::build("GET", b"/crm/contacts?limit=20", None).unwrap();
    for (name, value) in [
        ("host", "crm.acme.test"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"),
        ("accept", "application/json"),
        ("accept-language", "en-US,en;q=0.5"),
        ("authorization", "Bearer eyJhbGciOiJFZERTQSJ9.e30.c2ln"),
    ] {
        sent.append_header(name, value).unwrap();
    }
    let request_id = http::HeaderValue::from_static("r-1");
    prepare_upstream_request(&mut sent.clone(), &permit, &assertions, &request_id).unwrap();
    c.bench_function("forward/prepare-upstream-request", |b| {
        b.iter_batched(
            || sent.clone(),
            |mut request| prepare_upstream_request(&mut request, &permit, &assertions, black_box(&request_id)),
            BatchSize::SmallInput,
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signing key ring on a fresh SQLite store under `dir`.
fn key_ring(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> tollgate_identity::tokens::KeyRing {
    runtime.block_on(async {
        std::fs::create_dir_all(dir).unwrap();
        let store =
            tollgate_store::Store::connect(&format!("sqlite:{}", dir.join("bench.db").display())).await.unwrap();
        store.migrate().await.unwrap();
        tollgate_identity::tokens::KeyRing::open(store, dir.join("keys"), "https://bench.test".into(), 900)
            .await
            .unwrap()
    })
}

/// An access token verified by the gateway's caches: the first time with
/// its signature, then from the cache by its hash (the benchmarked case;
/// the iteration includes entering the runtime).
fn token_verify(c: &mut Criterion) {
    use tollgate_gateway::authenticate::Verifiers as _;
    let dir = std::env::temp_dir().join(format!("tollgate-bench-verify-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let keys = std::sync::Arc::new(key_ring(&runtime, &dir));
    let (token, _) = keys.issue(USER_ID, TENANT_ID, "s", vec!["member".into()], vec!["pwd".into()]).unwrap();
    let policies = std::sync::Arc::new(tollgate_policies::LivePolicies::fixed(engine(0).unwrap()));
    let catalog =
        std::sync::Arc::new(tollgate_identity::plans::LiveCatalog::new(tollgate_identity::plans::Catalog::builtin()));
    let url = format!("sqlite:{}", dir.join("bench.db").display());
    let caches = tollgate_gateway::caches::Caches::new(keys, url, policies, Vec::new(), catalog);
    assert_eq!(runtime.block_on(caches.access_token(&token)).unwrap().sub, USER_ID);
    c.bench_function("tokens/verify-cached", |b| {
        b.iter(|| runtime.block_on(caches.access_token(black_box(&token))).map(|claims| claims.exp))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(hot_path, routing, cedar, policy_stage, forward_stage, token_verify);
criterion_main!(hot_path);

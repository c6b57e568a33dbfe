//! The authorization hot path, stage by stage: routing, one Cedar decision
//! on prepared entities, and the whole policy stage (entities built from the
//! cached caller, evaluated, a Permit made), with and without a tenant layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate_bench::{crm_read_request, crm_routes, engine, member, tenant};
use tollgate_gateway::forward::Target;
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
    }
}

fn policy_stage(c: &mut Criterion) {
    let config = crm_routes().unwrap();
    let route = config.routes.route("GET", "/crm/contacts").unwrap();
    let target = std::sync::Arc::new(Target::new(&config.upstreams["crm"]).unwrap());
    let routed = Routed { route, target };
    let facts = Facts { method: "GET", source_ip: "127.0.0.1", time: 1_795_000_000 };
    for (name, layer, groups) in [("no-layer/0-groups", 0, 0), ("layer-20/3-groups", 20, 3)] {
        let engine = engine(layer).unwrap();
        let caller = member(groups);
        let tenant = tenant();
        // One caller's requests: its entities prepared by the first.
        let prepared = PreparedSets::default();
        assert!(decide(&engine, &prepared, &caller, Some(tenant.clone()), routed.clone(), &facts).is_ok());
        c.bench_function(&format!("policy-stage/decide/{name}"), |b| {
            b.iter(|| decide(&engine, &prepared, &caller, Some(tenant.clone()), routed.clone(), &facts))
        });
    }
}

criterion_group!(hot_path, routing, cedar, policy_stage);
criterion_main!(hot_path);

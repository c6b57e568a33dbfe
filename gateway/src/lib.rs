//! Tollgate's gateway: the pingora proxy whose admission pipeline
//! authenticates each request, resolves its tenant, checks entitlements,
//! evaluates policy and quotas, and only then forwards it to an upstream with
//! a signed identity assertion. It stands on the identity core, beside the
//! backend, never on it.

pub mod access;
pub mod admissions;
pub mod authenticate;
pub mod caches;
pub mod client;
pub mod config;
pub mod entitlements;
pub mod forward;
pub mod issuers;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod quota;
pub mod reject;
pub mod route;
pub mod tenant;
pub mod workers;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The gateway's whole dependency tree, from the workspace's lock file,
    /// holds neither the backend nor its HTTP framework or password hashing.
    #[test]
    fn the_gateway_stands_beside_the_backend_not_on_it() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let lock: toml::Value = toml::from_str(&lock).unwrap();
        let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for package in lock["package"].as_array().unwrap() {
            let name = package["name"].as_str().unwrap();
            let entry = deps.entry(name).or_default();
            for dep in package.get("dependencies").and_then(|d| d.as_array()).into_iter().flatten() {
                entry.push(dep.as_str().unwrap().split(' ').next().unwrap());
            }
        }
        let mut seen = BTreeSet::new();
        let mut todo = vec!["tollgate-gateway"];
        while let Some(name) = todo.pop() {
            if seen.insert(name) {
                todo.extend(deps.get(name).into_iter().flatten());
            }
        }
        assert!(seen.contains("tollgate-identity") && seen.contains("pingora"), "{seen:?}");
        for banned in ["tollgate-backend", "axum", "argon2"] {
            assert!(!seen.contains(banned), "the gateway depends on `{banned}`");
        }
    }
}

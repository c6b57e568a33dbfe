//! Tollgate's gateway: the request pipeline that authenticates, resolves the
//! tenant, evaluates policy and only then forwards to an upstream.

pub mod config;
pub mod identity;
pub mod issuers;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod reject;
pub mod route;
pub mod tenant;

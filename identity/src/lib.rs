//! Tollgate's identity core, beneath both the gateway and the backend: the
//! domain types built from store rows (principals, actors, tenants with their
//! status, API keys with their parsed scopes), roles and standings, opaque
//! secrets and key formats, signing keys with token signing and verification,
//! the one upstream assertion, Cedar entities with the one standard context,
//! decisions and their log line, plans and tenants' entitlements, tenant policy layers, and the credential
//! loaders (token -> session -> user -> tenant -> standing, key -> ...) that
//! the gateway runs through its caches and the backend straight on the store.

pub mod assertion;
pub mod credentials;
pub mod decision;
pub mod entities;
pub mod feed;
pub mod layers;
pub mod plans;
pub mod principal;
pub mod roles;
pub mod sealed;
pub mod secrets;
pub mod tokens;
pub mod totp;

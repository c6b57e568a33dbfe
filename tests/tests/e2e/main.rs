//! End-to-end tests against the real `tollgate` process, a module per area.

// Test code through and through: a failed unwrap in a helper is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crm;
mod gateway;
mod identity;
mod layering;
mod mail;
mod plans;
mod saml;
mod scim;
mod sso;

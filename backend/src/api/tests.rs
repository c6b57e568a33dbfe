//! API tests: the router driven with `oneshot` on every test database, each
//! endpoint with its hostile cases.

mod accounts;
mod authorize;
mod groups;
mod harness;
mod isolation;
mod keys;
mod members;
mod mfa;
mod plans;
mod policies;
mod reset;
mod scim;
mod session;
mod tenants;
mod verification;

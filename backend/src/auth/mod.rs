//! Authentication: password hashing, opaque secrets, signing keys and access
//! tokens, and the extractor that turns a request's credential into a principal.

pub mod password;
pub mod principal;
pub mod secrets;
pub mod tokens;

//! Authentication on the API: password hashing and the extractor that turns
//! a request's credential into a principal (through the identity core's
//! credential loaders).

pub mod password;
pub mod principal;

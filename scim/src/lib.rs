//! SCIM 2.0 protocol pieces (RFC 7643, RFC 7644) with no HTTP framework in
//! them: the error document and its `scimType`s, attribute paths (of
//! filters, PATCH operations and `attributes` lists), PATCH applied to a
//! resource's JSON, and filters: parsed into a tree and evaluated against
//! one resource (PATCH value filters). Planning the tree into SQL belongs
//! with the store's mapping of SCIM attributes, which comes with the
//! endpoints.

pub mod error;
pub mod filter;
pub mod patch;
pub mod path;

pub use error::{ScimError, ScimType};
pub use filter::{CompareOp, Filter, Literal};
pub use path::{AttrPath, PatchPath};

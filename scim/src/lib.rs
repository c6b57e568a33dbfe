//! SCIM 2.0 protocol pieces (RFC 7643, RFC 7644) with no HTTP framework in
//! them: the error document and its `scimType`s, attribute paths (of
//! filters, PATCH operations and `attributes` lists), PATCH applied to a
//! resource's JSON, and filters: parsed into a tree and evaluated against
//! one resource (PATCH value filters) or planned into SQL against a store's
//! mapping of the attributes (lists); and the supported schemas, which read
//! requests, answer PATCH's questions and write the discovery documents.

pub mod error;
pub mod filter;
pub mod patch;
pub mod path;
pub mod query;
pub mod schema;

pub use error::{ScimError, ScimType};
pub use filter::{CompareOp, Filter, Literal};
pub use path::{AttrPath, PatchPath};

//! SCIM errors as RFC 7644 §3.12 writes them: an HTTP status, a `scimType`
//! for 400s where one applies, and a detail for people.

use serde::Serialize;
use serde_json::{Value, json};

/// The `scimType` values of RFC 7644 §3.12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }

    /// The status that goes with the type (409 for uniqueness, 400 else).
    pub fn status(self) -> u16 {
        match self {
            ScimType::Uniqueness => 409,
            _ => 400,
        }
    }
}

/// A SCIM error: status, optional `scimType`, detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

/// The error schema URI.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

impl ScimError {
    /// An error of `scim_type`, with its status.
    pub fn typed(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self { status: scim_type.status(), scim_type: Some(scim_type), detail: detail.into() }
    }

    /// An error of a status alone (404, 412, 401, ...).
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        Self { status, scim_type: None, detail: detail.into() }
    }

    /// The JSON document (`application/scim+json`).
    pub fn document(&self) -> Value {
        #[derive(Serialize)]
        struct Doc<'a> {
            schemas: [&'a str; 1],
            status: String,
            #[serde(rename = "scimType", skip_serializing_if = "Option::is_none")]
            scim_type: Option<&'a str>,
            detail: &'a str,
        }
        serde_json::to_value(Doc {
            schemas: [ERROR_SCHEMA],
            status: self.status.to_string(),
            scim_type: self.scim_type.map(ScimType::as_str),
            detail: &self.detail,
        })
        .unwrap_or_else(|_| json!({"schemas": [ERROR_SCHEMA], "status": self.status.to_string()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_written_as_the_rfc_says() {
        let e = ScimError::typed(ScimType::Uniqueness, "userName `bjensen` is taken");
        assert_eq!(
            e.document(),
            json!({"schemas": [ERROR_SCHEMA], "status": "409", "scimType": "uniqueness",
                   "detail": "userName `bjensen` is taken"})
        );
        assert!(ScimError::status(404, "no such user").document().get("scimType").is_none());
    }
}

//! Input validation shared by the handlers: emails, names, slugs, role names,
//! pagination. Errors name the field and say what is wrong.

use crate::auth::password;
use crate::problem::{ApiError, FieldError};

/// Collects field errors and fails with all of them at once.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.0.push(FieldError { field: field.to_owned(), message });
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::Validation(self.0)) }
    }
}

/// Trims and lowercases an email.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub fn email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    if ok { Ok(()) } else { Err("must be a valid email address".into()) }
}

/// A display name: 1 to 100 characters after trimming, no control characters.
pub fn name(value: &str) -> Result<(), String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err("must not be empty".into())
    } else if trimmed.chars().count() > 100 {
        Err("must be at most 100 characters".into())
    } else if trimmed.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

pub fn new_password(value: &str) -> Result<(), String> {
    password::check_strength(value).map_err(|e| e.to_string())
}

/// A tenant slug: 3 to 40 of `a-z`, `0-9` and inner `-`.
pub fn slug(value: &str) -> Result<(), String> {
    let ok = (3..=40).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok { Ok(()) } else { Err("must be 3 to 40 characters of a-z, 0-9 and single inner dashes".into()) }
}

/// A slug derived from a name: lowercase ASCII letters and digits joined by
/// dashes, padded or cut to fit [`slug`].
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(32);
    let mut out = out.trim_end_matches('-').to_owned();
    if out.len() < 3 {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str("tenant");
    }
    out
}

/// A machine name (a custom role's, a plan's): 2 to 40 of `a-z`, `0-9`,
/// `-`, `_`, starting with a letter.
pub fn identifier(value: &str) -> Result<(), String> {
    let ok = (2..=40).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err("must be 2 to 40 characters of a-z, 0-9, - and _, starting with a letter".into()) }
}

/// A page size: 1 to 100, 50 when absent.
pub fn limit(value: Option<i64>) -> Result<i64, ApiError> {
    match value {
        None => Ok(50),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(email("a@b.co").is_ok());
        for bad in ["", "a", "a@b", "@b.co", "a@b..co", "a b@c.de", "a@b@c.de", "a@.b.co"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Acme Corp!"), "acme-corp");
        assert_eq!(slugify("ÄÖ"), "tenant");
        assert_eq!(slugify("X"), "x-tenant");
        assert!(slug(&slugify(&"very long name ".repeat(10))).is_ok());
        assert!(slug("-ab").is_err());
        assert!(slug("Ab1").is_err());
    }
}

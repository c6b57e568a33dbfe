//! Decisions: their ids and the one decision log line, written the same way
//! by the gateway, the backend's API and the decision point.

use tollgate_policies::{DeterminingPolicy, Outcome};

/// A new random id (a UUID v4) for a decision, a request or a token: from
/// the thread's CSPRNG, seeded from the OS, so no system call per id;
/// encoded straight into its one allocation.
pub fn new_decision_id() -> String {
    DecisionId::new().as_str().to_owned()
}

/// A random id (a UUID v4, as text) held inline: made, copied and written
/// without an allocation of its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecisionId([u8; uuid::fmt::Hyphenated::LENGTH]);

impl DecisionId {
    /// A new id, from the thread's CSPRNG (seeded from the OS).
    pub fn new() -> Self {
        // One draw of 128 bits (`random::<[u8; 16]>` draws each byte apart).
        let uuid = uuid::Builder::from_random_bytes(rand::random::<u128>().to_ne_bytes()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid.hyphenated().encode_lower(&mut text);
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII: a hyphenated UUID.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for DecisionId {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<[u8]> for DecisionId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The request id a client sent when it is well-formed (1 to 128 of
/// letters, digits and `-_.:`), else a new one. The gateway and the backend
/// both apply this one rule.
pub fn request_id_or_new(sent: Option<&str>) -> String {
    sent.filter(|v| is_request_id(v)).map_or_else(new_decision_id, str::to_owned)
}

/// Whether a client's request id is well-formed (see [`request_id_or_new`]).
pub fn is_request_id(sent: &str) -> bool {
    !sent.is_empty() && sent.len() <= 128 && sent.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Who decided. (The gateway logs its decisions in the request's one
/// access line instead.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// The backend, for a call of the platform's API.
    Api,
    /// The decision point, for a product's question.
    DecisionPoint,
}

impl DecidedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::DecisionPoint => "pdp",
        }
    }
}

/// What one decision was about.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub by: DecidedBy,
    pub decision_id: &'a str,
    /// The tenant's id, empty when the request named none.
    pub tenant: &'a str,
    pub principal: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
}

/// The determining policies with their reasons: `id: reason`.
pub fn reasons(outcome: &Outcome) -> Vec<String> {
    outcome.determining.iter().map(reason_line).collect()
}

/// A determining policy with its reason, `id: reason` (its id alone when it
/// gives none).
pub fn reason_line(policy: &DeterminingPolicy) -> String {
    match &policy.reason {
        Some(reason) => [policy.id.as_str(), ": ", reason].concat(),
        None => policy.id.clone(),
    }
}

/// Writes the decision log line: who decided what about whom, with the
/// determining policies and any evaluation errors.
pub fn log_decision(decided: &Decided<'_>, outcome: &Outcome) {
    tracing::info!(
        decided_by = decided.by.as_str(),
        decision_id = %decided.decision_id,
        tenant = %decided.tenant,
        principal = %decided.principal,
        action = %decided.action,
        resource = %decided.resource,
        decision = if outcome.is_allow() { "allow" } else { "deny" },
        policies = ?reasons(outcome),
        errors = ?outcome.errors,
        "decision"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_lower_case_uuid_v4() {
        let (a, b) = (new_decision_id(), new_decision_id());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(*id, parsed.hyphenated().to_string(), "lower case, hyphenated");
        }
    }

    #[test]
    fn a_well_formed_request_id_is_kept_and_anything_else_replaced() {
        assert_eq!(request_id_or_new(Some("req-1.a:b_c")), "req-1.a:b_c");
        for bad in [Some(""), Some("a b"), Some("x\n"), None] {
            let id = request_id_or_new(bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} -> {id}");
        }
        assert!(uuid::Uuid::parse_str(&request_id_or_new(Some(&"a".repeat(129)))).is_ok());
    }
}

//! Rejections: the expected ways a request is refused before any upstream is
//! chosen, each written as an RFC 9457 problem with a decision id.

use std::sync::Arc;

use serde_json::json;
use tollgate_identity::decision::reason_line;
use tollgate_policies::DeterminingPolicy;

use crate::quota::Standing;
use crate::route::NoRoute;

/// A refusal of the pipeline. `Forbidden` may carry the determining policies
/// for callers allowed to see them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for this path")]
    NotFound,
    /// With the methods the path takes, for the `Allow` header.
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: String },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{detail}")]
    Forbidden { detail: String, policies: Arc<[DeterminingPolicy]> },
    /// The tenant's plan does not include the route's feature.
    #[error("this needs the `{feature}` feature, which the tenant's plan does not include")]
    PaymentRequired { feature: String, plans: Vec<String> },
    /// A rate limit is exhausted for now.
    #[error("rate limit `{}` of {} requests per {} s is exhausted", .0.policy, .0.quota, .0.window)]
    TooManyRequests(Standing),
    /// The tenant used its API calls for the month.
    #[error("the tenant used its {} API calls for this month", .0.quota)]
    QuotaExceeded(Standing),
    /// The request's body did not arrive in time.
    #[error("the request's body did not arrive in time")]
    RequestTimeout,
    #[error("the upstream is unavailable")]
    BadGateway,
    #[error("the upstream did not answer in time")]
    GatewayTimeout,
    #[error("internal error")]
    Internal,
}

impl From<NoRoute> for Reject {
    fn from(e: NoRoute) -> Self {
        match e {
            NoRoute::Path(p) => Reject::BadPath(p.to_string()),
            NoRoute::NotFound => Reject::NotFound,
            NoRoute::MethodNotAllowed { allow } => Reject::MethodNotAllowed { allow },
        }
    }
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadPath(_) | Reject::BadRequest(_) => 400,
            Reject::NotFound => 404,
            Reject::MethodNotAllowed { .. } => 405,
            Reject::Unauthenticated(_) => 401,
            Reject::Forbidden { .. } => 403,
            Reject::PaymentRequired { .. } => 402,
            Reject::TooManyRequests(_) | Reject::QuotaExceeded(_) => 429,
            Reject::RequestTimeout => 408,
            Reject::BadGateway => 502,
            Reject::GatewayTimeout => 504,
            Reject::Internal => 500,
        }
    }

    fn code(&self) -> (&'static str, &'static str) {
        match self {
            Reject::BadPath(_) => ("bad-path", "Bad request path"),
            Reject::BadRequest(_) => ("bad-request", "Bad request"),
            Reject::NotFound => ("not-found", "Not found"),
            Reject::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            Reject::Unauthenticated(_) => ("unauthorized", "Unauthorized"),
            Reject::Forbidden { .. } => ("forbidden", "Forbidden"),
            Reject::PaymentRequired { .. } => ("plan-feature", "The plan does not include this feature"),
            Reject::TooManyRequests(_) => ("rate-limited", "Too many requests"),
            Reject::QuotaExceeded(_) => ("quota-exceeded", "Monthly quota exceeded"),
            Reject::RequestTimeout => ("request-timeout", "Request timeout"),
            Reject::BadGateway => ("bad-gateway", "Bad gateway"),
            Reject::GatewayTimeout => ("gateway-timeout", "Gateway timeout"),
            Reject::Internal => ("internal", "Internal error"),
        }
    }

    /// The problem document; the determining policies only when `explain`.
    pub fn body(&self, decision_id: &str, explain: bool) -> Vec<u8> {
        let (code, title) = self.code();
        let mut problem = json!({
            "type": format!("urn:tollgate:problem:{code}"),
            "title": title,
            "status": self.status(),
            "detail": self.to_string(),
            "decision_id": decision_id,
        });
        match self {
            Reject::Forbidden { policies, .. } if explain => {
                problem["policies"] = json!(policies.iter().map(reason_line).collect::<Vec<_>>());
            }
            Reject::PaymentRequired { feature, plans } => {
                problem["feature"] = json!(feature);
                problem["plans"] = json!(plans);
            }
            Reject::TooManyRequests(s) | Reject::QuotaExceeded(s) => {
                problem["policy"] = json!(s.policy);
                problem["retry_after"] = json!(s.reset);
            }
            _ => {}
        }
        serde_json::to_vec(&problem).unwrap_or_default()
    }

    /// Extra headers: `WWW-Authenticate` on 401; `Allow` on 405;
    /// `Retry-After` and the exhausted policy's `RateLimit-Policy` and
    /// `RateLimit` on 429.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Reject::MethodNotAllowed { allow } => vec![("allow", allow.clone())],
            Reject::Unauthenticated(_) => {
                vec![("www-authenticate", "Bearer realm=\"tollgate\", error=\"invalid_token\"".to_owned())]
            }
            Reject::TooManyRequests(s) | Reject::QuotaExceeded(s) => vec![
                ("retry-after", s.reset.to_string()),
                ("ratelimit-policy", s.policy_field()),
                ("ratelimit", s.field()),
            ],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_status_decision_and_only_explained_policies() {
        let policies = [
            DeterminingPolicy { id: "p1".into(), reason: None },
            DeterminingPolicy { id: "p2".into(), reason: Some("members only".into()) },
        ];
        let r = Reject::Forbidden { detail: "not allowed to `contact.read`".into(), policies: policies.into() };
        let hidden: serde_json::Value = serde_json::from_slice(&r.body("d-1", false)).unwrap();
        assert_eq!((hidden["status"].as_u64(), hidden["decision_id"].as_str()), (Some(403), Some("d-1")));
        assert!(hidden.get("policies").is_none());
        let shown: serde_json::Value = serde_json::from_slice(&r.body("d-1", true)).unwrap();
        assert_eq!(shown["policies"], json!(["p1", "p2: members only"]));
        assert_eq!(Reject::Unauthenticated("x").headers()[0].0, "www-authenticate");
        let r = Reject::from(NoRoute::MethodNotAllowed { allow: "GET, HEAD".into() });
        assert_eq!((r.status(), r.headers()), (405, vec![("allow", "GET, HEAD".to_owned())]));
    }
}

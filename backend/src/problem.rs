//! The one place where failures become responses: RFC 9457 problem+json with
//! a stable type, a human title and detail, and never an internal message.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use tollgate_identity::tokens::KeyError;
use tollgate_store::StoreError;

/// A field that failed validation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every way an API call can fail. Expected outcomes carry what the caller
/// may see; `Internal` carries what only the log may see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{detail}")]
    Forbidden { detail: String, decision: Option<String> },
    #[error("resource not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// The tenant's plan allows no more of what `limit` counts (402).
    #[error("the `{plan}` plan allows at most {value} for `{limit}`")]
    PlanLimit { limit: &'static str, value: u64, plan: String },
    /// The tenant's plan lacks a feature (402), with the plans that have it.
    #[error("the tenant's plan does not include `{feature}`")]
    FeatureMissing { feature: &'static str, plans: Vec<String> },
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: i64 },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: i64 },
    /// A service the call depends on (an identity provider) failed (502).
    #[error("{0}")]
    BadGateway(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("request body must be `application/json`")]
    UnsupportedMediaType,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError { field: field.to_owned(), message: message.into() }])
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::Forbidden { detail: detail.into(), decision: None }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PlanLimit { .. } => (StatusCode::PAYMENT_REQUIRED, "plan-limit", "Plan limit reached"),
            ApiError::FeatureMissing { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "feature-not-in-plan", "Feature not in plan")
            }
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many requests")
            }
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database error: {e}"))
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
    /// A plan limit's name, its value and the plan, on 402.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a str>,
    /// A missing feature and the plans that include it, on 402.
    #[serde(skip_serializing_if = "Option::is_none")]
    feature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plans: Option<&'a [String]>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        if let ApiError::Internal(message) = &self {
            tracing::error!(error = %message, "request failed");
        }
        let problem = Problem {
            type_uri: format!("urn:tollgate:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                ApiError::Validation(errors) => Some(errors),
                _ => None,
            },
            decision_id: match &self {
                ApiError::Forbidden { decision, .. } => decision.as_deref(),
                _ => None,
            },
            limit: match &self {
                ApiError::PlanLimit { limit, .. } => Some(limit),
                _ => None,
            },
            value: match &self {
                ApiError::PlanLimit { value, .. } => Some(*value),
                _ => None,
            },
            plan: match &self {
                ApiError::PlanLimit { plan, .. } => Some(plan.as_str()),
                _ => None,
            },
            feature: match &self {
                ApiError::FeatureMissing { feature, .. } => Some(feature),
                _ => None,
            },
            plans: match &self {
                ApiError::FeatureMissing { plans, .. } => Some(plans),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollgate\", error=\"invalid_token\""),
                );
            }
            ApiError::TooManyRequests { retry_after, .. } | ApiError::Unavailable { retry_after, .. } => {
                if let Ok(v) = HeaderValue::from_str(&(*retry_after).max(1).to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

/// `Json` whose rejections are problems: 415 without a JSON content type, 413
/// past the body limit, 400 for malformed JSON or the wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                JsonRejection::JsonDataError(e) => ApiError::BadRequest(format!("invalid body: {}", e.body_text())),
                JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest("body is not valid JSON".into()),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::BadRequest("cannot read request body".into()),
            }),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::NotFound
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query: {}", e.body_text()))
    }
}

/// The JSON answer to any route the API does not have.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The JSON answer to a known path with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `Query` whose rejection is a 400 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// `Path` whose rejection is a 404 problem: a path that does not parse names
/// nothing that exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

impl From<crate::auth::password::HashingError> for ApiError {
    fn from(e: crate::auth::password::HashingError) -> Self {
        match e {
            crate::auth::password::HashingError::Busy => ApiError::Unavailable {
                detail: "too many password checks in progress; try again".into(),
                retry_after: 1,
            },
            crate::auth::password::HashingError::Failed => ApiError::Internal(e.to_string()),
        }
    }
}

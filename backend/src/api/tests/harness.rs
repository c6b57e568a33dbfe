//! A test app per database and helpers to call it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_policies::{LivePolicies, PolicyEngine};
use tower::ServiceExt;

use crate::state::{AppState, BackendConfig};
use crate::{app, build_state};
use tollgate_store::testing::{TestDb, databases};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub db: TestDb,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// A signed-up owner: ids and a fresh access token.
#[derive(Clone, Debug)]
pub struct Account {
    pub user_id: String,
    pub tenant_id: String,
    pub token: String,
    pub refresh: String,
}

/// One app per test database.
pub async fn apps() -> Vec<TestApp> {
    apps_with(|| PolicyEngine::builtin().unwrap()).await
}

/// One app per test database, with the policies `engine` makes.
pub async fn apps_with(engine: impl Fn() -> PolicyEngine) -> Vec<TestApp> {
    let mut out = Vec::new();
    for db in databases().await {
        let mut config = BackendConfig::new(db.dir.clone(), "http://tollgate.test".into());
        config.secure_cookies = true;
        let engine = Arc::new(LivePolicies::fixed(engine()));
        let state = build_state(db.store.clone(), engine, config).await.unwrap();
        out.push(TestApp { router: app(state.clone()), state, db });
    }
    out
}

impl TestApp {
    pub fn label(&self) -> &'static str {
        self.db.label
    }

    pub async fn request(&self, req: Request<Body>) -> Reply {
        let scim = req.uri().path().starts_with("/scim/");
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if !status.is_success() && status != StatusCode::NOT_MODIFIED {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if scim {
                // RFC 7644 §3.12: the status as a string, in a SCIM error document.
                assert_eq!(ct, "application/scim+json", "{}: SCIM errors: {status} {body}", self.label());
                assert_eq!(body["schemas"], json!([tollgate_scim::error::ERROR_SCHEMA]), "{}", self.label());
                assert_eq!(body["status"], json!(status.as_u16().to_string()), "{}", self.label());
            } else {
                assert_eq!(
                    ct,
                    "application/problem+json",
                    "{}: errors are problem+json: {status} {body}",
                    self.label()
                );
                assert_eq!(body["status"], json!(status.as_u16()), "{}", self.label());
            }
        }
        Reply { status, headers, body }
    }

    /// Sends `n` copies of a JSON POST at once; returns their statuses.
    pub async fn post_concurrently(&self, n: usize, path: &str, body: Value) -> Vec<StatusCode> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let router = self.router.clone();
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            set.spawn(async move { router.oneshot(req).await.unwrap().status() });
        }
        set.join_all().await
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    /// A call with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(body) => {
                req.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
            }
            None => req.body(Body::empty()).unwrap(),
        };
        self.request(req).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Option<Value>) -> Reply {
        self.call(Method::PUT, path, Some(token), body).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn login(&self, email: &str, tenant: Option<&str>) -> Reply {
        let mut body = json!({"email": email, "password": PASSWORD});
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        self.post("/api/v1/auth/login", None, body).await
    }

    /// Signs up `email` with a tenant named `tenant_name` and logs in.
    pub async fn owner(&self, email: &str, tenant_name: &str) -> Account {
        let r = self
            .post(
                "/api/v1/auth/signup",
                None,
                json!({"email": email, "password": PASSWORD, "name": "Owner", "tenant_name": tenant_name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}: {r:?}", self.label());
        let r = self.login(email, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", self.label());
        account(&r)
    }

    /// Invites `email` into `owner`'s tenant with `role`, accepts as a new
    /// user, and logs in there.
    pub async fn member(&self, owner: &Account, email: &str, role: &str) -> Account {
        let token = self.invite(owner, email, role).await;
        let r = self
            .post("/api/v1/invitations/accept", None, json!({"token": token, "name": "Member", "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", self.label());
        let r = self.login(email, Some(&owner.tenant_id)).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", self.label());
        account(&r)
    }

    /// Creates an invitation and returns the token from the outbox mail.
    pub async fn invite(&self, by: &Account, email: &str, role: &str) -> String {
        let r = self
            .post(
                &format!("/api/v1/tenants/{}/invitations", by.tenant_id),
                Some(&by.token),
                json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", self.label());
        self.mailed_token(email, "tgi_").await
    }

    /// The token starting with `prefix` in the newest mail to `email` that
    /// has one.
    pub async fn mailed_token(&self, email: &str, prefix: &str) -> String {
        let mut tx = self.state.store.tx().await.unwrap();
        let mails = tollgate_store::outbox(&mut tx, Some(email), 100).await.unwrap();
        let body = &mails.iter().find(|m| m.body.contains(prefix)).expect("a mail with the token").body;
        let start = body.find(prefix).unwrap();
        body[start..].chars().take_while(|c| *c != '"').collect()
    }

    /// Makes `email` a platform administrator.
    pub async fn make_platform_admin(&self, email: &str) {
        let mut tx = self.state.store.tx().await.unwrap();
        assert!(tollgate_store::set_platform_admin(&mut tx, email, true).await.unwrap());
        tx.commit().await.unwrap();
    }
}

pub fn account(login: &Reply) -> Account {
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    let claims = decode_claims(&token);
    Account {
        user_id: claims["sub"].as_str().unwrap().to_owned(),
        tenant_id: claims["tid"].as_str().unwrap().to_owned(),
        token,
        refresh: login.body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// The claims of a JWT, unverified (for assertions only).
pub fn decode_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

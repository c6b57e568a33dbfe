//! The caller's profile, password and settings.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::harness::{PASSWORD, apps};

#[tokio::test]
async fn settings_merge_patch_with_validated_theme() {
    for app in apps().await {
        let a = app.owner("set@x.test", "Set").await;
        let r = app.get("/api/v1/me/settings", &a.token).await;
        assert_eq!(r.body["preferences"]["theme"]["mode"], "system", "{}: {r:?}", app.label());

        let r = app
            .patch("/api/v1/me/settings", &a.token, json!({"preferences": {"theme": {"mode": "dark"}, "lang": "en"}}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body["preferences"]["theme"]["mode"], "dark");
        assert_eq!(r.body["preferences"]["theme"]["prefersReducedMotion"], false);

        for bad in [
            json!({"preferences": {"theme": {"mode": "purple"}}}),
            json!({"preferences": {"theme": {"prefersReducedMotion": "yes"}}}),
            json!({"preferences": {"theme": 3}}),
            json!({"preferences": {"blob": "x".repeat(20_000)}}),
        ] {
            let r = app.patch("/api/v1/me/settings", &a.token, bad).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
        }
        let r = app.patch("/api/v1/me/settings", &a.token, json!({"theme": {"mode": "light"}})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown top-level field: {r:?}");

        // Nothing was lost by the refused patches; null removes a key.
        let r = app.patch("/api/v1/me/settings", &a.token, json!({"preferences": {"lang": null}})).await;
        assert_eq!(r.body["preferences"]["theme"]["mode"], "dark");
        assert!(r.body["preferences"].get("lang").is_none(), "{r:?}");
        let r = app.get("/api/v1/me/settings", &a.token).await;
        assert_eq!(r.body["preferences"]["theme"]["mode"], "dark");
    }
}

#[tokio::test]
async fn profile_and_password_changes() {
    for app in apps().await {
        let a = app.owner("me@x.test", "Me").await;
        let r = app.patch("/api/v1/me", &a.token, json!({"name": "Grace"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
        assert_eq!(r.body["user"]["name"], "Grace");

        let r = app.patch("/api/v1/me", &a.token, json!({"platform_admin": true})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "no mass assignment: {r:?}");
        let r = app.patch("/api/v1/me", &a.token, json!({"email": "x@y.test"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);

        let other_session = super::harness::account(&app.login("me@x.test", None).await);
        let new_pw = "a much better passphrase";
        let r = app.patch("/api/v1/me", &a.token, json!({"password": new_pw})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "needs the current password: {r:?}");
        let r =
            app.patch("/api/v1/me", &a.token, json!({"password": new_pw, "current_password": "wrong password!"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.patch("/api/v1/me", &a.token, json!({"password": new_pw, "current_password": PASSWORD})).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(app.get("/api/v1/me", &a.token).await.status, StatusCode::OK, "the changing session stays");
        let r = app.get("/api/v1/me", &other_session.token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "other sessions end with the old password");
        assert_eq!(app.login("me@x.test", None).await.status, StatusCode::UNAUTHORIZED);
        let r = app.post("/api/v1/auth/login", None, json!({"email": "me@x.test", "password": new_pw})).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn system_endpoints_and_unknown_routes() {
    for app in apps().await {
        assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
        let r = app.call(Method::GET, "/readyz", None, None).await;
        assert_eq!(r.body["status"], "ready", "{}", app.label());
        let jwks = app.call(Method::GET, "/.well-known/jwks.json", None, None).await.body;
        let key = &jwks["keys"][0];
        assert_eq!((key["kty"].as_str(), key["alg"].as_str()), (Some("OKP"), Some("EdDSA")));
        assert!(key.get("d").is_none(), "no private material");
        let doc = app.call(Method::GET, "/api/v1/openapi.json", None, None).await.body;
        assert_eq!(doc["openapi"], "3.1.0");
        for path in ["/api/v1/auth/login", "/api/v1/me/settings", "/api/v1/tenants/{tenant_id}/members/{user_id}"] {
            assert!(doc["paths"].get(path).is_some(), "{path} in the OpenAPI document");
        }
        assert_eq!(doc["paths"]["/api/v1/me"]["patch"]["security"][0]["bearer"], json!([]));
        let signup =
            &doc["paths"]["/api/v1/auth/signup"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(signup["additionalProperties"], false, "{signup}");
        let required: Vec<&str> = signup["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, ["email", "password", "name"]);
        let r = app.call(Method::GET, "/api/v1/nothing-here", None, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app.call(Method::PUT, "/api/v1/auth/login", None, None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

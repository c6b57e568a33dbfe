//! Plans, entitlements and their overrides, count limits (402) that
//! concurrent requests cannot overshoot, and products' usage reports.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::harness::{PASSWORD, TestApp, apps};

async fn key_with(app: &TestApp, tenant: &str, token: &str, scopes: Value) -> String {
    let r = app
        .post(&format!("/api/v1/tenants/{tenant}/api-keys"), Some(token), json!({"name": "k", "scopes": scopes}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", app.label());
    r.body["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_catalog_is_public_and_entitlements_show_their_sources() {
    for app in apps().await {
        let l = app.label();
        let r = app.call(Method::GET, "/api/v1/plans", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{l}");
        let names: Vec<&str> =
            r.body["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["enterprise", "free", "pro"], "{l}");
        let pro = r.body["items"].as_array().unwrap().iter().find(|p| p["name"] == "pro").unwrap();
        assert!(pro["features"].as_array().unwrap().contains(&json!("reports")), "{l}: {pro}");
        assert_eq!(r.body["items"][0]["limits"]["max_members"], Value::Null, "{l}: enterprise is unlimited");

        let owner = app.owner("ent@x.test", "Entitled").await;
        let root = app.owner("root@ent.test", "Platform").await;
        let t = &owner.tenant_id;
        let path = format!("/api/v1/tenants/{t}/entitlements");
        let r = app.get(&path, &owner.token).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(r.body["plan"], "free", "{l}");
        assert_eq!(r.body["features"]["reports"], json!({"enabled": false, "source": "plan"}), "{l}");
        assert_eq!(r.body["limits"]["max_members"]["source"], "plan", "{l}");

        let grant = json!({
            "features": {"reports": {"enabled": true, "expires_at": "2999-01-01T00:00:00Z"}},
            "limits": {"max_members": {"value": 40}, "api_calls_per_month": {"value": null}}
        });
        assert_eq!(app.put(&path, &owner.token, Some(grant.clone())).await.status, StatusCode::FORBIDDEN, "{l}");
        assert_eq!(app.get(&path, &root.token).await.status, StatusCode::NOT_FOUND, "{l}: another tenant's");
        app.make_platform_admin("root@ent.test").await;
        let r = app.put(&path, &root.token, Some(grant)).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(
            r.body["features"]["reports"],
            json!({"enabled": true, "source": "override", "expires_at": "2999-01-01T00:00:00Z"}),
            "{l}"
        );
        assert_eq!(r.body["limits"]["max_members"], json!({"value": 40, "source": "override", "expires_at": null}));
        assert_eq!(r.body["limits"]["api_calls_per_month"]["value"], Value::Null, "{l}: lifted");
        let r = app.get(&path, &owner.token).await;
        assert_eq!(r.body["features"]["reports"]["enabled"], true, "{l}: the tenant sees it");

        for (bad, field) in [
            (json!({"limits": {"max_memberz": {"value": 1}}}), "limits.max_memberz"),
            (json!({"features": {"Reports!": {"enabled": true}}}), "features.Reports!"),
            (
                json!({"features": {"sso": {"enabled": true, "expires_at": "2001-01-01T00:00:00Z"}}}),
                "features.sso.expires_at",
            ),
            (json!({"features": {"sso": {"enabled": true, "expires_at": "tomorrow"}}}), "features.sso.expires_at"),
        ] {
            let r = app.put(&path, &root.token, Some(bad)).await;
            assert_eq!(
                (r.status, r.body["errors"][0]["field"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
                "{l}: {r:?}"
            );
        }
        let r = app.get(&path, &owner.token).await;
        assert_eq!(r.body["limits"]["max_members"]["value"], 40, "{l}: refused writes changed nothing");

        // A plan must be in the catalog.
        let r = app.put(&format!("/api/v1/tenants/{t}/plan"), &root.token, Some(json!({"plan": "gold"}))).await;
        assert_eq!(
            (r.status, r.body["errors"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")),
            "{l}"
        );
    }
}

#[tokio::test]
async fn key_and_member_limits_answer_402_and_leave_nothing_half_made() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("lim@x.test", "Limited").await;
        let root = app.owner("root@lim.test", "Platform").await;
        app.make_platform_admin("root@lim.test").await;
        let t = owner.tenant_id.clone();
        let path = format!("/api/v1/tenants/{t}/entitlements");
        let r = app
            .put(
                &path,
                &root.token,
                Some(json!({"limits": {"max_api_keys": {"value": 2}, "max_members": {"value": 3}}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");

        let keys = format!("/api/v1/tenants/{t}/api-keys");
        let first = app.post(&keys, Some(&owner.token), json!({"name": "a", "scopes": ["members:read"]})).await;
        assert_eq!(first.status, StatusCode::CREATED, "{l}");
        key_with(&app, &t, &owner.token, json!(["members:read"])).await;
        let r = app.post(&keys, Some(&owner.token), json!({"name": "c", "scopes": ["members:read"]})).await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{l}: {r:?}");
        assert_eq!(
            (r.body["limit"].as_str(), r.body["value"].as_u64(), r.body["plan"].as_str()),
            (Some("max_api_keys"), Some(2), Some("free")),
            "{l}"
        );
        assert_eq!(app.get(&keys, &owner.token).await.body["items"].as_array().unwrap().len(), 2, "{l}: no third key");
        let id = first.body["api_key"]["id"].as_str().unwrap();
        assert_eq!(app.delete(&format!("{keys}/{id}"), &owner.token).await.status, StatusCode::NO_CONTENT);
        key_with(&app, &t, &owner.token, json!(["members:read"])).await;

        // Five invitations accepted at once into room for two more members.
        let mut tokens = Vec::new();
        for i in 0..5 {
            tokens.push(app.invite(&owner, &format!("join{i}@x.test"), "viewer").await);
        }
        let mut set = tokio::task::JoinSet::new();
        for token in &tokens {
            let body = json!({"token": token, "name": "Joiner", "password": PASSWORD}).to_string();
            let req = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/invitations/accept")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            let router = app.router.clone();
            set.spawn(async move { router.oneshot(req).await.unwrap().status() });
        }
        let statuses = set.join_all().await;
        let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
        let refused = statuses.iter().filter(|s| **s == StatusCode::PAYMENT_REQUIRED).count();
        assert_eq!((created, refused), (2, 3), "{l}: {statuses:?}");
        let members = app.get(&format!("/api/v1/tenants/{t}/members"), &owner.token).await;
        assert_eq!(members.body["items"].as_array().unwrap().len(), 3, "{l}");

        // A refused invitation is still good once there is room, and made no account.
        let refused_token = tokens
            .iter()
            .enumerate()
            .find(|(i, _)| {
                !members.body["items"].as_array().unwrap().iter().any(|m| m["email"] == format!("join{i}@x.test"))
            })
            .map(|(_, t)| t.clone())
            .unwrap();
        let r = app.put(&path, &root.token, Some(json!({"limits": {"max_members": {"value": 10}}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{l}");
        let r = app
            .post(
                "/api/v1/invitations/accept",
                None,
                json!({"token": refused_token, "name": "Late", "password": PASSWORD}),
            )
            .await;
        assert_eq!((r.status, r.body["user"]["name"].as_str()), (StatusCode::CREATED, Some("Late")), "{l}: {r:?}");
    }
}

async fn report(app: &TestApp, token: &str, key: Option<&str>, body: Value) -> super::harness::Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/usage")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    app.request(req.body(Body::from(body.to_string())).unwrap()).await
}

#[tokio::test]
async fn products_report_usage_once_per_idempotency_key() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("use@x.test", "Metered").await;
        let viewer = app.member(&owner, "viewer@use.test", "viewer").await;
        let t = owner.tenant_id.clone();
        let product = key_with(&app, &t, &owner.token, json!(["usage:write"])).await;
        let body = json!({"metric": "reports.generated", "quantity": 3});

        let first = report(&app, &product, Some("run-42"), body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{l}: {first:?}");
        let again = report(&app, &product, Some("run-42"), body.clone()).await;
        assert_eq!((again.status, &again.body), (StatusCode::CREATED, &first.body), "{l}: answered the same");
        assert_eq!(again.headers["idempotent-replayed"], "true", "{l}");
        let other = report(&app, &product, Some("run-42"), json!({"metric": "reports.generated", "quantity": 4})).await;
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: a key names one report: {other:?}");
        assert_eq!(report(&app, &product, None, body.clone()).await.status, StatusCode::CREATED, "{l}");
        assert_eq!(report(&app, &product, Some("run-43"), body.clone()).await.status, StatusCode::CREATED, "{l}");

        for (bad, what) in [
            (json!({"metric": "api_calls", "quantity": 1}), "the gateway's metric"),
            (json!({"metric": "platform_calls", "quantity": 1}), "the gateway's other metric"),
            (json!({"metric": "Bad Metric", "quantity": 1}), "a bad name"),
            (json!({"metric": "x", "quantity": 0}), "nothing"),
            (json!({"metric": "x", "quantity": 2_000_000_000_i64}), "too much"),
        ] {
            assert_eq!(report(&app, &product, None, bad).await.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {what}");
        }
        let r = report(&app, &product, Some("has space"), body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: {r:?}");
        assert_eq!(
            report(&app, &owner.token, None, body.clone()).await.status,
            StatusCode::FORBIDDEN,
            "{l}: people do not report"
        );
        let reader = key_with(&app, &t, &owner.token, json!(["members:read"])).await;
        assert_eq!(report(&app, &reader, None, body).await.status, StatusCode::FORBIDDEN, "{l}: needs `usage:write`");

        let usage = format!("/api/v1/tenants/{t}/usage");
        let r = app.get(&usage, &owner.token).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(r.body["metrics"]["reports.generated"], json!({"used": 9, "limit": null}), "{l}: 3 + 3 + 3");
        assert_eq!(r.body["metrics"]["api_calls"]["limit"], 100_000, "{l}");
        assert_eq!(r.body["counts"]["api_keys"], json!({"used": 2, "limit": 3}), "{l}");
        assert_eq!(r.body["counts"]["members"], json!({"used": 2, "limit": 5}), "{l}");
        assert_eq!(app.get(&usage, &viewer.token).await.status, StatusCode::FORBIDDEN, "{l}: admins read usage");
    }
}

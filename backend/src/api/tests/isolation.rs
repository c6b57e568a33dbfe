//! Tenant isolation: tenant A's admin reaching tenant B's members, keys,
//! invitations, roles or settings by id gets 404, by any path.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::apps;

#[tokio::test]
async fn another_tenants_resources_are_not_found() {
    for app in apps().await {
        let a = app.owner("a@a.test", "Tenant A").await;
        let b = app.owner("b@b.test", "Tenant B").await;
        let b_member = app.member(&b, "bm@b.test", "member").await;
        let l = app.label();
        let r = app
            .post(
                &format!("/api/v1/tenants/{}/api-keys", b.tenant_id),
                Some(&b.token),
                json!({"name": "b", "scopes": ["*"]}),
            )
            .await;
        let b_key = r.body["api_key"]["id"].as_str().unwrap().to_owned();
        let b_key_secret = r.body["secret"].as_str().unwrap().to_owned();
        app.invite(&b, "pending@b.test", "viewer").await;
        let b_inv =
            app.get(&format!("/api/v1/tenants/{}/invitations", b.tenant_id), &b.token).await.body["items"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned();

        let (ta, tb) = (&a.tenant_id, &b.tenant_id);
        let attempts = [
            ("GET", format!("/api/v1/tenants/{tb}"), None),
            ("PATCH", format!("/api/v1/tenants/{tb}"), Some(json!({"settings": {"pwned": true}}))),
            ("DELETE", format!("/api/v1/tenants/{tb}"), None),
            ("GET", format!("/api/v1/tenants/{tb}/members"), None),
            ("PATCH", format!("/api/v1/tenants/{tb}/members/{}", b_member.user_id), Some(json!({"role": "viewer"}))),
            ("DELETE", format!("/api/v1/tenants/{tb}/members/{}", b_member.user_id), None),
            ("GET", format!("/api/v1/tenants/{tb}/invitations"), None),
            (
                "POST",
                format!("/api/v1/tenants/{tb}/invitations"),
                Some(json!({"email": "spy@a.test", "role": "owner"})),
            ),
            ("DELETE", format!("/api/v1/tenants/{tb}/invitations/{b_inv}"), None),
            ("GET", format!("/api/v1/tenants/{tb}/api-keys"), None),
            ("POST", format!("/api/v1/tenants/{tb}/api-keys"), Some(json!({"name": "x", "scopes": ["*"]}))),
            ("DELETE", format!("/api/v1/tenants/{tb}/api-keys/{b_key}"), None),
            ("GET", format!("/api/v1/tenants/{tb}/roles"), None),
            ("GET", format!("/api/v1/tenants/{tb}/service-accounts"), None),
            // B's ids under A's own tenant path.
            ("PATCH", format!("/api/v1/tenants/{ta}/members/{}", b_member.user_id), Some(json!({"role": "viewer"}))),
            ("DELETE", format!("/api/v1/tenants/{ta}/members/{}", b.user_id), None),
            ("DELETE", format!("/api/v1/tenants/{ta}/api-keys/{b_key}"), None),
            ("DELETE", format!("/api/v1/tenants/{ta}/invitations/{b_inv}"), None),
        ];
        for (method, path, body) in attempts {
            let r = app.call(method.parse().unwrap(), &path, Some(&a.token), body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {method} {path}: {r:?}");
        }
        // B's key cannot act in A either.
        let r = app.get(&format!("/api/v1/tenants/{ta}/members"), &b_key_secret).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}");

        // Nothing of B changed.
        let r = app.get(&format!("/api/v1/tenants/{tb}/members"), &b.token).await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{l}");
        let r = app.get(&format!("/api/v1/tenants/{tb}"), &b.token).await;
        assert_eq!(r.body["tenant"]["status"], "active");
        assert!(r.body["tenant"]["settings"].get("pwned").is_none());
        assert_eq!(app.get(&format!("/api/v1/tenants/{tb}/members"), &b_key_secret).await.status, StatusCode::OK);
        // A's login cannot pick B's tenant.
        let r = app.login("a@a.test", Some(tb)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    }
}

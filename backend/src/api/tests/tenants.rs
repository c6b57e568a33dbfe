//! Tenants: listing, creation, updates, deletion requests and suspension.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::{account, apps};

#[tokio::test]
async fn create_list_get_update() {
    for app in apps().await {
        let a = app.owner("t1@x.test", "First").await;
        let r = app.post("/api/v1/tenants", Some(&a.token), json!({"name": "Second", "slug": "second-co"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", app.label());
        let second_id = r.body["tenant"]["id"].as_str().unwrap().to_owned();
        let r = app.post("/api/v1/tenants", Some(&a.token), json!({"name": "Third", "slug": "second-co"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        let r = app.post("/api/v1/tenants", Some(&a.token), json!({"name": "Bad", "slug": "Bad Slug"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

        let r = app.get("/api/v1/tenants", &a.token).await;
        let slugs: Vec<&str> =
            r.body["items"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, ["first", "second-co"]);

        // The token acts in the first tenant; the second needs a login there.
        assert_eq!(app.get(&format!("/api/v1/tenants/{second_id}"), &a.token).await.status, StatusCode::NOT_FOUND);
        let in_second = account(&app.login("t1@x.test", Some("second-co")).await);
        assert_eq!(in_second.tenant_id, second_id);
        let r = app.get(&format!("/api/v1/tenants/{second_id}"), &in_second.token).await;
        assert_eq!(r.body["tenant"]["role"], "owner");

        let r = app
            .patch(
                &format!("/api/v1/tenants/{}", a.tenant_id),
                &a.token,
                json!({"name": "Renamed", "settings": {"color": "teal"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body["tenant"]["settings"]["color"], "teal");
        let r = app.patch(&format!("/api/v1/tenants/{}", a.tenant_id), &a.token, json!({"settings": [1]})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.patch(&format!("/api/v1/tenants/{}", a.tenant_id), &a.token, json!({"status": "active"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "status is not writable here");

        let viewer = app.member(&a, "v@x.test", "viewer").await;
        let r =
            app.patch(&format!("/api/v1/tenants/{}", a.tenant_id), &viewer.token, json!({"name": "Mine now"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
        assert!(r.body["decision_id"].is_string());
        assert_eq!(app.get(&format!("/api/v1/tenants/{}", a.tenant_id), &viewer.token).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn only_owners_delete_and_deleting_makes_read_only() {
    for app in apps().await {
        let owner = app.owner("del@x.test", "Del").await;
        let admin = app.member(&owner, "adm@x.test", "admin").await;
        let path = format!("/api/v1/tenants/{}", owner.tenant_id);
        assert_eq!(app.delete(&path, &admin.token).await.status, StatusCode::FORBIDDEN);
        let r = app.delete(&path, &owner.token).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}: {r:?}", app.label());
        assert_eq!(r.body["tenant"]["status"], "pending_deletion");
        assert_eq!(app.get(&path, &owner.token).await.status, StatusCode::OK, "reads still work");
        let r = app.patch(&path, &owner.token, json!({"name": "x"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body["detail"].as_str().unwrap().contains("read-only"));
    }
}

#[tokio::test]
async fn platform_admins_suspend_and_reactivate() {
    for app in apps().await {
        let victim = app.owner("own@x.test", "Victim Co").await;
        let admin_home = app.owner("root@platform.test", "Platform").await;
        let path = format!("/api/v1/tenants/{}/suspend", victim.tenant_id);
        // Not yet a platform admin: another tenant's id is not found; its own is forbidden.
        assert_eq!(app.post(&path, Some(&admin_home.token), json!({})).await.status, StatusCode::NOT_FOUND);
        let own = format!("/api/v1/tenants/{}/suspend", victim.tenant_id);
        assert_eq!(app.post(&own, Some(&victim.token), json!({})).await.status, StatusCode::FORBIDDEN);

        app.make_platform_admin("root@platform.test").await;
        let r = app.post(&path, Some(&admin_home.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
        assert_eq!(r.body["tenant"]["status"], "suspended");
        assert_eq!(app.post(&path, Some(&admin_home.token), json!({})).await.status, StatusCode::CONFLICT);

        let r = app.get("/api/v1/me", &victim.token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body["detail"].as_str().unwrap().contains("suspended"));
        assert_eq!(app.login("own@x.test", None).await.status, StatusCode::FORBIDDEN);
        // The platform admin cannot read the tenant's data by being an admin.
        let r = app.get(&format!("/api/v1/tenants/{}/members", victim.tenant_id), &admin_home.token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        let r = app
            .post(&format!("/api/v1/tenants/{}/reactivate", victim.tenant_id), Some(&admin_home.token), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(app.get("/api/v1/me", &victim.token).await.status, StatusCode::OK);
    }
}

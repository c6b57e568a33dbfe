//! Members, roles and invitations: escalation attempts, the last owner,
//! search and pagination, invitation expiry and single use.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::{PASSWORD, account, apps};

#[tokio::test]
async fn role_changes_respect_rank_and_the_last_owner() {
    for app in apps().await {
        let owner = app.owner("boss@x.test", "Ranks").await;
        let admin = app.member(&owner, "admin@x.test", "admin").await;
        let member = app.member(&owner, "member@x.test", "member").await;
        let members = format!("/api/v1/tenants/{}/members", owner.tenant_id);
        let l = app.label();

        let r = app.patch(&format!("{members}/{}", member.user_id), &admin.token, json!({"role": "owner"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: an admin cannot grant owner: {r:?}");
        let r = app.patch(&format!("{members}/{}", admin.user_id), &admin.token, json!({"role": "owner"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: nor make themselves owner");
        let r = app.patch(&format!("{members}/{}", owner.user_id), &admin.token, json!({"role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: nor demote an owner");
        let r = app.delete(&format!("{members}/{}", owner.user_id), &admin.token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: nor remove an owner");
        let r = app.patch(&format!("{members}/{}", admin.user_id), &member.token, json!({"role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: members change no roles");
        let r = app.patch(&format!("{members}/{}", member.user_id), &admin.token, json!({"role": "emperor"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

        let r = app.patch(&format!("{members}/{}", member.user_id), &admin.token, json!({"role": "admin"})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(r.body["member"]["role"], "admin");
        // The promoted member's existing token acts with the new role at once.
        let r = app.get(&format!("/api/v1/tenants/{}/invitations", owner.tenant_id), &member.token).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");

        let r = app.patch(&format!("{members}/{}", owner.user_id), &owner.token, json!({"role": "admin"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: the last owner cannot step down: {r:?}");
        let r = app.delete(&format!("{members}/{}", owner.user_id), &owner.token).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: nor leave");

        let r = app.patch(&format!("{members}/{}", admin.user_id), &owner.token, json!({"role": "owner"})).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app.patch(&format!("{members}/{}", owner.user_id), &owner.token, json!({"role": "admin"})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: with a second owner the first may step down: {r:?}");

        let r = app.delete(&format!("{members}/{}", member.user_id), &admin.token).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.get("/api/v1/me", &member.token).await.status,
            StatusCode::UNAUTHORIZED,
            "removed members lose access"
        );
        assert_eq!(
            app.delete(&format!("{members}/{}", member.user_id), &admin.token).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn members_search_and_cursor_pagination() {
    for app in apps().await {
        let owner = app.owner("aaa-owner@x.test", "Paged").await;
        for i in 0..4 {
            let token = app.invite(&owner, &format!("user{i}@x.test"), "viewer").await;
            let name = if i == 2 { "Zelda Searchable" } else { "Someone" };
            let r = app
                .post("/api/v1/invitations/accept", None, json!({"token": token, "name": name, "password": PASSWORD}))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        }
        let base = format!("/api/v1/tenants/{}/members", owner.tenant_id);
        let mut seen = Vec::new();
        let mut url = format!("{base}?limit=2");
        loop {
            let r = app.get(&url, &owner.token).await;
            assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
            for m in r.body["items"].as_array().unwrap() {
                seen.push(m["email"].as_str().unwrap().to_owned());
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => url = format!("{base}?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen, ["aaa-owner@x.test", "user0@x.test", "user1@x.test", "user2@x.test", "user3@x.test"]);
        let r = app.get(&format!("{base}?q=zelda"), &owner.token).await;
        let found: Vec<&str> =
            r.body["items"].as_array().unwrap().iter().map(|m| m["email"].as_str().unwrap()).collect();
        assert_eq!(found, ["user2@x.test"]);
        let r = app.get(&format!("{base}?q=%25"), &owner.token).await;
        assert!(r.body["items"].as_array().unwrap().is_empty(), "LIKE wildcards are literal: {r:?}");
        assert_eq!(app.get(&format!("{base}?limit=1000"), &owner.token).await.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.get(&format!("{base}?limit=ten"), &owner.token).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(app.get(&format!("{base}?cursor=!!"), &owner.token).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test]
async fn invitations_are_single_use_expire_and_need_admins() {
    for app in apps().await {
        let owner = app.owner("inv@x.test", "Inv").await;
        let l = app.label();
        let member = app.member(&owner, "m@x.test", "member").await;
        let path = format!("/api/v1/tenants/{}/invitations", owner.tenant_id);
        let r = app.post(&path, Some(&member.token), json!({"email": "x@x.test", "role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: members do not invite");
        let admin = app.member(&owner, "a@x.test", "admin").await;
        let r = app.post(&path, Some(&admin.token), json!({"email": "x@x.test", "role": "owner"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: admins do not invite owners");
        let r = app.post(&path, Some(&admin.token), json!({"email": "m@x.test", "role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: already a member");

        let token = app.invite(&admin, "new@x.test", "member").await;
        let r = app.post("/api/v1/invitations/accept", None, json!({"token": token, "name": "New"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: a new user needs a password");
        let accept = json!({"token": token, "name": "New", "password": PASSWORD});
        let r = app.post("/api/v1/invitations/accept", None, accept.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        assert_eq!(r.body["tenant"]["role"], "member");
        let r = app.post("/api/v1/invitations/accept", None, accept).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: single use");
        let r = app.post("/api/v1/invitations/accept", None, json!({"token": format!("{token}x")})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);

        // An existing user accepts signed in as themselves, without a
        // password, and gains the tenant.
        let other = app.owner("existing@x.test", "Elsewhere").await;
        let token = app.invite(&owner, "existing@x.test", "viewer").await;
        let r = app.post("/api/v1/invitations/accept", Some(&other.token), json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        assert_eq!(r.body["user"]["email_verified"], true, "{l}: the mailed token proved the address");
        let r = app.get("/api/v1/tenants", &other.token).await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 2);

        // Expiry.
        let token = app.invite(&owner, "late@x.test", "viewer").await;
        let mut tx = app.state.store.tenant_tx(&owner.tenant_id).await.unwrap();
        sqlx::query("UPDATE invitations SET expires_at = 0 WHERE email = 'late@x.test'")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let r = app
            .post("/api/v1/invitations/accept", None, json!({"token": token, "name": "L", "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: expired");

        // Revocation.
        let token = app.invite(&owner, "rev@x.test", "viewer").await;
        let list = app.get(&path, &owner.token).await;
        let id = list.body["items"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(list.body["items"][0]["email"], "rev@x.test");
        assert!(list.body["items"][0].get("token").is_none());
        assert_eq!(app.delete(&format!("{path}/{id}"), &owner.token).await.status, StatusCode::NO_CONTENT);
        let r = app
            .post("/api/v1/invitations/accept", None, json!({"token": token, "name": "R", "password": PASSWORD}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(app.delete(&format!("{path}/{id}"), &owner.token).await.status, StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn custom_roles_extend_builtin_ones() {
    for app in apps().await {
        let owner = app.owner("cr@x.test", "Custom").await;
        let admin = app.member(&owner, "cra@x.test", "admin").await;
        let roles = format!("/api/v1/tenants/{}/roles", owner.tenant_id);
        let r = app.post(&roles, Some(&admin.token), json!({"name": "auditor", "base_role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", app.label());
        let r = app.post(&roles, Some(&admin.token), json!({"name": "super", "base_role": "owner"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "no escalation through custom roles");
        let r = app.post(&roles, Some(&admin.token), json!({"name": "admin", "base_role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.post(&roles, Some(&admin.token), json!({"name": "auditor", "base_role": "viewer"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        let auditor = app.member(&owner, "aud@x.test", "auditor").await;
        let r = app.get(&format!("/api/v1/tenants/{}/members", owner.tenant_id), &auditor.token).await;
        assert_eq!(r.status, StatusCode::OK, "a viewer-based role reads members: {r:?}");
        let r = app.patch(&format!("/api/v1/tenants/{}", owner.tenant_id), &auditor.token, json!({"name": "x"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(app.get(&roles, &auditor.token).await.status, StatusCode::FORBIDDEN, "listing roles is for admins");
        let r = app.get(&roles, &admin.token).await;
        assert_eq!(r.body["custom"][0]["name"], "auditor");
        let me = account(&app.login("aud@x.test", None).await);
        assert_eq!(super::harness::decode_claims(&me.token)["roles"], json!(["auditor"]));
    }
}

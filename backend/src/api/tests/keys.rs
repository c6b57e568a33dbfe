//! API keys and service accounts: the secret shown once, scopes, revocation,
//! and who may create keys for whom.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::apps;

#[tokio::test]
async fn api_keys_authenticate_within_scopes_until_revoked() {
    for app in apps().await {
        let owner = app.owner("keys@x.test", "Keys").await;
        let l = app.label();
        let keys = format!("/api/v1/tenants/{}/api-keys", owner.tenant_id);
        let r = app
            .post(&keys, Some(&owner.token), json!({"name": "ci", "scopes": ["members:read"], "expires_in_days": 30}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        let key_id = r.body["api_key"]["id"].as_str().unwrap().to_owned();
        assert!(secret.starts_with(&format!("{}_", r.body["api_key"]["prefix"].as_str().unwrap())));
        assert!(secret.starts_with("tg_"));

        let list = app.get(&keys, &owner.token).await;
        assert!(!list.body.to_string().contains(&secret), "{l}: the secret is shown once");
        assert_eq!(list.body["items"][0]["scopes"], json!(["members:read"]));

        let members = format!("/api/v1/tenants/{}/members", owner.tenant_id);
        let r = app.get(&members, &secret).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let r = app.get(&format!("/api/v1/tenants/{}/invitations", owner.tenant_id), &secret).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: members:read covers listing invitations");
        let r = app.patch(&format!("/api/v1/tenants/{}", owner.tenant_id), &secret, json!({"name": "x"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: out of scope: {r:?}");
        let r = app.post(&keys, Some(&secret), json!({"name": "wider", "scopes": ["*"]})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: a key cannot mint wider keys");
        let r = app.get("/api/v1/me", &secret).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: keys are not people");
        let r = app.get(&keys, &secret).await;
        let last_used = r.body.clone();
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: keys:read not granted: {last_used}");

        for bad in [format!("{secret}x"), secret.replace("tg_", "tg_0"), "tg_".to_owned()] {
            let r = app.get(&members, &bad).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: {bad}");
        }

        assert_eq!(app.delete(&format!("{keys}/{key_id}"), &owner.token).await.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&members, &secret).await.status, StatusCode::UNAUTHORIZED, "{l}: revoked");
        assert_eq!(app.delete(&format!("{keys}/{key_id}"), &owner.token).await.status, StatusCode::CONFLICT);

        for bad in [
            json!({"name": "x", "scopes": []}),
            json!({"name": "x", "scopes": ["root"]}),
            json!({"name": "x", "scopes": ["Contact.Read"]}),
            json!({"name": "x", "scopes": ["contact."]}),
            json!({"name": "x", "scopes": ["*"], "expires_in_days": 0}),
            json!({"name": "", "scopes": ["*"]}),
        ] {
            let r = app.post(&keys, Some(&owner.token), bad).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");
        }
    }
}

#[tokio::test]
async fn expired_keys_stop_working() {
    for app in apps().await {
        let owner = app.owner("exp@x.test", "Exp").await;
        let keys = format!("/api/v1/tenants/{}/api-keys", owner.tenant_id);
        let r =
            app.post(&keys, Some(&owner.token), json!({"name": "short", "scopes": ["*"], "expires_in_days": 1})).await;
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        let members = format!("/api/v1/tenants/{}/members", owner.tenant_id);
        assert_eq!(app.get(&members, &secret).await.status, StatusCode::OK);
        let mut tx = app.state.store.tenant_tx(&owner.tenant_id).await.unwrap();
        sqlx::query("UPDATE api_keys SET expires_at = 1").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(app.get(&members, &secret).await.status, StatusCode::UNAUTHORIZED, "{}", app.label());
    }
}

#[tokio::test]
async fn members_own_keys_admins_manage_service_accounts() {
    for app in apps().await {
        let owner = app.owner("sa@x.test", "SA").await;
        let member = app.member(&owner, "mem@x.test", "member").await;
        let viewer = app.member(&owner, "view@x.test", "viewer").await;
        let l = app.label();
        let keys = format!("/api/v1/tenants/{}/api-keys", owner.tenant_id);
        let accounts = format!("/api/v1/tenants/{}/service-accounts", owner.tenant_id);

        let r = app.post(&keys, Some(&member.token), json!({"name": "mine", "scopes": ["members:read"]})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: members create their own keys: {r:?}");
        let member_key = r.body["api_key"]["id"].as_str().unwrap().to_owned();
        let r = app.post(&keys, Some(&viewer.token), json!({"name": "mine", "scopes": ["members:read"]})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: viewers do not");

        let r = app.post(&accounts, Some(&member.token), json!({"name": "deployer", "role": "member"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
        let r = app.post(&accounts, Some(&owner.token), json!({"name": "deployer", "role": "admin"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let sa_id = r.body["service_account"]["id"].as_str().unwrap().to_owned();
        let r = app.post(&accounts, Some(&owner.token), json!({"name": "deployer", "role": "admin"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);

        let r = app
            .post(&keys, Some(&member.token), json!({"name": "sa", "scopes": ["*"], "service_account_id": sa_id}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: a member cannot mint a key for an admin-ranked account");
        let r = app
            .post(
                &keys,
                Some(&owner.token),
                json!({"name": "sa", "scopes": ["members:read", "members:write"], "service_account_id": sa_id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let sa_secret = r.body["secret"].as_str().unwrap().to_owned();
        assert_eq!(r.body["api_key"]["owner"]["type"], "service_account");

        // The service account acts with its admin role within its scopes.
        let r = app
            .patch(
                &format!("/api/v1/tenants/{}/members/{}", owner.tenant_id, viewer.user_id),
                &sa_secret,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");

        // A member cannot revoke another's key; the owner can revoke it.
        let r = app.post(&keys, Some(&owner.token), json!({"name": "owners", "scopes": ["*"]})).await;
        let owner_key = r.body["api_key"]["id"].as_str().unwrap().to_owned();
        assert_eq!(app.delete(&format!("{keys}/{owner_key}"), &member.token).await.status, StatusCode::FORBIDDEN);
        assert_eq!(app.delete(&format!("{keys}/{member_key}"), &member.token).await.status, StatusCode::NO_CONTENT);
        let r = app.get(&accounts, &owner.token).await;
        assert_eq!(r.body["items"][0]["name"], "deployer");
    }
}

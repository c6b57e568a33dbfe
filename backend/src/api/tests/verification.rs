//! Email addresses belong to accounts only once verified: the verification
//! mail, and invitations that neither hand an account to whoever claimed its
//! address first nor let anyone accept for an account they are not.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::{PASSWORD, account, apps};

/// The takeover this rule closes: an attacker signs up with Bob's address
/// before Bob does; Corp invites Bob as admin; Bob accepts with the mailed
/// token. The membership must land on Bob's new account, and the attacker's
/// password must open nothing.
#[tokio::test]
async fn a_claimed_address_does_not_capture_an_invitation() {
    for app in apps().await {
        let l = app.label();
        let corp = app.owner("ceo@corp.test", "Corp").await;
        let attacker = app.owner("bob@corp.test", "Squat").await;
        let r = app.get("/api/v1/me", &attacker.token).await;
        assert_eq!(r.body["user"]["email_verified"], false, "{l}: {r:?}");

        let token = app.invite(&corp, "bob@corp.test", "admin").await;
        let bob = json!({"token": token, "name": "Bob", "password": "bob's own passphrase 42"});
        let r = app.post("/api/v1/invitations/accept", None, bob).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        assert_ne!(r.body["user"]["id"], attacker.user_id.as_str(), "{l}: a new account for the mailbox's owner");
        assert_eq!(r.body["user"]["email_verified"], true);

        let r = app.login("bob@corp.test", Some(&corp.tenant_id)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: the attacker's password opens nothing: {r:?}");
        let r = app
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": "bob@corp.test", "password": "bob's own passphrase 42", "tenant": corp.tenant_id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let bob = account(&r);
        assert_ne!(bob.user_id, attacker.user_id);
        // The attacker's session still works, on their own workspace only.
        let r = app.get("/api/v1/tenants", &attacker.token).await;
        let tenants: Vec<&str> =
            r.body["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(tenants, ["Squat"], "{l}: {r:?}");
    }
}

#[tokio::test]
async fn verified_addresses_are_accepted_only_by_their_account() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("own@v.test", "Owner Co").await;
        let ana = app.owner("ana@v.test", "Ana Co").await;
        let eve = app.owner("eve@v.test", "Eve Co").await;
        let verify = app.mailed_token("ana@v.test", "tgv_").await;
        let r = app.post("/api/v1/me/verify-email", Some(&eve.token), json!({"token": verify})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: another account's token proves nothing: {r:?}");
        let r = app.post("/api/v1/me/verify-email", Some(&ana.token), json!({"token": verify})).await;
        assert_eq!((r.status, r.body["user"]["email_verified"].as_bool()), (StatusCode::OK, Some(true)), "{l}: {r:?}");
        let r = app.post("/api/v1/me/verify-email", Some(&ana.token), json!({"token": verify})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: single use");
        let r = app.post("/api/v1/me/verify-email/resend", Some(&ana.token), json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: already verified");

        let token = app.invite(&owner, "ana@v.test", "member").await;
        let accept = json!({"token": token, "name": "Not Ana", "password": PASSWORD});
        let r = app.post("/api/v1/invitations/accept", None, accept.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: a verified address is its account's: {r:?}");
        let r = app.post("/api/v1/invitations/accept", Some(&eve.token), accept).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: not for another account: {r:?}");
        let r = app.post("/api/v1/invitations/accept", Some(&ana.token), json!({"token": token})).await;
        assert_eq!((r.status, r.body["tenant"]["role"].as_str()), (StatusCode::CREATED, Some("member")), "{l}: {r:?}");

        // A new address's invitation cannot be taken by a signed-in account.
        let token = app.invite(&owner, "newbie@v.test", "member").await;
        let r = app.post("/api/v1/invitations/accept", Some(&eve.token), json!({"token": token})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: {r:?}");
    }
}

//! Forgotten passwords: the same answer for every address, a single-use
//! mailed token, and a reset that ends every session.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::apps;

#[tokio::test]
async fn a_mailed_token_resets_the_password_once_and_ends_every_session() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("forgetful@x.test", "Forgetful").await;
        let forgot = "/api/v1/auth/password/forgot";
        let known = app.post(forgot, None, json!({"email": "Forgetful@X.test"})).await;
        let unknown = app.post(forgot, None, json!({"email": "nobody@x.test"})).await;
        assert_eq!((known.status, &known.body), (StatusCode::ACCEPTED, &unknown.body), "{l}: one answer for all");
        assert_eq!(unknown.status, StatusCode::ACCEPTED, "{l}");
        assert_eq!(
            app.post(forgot, None, json!({"email": "not an email"})).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let token = app.mailed_token("forgetful@x.test", "tgp_").await;
        // A second request within the minute mails nothing new.
        app.post(forgot, None, json!({"email": "forgetful@x.test"})).await;
        assert_eq!(app.mailed_token("forgetful@x.test", "tgp_").await, token, "{l}: no mail flood");

        let reset = "/api/v1/auth/password/reset";
        let new_password = "an entirely new passphrase";
        let r = app.post(reset, None, json!({"token": token, "password": "short"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");
        let r = app.post(reset, None, json!({"token": "tgp_made-up", "password": new_password})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}");
        let r = app.post(reset, None, json!({"token": token, "password": new_password})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(app.get("/api/v1/me", &owner.token).await.status, StatusCode::UNAUTHORIZED, "{l}: sessions ended");
        let r = app.post(reset, None, json!({"token": token, "password": "yet another passphrase"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: single use");
        assert_eq!(app.login("forgetful@x.test", None).await.status, StatusCode::UNAUTHORIZED, "{l}: the old password");
        let r =
            app.post("/api/v1/auth/login", None, json!({"email": "forgetful@x.test", "password": new_password})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let me = app.get("/api/v1/me", r.body["access_token"].as_str().unwrap()).await;
        assert_eq!(me.body["user"]["email_verified"], true, "{l}: the mailbox proved the address");
    }
}

//! The second factor: enrolment, confirmation, the two-step login with a
//! code or a recovery code (each good once), the challenge's attempt limit,
//! removal with the password, and `context.mfa` reaching tenant policies.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_identity::totp::{STEP_SECS, Secret};
use tollgate_store::now;

use super::harness::{Account, PASSWORD, TestApp, apps, decode_claims};

/// Enrols and confirms TOTP; the secret, the recovery codes and the code
/// that confirmed the enrolment (spent by that).
async fn enrolled(app: &TestApp, who: &Account) -> (Secret, Vec<String>, String) {
    let l = app.label();
    let r = app.post("/api/v1/me/mfa/totp", Some(&who.token), json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
    assert!(r.body["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"), "{l}");
    assert!(r.body["qr_svg"].as_str().unwrap().contains("<svg"), "{l}");
    let secret = Secret::from_base32(r.body["secret"].as_str().unwrap()).unwrap();
    let confirm = "/api/v1/me/mfa/totp/confirm";
    // Wrong for every step the server could take as current or skewed.
    let step = now() / STEP_SECS;
    let near: Vec<String> = (step - 2..=step + 2).map(|s| secret.code_at_step(s)).collect();
    let wrong = ["000000", "111111", "222222", "333333", "444444", "555555"]
        .into_iter()
        .find(|w| !near.iter().any(|c| c == w))
        .unwrap();
    let r = app.post(confirm, Some(&who.token), json!({"code": wrong})).await;
    assert_eq!(
        (r.status, r.body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("code")),
        "{l}"
    );
    let spent = secret.code_at(now());
    let r = app.post(confirm, Some(&who.token), json!({"code": spent})).await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
    let codes: Vec<String> =
        r.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10, "{l}");
    (secret, codes, spent)
}

/// Logs in with the password; the challenge of a second-factor login.
async fn challenge(app: &TestApp, email: &str) -> String {
    let r = app.login(email, None).await;
    assert_eq!((r.status, r.body["mfa_required"].as_bool()), (StatusCode::OK, Some(true)), "{}: {r:?}", app.label());
    assert!(r.body.get("access_token").is_none(), "no tokens before the second factor");
    r.body["challenge"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, challenge: &str, code: &str) -> super::harness::Reply {
    app.post("/api/v1/auth/mfa/verify", None, json!({"challenge": challenge, "code": code})).await
}

#[tokio::test]
async fn totp_turns_login_into_two_steps_with_codes_good_once() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("mfa@x.test", "Two Factors").await;
        let r = app.post("/api/v1/me/mfa/totp/confirm", Some(&owner.token), json!({"code": "123456"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: nothing to confirm yet");
        let (secret, codes, spent) = enrolled(&app, &owner).await;
        let r = app.post("/api/v1/me/mfa/totp", Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: on already");

        // The code that confirmed the enrolment is spent (replayed as it was,
        // whatever step the clock is at now); the next step's works, once.
        let c = challenge(&app, "mfa@x.test").await;
        let r = verify(&app, &c, &spent).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: a replayed code: {r:?}");
        let next = secret.code_at(now() + STEP_SECS);
        let r = verify(&app, &c, &next).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let claims = decode_claims(r.body["access_token"].as_str().unwrap());
        assert_eq!(claims["amr"], json!(["pwd", "otp"]), "{l}");
        let token = r.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.get("/api/v1/me", &token).await.status, StatusCode::OK, "{l}");
        assert_eq!(verify(&app, &c, &next).await.status, StatusCode::UNAUTHORIZED, "{l}: the challenge is spent");
        let refreshed = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": r.body["refresh_token"]})).await;
        assert_eq!(
            decode_claims(refreshed.body["access_token"].as_str().unwrap())["amr"],
            json!(["pwd", "otp"]),
            "{l}: a refreshed token keeps how the session was made"
        );

        // A recovery code, in any case and spelling, works once.
        let c = challenge(&app, "mfa@x.test").await;
        let r = verify(&app, &c, &codes[0].to_uppercase().replace('-', " ")).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let c = challenge(&app, "mfa@x.test").await;
        assert_eq!(verify(&app, &c, &codes[0]).await.status, StatusCode::UNAUTHORIZED, "{l}: used");

        // Five wrong answers spend a challenge, even for a right one after.
        for _ in 0..4 {
            assert_eq!(verify(&app, &c, "zzzzz-zzzzz").await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(verify(&app, &c, &codes[1]).await.status, StatusCode::UNAUTHORIZED, "{l}: spent by attempts");
        assert_eq!(verify(&app, "tgm_made-up", &codes[1]).await.status, StatusCode::UNAUTHORIZED, "{l}");

        // Off only with the password; then the password alone logs in again.
        let me = Account { token, ..owner.clone() };
        let off = |password: &str| {
            app.call(Method::DELETE, "/api/v1/me/mfa/totp", Some(&me.token), Some(json!({"password": password})))
        };
        assert_eq!(off("not the password at all").await.status, StatusCode::FORBIDDEN, "{l}");
        assert_eq!(off(PASSWORD).await.status, StatusCode::NO_CONTENT, "{l}");
        let r = app.login("mfa@x.test", None).await;
        assert_eq!(decode_claims(r.body["access_token"].as_str().unwrap())["amr"], json!(["pwd"]), "{l}");
    }
}

/// TOTP secrets are sealed at rest, bound to their row; secrets stored
/// before sealing are sealed at the next start and still verify.
#[tokio::test]
async fn totp_secrets_are_sealed_at_rest() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("sealed@x.test", "Sealed").await;
        let (secret, _, _) = enrolled(&app, &owner).await;
        let stored = |store: tollgate_store::Store, user: String| async move {
            let mut tx = store.tx().await.unwrap();
            let row = tollgate_store::totp_of(&mut tx, &user).await.unwrap().unwrap();
            tx.commit().await.unwrap();
            row.secret
        };
        let sealed = stored(app.state.store.clone(), owner.user_id.clone()).await;
        assert!(sealed.starts_with("v1.") && !sealed.contains(&secret.to_base32()), "{l}: {sealed}");

        // A row from before sealing: base32 in the clear, sealed at start.
        let mut tx = app.state.store.tx().await.unwrap();
        tollgate_store::replace_totp_secret(&mut tx, &owner.user_id, &sealed, &secret.to_base32()).await.unwrap();
        tx.commit().await.unwrap();
        let c = challenge(&app, "sealed@x.test").await;
        assert_eq!(verify(&app, &c, &secret.code_at(now() + STEP_SECS)).await.status, StatusCode::OK, "{l}");
        let restarted = crate::build_state(
            app.state.store.clone(),
            std::sync::Arc::new(tollgate_policies::LivePolicies::fixed(
                tollgate_policies::PolicyEngine::builtin().unwrap(),
            )),
            (*app.state.config).clone(),
        )
        .await
        .unwrap();
        let resealed = stored(app.state.store.clone(), owner.user_id.clone()).await;
        assert!(resealed.starts_with("v1.") && resealed != sealed, "{l}: {resealed}");
        assert_eq!(
            restarted.sealer.open(&resealed, &crate::api::totp_context(&owner.user_id)).unwrap(),
            secret.to_base32(),
            "{l}: the same key (the data dir's)"
        );
        assert!(restarted.sealer.open(&resealed, "totp:someone-else").is_err(), "{l}: bound to its row");
    }
}

/// A tenant layer may require a second factor for sensitive actions: the
/// same owner is refused with a password-only session and allowed with one
/// that passed TOTP.
#[tokio::test]
async fn tenant_policies_see_whether_the_session_passed_a_second_factor() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("strict@x.test", "Strict").await;
        let t = owner.tenant_id.clone();
        let layer = "@id(\"keys-need-mfa\") forbid (principal, action == Action::\"apikey.create\", resource) \
                     unless { context.mfa };";
        let policies = format!("/api/v1/tenants/{t}/policies");
        let r = app.post(&policies, Some(&owner.token), json!({"source": layer})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let r = app.post(&format!("{policies}/1/activate"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let keys = format!("/api/v1/tenants/{t}/api-keys");
        let new_key = json!({"name": "ci", "scopes": ["members:read"]});
        let r = app.post(&keys, Some(&owner.token), new_key.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: a password-only session: {r:?}");

        let (secret, _, _) = enrolled(&app, &owner).await;
        let c = challenge(&app, "strict@x.test").await;
        let r = verify(&app, &c, &secret.code_at(now() + STEP_SECS)).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let strong: Value = r.body;
        let r = app.post(&keys, strong["access_token"].as_str(), new_key).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: with a second factor: {r:?}");
    }
}

/// A tenant that requires a second factor: its people signed in with a
/// password alone may read their account and enrol, nothing else, until
/// they sign in with the second factor.
#[tokio::test]
async fn a_tenant_requiring_mfa_lets_password_sessions_only_enrol() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("required@x.test", "Required").await;
        let t = owner.tenant_id.clone();
        let tenant = format!("/api/v1/tenants/{t}");
        let r = app.patch(&tenant, &owner.token, json!({"settings": {"security": {"mfa_required": "yes"}}})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");
        // Requiring a second factor is a plan feature (`sso`).
        let required = json!({"settings": {"security": {"mfa_required": true}}});
        let r = app.patch(&tenant, &owner.token, required.clone()).await;
        assert_eq!((r.status, r.body["feature"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("sso")), "{l}: {r:?}");
        app.owner("root@required.test", "Root").await;
        app.make_platform_admin("root@required.test").await;
        let root = app.login("root@required.test", None).await.body["access_token"].as_str().unwrap().to_owned();
        let r = app.put(&format!("{tenant}/plan"), &root, Some(json!({"plan": "enterprise"}))).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let r = app.patch(&tenant, &owner.token, required).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");

        let members = format!("{tenant}/members");
        let r = app.get(&members, &owner.token).await;
        assert_eq!(
            (r.status, r.body["detail"].as_str()),
            (StatusCode::FORBIDDEN, Some(tollgate_identity::principal::SECOND_FACTOR_REQUIRED)),
            "{l}: {r:?}"
        );
        assert_eq!(app.get("/api/v1/me", &owner.token).await.status, StatusCode::OK, "{l}: the account reads");
        let (secret, _, _) = enrolled(&app, &owner).await;
        let c = challenge(&app, "required@x.test").await;
        let r = verify(&app, &c, &secret.code_at(now() + STEP_SECS)).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let strong = r.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.get(&members, &strong).await.status, StatusCode::OK, "{l}: with the second factor");
        // Keys are not people: the requirement does not apply to them.
        let r = app
            .post(&format!("{tenant}/api-keys"), Some(&strong), json!({"name": "ci", "scopes": ["members:read"]}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let key = r.body["secret"].as_str().unwrap();
        assert_eq!(app.get(&members, key).await.status, StatusCode::OK, "{l}");
    }
}

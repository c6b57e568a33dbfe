//! Sign-up, login, lockout, refresh rotation and reuse, logout, and every
//! kind of bad token.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::harness::{PASSWORD, apps, decode_claims};
use tollgate_store::now;

#[tokio::test]
async fn signup_login_me() {
    for app in apps().await {
        let r = app
            .post(
                "/api/v1/auth/signup",
                None,
                json!({"email": " Ada@Example.COM ", "password": PASSWORD, "name": "Ada", "tenant_name": "Analytical Engines"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}: {r:?}", app.label());
        assert_eq!(r.body, json!({"status": "verification_sent", "email": "ada@example.com"}));

        let r = app.login("ada@example.com", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
        assert_eq!(r.body["tenant"]["slug"], "analytical-engines");
        assert_eq!(r.body["tenant"]["role"], "owner");
        let cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        for attr in ["tollgate_refresh=tgr_", "HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(cookie.contains(attr), "cookie {cookie} lacks {attr}");
        }
        assert_eq!(r.body["expires_in"], 900);
        let token = r.body["access_token"].as_str().unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert!(header.kid.is_some());
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let claims = decode_claims(token);
        for claim in ["iss", "sub", "tid", "sid", "jti", "roles", "amr", "exp"] {
            assert!(claims.get(claim).is_some(), "claim {claim} missing");
        }
        assert_eq!(claims["roles"], json!(["owner"]));
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);

        let r = app.get("/api/v1/me", token).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
        assert_eq!(r.body["user"]["name"], "Ada");
        assert_eq!(r.body["tenant"]["role"], "owner");
    }
}

#[tokio::test]
async fn signup_rejects_bad_input_and_loses_nothing() {
    for app in apps().await {
        let cases = [
            (
                json!({"email": "not-an-email", "password": PASSWORD, "name": "A"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "email",
            ),
            (
                json!({"email": "a@b.test", "password": "short", "name": "A"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "password",
            ),
            (
                json!({"email": "a@b.test", "password": "Password123", "name": "A"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "password",
            ),
            (
                json!({"email": "a@b.test", "password": PASSWORD, "name": "  "}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "name",
            ),
        ];
        for (body, status, field) in cases {
            let r = app.post("/api/v1/auth/signup", None, body).await;
            assert_eq!(r.status, status, "{}: {r:?}", app.label());
            assert_eq!(r.body["errors"][0]["field"], field, "{r:?}");
        }
        let r = app
            .post(
                "/api/v1/auth/signup",
                None,
                json!({"email": "a@b.test", "password": PASSWORD, "name": "A", "platform_admin": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown fields are refused: {r:?}");
        assert!(r.body["detail"].as_str().unwrap().contains("platform_admin"));

        let malformed = Request::post("/api/v1/auth/signup")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"email\": "))
            .unwrap();
        assert_eq!(app.request(malformed).await.status, StatusCode::BAD_REQUEST);
        let no_type = Request::post("/api/v1/auth/signup").body(Body::from("{}")).unwrap();
        assert_eq!(app.request(no_type).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let huge = Request::post("/api/v1/auth/signup")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!("{{\"name\": \"{}\"}}", "x".repeat(100_000))))
            .unwrap();
        assert_eq!(app.request(huge).await.status, StatusCode::PAYLOAD_TOO_LARGE);

        let ok = json!({"email": "a@b.test", "password": PASSWORD, "name": "A"});
        let first = app.post("/api/v1/auth/signup", None, ok.clone()).await;
        assert_eq!(first.status, StatusCode::ACCEPTED);
        // A signup with a registered address answers exactly as a new one
        // (no enumeration), changes nothing, and tells the address's owner,
        // once an hour however often it is tried.
        for _ in 0..2 {
            let dup = app
                .post(
                    "/api/v1/auth/signup",
                    None,
                    json!({"email": "A@B.test", "password": "another password!", "name": "B"}),
                )
                .await;
            assert_eq!((dup.status, &dup.body), (first.status, &first.body), "{}", app.label());
        }
        assert_eq!(app.login("a@b.test", None).await.status, StatusCode::OK, "the first account is intact");
        let mut tx = app.state.store.tx().await.unwrap();
        let mails = tollgate_store::outbox(&mut tx, Some("a@b.test"), 10).await.unwrap();
        tx.commit().await.unwrap();
        let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["You already have an account", "Confirm your email address"], "{}", app.label());
    }
}

#[tokio::test]
async fn login_failures_are_uniform_and_lock_after_five() {
    for app in apps().await {
        app.owner("victim@x.test", "Victim").await;
        let wrong = json!({"email": "victim@x.test", "password": "wrong password here"});
        let unknown = json!({"email": "nobody@x.test", "password": "wrong password here"});
        let r1 = app.post("/api/v1/auth/login", None, wrong.clone()).await;
        let r2 = app.post("/api/v1/auth/login", None, unknown.clone()).await;
        assert_eq!(r1.status, StatusCode::UNAUTHORIZED);
        assert!(r1.headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(r1.body["detail"], r2.body["detail"], "the error never says whether the email exists");
        for _ in 0..4 {
            assert_eq!(app.post("/api/v1/auth/login", None, wrong.clone()).await.status, StatusCode::UNAUTHORIZED);
        }
        // Locked: even the right password is refused, with Retry-After.
        let r = app.login("victim@x.test", None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}: {r:?}", app.label());
        let retry: i64 = r.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry), "retry after {retry}");
        // Unknown emails lock the same way, so the lock reveals nothing either.
        for _ in 0..4 {
            assert_eq!(app.post("/api/v1/auth/login", None, unknown.clone()).await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(app.post("/api/v1/auth/login", None, unknown).await.status, StatusCode::TOO_MANY_REQUESTS);
        // The lock is per email: other accounts log in.
        app.owner("bystander@x.test", "Bystander").await;
    }
}

/// Sends a login for `email` with `password` from the client address `ip`.
async fn login_from(app: &super::harness::TestApp, ip: [u8; 4], email: &str, password: &str) -> StatusCode {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"email": email, "password": password}).to_string()))
        .unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
    app.request(req).await.status
}

/// Five bad passwords lock the email for the address they came from, not
/// for its owner elsewhere; fifty from any addresses lock it for everyone.
#[tokio::test]
async fn lockouts_are_per_client_address_with_a_ceiling_for_all() {
    for app in apps().await {
        let l = app.label();
        app.owner("owned@x.test", "Owned").await;
        let attacker = [198, 51, 100, 66];
        for _ in 0..5 {
            assert_eq!(login_from(&app, attacker, "owned@x.test", "guess guess guess").await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(login_from(&app, attacker, "owned@x.test", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS, "{l}");
        assert_eq!(login_from(&app, [192, 0, 2, 7], "owned@x.test", PASSWORD).await, StatusCode::OK, "{l}: the owner");
        for i in 1..=10u8 {
            for _ in 0..5 {
                let status = login_from(&app, [203, 0, 113, i], "owned@x.test", "guess guess guess").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{l}: {i}");
            }
        }
        let status = login_from(&app, [192, 0, 2, 7], "owned@x.test", PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{l}: fifty failures from anywhere lock it for all");
    }
}

/// Guesses sent all at once get no more password checks than sequential
/// ones: each attempt is reserved atomically with the throttle check.
#[tokio::test]
async fn parallel_guesses_do_not_outrun_the_lockout() {
    for app in apps().await {
        app.owner("target@x.test", "Target").await;
        let wrong = json!({"email": "target@x.test", "password": "a wrong guess, again"});
        let statuses = app.post_concurrently(24, "/api/v1/auth/login", wrong).await;
        let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
        let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!((checked, refused), (5, 19), "{}: {statuses:?}", app.label());
        assert_eq!(app.login("target@x.test", None).await.status, StatusCode::TOO_MANY_REQUESTS);
    }
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    for app in apps().await {
        let owner = app.owner("r@x.test", "R").await;
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": owner.refresh})).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
        let second = r.body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(second, owner.refresh);
        let new_access = r.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.get("/api/v1/me", &new_access).await.status, StatusCode::OK);

        // The cookie works too.
        let by_cookie = Request::post("/api/v1/auth/refresh")
            .header(header::COOKIE, format!("other=1; tollgate_refresh={second}"))
            .body(Body::empty())
            .unwrap();
        let r = app.request(by_cookie).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let third = r.body["refresh_token"].as_str().unwrap().to_owned();

        // Presenting the already-used second token again: reuse.
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": second})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // The whole family is gone: the newest token and the access tokens too.
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": third})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/api/v1/me", &new_access).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/api/v1/me", &owner.token).await.status, StatusCode::UNAUTHORIZED);

        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": "tgr_made_up"})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app.post("/api/v1/auth/refresh", None, json!({})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

/// Two refreshes racing with the same token: at most one wins, and the
/// loser is treated as reuse, which ends the family for both.
#[tokio::test]
async fn concurrent_refresh_with_one_token_cannot_fork_the_session() {
    for app in apps().await {
        let owner = app.owner("race@x.test", "Race").await;
        let body = json!({"refresh_token": owner.refresh});
        let (a, b) = tokio::join!(
            app.post("/api/v1/auth/refresh", None, body.clone()),
            app.post("/api/v1/auth/refresh", None, body.clone())
        );
        let winners: Vec<_> = [&a, &b].into_iter().filter(|r| r.status == StatusCode::OK).collect();
        assert!(winners.len() <= 1, "{}: {a:?} / {b:?}", app.label());
        for w in winners {
            let token = w.body["refresh_token"].as_str().unwrap();
            let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": token})).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}: the family was revoked", app.label());
        }
        assert_eq!(app.get("/api/v1/me", &owner.token).await.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn logout_and_session_revocation_end_sessions() {
    for app in apps().await {
        let first = app.owner("s@x.test", "S").await;
        let second = super::harness::account(&app.login("s@x.test", None).await);
        let r = app.get("/api/v1/me/sessions", &first.token).await;
        let items = r.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{r:?}");
        assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
        let second_sid = decode_claims(&second.token)["sid"].as_str().unwrap().to_owned();

        let r = app.delete(&format!("/api/v1/me/sessions/{second_sid}"), &first.token).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/me", &second.token).await.status, StatusCode::UNAUTHORIZED);
        let r = app.delete(&format!("/api/v1/me/sessions/{second_sid}"), &first.token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // Another user's session id is not found either.
        let other = app.owner("o@x.test", "O").await;
        let other_sid = decode_claims(&other.token)["sid"].as_str().unwrap().to_owned();
        let r = app.delete(&format!("/api/v1/me/sessions/{other_sid}"), &first.token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/api/v1/me", &other.token).await.status, StatusCode::OK);

        let r = app.call(Method::POST, "/api/v1/auth/logout", Some(&first.token), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/me", &first.token).await.status, StatusCode::UNAUTHORIZED);
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": first.refresh})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

fn sign_with_data_dir_key(app: &super::harness::TestApp, claims: &serde_json::Value, typ: &str) -> String {
    let key_dir = app.state.config.key_dir();
    let entry = std::fs::read_dir(&key_dir).unwrap().next().unwrap().unwrap().path();
    let kid = entry.file_stem().unwrap().to_str().unwrap().to_owned();
    let der = std::fs::read(&entry).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid);
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&der)).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    for app in apps().await {
        let owner = app.owner("t@x.test", "T").await;
        let claims = decode_claims(&owner.token);
        let parts: Vec<&str> = owner.token.split('.').collect();

        let mut tampered_claims = claims.clone();
        tampered_claims["roles"] = json!(["owner", "platform_admin"]);
        let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(tampered_claims.to_string()), parts[2]);

        let header_none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
        let alg_none = format!("{header_none}.{}.", parts[1]);

        let hs_header = jsonwebtoken::Header {
            kid: jsonwebtoken::decode_header(&owner.token).unwrap().kid,
            typ: Some("at+jwt".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        };
        // Algorithm confusion: HMAC keyed with the public key from the JWKS.
        let jwks = app.call(Method::GET, "/.well-known/jwks.json", None, None).await.body;
        let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
        let confused =
            jsonwebtoken::encode(&hs_header, &claims, &jsonwebtoken::EncodingKey::from_secret(x.as_bytes())).unwrap();

        let mut expired_claims = claims.clone();
        expired_claims["iat"] = json!(now() - 3600);
        expired_claims["nbf"] = json!(now() - 3600);
        expired_claims["exp"] = json!(now() - 1800);
        let expired = sign_with_data_dir_key(&app, &expired_claims, "at+jwt");

        let mut future_claims = claims.clone();
        future_claims["nbf"] = json!(now() + 3600);
        future_claims["exp"] = json!(now() + 7200);
        let not_yet = sign_with_data_dir_key(&app, &future_claims, "at+jwt");

        let mut wrong_iss = claims.clone();
        wrong_iss["iss"] = json!("https://evil.test");
        let wrong_iss = sign_with_data_dir_key(&app, &wrong_iss, "at+jwt");
        let mut wrong_aud = claims.clone();
        wrong_aud["aud"] = json!("someone-else");
        let wrong_aud = sign_with_data_dir_key(&app, &wrong_aud, "at+jwt");
        let wrong_typ = sign_with_data_dir_key(&app, &claims, "JWT");

        let mut unknown_kid_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        unknown_kid_header.kid = Some("k-unknown".into());
        unknown_kid_header.typ = Some("at+jwt".into());
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let foreign_key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
        let unknown_kid = jsonwebtoken::encode(&unknown_kid_header, &claims, &foreign_key).unwrap();
        // A foreign key claiming our kid.
        let mut same_kid_header = unknown_kid_header.clone();
        same_kid_header.kid = jsonwebtoken::decode_header(&owner.token).unwrap().kid;
        let forged = jsonwebtoken::encode(&same_kid_header, &claims, &foreign_key).unwrap();

        for (name, token) in [
            ("tampered", tampered),
            ("alg none", alg_none),
            ("algorithm confusion", confused),
            ("expired", expired),
            ("not yet valid", not_yet),
            ("wrong issuer", wrong_iss),
            ("wrong audience", wrong_aud),
            ("wrong type", wrong_typ),
            ("unknown kid", unknown_kid),
            ("forged with our kid", forged),
            ("garbage", "not.a.jwt".to_owned()),
        ] {
            let r = app.get("/api/v1/me", &token).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}: {name}: {r:?}", app.label());
            assert!(r.headers.contains_key(header::WWW_AUTHENTICATE), "{name}");
        }
        let r = app.call(Method::GET, "/api/v1/me", None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let basic =
            Request::get("/api/v1/me").header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz").body(Body::empty()).unwrap();
        assert_eq!(app.request(basic).await.status, StatusCode::UNAUTHORIZED);
        // The real token still works.
        assert_eq!(app.get("/api/v1/me", &owner.token).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_both() {
    for app in apps().await {
        let owner = app.owner("k@x.test", "K").await;
        let old_kid = jsonwebtoken::decode_header(&owner.token).unwrap().kid.unwrap();
        let new_kid = tollgate_identity::tokens::rotate(&app.state.store, &app.state.config.key_dir()).await.unwrap();
        app.state.keys.reload().await.unwrap();
        let jwks = app.call(Method::GET, "/.well-known/jwks.json", None, None).await.body;
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");
        assert_eq!(app.get("/api/v1/me", &owner.token).await.status, StatusCode::OK, "old tokens stay valid");
        let fresh = super::harness::account(&app.login("k@x.test", None).await);
        assert_eq!(jsonwebtoken::decode_header(&fresh.token).unwrap().kid.unwrap(), new_kid);
        assert_eq!(app.get("/api/v1/me", &fresh.token).await.status, StatusCode::OK);
    }
}

/// Behind the gateway the connection's peer is the gateway itself: the
/// client's address comes from the gateway's signed assertion, and only from
/// one that verifies and is addressed to the backend.
#[tokio::test]
async fn client_address_comes_only_from_a_verified_gateway_assertion() {
    use tollgate_identity::assertion::{ASSERTION_TYPE, BACKEND_UPSTREAM};
    for app in apps().await {
        let l = app.label();
        app.owner("via@x.test", "Via").await;
        let t = now();
        let claims = |aud: &str, ip: &str| {
            json!({"iss": app.state.keys.issuer(), "aud": aud, "sub": "anonymous", "ip": ip,
                   "act": "platform.api", "decision": "d-1", "iat": t, "nbf": t, "exp": t + 60, "jti": "j-1"})
        };
        let valid = app.state.keys.sign(ASSERTION_TYPE, &claims(BACKEND_UPSTREAM, "203.0.113.7")).unwrap();
        let for_a_product = app.state.keys.sign(ASSERTION_TYPE, &claims("crm", "198.51.100.1")).unwrap();
        let wrong_type = app.state.keys.sign("JWT", &claims(BACKEND_UPSTREAM, "198.51.100.2")).unwrap();
        let mut tampered: Vec<String> = valid.split('.').map(str::to_owned).collect();
        tampered[1] = URL_SAFE_NO_PAD.encode(claims(BACKEND_UPSTREAM, "198.51.100.3").to_string());
        let tampered = tampered.join(".");

        let login_via = |assertion: String| {
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-tollgate-assertion", assertion)
                .body(Body::from(json!({"email": "via@x.test", "password": PASSWORD}).to_string()))
                .unwrap()
        };
        for (assertion, want) in
            [(valid, "203.0.113.7"), (for_a_product, "unknown"), (wrong_type, "unknown"), (tampered, "unknown")]
        {
            let r = app.request(login_via(assertion)).await;
            assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
            let token = r.body["access_token"].as_str().unwrap().to_owned();
            let sessions = app.get("/api/v1/me/sessions", &token).await;
            let current = sessions.body["items"].as_array().unwrap().iter().find(|s| s["current"] == true).cloned();
            assert_eq!(current.unwrap()["ip"], want, "{l}: {sessions:?}");
        }
    }
}

//! Single sign-on through `tollgate up` against a real OpenID Provider run
//! on loopback (`oidc-provider`, tests/peers): a tenant admin connects it,
//! people sign in through it (provisioned just in time, linked only by the
//! rules), and the ways a sign-in can be forged or replayed are refused: an
//! unknown state, a state finished in another browser, a replayed callback,
//! a replayed code, a wrong nonce and an ID token for another audience.
//! "SSO required" closes password sign-in to the tenant's people (not its
//! owners); a person SCIM deprovisioned cannot come back through SSO. On
//! SQLite, and on PostgreSQL (row-level security on) when one is given.

use serde_json::{Value, json};
use tollgate_tests::{OpenIdProvider, PASSWORD, Tollgate, temp_dir};

const CALLBACK: &str = "/api/v1/sso/oidc/callback";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A browser: keeps cookies, follows no redirect by itself.
pub(crate) struct Browser {
    pub(crate) http: reqwest::Client,
}

impl Browser {
    pub(crate) fn new() -> Self {
        let http =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http }
    }

    /// `GET url`: the status, the `Location` (made absolute) and the body.
    pub(crate) async fn get(&self, url: &str) -> (u16, Option<String>, String) {
        let response = self.http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| reqwest::Url::parse(url).unwrap().join(l).unwrap().to_string());
        (status, location, response.text().await.unwrap_or_default())
    }

    /// Starts a sign-in at Tollgate: the provider's authorization URL.
    pub(crate) async fn start(&self, tg: &Tollgate, path: &str) -> String {
        let (status, location, body) = self.get(&tg.url(path)).await;
        assert_eq!(status, 303, "{path}: {body}");
        location.unwrap()
    }

    /// Follows the provider's redirects from `url` to the one back to
    /// Tollgate's callback, which it returns without calling.
    async fn at_provider(&self, tg: &Tollgate, url: &str) -> String {
        let mut url = url.to_owned();
        for _ in 0..12 {
            let (status, location, body) = self.get(&url).await;
            let next = location.unwrap_or_else(|| panic!("GET {url} answered {status} without a redirect: {body}"));
            if next.starts_with(&tg.url(CALLBACK)) {
                return next;
            }
            url = next;
        }
        panic!("the provider never sent the browser back");
    }

    /// The callback's status and JSON body.
    async fn finish(&self, callback: &str) -> (u16, Value) {
        let (status, _, body) = self.get(callback).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// A whole sign-in as `email` at `login` (a Tollgate path).
    async fn sign_in(&self, tg: &Tollgate, login: &str, email: &str) -> (u16, Value) {
        let sep = if login.contains('?') { '&' } else { '?' };
        let authorize = self.start(tg, &format!("{login}{sep}login_hint={email}")).await;
        let callback = self.at_provider(tg, &authorize).await;
        self.finish(&callback).await
    }
}

fn person(email: &str, verified: bool) -> Value {
    json!({"email": email, "email_verified": verified, "name": format!("Person {email}")})
}

pub(crate) fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Signs up `email` with a tenant and verifies the address: the login answer.
pub(crate) async fn verified_owner(tg: &Tollgate, email: &str, tenant: &str) -> Value {
    let owner = tg.signup_and_login(email, tenant).await;
    verify(tg, email, owner["access_token"].as_str().unwrap()).await;
    owner
}

async fn verify(tg: &Tollgate, email: &str, token: &str) {
    let code = tg.mailed_token(email, "tgv_");
    let (status, body) = tg.send("POST", "/api/v1/me/verify-email", Some(token), Some(json!({"token": code}))).await;
    assert_eq!(status, 200, "{body}");
}

/// How many security events of `kind` whose details contain `detail` the
/// store holds.
pub(crate) async fn events(db: &str, kind: &str, detail: &str) -> i64 {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(db).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM security_events WHERE kind = $1 AND detail LIKE $2")
        .bind(kind)
        .bind(format!("%{detail}%"))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Where an `up` on SQLite keeps its data, and the database's URL.
pub(crate) fn on_sqlite(tag: &str) -> (std::path::PathBuf, String) {
    let dir = temp_dir(tag);
    let db = format!("sqlite:{}", dir.join("tollgate.db").display());
    (dir, db)
}

/// `up` in `dir` that takes identity providers on loopback over plain
/// http (the tests' own), with `env` (the database).
pub(crate) fn start_for_sso(dir: std::path::PathBuf, env: &[(&str, &str)]) -> Tollgate {
    let mut env = env.to_vec();
    env.extend([("TOLLGATE_SSO_ALLOW_HTTP_LOOPBACK", "true"), ("TOLLGATE_SECURE_COOKIES", "false")]);
    Tollgate::start_with(dir, &env)
}

/// A platform administrator's access token.
pub(crate) async fn platform_root(tg: &Tollgate) -> String {
    let root = tg.signup_and_login("root@platform.test", "Platform").await;
    tg.cli(&["platform-admin", "grant", "root@platform.test"]);
    root["access_token"].as_str().unwrap().to_owned()
}

/// Puts `tenant` on the enterprise plan (as `root`).
pub(crate) async fn enterprise(tg: &Tollgate, root: &str, tenant: &str) {
    let plan = json!({"plan": "enterprise"});
    let (status, body) = tg.send("PUT", &format!("/api/v1/tenants/{tenant}/plan"), Some(root), Some(plan)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn oidc_sign_in_on_sqlite() {
    let (dir, db) = on_sqlite("sso");
    run(dir, &db, &[]).await;
}

#[tokio::test]
async fn oidc_sign_in_on_postgres() {
    let Some(url) = tollgate_tests::postgres_database().await else {
        return;
    };
    run(temp_dir("sso-pg"), &url, &[("TOLLGATE_DATABASE_URL", url.as_str())]).await;
}

async fn run(dir: std::path::PathBuf, db: &str, env: &[(&str, &str)]) {
    let tg = start_for_sso(dir, env);
    let redirect = tg.url(CALLBACK);
    let op = OpenIdProvider::start(&json!({
        "clients": [
            {"client_id": "tollgate", "client_secret": "op-secret-one", "redirect_uris": [redirect]},
            {"client_id": "tollgate-aud", "client_secret": "op-secret-two", "redirect_uris": [redirect], "tamper": "aud"},
        ],
        "accounts": {
            "alice@corp.test": person("alice@corp.test", true),
            "carol@corp.test": person("carol@corp.test", true),
            "dave@corp.test": person("dave@corp.test", true),
            "erin@corp.test": person("erin@corp.test", true),
            "mallory@evil.test": person("mallory@evil.test", true),
            "zed@aud.test": person("zed@aud.test", true),
        },
    }));

    // A platform administrator puts tenants on the enterprise plan.
    let root = platform_root(&tg).await;
    let owner = verified_owner(&tg, "admin@corp.test", "Corp").await;
    let admin = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let slug = owner["tenant"]["slug"].as_str().unwrap().to_owned();
    let connections = format!("/api/v1/tenants/{tenant}/sso/connections");
    let connection = |issuer: &str, client: &str, secret: &str, domain: &str| {
        json!({"type": "oidc", "name": "Corp IdP", "issuer": issuer, "client_id": client,
               "client_secret": secret, "domains": [domain]})
    };
    let corp = connection(&op.issuer, "tollgate", "op-secret-one", "corp.test");

    // SSO is a plan feature.
    let (status, body) = tg.send("POST", &connections, Some(&admin), Some(corp.clone())).await;
    assert_eq!((status, body["feature"].as_str()), (402, Some("sso")), "{body}");
    enterprise(&tg, &root, &tenant).await;

    // A domain is claimed only with proof; the issuer must answer discovery.
    let (status, body) =
        tg.send("POST", &connections, Some(&admin), Some(connection(&op.issuer, "tollgate", "s", "evil.test"))).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("domains")), "{body}");
    let silent = tg.url("/nothing-here");
    let (status, body) =
        tg.send("POST", &connections, Some(&admin), Some(connection(&silent, "tollgate", "s", "corp.test"))).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("issuer")), "{body}");
    let (status, body) = tg
        .send("POST", &connections, Some(&admin), Some(connection("http://idp.example.com", "c", "s", "corp.test")))
        .await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("issuer")), "plain http elsewhere: {body}");
    let (status, created) = tg.send("POST", &connections, Some(&admin), Some(corp.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["client_secret_set"], json!(true));
    assert!(!created.to_string().contains("op-secret-one"), "the secret is never shown: {created}");
    assert_eq!(created["redirect_uri"].as_str(), Some(redirect.as_str()));
    let corp_id = created["id"].as_str().unwrap().to_owned();
    let login = format!("/api/v1/sso/{slug}/login");
    // The secret is sealed at rest.
    let stored: String = {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(db).await.unwrap();
        if db.starts_with("postgres") {
            // Row-level security shows a tenant's rows to its own transactions.
            sqlx::query("SELECT set_config('app.tenant_id', $1, false)")
                .bind(&tenant)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::query_scalar("SELECT client_secret FROM sso_connections WHERE id = $1")
            .bind(&corp_id)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert!(stored.starts_with("v1.") && !stored.contains("op-secret-one"), "{stored}");
    // One connection per domain, platform-wide (even for a platform
    // administrator's own tenant).
    let root_tenant = tg.send("GET", "/api/v1/me", Some(&root), None).await.1;
    let root_tenant = root_tenant["tenant"]["id"].as_str().unwrap().to_owned();
    enterprise(&tg, &root, &root_tenant).await;
    let (status, body) = tg
        .send("POST", &format!("/api/v1/tenants/{root_tenant}/sso/connections"), Some(&root), Some(corp.clone()))
        .await;
    assert_eq!(status, 409, "{body}");

    // Alice signs in and is provisioned just in time with the default role.
    let alice = Browser::new();
    let authorize = alice.start(&tg, &format!("{login}?login_hint=alice@corp.test")).await;
    assert!(authorize.starts_with(&op.issuer), "{authorize}");
    for param in ["code_challenge_method=S256", "state=", "nonce=", "response_type=code"] {
        assert!(authorize.contains(param), "{param} missing from {authorize}");
    }
    let callback = alice.at_provider(&tg, &authorize).await;
    // The callback from another browser (an attacker's link) is refused and
    // does not spend the sign-in.
    let (status, body) = Browser::new().finish(&callback).await;
    assert_eq!(status, 401, "{body}");
    // Two callbacks with one state from the right browser at once: one
    // sign-in (the state is spent once).
    let (first, second) = (alice.http.get(&callback).send(), alice.http.get(&callback).send());
    let (first, second) = tokio::join!(first, second);
    let mut answers = Vec::new();
    for response in [first.unwrap(), second.unwrap()] {
        let status = response.status().as_u16();
        answers.push((status, response.json::<Value>().await.unwrap()));
    }
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!([answers[0].0, answers[1].0], [200, 401], "{answers:?}");
    let body = answers.remove(0).1;
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&access)["amr"], json!(["sso"]));
    assert_eq!(body["tenant"]["id"].as_str(), Some(tenant.as_str()));
    assert_eq!(body["tenant"]["role"].as_str(), Some("member"), "{body}");
    let (status, me) = tg.send("GET", "/api/v1/me", Some(&access), None).await;
    assert_eq!((status, me["user"]["email"].as_str()), (200, Some("alice@corp.test")), "{me}");
    // The session says how it signed in, and through which connection.
    let (status, sessions) = tg.send("GET", "/api/v1/me/sessions", Some(&access), None).await;
    assert_eq!(status, 200, "{sessions}");
    let current = sessions["items"].as_array().unwrap().iter().find(|s| s["current"] == json!(true)).unwrap();
    assert_eq!((current["amr"].clone(), current["sso_connection"].as_str()), (json!(["sso"]), Some(corp_id.as_str())));
    // A member does not manage connections; another tenant's admin sees none.
    let (status, body) = tg.send("GET", &connections, Some(&access), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = tg.send("GET", &format!("{connections}/{corp_id}"), Some(&root), None).await;
    assert!(status == 403 || status == 404, "{status} {body}");
    assert!(!body.to_string().contains("Corp IdP"), "{body}");
    // The same callback later: the browser's binding is gone, the state spent.
    let (status, body) = alice.finish(&callback).await;
    assert_eq!(status, 401, "replayed callback: {body}");
    // A second sign-in finds the linked identity.
    let (status, body) = alice.sign_in(&tg, &login, "alice@corp.test").await;
    assert_eq!((status, body["tenant"]["id"].as_str()), (200, Some(tenant.as_str())), "{body}");

    // An unknown state.
    let (status, body) = alice.finish(&format!("{}?state=forged&code=x", tg.url(CALLBACK))).await;
    assert_eq!(status, 401, "{body}");

    // A replayed code: a spent code with a fresh, valid state.
    let spent_code = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let fresh = Browser::new();
    let authorize = fresh.start(&tg, &format!("{login}?login_hint=alice@corp.test")).await;
    let state = reqwest::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let replay =
        reqwest::Url::parse_with_params(&tg.url(CALLBACK), [("state", &state), ("code", &spent_code)]).unwrap();
    let (status, body) = fresh.finish(replay.as_str()).await;
    assert_eq!(status, 401, "replayed code: {body}");

    // A wrong nonce: the provider is asked with another one than Tollgate's.
    let tampered = Browser::new();
    let authorize = tampered.start(&tg, &format!("{login}?login_hint=alice@corp.test")).await;
    let mut url = reqwest::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let value = if k == "nonce" { "attacker-nonce".to_owned() } else { v.into_owned() };
            (k.into_owned(), value)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = tampered.at_provider(&tg, url.as_str()).await;
    let (status, body) = tampered.finish(&callback).await;
    assert_eq!(status, 401, "wrong nonce: {body}");

    // Addresses of domains the connection does not claim are refused.
    let (status, body) = Browser::new().sign_in(&tg, &login, "mallory@evil.test").await;
    assert_eq!(status, 403, "{body}");

    // Carol signed up by password without verifying her address: her
    // account is not linked, not even once linking is allowed, until she
    // verifies it.
    let (status, _) = tg
        .send(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({"email": "carol@corp.test", "password": PASSWORD, "name": "Carol", "tenant_name": "Carol's"})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, body) = Browser::new().sign_in(&tg, &login, "carol@corp.test").await;
    assert_eq!(status, 403, "linking is off: {body}");
    let mut linking = corp.clone();
    linking["allow_linking"] = json!(true);
    linking.as_object_mut().unwrap().remove("client_secret");
    let (status, body) = tg.send("PUT", &format!("{connections}/{corp_id}"), Some(&admin), Some(linking)).await;
    assert_eq!((status, body["allow_linking"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = Browser::new().sign_in(&tg, &login, "carol@corp.test").await;
    assert_eq!(status, 403, "unverified account: {body}");
    let carol = tg.login("carol@corp.test").await;
    verify(&tg, "carol@corp.test", carol["access_token"].as_str().unwrap()).await;
    let (status, body) = Browser::new().sign_in(&tg, &login, "carol@corp.test").await;
    assert_eq!((status, body["tenant"]["id"].as_str()), (200, Some(tenant.as_str())), "linked (secret kept): {body}");
    let carol_sso = body["access_token"].as_str().unwrap().to_owned();
    let carol_password = carol["access_token"].as_str().unwrap().to_owned();

    // Discovery by email domain leads to the same sign-in.
    let (status, location, _) = Browser::new().get(&tg.url("/api/v1/sso/discover?email=Alice@Corp.test")).await;
    assert_eq!(status, 303);
    let location = location.unwrap();
    assert!(location.contains(&format!("/api/v1/sso/{tenant}/login")), "{location}");
    assert!(location.contains(&corp_id) && location.contains("login_hint=alice%40corp.test"), "{location}");
    let discovering = Browser::new();
    let authorize = discovering.start(&tg, location.trim_start_matches(&tg.base)).await;
    let callback = discovering.at_provider(&tg, &authorize).await;
    let (status, body) = discovering.finish(&callback).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = Browser::new().get(&tg.url("/api/v1/sso/discover?email=x@nowhere.test")).await;
    assert_eq!(status, 404);

    // SSO required closes password sign-in to Carol, not to the owner.
    let settings = json!({"settings": {"security": {"sso_required": true}}});
    let (status, body) = tg.send("PATCH", &format!("/api/v1/tenants/{tenant}"), Some(&admin), Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = tg
        .send("POST", "/api/v1/auth/login", None, Some(json!({"email": "carol@corp.test", "password": PASSWORD})))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("single sign-on"), "{body}");
    tg.login("admin@corp.test").await;
    // Carol's password session (in her own tenant) ended with it; her SSO
    // session and the owner's password session go on.
    for (token, status) in [(&carol_password, 401), (&carol_sso, 200), (&admin, 200)] {
        assert_eq!(tg.send("GET", "/api/v1/me", Some(token), None).await.0, status);
    }

    // An ID token for another audience, from the provider's own key.
    let other = verified_owner(&tg, "ops@aud.test", "Aud").await;
    let other_tenant = other["tenant"]["id"].as_str().unwrap();
    enterprise(&tg, &root, other_tenant).await;
    let (status, body) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{other_tenant}/sso/connections"),
            other["access_token"].as_str(),
            Some(connection(&op.issuer, "tollgate-aud", "op-secret-two", "aud.test")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let other_slug = other["tenant"]["slug"].as_str().unwrap();
    let (status, body) = Browser::new().sign_in(&tg, &format!("/api/v1/sso/{other_slug}/login"), "zed@aud.test").await;
    assert_eq!(status, 401, "wrong audience: {body}");

    // Once the tenant provisions by SCIM, only its provisioned people sign
    // in, and one deprovisioned cannot come back.
    let (status, body) = tg
        .send("POST", &format!("/api/v1/tenants/{tenant}/scim-tokens"), Some(&admin), Some(json!({"name": "IdP"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let scim = body["secret"].as_str().unwrap().to_owned();
    let (status, body) = Browser::new().sign_in(&tg, &login, "dave@corp.test").await;
    assert_eq!(status, 403, "not provisioned: {body}");
    let erin = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "erin",
                      "emails": [{"value": "erin@corp.test", "primary": true}], "active": true});
    let (status, body) = tg.send("POST", "/scim/v2/Users", Some(&scim), Some(erin)).await;
    assert_eq!(status, 201, "{body}");
    let erin_id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = Browser::new().sign_in(&tg, &login, "erin@corp.test").await;
    assert_eq!(status, 200, "provisioned by SCIM: {body}");
    let deactivate = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let (status, body) = tg.send("PATCH", &format!("/scim/v2/Users/{erin_id}"), Some(&scim), Some(deactivate)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = Browser::new().sign_in(&tg, &login, "erin@corp.test").await;
    assert_eq!(status, 403, "deprovisioned: {body}");

    // Every sign-in and every failure is in the audit trail, each failure
    // for its own reason.
    assert_eq!(events(db, "sso.provisioned", "").await, 1, "alice (dave and zed never got in)");
    assert_eq!(events(db, "sso.linked", "").await, 2, "carol and erin");
    assert_eq!(events(db, "sso.connection_created", "").await, 2);
    assert_eq!(events(db, "login.sso_required", "").await, 1);
    assert!(events(db, "login.succeeded", "sso").await >= 5);
    for (reason, count) in [
        ("another browser", 2),
        ("used already", 1),
        ("refused the code", 1),
        ("nonce", 1),
        ("audience", 1),
        ("domain is not one this connection claims", 1),
        ("does not link accounts", 1),
        ("has not verified", 1),
        ("has not provisioned", 2),
    ] {
        assert_eq!(events(db, "sso.login_failed", reason).await, count, "failures for {reason}");
    }
}

//! Plans at the gateway: a feature outside the plan is 402 until an upgrade
//! or an override (and again after the override expires), rate limits are
//! 429 with `Retry-After` and `RateLimit*` fields and recover, the monthly
//! quota stops one tenant and no other, usage survives a graceful restart,
//! and two gateways on one PostgreSQL enforce one quota.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::{Tollgate, temp_dir};

use crate::gateway::{ISSUER, echo_upstream, policies_with_echo};

/// Routes of a product behind a gateway: items for anyone in the tenant,
/// reports only on plans with the `reports` feature.
async fn routes_file(dir: &std::path::Path) -> std::path::PathBuf {
    let echo = echo_upstream().await;
    let routes = dir.join("plan-routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[upstreams.echo]\naddresses = [\"{echo}\"]\n\
             [[routes]]\nname = \"item\"\npath = \"/echo/items/{{id}}\"\nupstream = \"echo\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", param = \"id\" }}\n\
             [[routes]]\nname = \"reports\"\npath = \"/echo/reports\"\nupstream = \"echo\"\nfeature = \"reports\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", id = \"reports\" }}\n"
        ),
    )
    .unwrap();
    routes
}

fn start_gateway(up: &Tollgate, routes: &std::path::Path, env: &[(&str, &str)]) -> Tollgate {
    let policies = policies_with_echo();
    let dir = policies.to_string_lossy().into_owned();
    let mut all = vec![ISSUER, ("TOLLGATE_POLICIES_DIR", dir.as_str())];
    all.extend_from_slice(env);
    Tollgate::start_gateway(up.data_dir.clone(), routes, &all)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn get(gw: &Tollgate, path: &str, token: &str) -> Answer {
    let response = gw.http.get(gw.url(path)).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Polls `path` until it answers `status` (plan and override changes reach
/// the gateway at its next reading of the liveness feed, about a second; an
/// override may be set to expire some seconds on); counts the requests
/// forwarded meanwhile.
async fn until(gw: &Tollgate, path: &str, token: &str, status: u16, forwarded: &mut i64) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let a = get(gw, path, token).await;
        if a.status == 200 {
            *forwarded += 1;
        }
        if a.status == status {
            return a;
        }
        assert!(Instant::now() < deadline, "{path} still answers {} {}, not {status}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rfc3339_in(secs: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    at.format(&time::format_description::well_known::Rfc3339).unwrap()
}

async fn platform_admin(up: &Tollgate, email: &str, env: &[(&str, &str)]) -> String {
    up.signup_and_login(email, "Platform").await;
    up.cli_with(&["platform-admin", "grant", email], env);
    up.login(email).await["access_token"].as_str().unwrap().to_owned()
}

async fn set_overrides(up: &Tollgate, root: &str, tenant: &str, overrides: Value) {
    let path = format!("/api/v1/tenants/{tenant}/entitlements");
    let (status, body) = up.send("PUT", &path, Some(root), Some(overrides)).await;
    assert_eq!(status, 200, "{body}");
}

async fn api_calls(up: &Tollgate, token: &str, tenant: &str) -> i64 {
    let (status, body) = up.send("GET", &format!("/api/v1/tenants/{tenant}/usage"), Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    body["metrics"]["api_calls"]["used"].as_i64().unwrap()
}

#[tokio::test]
async fn plans_features_rate_limits_and_quotas_at_the_gateway() {
    let up = Tollgate::start_with(temp_dir("plans-up"), &[ISSUER]);
    let routes = routes_file(&up.data_dir).await;
    let gw = start_gateway(&up, &routes, &[]);
    let owner = up.signup_and_login("owner@plans.test", "Planned").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let root = platform_admin(&up, "root@plans.test", &[]).await;
    let mut forwarded: i64 = 0;

    // A free tenant: items pass with a RateLimit field, reports are 402.
    let a = get(&gw, "/echo/items/1", &token).await;
    assert_eq!(a.status, 200, "{}", a.body);
    forwarded += 1;
    assert!(header(&a, "ratelimit").starts_with('"'), "{:?}", a.headers);
    let a = get(&gw, "/echo/reports", &token).await;
    assert_eq!(a.status, 402, "{}", a.body);
    assert_eq!(header(&a, "content-type"), "application/problem+json");
    assert_eq!((a.body["feature"].as_str(), a.body["plans"].clone()), (Some("reports"), json!(["enterprise", "pro"])));

    // An override with an expiry opens it (once the gateway's liveness feed
    // names the change), and its expiry closes it again, on the second.
    set_overrides(
        &up,
        &root,
        &tenant,
        json!({"features": {"reports": {"enabled": true, "expires_at": rfc3339_in(10)}}}),
    )
    .await;
    until(&gw, "/echo/reports", &token, 200, &mut forwarded).await;
    until(&gw, "/echo/reports", &token, 402, &mut forwarded).await;
    // So does an upgrade.
    let (status, body) =
        up.send("PUT", &format!("/api/v1/tenants/{tenant}/plan"), Some(&root), Some(json!({"plan": "pro"}))).await;
    assert_eq!(status, 200, "{body}");
    until(&gw, "/echo/reports", &token, 200, &mut forwarded).await;

    // A key limited to 3 requests per second: a burst is cut at 3, with
    // the fields of the exhausted policy, and passes again after a second.
    let (status, key) = up
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/api-keys"),
            Some(&token),
            Some(json!({"name": "k", "scopes": ["echo.read"]})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["secret"].as_str().unwrap().to_owned();
    set_overrides(&up, &root, &tenant, json!({"limits": {"requests_per_second_per_key": {"value": 3}}})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = get(&gw, "/echo/items/2", &key).await;
        if a.status == 200 {
            forwarded += 1;
        }
        if header(&a, "ratelimit-policy") == "\"key\";q=3;w=1" || a.status == 429 {
            break;
        }
        assert!(Instant::now() < deadline, "the key's limit did not arrive: {:?}", a.headers);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // One request comes back every 333 ms: the fourth, right after the
    // third, is refused. A burst whose first four took 300 ms or more (a
    // stalled machine) may have earned one back, so it is tried again
    // after the bucket refills rather than read (the last two may pass on
    // a very slow machine).
    let mut attempts = 0;
    let (statuses, refused) = loop {
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let started = Instant::now();
        let (mut statuses, mut refused, mut took) = (Vec::new(), None, Duration::ZERO);
        for i in 0..6 {
            let a = get(&gw, "/echo/items/3", &key).await;
            statuses.push(a.status);
            if i == 3 {
                took = started.elapsed();
            }
            if a.status == 200 {
                forwarded += 1;
            } else if refused.is_none() {
                refused = Some(a);
            }
        }
        if took < Duration::from_millis(300) || attempts == 3 {
            break (statuses, refused);
        }
    };
    assert_eq!(statuses[..4], [200, 200, 200, 429], "a burst of 3: {statuses:?}");
    let refused = refused.unwrap();
    assert_eq!(header(&refused, "content-type"), "application/problem+json");
    assert_eq!(
        (header(&refused, "retry-after"), header(&refused, "ratelimit-policy"), header(&refused, "ratelimit")),
        ("1", "\"key\";q=3;w=1", "\"key\";r=0;t=1")
    );
    assert_eq!(refused.body["policy"], "key", "{}", refused.body);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&gw, "/echo/items/3", &key).await.status, 200, "recovered after the window");
    forwarded += 1;
    // The person's own token is another bucket.
    assert_eq!(get(&gw, "/echo/items/3", &token).await.status, 200);
    forwarded += 1;

    // A second tenant with a monthly quota of 4: stopped at 4, the first unaffected.
    let other = up.signup_and_login("other@plans.test", "Quota Co").await;
    let other_token = other["access_token"].as_str().unwrap().to_owned();
    let other_tenant = other["tenant"]["id"].as_str().unwrap().to_owned();
    set_overrides(&up, &root, &other_tenant, json!({"limits": {"api_calls_per_month": {"value": 4}}})).await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let a = get(&gw, "/echo/items/9", &other_token).await;
        statuses.push(a.status);
        last = Some(a);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let last = last.unwrap();
    assert_eq!(last.body["type"], "urn:tollgate:problem:quota-exceeded", "{}", last.body);
    let retry: i64 = header(&last, "retry-after").parse().unwrap();
    assert!(retry > 0 && retry <= 31 * 86_400, "until the month ends: {retry}");
    assert!(header(&last, "ratelimit-policy").starts_with("\"monthly\";q=4;w="), "{:?}", last.headers);
    assert_eq!(get(&gw, "/echo/items/3", &token).await.status, 200, "the first tenant is unaffected");
    forwarded += 1;
    // The platform's own API is not metered: the tenant can still manage itself.
    assert_eq!(
        gw.send("GET", "/api/v1/me", Some(&other_token), None).await.0,
        404,
        "this gateway has no platform routes"
    );
    assert_eq!(up.send("GET", "/api/v1/me", Some(&other_token), None).await.0, 200);

    // Usage reaches the store within a flush and survives a graceful stop.
    let _ = gw.terminate();
    assert_eq!(api_calls(&up, &token, &tenant).await, forwarded, "every forwarded request counted once");
    assert_eq!(api_calls(&up, &other_token, &other_tenant).await, 4);
    // A restarted gateway starts from the stored count: the quota holds.
    let gw = start_gateway(&up, &routes, &[]);
    assert_eq!(get(&gw, "/echo/items/9", &other_token).await.status, 429);

    // `up`'s own gateway counts the tenant's calls of the platform API too
    // (never against the quota): they reach the store within a flush.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, usage) =
            up.send("GET", &format!("/api/v1/tenants/{other_tenant}/usage"), Some(&other_token), None).await;
        if usage["metrics"]["platform_calls"]["used"].as_i64().is_some_and(|n| n >= 2) {
            assert_eq!(usage["metrics"]["platform_calls"]["limit"], Value::Null, "{usage}");
            break;
        }
        assert!(Instant::now() < deadline, "platform calls are not counted: {usage}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn two_gateways_on_one_postgres_enforce_one_quota() {
    let Some(url) = tollgate_tests::postgres_database().await else {
        return;
    };
    let db = [("TOLLGATE_DATABASE_URL", url.as_str())];
    let up = Tollgate::start_with(temp_dir("plans-pg"), &[ISSUER, db[0]]);
    let routes = routes_file(&up.data_dir).await;
    let gateways = [start_gateway(&up, &routes, &db), start_gateway(&up, &routes, &db)];
    let owner = up.signup_and_login("owner@pg-quota.test", "Shared Quota").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let root = platform_admin(&up, "root@pg-quota.test", &db).await;
    // Quota 40, each gateway passing at most 20 requests per second for the
    // tenant: the documented overshoot is (gateways - 1) x 20/s x 2 x 1 s = 40.
    let limits = json!({"limits": {"api_calls_per_month": {"value": 40}, "requests_per_second": {"value": 20}}});
    set_overrides(&up, &root, &tenant, limits).await;
    let mut tasks = tokio::task::JoinSet::new();
    for gw in &gateways {
        for _ in 0..4 {
            let (client, url, token) = (gw.http.clone(), gw.url("/echo/items/1"), token.clone());
            tasks.spawn(async move {
                let (mut ok, mut quota) = (0, 0);
                let deadline = Instant::now() + Duration::from_secs(6);
                while Instant::now() < deadline {
                    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    match status {
                        200 => ok += 1,
                        429 if body["type"] == "urn:tollgate:problem:quota-exceeded" => quota += 1,
                        429 => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                (ok, quota)
            });
        }
    }
    let results = tasks.join_all().await;
    let ok: i64 = results.iter().map(|r| r.0).sum();
    let quota: i64 = results.iter().map(|r| r.1).sum();
    assert!((40..=80).contains(&ok), "{ok} admitted for a quota of 40");
    assert!(quota > 0, "both gateways stop the tenant");
    for gw in gateways {
        let _ = gw.terminate();
    }
    assert_eq!(api_calls(&up, &token, &tenant).await, ok, "every admitted call is counted");
}

/// A tenant that requires a second factor: its products refuse people
/// signed in with a password alone, at the gateway, from its next reading
/// of the liveness feed; the same people get through once signed in with a second factor.
#[tokio::test]
async fn a_tenant_requiring_mfa_is_enforced_at_the_gateway() {
    let up = Tollgate::start_with(temp_dir("mfa-up"), &[ISSUER]);
    let routes = routes_file(&up.data_dir).await;
    let gw = start_gateway(&up, &routes, &[]);
    let owner = up.signup_and_login("owner@strict.test", "Strict").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw, "/echo/items/1", &token).await.status, 200);
    // Requiring a second factor is a plan feature (`sso`).
    let root = platform_admin(&up, "root@strict.test", &[]).await;
    let plan = json!({"plan": "enterprise"});
    let (status, _) = up.send("PUT", &format!("/api/v1/tenants/{tenant}/plan"), Some(&root), Some(plan)).await;
    assert_eq!(status, 200);
    let settings = json!({"settings": {"security": {"mfa_required": true}}});
    let (status, body) = up.send("PATCH", &format!("/api/v1/tenants/{tenant}"), Some(&token), Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let mut forwarded = 0;
    let refused = until(&gw, "/echo/items/1", &token, 403, &mut forwarded).await;
    assert!(refused.body["detail"].as_str().unwrap_or("").contains("second factor"), "{}", refused.body);

    // Enrol with the password session, then sign in with the second factor.
    let (status, enrolment) = up.send("POST", "/api/v1/me/mfa/totp", Some(&token), None).await;
    assert_eq!(status, 201, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap();
    let code = |offset: u64| totp(secret, offset);
    let (status, body) =
        up.send("POST", "/api/v1/me/mfa/totp/confirm", Some(&token), Some(json!({"code": code(0)}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, login) = up
        .send(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "owner@strict.test", "password": tollgate_tests::PASSWORD})),
        )
        .await;
    assert_eq!((status, login["mfa_required"].as_bool()), (200, Some(true)), "{login}");
    let answer = json!({"challenge": login["challenge"], "code": code(30)});
    let (status, verified) = up.send("POST", "/api/v1/auth/mfa/verify", None, Some(answer)).await;
    assert_eq!(status, 200, "{verified}");
    let strong = verified["access_token"].as_str().unwrap();
    assert_eq!(get(&gw, "/echo/items/1", strong).await.status, 200, "with a second factor");
}

/// The RFC 6238 code of a base32 secret, `offset` seconds from now.
fn totp(secret: &str, offset: u64) -> String {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut buffer, mut key) = (0u32, 0u64, Vec::new());
    for c in secret.chars() {
        buffer = (buffer << 5) | alphabet.find(c).unwrap() as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            key.push((buffer >> bits) as u8);
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let step = (now + offset) / 30;
    let tag =
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key), &step.to_be_bytes());
    let d = tag.as_ref();
    let o = (d[d.len() - 1] & 0x0f) as usize;
    let n = u32::from_be_bytes([d[o] & 0x7f, d[o + 1], d[o + 2], d[o + 3]]) % 1_000_000;
    format!("{n:06}")
}

/// A plan defined in the backend's configuration only is enforced by a
/// gateway whose own configuration does not know it: the backend seeds its
/// catalog into the store, and every process reads it from there.
#[tokio::test]
async fn the_backends_catalog_is_every_gateways() {
    let dir = temp_dir("catalog");
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, "[plans.team]\ndisplay_name = \"Team\"\nprice_minor = 1900\nfeatures = [\"reports\"]\n")
        .unwrap();
    let config_path = config.to_string_lossy().into_owned();
    let up = Tollgate::start_with(dir, &[ISSUER, ("TOLLGATE_CONFIG", config_path.as_str())]);
    let (status, plans) = up.send("GET", "/api/v1/plans", None, None).await;
    assert_eq!(status, 200);
    assert!(plans["items"].as_array().unwrap().iter().any(|p| p["name"] == json!("team")), "{plans}");
    // This gateway's configuration is the built-in catalog alone.
    let routes = routes_file(&up.data_dir).await;
    let gw = start_gateway(&up, &routes, &[]);
    let root = platform_admin(&up, "root@catalog.test", &[]).await;
    let owner = up.signup_and_login("owner@catalog.test", "Catalog").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw, "/echo/reports", &token).await.status, 402, "free has no reports");
    let plan = json!({"plan": "team"});
    let (status, body) = up.send("PUT", &format!("/api/v1/tenants/{tenant}/plan"), Some(&root), Some(plan)).await;
    assert_eq!(status, 200, "{body}");
    let mut forwarded = 0;
    until(&gw, "/echo/reports", &token, 200, &mut forwarded).await;
}

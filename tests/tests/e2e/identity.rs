//! The README walk-through and the identity flows across processes: CLI and
//! server sharing the data dir, key rotation, restarts, config errors.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::{PASSWORD, Tollgate, binary, temp_dir};

#[tokio::test]
async fn readme_walkthrough() {
    let tg = Tollgate::start();
    let login = tg.signup_and_login("ada@example.com", "Analytical Engines").await;
    let token = login["access_token"].as_str().unwrap();
    let tenant = login["tenant"]["id"].as_str().unwrap();

    let (status, me) = tg.send("GET", "/api/v1/me", Some(token), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"]["slug"], "analytical-engines");
    assert_eq!(me["user"]["email_verified"], false);
    let verify = tg.mailed_token("ada@example.com", "tgv_");
    let (status, me) = tg.send("POST", "/api/v1/me/verify-email", Some(token), Some(json!({"token": verify}))).await;
    assert_eq!((status, me["user"]["email_verified"].as_bool()), (200, Some(true)), "{me}");

    let (status, body) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/invitations"),
            Some(token),
            Some(json!({"email": "grace@example.com", "role": "member"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let invite = tg.mailed_token("grace@example.com", "tgi_");
    let (status, body) = tg
        .send(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({"token": invite, "name": "Grace Hopper", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let grace = tg.login("grace@example.com").await;
    assert_eq!(grace["tenant"]["role"], "member");

    let (status, key) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/api-keys"),
            Some(token),
            Some(json!({"name": "ci", "scopes": ["members:read"]})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().unwrap();
    let (status, members) = tg.send("GET", &format!("/api/v1/tenants/{tenant}/members"), Some(secret), None).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["items"].as_array().unwrap().len(), 2);

    let key_id = key["api_key"]["id"].as_str().unwrap();
    let (status, _) =
        tg.send("DELETE", &format!("/api/v1/tenants/{tenant}/api-keys/{key_id}"), Some(token), None).await;
    assert_eq!(status, 204);
    let (status, body) = tg.send("GET", &format!("/api/v1/tenants/{tenant}/members"), Some(secret), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "urn:tollgate:problem:unauthorized");
}

#[tokio::test]
async fn key_rotation_from_the_cli_reaches_the_running_server() {
    let tg = Tollgate::start();
    let login = tg.signup_and_login("rot@example.com", "Rotation").await;
    let old_token = login["access_token"].as_str().unwrap().to_owned();
    let out = String::from_utf8(tg.cli(&["keys", "rotate"]).stdout).unwrap();
    let new_kid = out.split('`').nth(1).expect("the new kid in backticks").to_owned();

    // The server reloads keys every second here; wait (bounded) until it publishes both.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, jwks) = tg.send("GET", "/.well-known/jwks.json", None, None).await;
        let kids: Vec<String> =
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
        if kids.contains(&new_kid) {
            assert_eq!(kids.len(), 2, "the old key stays published: {kids:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the rotated key never appeared: {kids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = tg.send("GET", "/api/v1/me", Some(&old_token), None).await;
    assert_eq!(status, 200, "tokens of the old key stay valid");
    let fresh = tg.login("rot@example.com").await;
    let header = fresh["access_token"].as_str().unwrap().split('.').next().unwrap().to_owned();
    use base64::Engine as _;
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
}

#[tokio::test]
async fn data_survives_a_restart_and_platform_admin_is_granted_by_cli() {
    // The issuer must not change across the restart (port 0 gives a new port).
    let public = [("TOLLGATE_PUBLIC_URL", "http://tollgate.e2e.test")];
    let tg = Tollgate::start_with(temp_dir("restart"), &public);
    let victim = tg.signup_and_login("victim@example.com", "Victim").await;
    let victim_tenant = victim["tenant"]["id"].as_str().unwrap().to_owned();
    let (status, jwks_before) = tg.send("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(status, 200);
    tg.signup_and_login("root@example.com", "Platform").await;
    let dir = tg.stop();

    let tg = Tollgate::start_with(dir, &public);
    let (_, jwks_after) = tg.send("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks_before, jwks_after, "the signing key persists in the data dir");
    let (status, _) = tg.send("GET", "/api/v1/me", Some(victim["access_token"].as_str().unwrap()), None).await;
    assert_eq!(status, 200, "tokens issued before the restart stay valid");

    tg.cli(&["platform-admin", "grant", "root@example.com"]);
    let root = tg.login("root@example.com").await;
    let root_token = root["access_token"].as_str().unwrap();
    let (status, body) =
        tg.send("POST", &format!("/api/v1/tenants/{victim_tenant}/suspend"), Some(root_token), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = tg.send("GET", "/api/v1/me", Some(victim["access_token"].as_str().unwrap()), None).await;
    assert_eq!(status, 403, "{body}");
}

/// The binary on PostgreSQL: migrations, signing keys and the identity flows
/// through row-level security, as the application's own (non-superuser) role.
#[tokio::test]
async fn runs_on_postgresql() {
    let Some(url) = tollgate_tests::postgres_database().await else {
        return;
    };
    let tg = Tollgate::start_with(temp_dir("pg"), &[("TOLLGATE_DATABASE_URL", url.as_str())]);
    let login = tg.signup_and_login("pg@example.com", "On Postgres").await;
    let token = login["access_token"].as_str().unwrap();
    let tenant = login["tenant"]["id"].as_str().unwrap();
    let (status, body) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/invitations"),
            Some(token),
            Some(json!({"email": "colleague@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, members) = tg.send("GET", &format!("/api/v1/tenants/{tenant}/members"), Some(token), None).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["items"][0]["email"], "pg@example.com");
    let (status, ready) = tg.send("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let other = tg.signup_and_login("other@example.com", "Other").await;
    let (status, _) = tg
        .send("GET", &format!("/api/v1/tenants/{tenant}/members"), Some(other["access_token"].as_str().unwrap()), None)
        .await;
    assert_eq!(status, 404);
}

#[test]
fn invalid_configuration_is_refused_with_a_clear_message() {
    let output = Command::new(binary())
        .args(["up", "--listen", "not-an-address", "--data-dir"])
        .arg(temp_dir("badconf"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid `listen`"), "{stderr}");

    let dir = temp_dir("badfile");
    let file = dir.join("tollgate.toml");
    std::fs::write(&file, "[auth]\naccess_ttl_secs = 5\n").unwrap();
    let output = Command::new(binary())
        .args(["--config"])
        .arg(&file)
        .args(["migrate", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.access_ttl_secs"));
}

#[test]
fn policy_commands_validate_and_test_the_repository_policies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let output = Command::new(binary()).args(["policy", "validate", "--dir"]).arg(&dir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = Command::new(binary()).args(["policy", "test", "--dir"]).arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");

    let broken = temp_dir("policies");
    std::fs::create_dir_all(broken.join("platform")).unwrap();
    std::fs::copy(dir.join("schema.cedarschema"), broken.join("schema.cedarschema")).unwrap();
    std::fs::write(
        broken.join("platform/bad.cedar"),
        "@id(\"bad\") permit(principal, action, resource) when { resource.nope };",
    )
    .unwrap();
    let output = Command::new(binary()).args(["policy", "validate", "--dir"]).arg(&broken).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("do not validate"));
}

/// Behind the gateway the backend records the client's address, not the
/// gateway's: the client here connects from 127.0.0.2, the gateway from
/// 127.0.0.1.
#[tokio::test]
async fn the_backend_sees_the_client_address_through_the_gateway() {
    let tg = Tollgate::start();
    tg.signup_and_login("far@example.com", "Far Away").await;
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let login: serde_json::Value = client
        .post(tg.url("/api/v1/auth/login"))
        .json(&json!({"email": "far@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let sessions: serde_json::Value =
        client.get(tg.url("/api/v1/me/sessions")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    let current = sessions["items"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(current["ip"], "127.0.0.2", "{sessions}");
}

/// The takeover the security review reproduced against `up`: an attacker
/// signs up with Bob's address first; Corp invites Bob as admin; Bob accepts
/// with the mailed token. Bob gets a new account in Corp, and the attacker's
/// password logs into nothing of Corp's.
#[tokio::test]
async fn signing_up_with_someone_elses_address_captures_no_invitation() {
    let tg = Tollgate::start();
    let corp = tg.signup_and_login("ceo@corp.example", "Corp").await;
    let corp_id = corp["tenant"]["id"].as_str().unwrap();
    let squat = tg.signup_and_login("bob@corp.example", "Squat").await;
    let (_, squatter) = tg.send("GET", "/api/v1/me", squat["access_token"].as_str(), None).await;
    let squatter = squatter["user"]["id"].as_str().unwrap().to_owned();
    let (status, body) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{corp_id}/invitations"),
            corp["access_token"].as_str(),
            Some(json!({"email": "bob@corp.example", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let invite = tg.mailed_token("bob@corp.example", "tgi_");
    let accept = json!({"token": invite, "name": "Bob", "password": "bob's own passphrase 42"});
    let (status, body) = tg.send("POST", "/api/v1/invitations/accept", None, Some(accept)).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["user"]["id"].is_string() && body["user"]["id"] != squatter.as_str(), "{body}");
    let attacker = json!({"email": "bob@corp.example", "password": PASSWORD, "tenant": corp_id});
    let (status, body) = tg.send("POST", "/api/v1/auth/login", None, Some(attacker)).await;
    assert_eq!(status, 401, "the attacker's password opens nothing: {body}");
    let bob = json!({"email": "bob@corp.example", "password": "bob's own passphrase 42", "tenant": corp_id});
    let (status, body) = tg.send("POST", "/api/v1/auth/login", None, Some(bob)).await;
    assert_eq!((status, body["tenant"]["role"].as_str()), (200, Some("admin")), "{body}");
}

/// Sign-in costs a password hash for anyone: the gateway allows each client
/// address 20 attempts a minute (whatever the emails), then answers 429
/// with the route's policy, while other addresses still get in.
#[tokio::test]
async fn sign_in_attempts_are_limited_per_client_address() {
    let tg = Tollgate::start();
    tg.signup_and_login("near@example.com", "Near").await;
    let attempt = |client: reqwest::Client, n: usize| {
        let url = tg.url("/api/v1/auth/login");
        async move {
            let response = client
                .post(url)
                .json(&json!({"email": format!("nobody{n}@example.com"), "password": "wrong password here"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let policy = response.headers().get("ratelimit-policy").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (status, policy)
        }
    };
    let here = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut refused_policy = None;
    // The sign-in above took one of this address's 20 (sign-up has its own).
    for n in 0..21 {
        let (status, policy) = attempt(here.clone(), n).await;
        statuses.push(status);
        if status == 429 && refused_policy.is_none() {
            refused_policy = policy;
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 19, "{statuses:?}");
    assert_eq!(statuses[19..], [429, 429], "{statuses:?}");
    assert_eq!(refused_policy.as_deref(), Some("\"route-ip\";q=20;w=60"));
    let elsewhere = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 3])).build().unwrap();
    assert_eq!(attempt(elsewhere, 99).await.0, 401, "another address is not limited by this one");
}

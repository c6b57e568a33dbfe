//! One config file for `up`, with a product of the user's behind it; the
//! platform's routes reserved; API keys used only through the gateway; and
//! instances sharing one store sharing one key set.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::{Tollgate, run_to_exit, temp_dir};

use crate::gateway::echo_upstream;

const PUBLIC: (&str, &str) = ("TOLLGATE_PUBLIC_URL", "http://tollgate.layering.test");

/// A config file with the echo product at `/echo/...` (Cedar: `crm.read` on
/// a `CrmApi` resource) and the demo switched off.
fn config_with_echo(dir: &std::path::Path, echo: std::net::SocketAddr) -> String {
    let file = dir.join("tollgate.toml");
    std::fs::write(
        &file,
        format!(
            "demo = false\n\
             [gateway]\n\
             trusted_proxies = [\"127.0.0.1\"]\n\
             [gateway.upstreams.echo]\naddresses = [\"{echo}\"]\n\
             [[gateway.routes]]\nname = \"echo\"\npath = \"/echo/{{rest*}}\"\nupstream = \"echo\"\n\
             methods = {{ GET = \"crm.read\" }}\nresource = {{ type = \"CrmApi\", id = \"echo\" }}\n\
             [[gateway.routes]]\nname = \"echo-credential\"\npath = \"/with-credential/{{rest*}}\"\nupstream = \"echo\"\n\
             methods = {{ GET = \"crm.read\" }}\nresource = {{ type = \"CrmApi\", id = \"echo\" }}\nforward_authorization = true\n"
        ),
    )
    .unwrap();
    file.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_product_in_the_config_file_runs_behind_up() {
    let echo = echo_upstream().await;
    let dir = temp_dir("layering-up");
    let config = config_with_echo(&dir, echo);
    let tg = Tollgate::start_with(dir, &[PUBLIC, ("TOLLGATE_CONFIG", config.as_str())]);
    let owner = tg.signup_and_login("owner@layering.test", "Layering").await;
    let token = owner["access_token"].as_str().unwrap();
    let tenant = owner["tenant"]["id"].as_str().unwrap();

    let (status, seen) = tg.send("GET", "/echo/items/7?x=1", Some(token), None).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["uri"], "/echo/items/7?x=1");
    // The upstream verifies the assertion at the JWKS, as a product would.
    let assertion = seen["headers"]["x-tollgate-assertion"][0].as_str().unwrap();
    let kid = jsonwebtoken::decode_header(assertion).unwrap().kid.unwrap();
    let (_, jwks) = tg.send("GET", "/.well-known/jwks.json", None, None).await;
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap().clone();
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["echo"]);
    validation.set_issuer(&[PUBLIC.1]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation).unwrap().claims;
    assert_eq!((claims["tid"].as_str(), claims["act"].as_str()), (Some(tenant), Some("crm.read")));
    assert!(seen["headers"].get("authorization").is_none(), "not forwarded unless the route says so");
    // The test client is a trusted proxy here: the client is the nearest
    // address it forwarded for.
    let auth = format!("Bearer {token}");
    let xff = [("Authorization", auth.as_str()), ("X-Forwarded-For", "198.51.100.4, 203.0.113.7")];
    let (status, body) = tollgate_tests::raw_get(&tg.base, "/echo/xff", &xff).await;
    assert_eq!(status, 200, "{body}");
    let seen_xff: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen_xff["headers"]["x-forwarded-for"], json!(["203.0.113.7"]));
    let (_, seen) = tg.send("GET", "/with-credential/x", Some(token), None).await;
    assert_eq!(seen["headers"]["authorization"][0], format!("Bearer {token}"), "the route opted in");

    // The demo is switched off in the file: its routes are not there.
    assert_eq!(tg.send("GET", "/crm/contacts", Some(token), None).await.0, 404);
    // Anonymous callers do not read a tenant's product.
    assert_eq!(tg.send("GET", "/echo/items/7", None, None).await.0, 403);

    // An API key used only on the product's route shows when it was used.
    let keys = format!("/api/v1/tenants/{tenant}/api-keys");
    let (status, key) =
        tg.send("POST", &keys, Some(token), Some(json!({"name": "echo", "scopes": ["crm.read"]}))).await;
    assert_eq!(status, 201, "{key}");
    let (secret, key_id) = (key["secret"].as_str().unwrap(), key["api_key"]["id"].as_str().unwrap());
    assert!(key["api_key"]["last_used_at"].is_null());
    assert_eq!(tg.send("GET", "/echo/items/8", Some(secret), None).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = tg.send("GET", &keys, Some(token), None).await;
        let listed = list["items"].as_array().unwrap().iter().find(|k| k["id"] == key_id).unwrap().clone();
        if listed["last_used_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never recorded the key's use: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A tenant layer that stops loading refuses the tenant's requests, with
    // the answer the decision point gives (the backend's tests check that one).
    let policies = format!("/api/v1/tenants/{tenant}/policies");
    let layer = json!({"source": "@id(\"x\") forbid (principal, action == Action::\"deal.close\", resource);"});
    assert_eq!(tg.send("POST", &policies, Some(token), Some(layer)).await.0, 201);
    assert_eq!(tg.send("POST", &format!("{policies}/1/activate"), Some(token), None).await.0, 200);
    assert_eq!(tg.send("GET", "/echo/items/9", Some(token), None).await.0, 200);
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite:{}", tg.data_dir.join("tollgate.db").display());
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE tenant_policies SET source = 'forbid (principal, action' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = tg.send("GET", "/echo/items/9", Some(token), None).await;
        if status == 403 {
            assert_eq!(body["detail"], "the tenant's policies cannot be loaded", "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "the gateway kept serving a layer that no longer loads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn user_routes_cannot_take_the_platforms() {
    let dir = temp_dir("layering-reserved");
    for (table, needle) in [
        (
            "[gateway.upstreams.mine]\naddresses = [\"127.0.0.1:9\"]\n[[gateway.routes]]\nname = \"tenants\"\n\
             path = \"/api/v1/tenants\"\nupstream = \"mine\"\nmethods = { GET = \"crm.read\" }\n\
             resource = { type = \"CrmApi\", id = \"x\" }\n",
            "route `tenants` (/api/v1/tenants) collides with Tollgate's route `platform-api`",
        ),
        ("[gateway.upstreams.backend]\naddresses = [\"127.0.0.1:9\"]\n", "upstream `backend` is reserved"),
        (
            "[gateway.upstreams.mine]\naddresses = [\"127.0.0.1:9\"]\n[[gateway.routes]]\nname = \"c\"\n\
             path = \"/crm/{rest*}\"\nupstream = \"mine\"\nmethods = { GET = \"crm.read\" }\n\
             resource = { type = \"CrmApi\", id = \"x\" }\n",
            "collides with Tollgate's route `crm-",
        ),
    ] {
        let file = dir.join("tollgate.toml");
        std::fs::write(&file, format!("[gateway]\n{table}")).unwrap();
        let file = file.to_string_lossy().into_owned();
        let data = dir.join("data").to_string_lossy().into_owned();
        let args = ["--config", file.as_str(), "up", "--listen", "127.0.0.1:0", "--data-dir", data.as_str()];
        let output = run_to_exit(&args, &[], Duration::from_secs(60));
        assert!(!output.status.success(), "{needle}: up started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logs in at `tg` and checks the token works there and at `other`.
async fn works_at_both(tg: &Tollgate, other: &Tollgate, email: &str) -> String {
    let token = tg.login(email).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(tg.send("GET", "/api/v1/me", Some(&token), None).await.0, 200);
    // The other instance reloads the published keys every second here.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = other.send("GET", "/api/v1/me", Some(&token), None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a token of one instance is refused by the other: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token
}

#[tokio::test]
async fn instances_sharing_a_store_share_one_key_set() {
    let first = Tollgate::start_with(temp_dir("keys-a"), &[PUBLIC]);
    first.signup_and_login("keys@layering.test", "Keys").await;
    let before = works_at_both(&first, &first, "keys@layering.test").await;
    // A second instance with a data dir of its own (so no private key of
    // the first's) on the first one's database.
    let url = format!("sqlite:{}", first.data_dir.join("tollgate.db").display());
    let second = Tollgate::start_with(temp_dir("keys-b"), &[PUBLIC, ("TOLLGATE_DATABASE_URL", url.as_str())]);
    assert_eq!(second.send("GET", "/api/v1/me", Some(&before), None).await.0, 200, "the first's tokens verify");
    works_at_both(&second, &first, "keys@layering.test").await;
    // The second one's start retired nothing of the first's: it still signs,
    // and its tokens (old and new) verify everywhere.
    let after = works_at_both(&first, &second, "keys@layering.test").await;
    assert_eq!(first.send("GET", "/api/v1/me", Some(&before), None).await.0, 200);
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_eq!(kid(&before), kid(&after), "the first instance keeps signing with its own key");
    let (_, jwks) = second.send("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "both instances' keys are published: {jwks}");
}

//! The gateway against a real upstream: identity headers and assertions,
//! header spoofing, path tricks, tenant confusion, bad credentials, the
//! revocation bound, and upstream failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, Uri};
use serde_json::{Value, json};
use tollgate_tests::{Tollgate, raw_exchange, raw_get, run_to_exit, temp_dir};

pub(crate) const ISSUER: (&str, &str) = ("TOLLGATE_PUBLIC_URL", "http://tollgate.e2e.test");

/// An upstream that answers every request with what it received.
pub(crate) async fn echo_upstream() -> std::net::SocketAddr {
    async fn echo(method: axum::http::Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &headers {
            seen.entry(name.as_str().to_owned()).or_default().push(value.to_str().unwrap_or("").to_owned());
        }
        Json(json!({"method": method.as_str(), "uri": uri.to_string(), "headers": seen}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(echo)).await });
    addr
}

/// The repository's policies plus a product's: a resource type, two actions,
/// viewers read and admins write.
pub(crate) fn policies_with_echo() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let dir = temp_dir("policies");
    std::fs::create_dir_all(dir.join("platform")).unwrap();
    let mut schema = std::fs::read_to_string(repo.join("schema.cedarschema")).unwrap();
    schema.push_str(
        "\nentity Echo in [Tenant] = { tenant: Tenant };\n\
         action \"echo.read\", \"echo.write\" appliesTo { principal: [User, ApiKey, Anonymous], resource: [Echo], context: GatewayContext };\n",
    );
    std::fs::write(dir.join("schema.cedarschema"), schema).unwrap();
    for file in ["guardrails.cedar", "api.cedar"] {
        std::fs::copy(repo.join("platform").join(file), dir.join("platform").join(file)).unwrap();
    }
    std::fs::write(
        dir.join("platform/echo.cedar"),
        "@id(\"echo.viewers-read\") @reason(\"members of the tenant read\")\n\
         permit (principal in Role::\"viewer\", action == Action::\"echo.read\", resource);\n\
         @id(\"echo.admins-write\") @reason(\"admins write\")\n\
         permit (principal in Role::\"admin\", action == Action::\"echo.write\", resource);\n",
    )
    .unwrap();
    dir
}

struct Setup {
    up: Tollgate,
    gw: Tollgate,
    policies: PathBuf,
}

/// An upstream that accepts connections and never answers.
async fn silent_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An upstream on a loopback port serving each connection with `serve`,
/// in a task of its own.
async fn raw_upstream<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// An upstream that answers every request `slow` after 600 ms.
async fn slow_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    raw_upstream(|mut stream| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow").await;
        }
    })
    .await
}

/// An upstream that begins a chunked response, sends one chunk and closes
/// the connection mid-body.
async fn torn_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    raw_upstream(|mut stream| async move {
        let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
        let _ = stream.write_all(format!("{head}6\r\npart1\n\r\n").as_bytes()).await;
        // Long enough for the gateway to pass the beginning on.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await
}

/// An address that refuses connections for as long as the tests run: a
/// socket bound there and never listening, kept open (a port merely freed
/// could be taken by another test's server meanwhile).
fn dead_address() -> std::net::SocketAddr {
    use std::os::fd::IntoRawFd as _;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _kept_open = socket.into_raw_fd();
    addr
}

async fn setup() -> Setup {
    let echo = echo_upstream().await;
    let silent = silent_upstream().await;
    let torn = torn_upstream().await;
    let slow = slow_upstream().await;
    let dead = dead_address();
    let up = Tollgate::start_with(temp_dir("gw-up"), &[ISSUER]);
    let routes = up.data_dir.join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "base_domain = \"tollgate.e2e.test\"\n[upstreams.echo]\naddresses = [\"{echo}\"]\n[upstreams.dead]\naddresses = [\"{dead}\"]\nconnect_timeout_ms = 2000\n\
             [upstreams.pair]\naddresses = [\"{echo}\", \"{dead}\"]\nconnect_timeout_ms = 2000\n\
             [upstreams.silent]\naddresses = [\"{silent}\"]\nread_timeout_ms = 300\n\
             [upstreams.torn]\naddresses = [\"{torn}\"]\n\
             [upstreams.slow]\naddresses = [\"{slow}\"]\n\
             [[routes]]\nname = \"slow\"\npath = \"/slow\"\nupstream = \"slow\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", id = \"slow\" }}\n\
             [[routes]]\nname = \"torn\"\npath = \"/torn\"\nupstream = \"torn\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", id = \"torn\" }}\n\
             [[routes]]\nname = \"silent\"\npath = \"/silent\"\nupstream = \"silent\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", id = \"silent\" }}\n\
             [[routes]]\nname = \"pair\"\npath = \"/pair/items/{{id}}\"\nupstream = \"pair\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", param = \"id\" }}\n\
             [[routes]]\nname = \"item\"\npath = \"/echo/items/{{id}}\"\nupstream = \"echo\"\n\
             methods = {{ GET = \"echo.read\", PUT = \"echo.write\" }}\nresource = {{ type = \"Echo\", param = \"id\" }}\n\
             [[routes]]\nname = \"dead\"\npath = \"/dead\"\nupstream = \"dead\"\n\
             methods = {{ GET = \"echo.read\" }}\nresource = {{ type = \"Echo\", id = \"dead\" }}\n"
        ),
    )
    .unwrap();
    let policies = policies_with_echo();
    let dir = policies.to_string_lossy().into_owned();
    let gw = Tollgate::start_gateway(up.data_dir.clone(), &routes, &[ISSUER, ("TOLLGATE_POLICIES_DIR", dir.as_str())]);
    Setup { up, gw, policies }
}

async fn get(gw: &Tollgate, path: &str, token: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut req = gw.http.get(gw.url(path)).bearer_auth(token);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(ct, "application/problem+json", "{status} {body}");
    }
    (status, body)
}

#[tokio::test]
async fn permitted_requests_carry_verified_identity_and_never_spoofed_headers() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("owner@echo.test", "Echo Co").await;
    let token = owner["access_token"].as_str().unwrap();
    let tenant = owner["tenant"]["id"].as_str().unwrap();
    let (_, group) =
        up.send("POST", &format!("/api/v1/tenants/{tenant}/groups"), Some(token), Some(json!({"name": "Ops"}))).await;
    let group = group["group"]["id"].as_str().unwrap();
    let member = format!("/api/v1/tenants/{tenant}/groups/{group}/members/{}", owner_user(token));
    assert_eq!(up.send("PUT", &member, Some(token), None).await.0, 204);
    let spoofed = [
        ("X-Tollgate-Tenant", "someone-else"),
        ("x-tollgate-groups", "admins"),
        ("x-tollgate-principal", "user:root"),
        ("X-TOLLGATE-ROLES", "owner"),
        ("x-tollgate-assertion", "forged"),
        ("x-tollgate-anything", "x"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("x-request-id", "req-e2e-1"),
    ];
    let (status, echo) = get(&gw, "/echo/items/42?full=1", token, &spoofed).await;
    assert_eq!(status, 200, "{echo}");
    let h = &echo["headers"];
    assert_eq!(echo["uri"], "/echo/items/42?full=1");
    assert_eq!(h["x-tollgate-tenant"], json!([tenant]));
    assert_eq!(h["x-tollgate-principal"], json!([format!("user:{}", owner_user(token))]));
    assert_eq!(h["x-tollgate-roles"], json!(["owner"]));
    assert_eq!(h["x-tollgate-groups"], json!([group]), "the caller's groups, never the client's");
    assert!(h.get("x-tollgate-anything").is_none(), "client-sent identity headers never reach the upstream");
    assert!(h.get("authorization").is_none(), "a product never gets the caller's platform credential");
    assert_eq!(h["traceparent"], json!(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]), "passed through");
    assert_eq!(h["x-request-id"], json!(["req-e2e-1"]), "a well-formed request id is propagated");
    assert_eq!(h["x-tollgate-assertion"].as_array().unwrap().len(), 1);
    let answered = gw.http.get(gw.url("/echo/items/42")).bearer_auth(token).header("x-request-id", "req-e2e-2");
    let answered = answered.send().await.unwrap();
    let said = |name: &str| answered.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(
        (answered.status().as_u16(), said("x-request-id")),
        (200, Some("req-e2e-2".into())),
        "echoed to the client"
    );
    assert!(said("content-type").is_some(), "the upstream's own response headers pass");

    // The assertion verifies against the published JWKS.
    let assertion = h["x-tollgate-assertion"][0].as_str().unwrap();
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.typ.as_deref(), Some("tollgate-assertion+jwt"));
    let (_, jwks) = up.send("GET", "/.well-known/jwks.json", None, None).await;
    let jwk =
        jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header.kid.clone().unwrap().as_str()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["echo"]);
    validation.set_issuer(&["http://tollgate.e2e.test"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation).unwrap().claims;
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["act"], "echo.read");
    assert_eq!(claims["user"], format!("user:{}", owner_user(token)));
    assert_eq!(claims["groups"], json!([group]));
    assert!(claims.get("decision").is_none(), "the decision id is per request, beside the assertion: {claims}");
    assert_eq!(h["x-tollgate-decision"].as_array().unwrap().len(), 1);
    // The next request asserting the same gets the same assertion, with its own decision id.
    let (_, again) = get(&gw, "/echo/items/1", token, &[]).await;
    assert_eq!(again["headers"]["x-tollgate-assertion"][0].as_str(), Some(assertion));
    assert_ne!(again["headers"]["x-tollgate-decision"], h["x-tollgate-decision"]);
    // An access token is not an assertion, and an assertion is not an access token.
    let (status, _) = get(&gw, "/echo/items/42", assertion, &[]).await;
    assert_eq!(status, 401);
}

fn owner_user(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn path_tricks_neither_bypass_policy_nor_reach_unrouted_paths() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("paths@echo.test", "Paths").await;
    let auth = format!("Bearer {}", owner["access_token"].as_str().unwrap());
    let auth = [("Authorization", auth.as_str())];
    for (path, want_status, want_uri) in [
        ("/echo//items///42", 200, Some("/echo/items/42")),
        ("/echo/./items/x/../42", 200, Some("/echo/items/42")),
        ("/echo/items/%34%32", 200, Some("/echo/items/42")),
        ("/echo/items/%2e%2e/%2e%2e/api/v1/me", 404, None),
        ("/echo/../api/v1/tenants", 404, None),
        ("/echo/items/..%2F..%2Fadmin", 400, None),
        ("/echo/items%2F42", 400, None),
        ("/echo/items/42;jsessionid=x", 400, None),
        ("/echo/items/42%00", 400, None),
        ("/echo/items/%252e%252e", 400, None),
        ("/ECHO/items/42", 404, None),
        ("/echo/items", 404, None),
        ("/../../etc/passwd", 400, None),
    ] {
        let (status, body) = raw_get(&gw.base, path, &auth).await;
        assert_eq!(status, want_status, "{path}: {body}");
        if let Some(uri) = want_uri {
            let echo: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert_eq!(echo["uri"], uri, "{path}: the upstream gets exactly the routed path");
        } else {
            assert!(body.contains("urn:tollgate:problem:"), "{path}: refused by the gateway itself: {body}");
        }
    }
}

#[tokio::test]
async fn roles_tenants_and_credentials_are_enforced() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("boss@echo.test", "Roles").await;
    let token = owner["access_token"].as_str().unwrap();
    let other = up.signup_and_login("other@echo.test", "Other Co").await;

    let (status, _) = gw.send("PUT", "/echo/items/1", Some(token), None).await;
    assert_eq!(status, 200, "owners write");
    // A viewer reads but does not write, and sees no policy internals.
    let viewer_token = up.invite_member(&owner, "v@echo.test", "viewer").await;
    let viewer_token = viewer_token.as_str();
    assert_eq!(get(&gw, "/echo/items/1", viewer_token, &[]).await.0, 200);
    let (status, body) = gw.send("PUT", "/echo/items/1", Some(viewer_token), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["decision_id"].is_string());
    assert!(body.get("policies").is_none(), "only admins see why: {body}");
    // HEAD is decided as GET (the viewer reads); the upstream gets HEAD.
    let response = gw.http.head(gw.url("/echo/items/1")).bearer_auth(viewer_token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // A method no route takes is refused with the methods the path takes.
    let response = gw.http.delete(gw.url("/echo/items/1")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET, HEAD, PUT"));

    // The credential's tenant cannot be swapped by header.
    let other_slug = other["tenant"]["slug"].as_str().unwrap();
    let (status, body) = get(&gw, "/echo/items/1", token, &[("X-Tenant", other_slug)]).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = get(&gw, "/echo/items/1", token, &[("X-Tenant", "no-such-tenant")]).await;
    assert_eq!(status, 404);

    // Nor by subdomain; the own subdomain is fine.
    let auth = format!("Bearer {token}");
    let own_host = format!("{}.tollgate.e2e.test", owner["tenant"]["slug"].as_str().unwrap());
    let other_host = format!("{other_slug}.tollgate.e2e.test");
    let (status, _) = raw_get(&gw.base, "/echo/items/1", &[("Authorization", &auth), ("Host", &other_host)]).await;
    assert_eq!(status, 403);
    let (status, _) = raw_get(&gw.base, "/echo/items/1", &[("Authorization", &auth), ("Host", &own_host)]).await;
    assert_eq!(status, 200);
    let (status, _) = raw_get(&gw.base, "/echo/items/1", &[("Host", "no-such.tollgate.e2e.test")]).await;
    assert_eq!(status, 404);

    // Bad credentials are refused at the gateway with WWW-Authenticate.
    for bad in ["garbage", "tg_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "eyJhbGciOiJub25lIn0.e30."] {
        let response = gw.http.get(gw.url("/echo/items/1")).bearer_auth(bad).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{bad}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    // Anonymous callers name no tenant here: refused.
    let (status, _) = gw.send("GET", "/echo/items/1", None, None).await;
    assert_eq!(status, 403);
    let (status, body) = gw.send("GET", "/nothing/here", Some(token), None).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("urn:tollgate:problem:not-found")));
    let (status, body) = gw.send("GET", "/dead", Some(token), None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "urn:tollgate:problem:bad-gateway");
    // The connection is closed after a failed proxy attempt, and the answer says so.
    let response = gw.http.get(gw.url("/dead")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
    let (status, body) = gw.send("GET", "/silent", Some(token), None).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["type"], "urn:tollgate:problem:gateway-timeout");
}

/// A failure is answered as whoever caused it: a request body that is not
/// valid HTTP is the client's 400, not the upstream's 502; and once an
/// upstream's response has begun, its failure ends the connection mid-body
/// (the client sees the response incomplete) rather than appending a
/// problem to what reads as a complete 200.
#[tokio::test]
async fn failures_are_answered_as_whoever_caused_them() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("failures@echo.test", "Failures").await;
    let token = owner["access_token"].as_str().unwrap();
    let host = gw.base.trim_start_matches("http://");

    let request = format!(
        "GET /silent HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n\r\n"
    );
    let response = raw_exchange(&gw.base, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(response.contains("urn:tollgate:problem:bad-request"), "{response}");

    let request = format!("GET /torn HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n");
    let response = raw_exchange(&gw.base, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "the upstream's response began: {response}");
    assert!(response.contains("part1"), "{response}");
    assert!(!response.contains("urn:tollgate:problem"), "nothing appended to the upstream's body: {response}");
    assert!(!response.ends_with("0\r\n\r\n"), "the chunked body is never ended as if complete: {response}");
    // An HTTP client sees the body fail, not a complete response.
    let response = gw.http.get(gw.url("/torn")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.bytes().await.is_err(), "a torn body must not read as complete");
}

/// What `attempt` gives once it succeeds, trying it every `every` for at
/// most `bound`; after that the test fails, saying it never was `wanted`
/// and what the last attempt found instead.
async fn within<T, F>(bound: Duration, every: Duration, wanted: &str, mut attempt: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match attempt().await {
            Ok(found) => return found,
            Err(last) => last,
        };
        assert!(started.elapsed() < bound, "not {wanted} within {bound:?}; the last attempt found {last}");
        tokio::time::sleep(every).await;
    }
}

/// Waits, bounded, until `path` answers `want` for `token`; how long it took.
async fn answers_within(gw: &Tollgate, path: &str, token: &str, want: u16, bound: Duration) -> Duration {
    let started = Instant::now();
    status_within(gw, "GET", path, token, want, bound).await;
    started.elapsed()
}

/// Waits, bounded, until a request answers `want`.
async fn status_within(gw: &Tollgate, method: &str, path: &str, token: &str, want: u16, bound: Duration) {
    let wanted = format!("{method} {path} answering {want}");
    within(bound, Duration::from_millis(100), &wanted, || async move {
        let (status, _) = gw.send(method, path, Some(token), None).await;
        if status == want { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
}

#[tokio::test]
async fn revoked_keys_and_ended_sessions_stop_within_the_bound() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("rev@echo.test", "Revocation").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap();
    let (_, key) = up
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/api-keys"),
            Some(&token),
            Some(json!({"name": "k", "scopes": ["echo.read"]})),
        )
        .await;
    let secret = key["secret"].as_str().unwrap();
    // Repeated, so that the gateway keeps the admission whole: revocation
    // ends it as it ends the rest.
    for _ in 0..3 {
        assert_eq!(get(&gw, "/echo/items/1", secret, &[]).await.0, 200);
    }
    let (status, body) = gw.send("PUT", "/echo/items/1", Some(secret), None).await;
    assert_eq!(status, 403, "the key's scopes do not cover echo.write: {body}");
    let key_id = key["api_key"]["id"].as_str().unwrap();
    up.send("DELETE", &format!("/api/v1/tenants/{tenant}/api-keys/{key_id}"), Some(&token), None).await;
    // Refused from the gateway's next reading of the liveness feed (about a
    // second; the cache's own bound is a minute); allow scheduling slack.
    answers_within(&gw, "/echo/items/1", secret, 401, Duration::from_secs(5)).await;

    let session = up.login("rev@echo.test").await;
    let session_token = session["access_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(get(&gw, "/echo/items/1", session_token, &[]).await.0, 200);
    }
    let (status, _) = up.send("POST", "/api/v1/auth/logout", Some(session_token), None).await;
    assert_eq!(status, 204);
    answers_within(&gw, "/echo/items/1", session_token, 401, Duration::from_secs(5)).await;
    assert_eq!(get(&gw, "/echo/items/1", &token, &[]).await.0, 200, "other sessions are unaffected");
}

/// Waits, bounded, until a request answers `want`.
async fn status_becomes(gw: &Tollgate, method: &str, path: &str, token: &str, want: u16) {
    status_within(gw, method, path, token, want, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn policy_file_edits_apply_without_restart_and_broken_edits_change_nothing() {
    let Setup { up, gw, policies } = setup().await;
    let owner = up.signup_and_login("edit@echo.test", "Edits").await;
    let token = owner["access_token"].as_str().unwrap();
    // Repeated, so that the gateway keeps the admission whole: a reload
    // ends it.
    for _ in 0..3 {
        assert_eq!(gw.send("PUT", "/echo/items/1", Some(token), None).await.0, 200);
    }
    let file = policies.join("platform/echo.cedar");
    let original = std::fs::read_to_string(&file).unwrap();

    // A security team forbids writes: decisions change without a restart.
    let mut tightened = original.clone();
    tightened.push_str("@id(\"echo.freeze\") @reason(\"writes are frozen\")\nforbid (principal, action == Action::\"echo.write\", resource);\n");
    std::fs::write(&file, &tightened).unwrap();
    status_becomes(&gw, "PUT", "/echo/items/1", token, 403).await;
    let (_, body) = gw.send("PUT", "/echo/items/1", Some(token), None).await;
    assert!(body["policies"].to_string().contains("echo.freeze"), "owners see why: {body}");

    // A broken edit is refused; the tightened set keeps serving.
    std::fs::write(&file, "@id(\"oops\") permit(principal, action, resource) when { resource.nope };").unwrap();
    let refused = |m: &str| m.contains("tollgate_policy_reloads_total{result=\"refused\"}").then(|| m.to_owned());
    let metrics = metrics_when(&gw, Duration::from_secs(15), "the broken edit refused", refused).await;
    assert_eq!(gw.send("PUT", "/echo/items/1", Some(token), None).await.0, 403, "the old set keeps serving");
    assert_eq!(gw.send("GET", "/echo/items/1", Some(token), None).await.0, 200);
    assert!(metrics.contains("tollgate_policy_reloads_total{result=\"ok\"}"), "{metrics}");

    std::fs::write(&file, &original).unwrap();
    status_becomes(&gw, "PUT", "/echo/items/1", token, 200).await;
}

#[tokio::test]
async fn metrics_count_requests_stages_and_caches() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("metrics@echo.test", "Metrics").await;
    let token = owner["access_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(gw.send("GET", "/echo/items/1", Some(token), None).await.0, 200);
    }
    assert_eq!(gw.send("GET", "/nowhere", Some(token), None).await.0, 404);
    let needles = [
        "tollgate_gateway_requests_total{decision=\"allow\",route=\"item\",status=\"200\"} 3",
        "tollgate_gateway_requests_total{decision=\"deny\",route=\"none\",status=\"404\"} 1",
        // A token's first request verifies it, its second finds it verified
        // and keeps its principal and its admission, which its third finds
        // (and the request to no route does not).
        "tollgate_gateway_stage_seconds_count{stage=\"policy\"} 2",
        "tollgate_gateway_cache_lookups_total{cache=\"admissions\"} 4",
        "tollgate_gateway_cache_misses_total{cache=\"admissions\"} 3",
        "tollgate_gateway_cache_lookups_total{cache=\"principals\"} 2",
        "tollgate_gateway_cache_misses_total{cache=\"principals\"} 2",
        "tollgate_gateway_cache_lookups_total{cache=\"tokens\"} 2",
        "tollgate_gateway_cache_misses_total{cache=\"tokens\"} 1",
        "tollgate_gateway_request_seconds_bucket{route=\"item\"",
        "tollgate_gateway_upstream_seconds_count{upstream=\"echo\"} 3",
    ];
    // A request is counted by the gateway's logging hook, which runs after
    // its response has been sent: the last one's count may arrive a moment
    // after the client has read the response. Each sample is then exactly
    // the value named (the whole line), never more.
    metrics_when(&gw, Duration::from_secs(5), "every needle named", |text| {
        let lines: Vec<&str> = text.lines().collect();
        let found = |n: &&str| lines.iter().any(|l| if n.ends_with('"') { l.starts_with(*n) } else { l == n });
        needles.iter().all(found).then_some(())
    })
    .await;
}

/// What `read` finds in the gateway's `/metrics` text once it finds
/// anything, within `bound` (metrics recorded after a response is sent may
/// arrive a moment after it); `wanted` says what for the failure.
async fn metrics_when<T>(gw: &Tollgate, bound: Duration, wanted: &str, read: impl Fn(&str) -> Option<T>) -> T {
    let read = &read;
    within(bound, Duration::from_millis(20), wanted, || async move {
        let text = gw.http.get(&gw.metrics).send().await.unwrap().text().await.unwrap();
        read(&text).ok_or(text)
    })
    .await
}

/// A stop lets the request in flight finish: a request waiting on a slow
/// upstream when the gateway is told to stop still gets its response, then
/// the gateway exits, and nothing listens at its address any more.
#[tokio::test]
async fn a_stop_lets_the_request_in_flight_finish() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("inflight@echo.test", "In Flight").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let request = gw.http.get(gw.url("/slow")).bearer_auth(token).send();
    let pending = tokio::spawn(request);
    // The request is at the upstream (answering 600 ms after it arrives).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let address = gw.base.trim_start_matches("http://").to_owned();
    let stopped = tokio::task::spawn_blocking(move || gw.terminate());
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow");
    stopped.await.unwrap();
    assert!(tokio::net::TcpStream::connect(&address).await.is_err(), "{address} still accepts");
}

/// The connections each of the proxy's workers serves, once they add up
/// to `total` (within 5 seconds).
async fn worker_connections(gw: &Tollgate, total: i64) -> Vec<i64> {
    metrics_when(gw, Duration::from_secs(5), &format!("{total} connections"), |text| {
        let counts: Vec<i64> = text
            .lines()
            .filter(|l| l.starts_with("tollgate_gateway_connections{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        (!counts.is_empty() && counts.iter().sum::<i64>() == total).then_some(counts)
    })
    .await
}

/// The proxy's workers share the connections evenly: each new one goes to
/// the worker serving the fewest, for its whole life (not to a random one,
/// as pingora's runtime without work stealing would place it), each worker
/// serves the requests of its own, and a connection that closes is no
/// longer counted.
#[tokio::test]
async fn connections_are_shared_evenly_by_the_workers_and_served_by_each() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gw = Tollgate::start();
    // The start's own probes of the address have closed.
    worker_connections(&gw, 0).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let counts = worker_connections(&gw, 16).await;
    let (fewest, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(most - fewest <= 1, "16 connections over the workers: {counts:?}");
    for stream in &mut held {
        stream.write_all(format!("GET /nowhere HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while response.len() < 12 {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed before answering");
            response.extend_from_slice(&buf[..n]);
        }
        assert!(response.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&response));
    }
    drop(held);
    worker_connections(&gw, 0).await;
}

/// A proxy address that is taken ends the start with an error naming it
/// (the workers bind it before the gateway is announced).
#[test]
fn a_taken_proxy_address_ends_the_start_with_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("taken");
    let args = ["up", "--listen", &address, "--data-dir", dir.to_str().unwrap()];
    let output = run_to_exit(&args, &[], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {address}: ")), "{stderr}");
}

/// An identity provider: Ed25519 keys published at a JWKS URL.
struct Idp {
    jwks_url: String,
    jwks: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

fn ed25519() -> (Vec<u8>, String) {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    (pkcs8.as_ref().to_vec(), x)
}

impl Idp {
    async fn start() -> Self {
        let jwks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let served = std::sync::Arc::clone(&jwks);
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let keys = served.lock().unwrap().clone();
                async move { Json(json!({"keys": keys})) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { jwks_url: format!("http://{addr}/jwks"), jwks }
    }

    /// Publishes a new key under `kid`; returns its private half.
    fn publish(&self, kid: &str) -> Vec<u8> {
        self.publish_for(kid, "sig")
    }

    /// Publishes a new key under `kid` for `use` (`sig` or `enc`).
    fn publish_for(&self, kid: &str, key_use: &str) -> Vec<u8> {
        let (der, x) = ed25519();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": key_use, "kid": kid, "x": x});
        self.jwks.lock().unwrap().push(jwk);
        der
    }
}

fn sign(der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(der)).unwrap()
}

#[tokio::test]
async fn external_issuers_are_trusted_only_for_their_tenants_and_keys() {
    let echo = echo_upstream().await;
    let idp = Idp::start().await;
    let key1 = idp.publish("idp-1");
    let up = Tollgate::start_with(temp_dir("ext-up"), &[ISSUER]);
    let federated = up.signup_and_login("ext@echo.test", "Federated").await;
    let slug = federated["tenant"]["slug"].as_str().unwrap().to_owned();
    let tenant_id = federated["tenant"]["id"].as_str().unwrap().to_owned();
    let other = up.signup_and_login("ext-other@echo.test", "Not Federated").await;
    let other_slug = other["tenant"]["slug"].as_str().unwrap().to_owned();
    let routes = up.data_dir.join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[upstreams.echo]\naddresses = [\"{echo}\"]\n\
             [[routes]]\nname = \"item\"\npath = \"/echo/items/{{id}}\"\nupstream = \"echo\"\n\
             methods = {{ GET = \"echo.read\", PUT = \"echo.write\" }}\nresource = {{ type = \"Echo\", param = \"id\" }}\n\
             [[issuers]]\nissuer = \"https://idp.test\"\naudience = \"tollgate-e2e\"\njwks_url = \"{}\"\n\
             tenant_claim = \"org\"\nroles_claim = \"roles\"\ntenants = [\"{slug}\"]\n",
            idp.jwks_url
        ),
    )
    .unwrap();
    let policies = policies_with_echo();
    let dir = policies.to_string_lossy().into_owned();
    let gw = Tollgate::start_gateway(up.data_dir.clone(), &routes, &[ISSUER, ("TOLLGATE_POLICIES_DIR", dir.as_str())]);

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = |iss: &str, org: &str, aud: &str, exp: i64| json!({"iss": iss, "aud": aud, "sub": "alice", "org": org, "roles": ["member"], "iat": now, "exp": exp});
    let good = sign(&key1, "idp-1", &claims("https://idp.test", &slug, "tollgate-e2e", now + 300));
    let (status, echo_body) = get(&gw, "/echo/items/1", &good, &[]).await;
    assert_eq!(status, 200, "{echo_body}");
    assert_eq!(echo_body["headers"]["x-tollgate-principal"], json!(["user:https://idp.test#alice"]));
    assert_eq!(echo_body["headers"]["x-tollgate-tenant"], json!([tenant_id]));
    assert_eq!(echo_body["headers"]["x-tollgate-roles"], json!(["member"]));
    assert_eq!(gw.send("PUT", "/echo/items/1", Some(&good), None).await.0, 403, "members do not write");

    // Refused: another tenant than the issuer's, an untrusted issuer reusing
    // the kid, a forgery under the trusted issuer and kid, wrong audience, expired.
    let foreign = sign(&key1, "idp-1", &claims("https://idp.test", &other_slug, "tollgate-e2e", now + 300));
    assert_eq!(get(&gw, "/echo/items/1", &foreign, &[]).await.0, 403);
    let (attacker, _) = ed25519();
    for (name, token) in [
        (
            "untrusted issuer, same kid",
            sign(&attacker, "idp-1", &claims("https://evil.test", &slug, "tollgate-e2e", now + 300)),
        ),
        (
            "forged under the trusted kid",
            sign(&attacker, "idp-1", &claims("https://idp.test", &slug, "tollgate-e2e", now + 300)),
        ),
        ("wrong audience", sign(&key1, "idp-1", &claims("https://idp.test", &slug, "someone-else", now + 300))),
        ("expired", sign(&key1, "idp-1", &claims("https://idp.test", &slug, "tollgate-e2e", now - 60))),
        ("unknown kid", sign(&attacker, "idp-9", &claims("https://idp.test", &slug, "tollgate-e2e", now + 300))),
        ("not valid yet", {
            let mut early = claims("https://idp.test", &slug, "tollgate-e2e", now + 600);
            early["nbf"] = json!(now + 300);
            sign(&key1, "idp-1", &early)
        }),
        ("an encryption key", {
            let key = idp.publish_for("idp-enc", "enc");
            sign(&key, "idp-enc", &claims("https://idp.test", &slug, "tollgate-e2e", now + 300))
        }),
    ] {
        assert_eq!(get(&gw, "/echo/items/1", &token, &[]).await.0, 401, "{name}");
    }

    // The IdP rotates: a token under a new kid works once the JWKS is fetched again.
    let key2 = idp.publish("idp-2");
    let rotated = sign(&key2, "idp-2", &claims("https://idp.test", &slug, "tollgate-e2e", now + 300));
    within(Duration::from_secs(15), Duration::from_millis(200), "the rotated key fetched", || async {
        let status = get(&gw, "/echo/items/1", &rotated, &[]).await.0;
        if status == 200 { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    let metrics = gw.http.get(&gw.metrics).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tollgate_gateway_jwks_refreshes_total{issuer=\"https://idp.test\"}"), "{metrics}");
}

#[tokio::test]
async fn health_checks_take_a_dead_address_out_of_the_rotation() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("lb@echo.test", "Balanced").await;
    let token = owner["access_token"].as_str().unwrap();
    // Until the dead address fails its check, round robin may pick it (502);
    // within the bound every request reaches the live one.
    let started = Instant::now();
    let mut streak = 0;
    while streak < 10 {
        let (status, _) = get(&gw, "/pair/items/1", token, &[]).await;
        streak = if status == 200 { streak + 1 } else { 0 };
        assert!(started.elapsed() < Duration::from_secs(15), "the dead address stayed in the rotation");
    }
    for _ in 0..20 {
        assert_eq!(get(&gw, "/pair/items/1", token, &[]).await.0, 200);
    }
}

#[tokio::test]
async fn every_bad_variant_of_our_tokens_is_refused_at_the_gateway() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("tokens@echo.test", "Tokens").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw, "/echo/items/1", &token, &[]).await.0, 200);
    let parts: Vec<&str> = token.split('.').collect();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    // Sign with our own private key from the data dir, to vary one claim at a time.
    let der = std::fs::read(up.data_dir.join("keys").join(format!("{kid}.pk8"))).unwrap();
    let ours = |claims: &Value, typ: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&der)).unwrap()
    };
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let now = claims["iat"].as_i64().unwrap();
    let mut tampered = claims.clone();
    tampered["roles"] = json!(["owner", "admin"]);
    let hs = jsonwebtoken::Header {
        kid: Some(kid.clone()),
        typ: Some("at+jwt".into()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let (_, jwks) = up.send("GET", "/.well-known/jwks.json", None, None).await;
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    for (name, bad) in [
        ("tampered", format!("{}.{}.{}", parts[0], b64.encode(tampered.to_string()), parts[2])),
        ("alg none", format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1])),
        (
            "algorithm confusion",
            jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(x.as_bytes())).unwrap(),
        ),
        ("expired", ours(&with("exp", json!(now - 60)), "at+jwt")),
        ("not yet valid", ours(&with("nbf", json!(now + 3600)), "at+jwt")),
        ("wrong issuer", ours(&with("iss", json!("https://evil.test")), "at+jwt")),
        ("wrong audience", ours(&with("aud", json!("elsewhere")), "at+jwt")),
        ("wrong type", ours(&claims, "JWT")),
        ("unknown kid", {
            let (foreign, _) = ed25519();
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            header.kid = Some("k-unknown".into());
            header.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(&foreign)).unwrap()
        }),
    ] {
        let response = gw.http.get(gw.url("/echo/items/1")).bearer_auth(&bad).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{name}");
        assert!(response.headers().contains_key("www-authenticate"), "{name}");
    }
}

/// Headers a client could use to make the gateway and an upstream read a
/// request differently: repeated credentials or tenants are refused, and
/// identity (in any spelling), proxy and method-override headers never pass.
#[tokio::test]
async fn ambiguous_and_proxy_headers_are_not_taken_from_clients() {
    let Setup { up, gw, .. } = setup().await;
    let owner = up.signup_and_login("headers@echo.test", "Headers").await;
    let auth = format!("Bearer {}", owner["access_token"].as_str().unwrap());
    let auth = auth.as_str();
    for (headers, what) in [
        (vec![("Authorization", auth), ("Authorization", "Bearer someone-else")], "authorization"),
        (vec![("Authorization", auth), ("X-Tenant", "headers"), ("X-Tenant", "other")], "x-tenant"),
    ] {
        let (status, body) = raw_get(&gw.base, "/echo/items/1", &headers).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains(&format!("`{what}` header is repeated")), "{body}");
    }
    // An HTTP/1.1 request must name its host (HTTP/1.0 need not).
    let token = owner["access_token"].as_str().unwrap();
    for (version, want) in [("1.1", "HTTP/1.1 400 "), ("1.0", "HTTP/1.1 200 ")] {
        let request =
            format!("GET /echo/items/1 HTTP/{version}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(&gw.base, request.as_bytes()).await;
        assert!(response.starts_with(want), "HTTP/{version} without a host: {response}");
    }
    // An unreadable credential is refused, never taken for no credential.
    let (status, body) = raw_get(&gw.base, "/echo/items/1", &[("Authorization", "Bearer caf\u{e9}")]).await;
    assert_eq!(status, 401, "{body}");
    let sent = [
        ("Authorization", auth),
        ("X-Tollgate_Tenant", "someone-else"),
        ("x_tollgate_principal", "user:root"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=203.0.113.9"),
        ("X-Real-IP", "203.0.113.9"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Method-Override", "DELETE"),
    ];
    let (status, body) = raw_get(&gw.base, "/echo/items/1", &sent).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    let h = &echo["headers"];
    for gone in [
        "x-tollgate_tenant",
        "x_tollgate_principal",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-http-method-override",
        "x-method-override",
        "authorization",
    ] {
        assert!(h.get(gone).is_none(), "`{gone}` reached the upstream: {h}");
    }
    assert_eq!(h["x-forwarded-for"], json!(["127.0.0.1"]), "the client address as the gateway saw it");

    // The platform's own routes take no tenant hint: naming a tenant that
    // exists or not changes nothing and costs no look-up.
    for tenant in ["headers", "no-such-tenant"] {
        let (status, body) = raw_get(&up.base, "/healthz", &[("X-Tenant", tenant)]).await;
        assert_eq!(status, 200, "{tenant}: {body}");
    }
}

/// Every request through the gateway leaves one JSON access line (written
/// straight into the log writer), with its outcome, decision and caller;
/// refusals too.
#[tokio::test]
async fn each_gateway_request_leaves_one_json_access_line() {
    let log = temp_dir("access-log").join("stderr.log");
    let env = [("TOLLGATE_LOG", "info"), ("TOLLGATE_LOG_FORMAT", "json")];
    let tg = Tollgate::start_logging_to(temp_dir("access"), &env, &log);
    let owner = tg.signup_and_login("owner@access.test", "Access Co").await;
    let token = owner["access_token"].as_str().unwrap();
    let tenant = owner["tenant"]["id"].as_str().unwrap();
    assert_eq!(tg.send("GET", "/crm/contacts", Some(token), None).await.0, 200);
    assert_eq!(tg.send("GET", "/crm/contacts", Some("not-a-token"), None).await.0, 401);
    let access = |path: &str, status: u64| {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == "gateway request" && line["path"] == path && line["status"] == status)
            .collect();
        lines
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while (access("/crm/contacts", 200).is_empty() || access("/crm/contacts", 401).is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let allowed = access("/crm/contacts", 200);
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    let line = &allowed[0];
    assert_eq!((line["method"].as_str(), line["tenant"].as_str()), (Some("GET"), Some(tenant)), "{line}");
    assert_eq!(line["principal"], format!("user:{}", owner_user(token)), "{line}");
    assert_eq!((line["route"].as_str(), line["target"].as_str()), (Some("crm.read"), Some("tollgate_gateway::proxy")));
    assert!(line["decision"].as_str().is_some_and(|d| d.len() == 36), "{line}");
    assert!(line["policies"].as_str().is_some_and(|p| p.starts_with("[\"") && p.ends_with("\"]")), "{line}");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')) && line["latency_us"].is_u64(), "{line}");
    assert_eq!((line["level"].as_str(), line["error"].as_str()), (Some("INFO"), Some("")), "{line}");
    let refused = access("/crm/contacts", 401);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0]["principal"].as_str(), refused[0]["tenant"].as_str()), (Some(""), Some("")));
}

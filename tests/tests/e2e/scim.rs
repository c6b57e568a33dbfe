//! SCIM provisioning through `tollgate up`: the identity provider's token
//! works at `/scim/v2` only, a group mapped to a role changes what the
//! gateway lets a person do, and deprovisioning shuts a signed-in person
//! out at the gateway from its next reading of the liveness feed (about a
//! second).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::Tollgate;

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Polls until `path` answers `status` with `token`; the time it took.
async fn until(tg: &Tollgate, method: &str, path: &str, token: &str, body: Option<Value>, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (got, answer) = tg.send(method, path, Some(token), body.clone()).await;
        if got == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(12), "{method} {path} still answers {got} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tenant on the enterprise plan (its owner made a platform
/// administrator to set it) with a SCIM token: the token and the owner's
/// login answer.
async fn scim_tenant(tg: &Tollgate, email: &str, name: &str) -> (String, Value) {
    let owner = tg.signup_and_login(email, name).await;
    tg.cli(&["platform-admin", "grant", email]);
    let boss = owner["access_token"].as_str().unwrap();
    let tenant = owner["tenant"]["id"].as_str().unwrap();
    let (status, body) = tg
        .send("PUT", &format!("/api/v1/tenants/{tenant}/plan"), Some(boss), Some(json!({"plan": "enterprise"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = tg
        .send("POST", &format!("/api/v1/tenants/{tenant}/scim-tokens"), Some(boss), Some(json!({"name": "Entra ID"})))
        .await;
    assert_eq!(status, 201, "{body}");
    (body["secret"].as_str().unwrap().to_owned(), owner)
}

#[tokio::test]
async fn provisioning_reaches_the_gateway() {
    let tg = Tollgate::start();
    let (scim, owner) = scim_tenant(&tg, "owner@scim.test", "Provisioned").await;
    let boss = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let settings = json!({"default_role": "viewer", "group_roles": {"CRM Editors": "member"}});
    let (status, body) =
        tg.send("PUT", &format!("/api/v1/tenants/{tenant}/scim/settings"), Some(&boss), Some(settings)).await;
    assert_eq!(status, 200, "{body}");

    // The token is good at /scim/v2 and nowhere else.
    let (status, body) = tg.send("GET", "/scim/v2/ServiceProviderConfig", Some(&scim), None).await;
    assert_eq!((status, &body["patch"]["supported"]), (200, &json!(true)), "{body}");
    assert_eq!(tg.send("GET", &format!("/api/v1/tenants/{tenant}"), Some(&scim), None).await.0, 401);
    assert_eq!(tg.send("GET", "/crm/contacts", Some(&scim), None).await.0, 401);
    let (status, body) = tg.send("GET", "/scim/v2/Users", Some(&boss), None).await;
    assert_eq!((status, &body["schemas"][0]), (401, &json!("urn:ietf:params:scim:api:messages:2.0:Error")), "{body}");

    // A member signed in; the provider takes over its standing (viewer by default).
    let person = tg.invite_member(&owner, "pat@scim.test", "member").await;
    let (status, body) = tg
        .send(
            "POST",
            "/scim/v2/Users",
            Some(&scim),
            Some(json!({"userName": "pat@scim.test", "externalId": "e-1", "emails": [{"value": "pat@scim.test", "primary": true}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let pat = body["id"].as_str().unwrap().to_owned();
    let write = Some(json!({"name": "Lead"}));
    until(&tg, "POST", "/crm/contacts", &person, write.clone(), 403).await;

    // A group mapped to `member`: the next decisions let Pat write.
    let (status, body) = tg
        .send(
            "POST",
            "/scim/v2/Groups",
            Some(&scim),
            Some(json!({"displayName": "CRM Editors", "members": [{"value": pat}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    until(&tg, "POST", "/crm/contacts", &person, write, 201).await;
    let (status, body) = tg
        .send(
            "POST",
            "/scim/v2/Users/.search",
            Some(&scim),
            Some(json!({"filter": "groups.display eq \"crm editors\""})),
        )
        .await;
    assert_eq!((status, &body["totalResults"]), (200, &json!(1)), "{body}");

    // Deprovisioned: the same access token is refused within the bound.
    let off = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": "False"}}]});
    let (status, body) = tg.send("PATCH", &format!("/scim/v2/Users/{pat}"), Some(&scim), Some(off)).await;
    assert_eq!((status, &body["active"]), (200, &json!(false)), "{body}");
    let took = until(&tg, "GET", "/crm/contacts", &person, None, 401).await;
    assert!(took < Duration::from_secs(4), "refused after {took:?}, beyond the feed's second and slack");
    let (status, _) = tg.send("GET", "/crm/contacts", Some(&boss), None).await;
    assert_eq!(status, 200, "the rest of the tenant goes on");
}

/// Through the gateway: ETags both ways, a bulk body larger than the
/// platform API's own limit, and another tenant's ids answered 404.
#[tokio::test]
async fn scim_headers_bodies_and_tenants_pass_the_gateway_intact() {
    let tg = Tollgate::start();
    let (scim_a, _) = scim_tenant(&tg, "a@scim2.test", "A").await;
    let (scim_b, _) = scim_tenant(&tg, "b@scim2.test", "B").await;
    let (status, body) =
        tg.send("POST", "/scim/v2/Users", Some(&scim_a), Some(json!({"userName": "etag@scim2.test"}))).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let version = body["meta"]["version"].as_str().unwrap().to_owned();
    let url = tg.url(&format!("/scim/v2/Users/{id}"));
    let answer = tg.http.get(&url).bearer_auth(&scim_a).header("if-none-match", &version).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 304);
    let patch = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "Lead"}]});
    let answer =
        tg.http.patch(&url).bearer_auth(&scim_a).header("if-match", "W/\"999\"").json(&patch).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 412);
    assert_eq!(answer.headers()["content-type"], "application/scim+json");
    let answer =
        tg.http.patch(&url).bearer_auth(&scim_a).header("if-match", &version).json(&patch).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_ne!(answer.headers()["etag"].to_str().unwrap(), version, "a new version");

    // Tenant B's token does not see A's user.
    assert_eq!(tg.send("GET", &format!("/scim/v2/Users/{id}"), Some(&scim_b), None).await.0, 404);
    assert_eq!(tg.send("DELETE", &format!("/scim/v2/Users/{id}"), Some(&scim_b), None).await.0, 404);

    // A bulk request of some 90 KB: larger than the API's own 64 KiB bodies.
    let operations: Vec<Value> = (0..80)
        .map(|i| {
            json!({"method": "POST", "path": "/Users", "bulkId": format!("u{i}"),
                   "data": {"userName": format!("bulk{i}@scim2.test"), "title": "x".repeat(1000)}})
        })
        .collect();
    let bulk = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations});
    let (status, body) = tg.send("POST", "/scim/v2/Bulk", Some(&scim_b), Some(bulk)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["Operations"].as_array().unwrap().iter().all(|o| o["status"] == "201"), "{body}");
    let (_, list) =
        tg.send("GET", "/scim/v2/Users?filter=userName%20sw%20%22bulk%22&count=1", Some(&scim_b), None).await;
    assert_eq!((list["totalResults"].as_i64(), list["itemsPerPage"].as_i64()), (Some(80), Some(1)), "{list}");
}

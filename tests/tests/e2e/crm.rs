//! The demo CRM behind the gateway in `tollgate up`: coarse checks at the
//! gateway, ownership and the large-deal rule through the decision point,
//! tenants kept apart by the asserted tenant.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::Tollgate;

#[tokio::test]
async fn crm_rules_hold_end_to_end() {
    let tg = Tollgate::start();
    let owner = tg.signup_and_login("owner@crm.test", "Acme CRM").await;
    let boss = owner["access_token"].as_str().unwrap().to_owned();
    let rep = tg.invite_member(&owner, "rep@crm.test", "member").await;
    let viewer = tg.invite_member(&owner, "viewer@crm.test", "viewer").await;

    let (status, c) =
        tg.send("POST", "/crm/contacts", Some(&boss), Some(json!({"name": "Ada", "email": "ada@x.test"}))).await;
    assert_eq!(status, 201, "{c}");
    let boss_contact = c["contact"]["id"].as_str().unwrap().to_owned();

    // Viewers read, and nothing more (refused at the gateway).
    assert_eq!(tg.send("GET", &format!("/crm/contacts/{boss_contact}"), Some(&viewer), None).await.0, 200);
    let (status, body) = tg.send("POST", "/crm/contacts", Some(&viewer), Some(json!({"name": "x"}))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "urn:tollgate:problem:forbidden", "the gateway refused it");

    // Members create, and edit only what they own (the product asks the decision point).
    let (status, body) =
        tg.send("PATCH", &format!("/crm/contacts/{boss_contact}"), Some(&rep), Some(json!({"name": "Mine"}))).await;
    assert_eq!(status, 403, "{body}");
    let (_, c) = tg.send("POST", "/crm/contacts", Some(&rep), Some(json!({"name": "Grace"}))).await;
    let rep_contact = c["contact"]["id"].as_str().unwrap().to_owned();
    let (status, body) =
        tg.send("PATCH", &format!("/crm/contacts/{rep_contact}"), Some(&rep), Some(json!({"name": "Grace H"}))).await;
    assert_eq!((status, body["contact"]["name"].as_str()), (200, Some("Grace H")), "{body}");
    // Admins (here the owner) edit anything.
    assert_eq!(tg.send("DELETE", &format!("/crm/contacts/{rep_contact}"), Some(&boss), None).await.0, 204);

    // Deals above 10000 need an admin to close.
    let (_, small) = tg.send("POST", "/crm/deals", Some(&rep), Some(json!({"title": "Small", "amount": 500}))).await;
    let (_, large) = tg.send("POST", "/crm/deals", Some(&rep), Some(json!({"title": "Large", "amount": 50_000}))).await;
    let small = small["deal"]["id"].as_str().unwrap().to_owned();
    let large = large["deal"]["id"].as_str().unwrap().to_owned();
    let (status, body) = tg.send("POST", &format!("/crm/deals/{small}/close"), Some(&rep), None).await;
    assert_eq!((status, body["deal"]["status"].as_str()), (200, Some("won")), "{body}");
    let (status, body) = tg.send("POST", &format!("/crm/deals/{large}/close"), Some(&rep), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = tg.send("POST", &format!("/crm/deals/{large}/close"), Some(&boss), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = tg.send("POST", "/crm/deals", Some(&rep), Some(json!({"title": "Bad", "amount": -1}))).await;
    assert_eq!(status, 422);

    // Another tenant sees none of it, by id or by list.
    let other = tg.signup_and_login("other@crm.test", "Other CRM").await;
    let other = other["access_token"].as_str().unwrap();
    assert_eq!(tg.send("GET", &format!("/crm/contacts/{boss_contact}"), Some(other), None).await.0, 404);
    let (_, list) = tg.send("GET", "/crm/contacts", Some(other), None).await;
    assert_eq!(list["items"], json!([]));
    // Anonymous callers are refused at the gateway.
    assert_eq!(tg.send("GET", "/crm/contacts", None, None).await.0, 403);

    // A suspended tenant is refused at the gateway (from its next reading of
    // the liveness feed, about a second).
    tg.signup_and_login("root@crm.test", "Platform").await;
    tg.cli(&["platform-admin", "grant", "root@crm.test"]);
    let root = tg.login("root@crm.test").await;
    let acme = owner["tenant"]["id"].as_str().unwrap();
    let (status, body) = tg
        .send("POST", &format!("/api/v1/tenants/{acme}/suspend"), Some(root["access_token"].as_str().unwrap()), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let started = std::time::Instant::now();
    loop {
        let (status, body) = tg.send("GET", "/crm/contacts", Some(&viewer), None).await;
        if status == 403 {
            assert!(body["detail"].as_str().unwrap_or("").contains("suspended"), "{body}");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "still {status} for a suspended tenant");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits, bounded, until a request answers `want`.
async fn becomes(tg: &Tollgate, method: &str, path: &str, token: &str, body: serde_json::Value, want: u16) {
    let started = std::time::Instant::now();
    loop {
        let (status, _) = tg.send(method, path, Some(token), Some(body.clone())).await;
        if status == want {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "{method} {path} still answers {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tenant_policy_activated_through_the_api_takes_effect_and_rolls_back() {
    let tg = Tollgate::start();
    let owner = tg.signup_and_login("layer@crm.test", "Layered").await;
    let boss = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let rep = tg.invite_member(&owner, "layer-rep@crm.test", "member").await;
    let contact = json!({"name": "Someone"});
    assert_eq!(tg.send("POST", "/crm/contacts", Some(&rep), Some(contact.clone())).await.0, 201);

    let source = "@id(\"admins-only\") @reason(\"only admins write here\")\n\
                  forbid (principal, action == Action::\"crm.write\", resource) unless { principal in Role::\"admin\" };";
    let base = format!("/api/v1/tenants/{tenant}/policies");
    let (status, body) = tg.send("POST", &base, Some(&boss), Some(json!({"source": source}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = tg.send("POST", &format!("{base}/1/activate"), Some(&boss), Some(json!({}))).await;
    assert_eq!(status, 200);
    // The gateway picks the layer up within its documented bound (2 seconds).
    becomes(&tg, "POST", "/crm/contacts", &rep, contact.clone(), 403).await;
    assert_eq!(tg.send("POST", "/crm/contacts", Some(&boss), Some(contact.clone())).await.0, 201, "admins still write");
    // Another tenant is untouched.
    let other = tg.signup_and_login("layer-other@crm.test", "Unlayered").await;
    assert_eq!(
        tg.send("POST", "/crm/contacts", Some(other["access_token"].as_str().unwrap()), Some(contact.clone())).await.0,
        201
    );

    let (status, _) = tg.send("POST", &format!("{base}/rollback"), Some(&boss), Some(json!({}))).await;
    assert_eq!(status, 200);
    becomes(&tg, "POST", "/crm/contacts", &rep, contact, 201).await;

    // A policy naming a resource holds for every spelling of its id: the
    // id Cedar sees is the one the product decodes.
    let vip = "@id(\"vip\") forbid (principal, action, resource == CrmApi::\"vip:1\");";
    let (status, body) = tg.send("POST", &base, Some(&boss), Some(json!({"source": vip}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(tg.send("POST", &format!("{base}/2/activate"), Some(&boss), Some(json!({}))).await.0, 200);
    becomes(&tg, "GET", "/crm/contacts/vip:1", &rep, Value::Null, 403).await;
    let auth = format!("Bearer {rep}");
    for spelling in ["/crm/contacts/vip%3A1", "/crm/contacts/vip%3a1", "/crm/contacts/%76ip%3A1"] {
        let (status, body) = tollgate_tests::raw_get(&tg.base, spelling, &[("Authorization", auth.as_str())]).await;
        assert_eq!(status, 403, "{spelling}: {body}");
    }
    let (status, _) =
        tollgate_tests::raw_get(&tg.base, "/crm/contacts/vip%3A2", &[("Authorization", auth.as_str())]).await;
    assert_eq!(status, 404, "another id passes the gateway and is unknown to the product");
}

/// Sends until the answer is `want` (bounded by the gateway's liveness feed,
/// read every second, and 2-second layer caches, with slack); returns the
/// last body.
async fn answers(tg: &Tollgate, method: &str, path: &str, token: &str, body: Option<Value>, want: u16) -> Value {
    let started = Instant::now();
    loop {
        let (status, answer) = tg.send(method, path, Some(token), body.clone()).await;
        if status == want {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "{method} {path} still answers {status}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn user_id(tg: &Tollgate, token: &str) -> String {
    let (_, me) = tg.send("GET", "/api/v1/me", Some(token), None).await;
    me["user"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn groups_plans_and_deletion_reach_gateway_decisions() {
    let tg = Tollgate::start();
    let owner = tg.signup_and_login("owner@plans.test", "Plans CRM").await;
    let boss = owner["access_token"].as_str().unwrap().to_owned();
    let t = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let viewer = tg.invite_member(&owner, "viewer@plans.test", "viewer").await;
    let viewer_id = user_id(&tg, &viewer).await;
    let contact = Some(json!({"name": "Lin"}));

    // A tenant layer names a group: its members write to the CRM whatever their role.
    let (status, group) =
        tg.send("POST", &format!("/api/v1/tenants/{t}/groups"), Some(&boss), Some(json!({"name": "Sales"}))).await;
    assert_eq!(status, 201, "{group}");
    let sales = group["group"]["id"].as_str().unwrap();
    let layer = format!(
        "@id(\"sales-write\") @reason(\"sales writes\")\npermit (principal in Group::\"{sales}\", action == Action::\"crm.write\", resource);"
    );
    let policies = format!("/api/v1/tenants/{t}/policies");
    let (status, body) = tg.send("POST", &policies, Some(&boss), Some(json!({"source": layer}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = tg.send("POST", &format!("{policies}/1/activate"), Some(&boss), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = tg.send("POST", "/crm/contacts", Some(&viewer), contact.clone()).await;
    assert_eq!(status, 403, "a viewer outside the group: {body}");

    let member = format!("/api/v1/tenants/{t}/groups/{sales}/members/{viewer_id}");
    assert_eq!(tg.send("PUT", &member, Some(&boss), None).await.0, 204);
    let created = answers(&tg, "POST", "/crm/contacts", &viewer, contact.clone(), 201).await;
    assert_eq!(created["contact"]["owner"], viewer_id.as_str(), "{created}");
    assert_eq!(tg.send("DELETE", &member, Some(&boss), None).await.0, 204);
    answers(&tg, "POST", "/crm/contacts", &viewer, contact.clone(), 403).await;

    // On the free plan API keys only read; a paid plan lets them write.
    let (status, key) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{t}/api-keys"),
            Some(&boss),
            Some(json!({"name": "sync", "scopes": ["crm.read", "crm.write", "contact.update", "authorize"]})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["secret"].as_str().unwrap().to_owned();
    assert_eq!(tg.send("GET", "/crm/contacts", Some(&key), None).await.0, 200);
    let (status, body) = tg.send("GET", "/crm/reports/pipeline", Some(&boss), None).await;
    assert_eq!((status, body["feature"].as_str()), (402, Some("reports")), "the free plan has no reports: {body}");
    let (status, body) = tg.send("POST", "/crm/contacts", Some(&key), contact.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["policies"].to_string().contains("crm.free-plan-keys-read-only"),
        "explained to the owner's key: {body}"
    );

    tg.signup_and_login("root@plans.test", "Platform").await;
    tg.cli(&["platform-admin", "grant", "root@plans.test"]);
    let root = tg.login("root@plans.test").await;
    let root = root["access_token"].as_str().unwrap();
    let (status, body) =
        tg.send("PUT", &format!("/api/v1/tenants/{t}/plan"), Some(root), Some(json!({"plan": "pro"}))).await;
    assert_eq!((status, body["tenant"]["plan"].as_str()), (200, Some("pro")), "{body}");
    let created = answers(&tg, "POST", "/crm/contacts", &key, contact.clone(), 201).await;
    // Reports are a paid feature: open now that the tenant is on `pro`.
    let report = answers(&tg, "GET", "/crm/reports/pipeline", &boss, None, 200).await;
    let (_, contacts) = tg.send("GET", "/crm/contacts", Some(&boss), None).await;
    assert_eq!(report["contacts"], contacts["items"].as_array().unwrap().len(), "{report}");
    let owner_id = user_id(&tg, &boss).await;
    assert_eq!(created["contact"]["owner"], owner_id.as_str(), "a key creates for its owner: {created}");
    let id = created["contact"]["id"].as_str().unwrap();
    let (status, body) =
        tg.send("PATCH", &format!("/crm/contacts/{id}"), Some(&key), Some(json!({"name": "Lin Li"}))).await;
    assert_eq!((status, body["contact"]["name"].as_str()), (200, Some("Lin Li")), "{body}");

    // A tenant pending deletion is read-only at the gateway.
    let (status, body) = tg.send("DELETE", &format!("/api/v1/tenants/{t}"), Some(&boss), None).await;
    assert_eq!(status, 202, "{body}");
    let refused = answers(&tg, "POST", "/crm/contacts", &boss, contact, 403).await;
    assert!(refused["detail"].as_str().unwrap_or("").contains("read-only"), "{refused}");
    assert_eq!(tg.send("GET", "/crm/contacts", Some(&boss), None).await.0, 200, "reads still work");
}

//! The demo CRM behind the gateway in `tollgate up`: coarse checks at the
//! gateway, ownership and the large-deal rule through the decision point,
//! tenants kept apart by the asserted tenant.

use serde_json::json;
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
}

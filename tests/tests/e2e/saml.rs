//! SAML 2.0 sign-in through `tollgate up` against a real identity provider
//! on loopback (Auth0's `samlp`, tests/peers/saml-idp.mjs): a tenant admin
//! imports its metadata by URL, the provider reads Tollgate's SP metadata,
//! people sign in by the redirect binding out and the POST binding back,
//! and a tampered assertion, an expired one, one for another audience, a
//! replayed one, a response posted from another browser and an unknown
//! RelayState are all refused. On SQLite, and on PostgreSQL (row-level
//! security on) when one is given.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tollgate_tests::{SamlIdp, Tollgate, temp_dir};

use crate::sso::{Browser, claims, enterprise, events, on_sqlite, platform_root, start_for_sso, verified_owner};

const ACS: &str = "/api/v1/sso/saml/acs";

/// The value of the hidden input `name` in the provider's form.
fn form_value(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\"")).unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at..];
    let start = rest.find("value=\"").unwrap() + "value=\"".len();
    rest[start..].split('"').next().unwrap().to_owned()
}

/// Starts a sign-in at Tollgate and lets the provider answer it as `user`
/// (at its endpoint `mode`: `sso`, `sso/expired`, `sso/wrong-audience`):
/// the `SAMLResponse` and `RelayState` its form would post.
async fn answer(
    browser: &Browser,
    tg: &Tollgate,
    idp: &SamlIdp,
    login: &str,
    user: &str,
    mode: &str,
) -> (String, String) {
    let request = browser.start(tg, login).await;
    assert!(request.starts_with(&format!("{}/sso?", idp.base)), "{request}");
    assert!(request.contains("SAMLRequest=") && request.contains("RelayState="), "{request}");
    let at_mode = request.replacen("/sso?", &format!("/{mode}?"), 1);
    let (status, _, html) = browser.get(&format!("{at_mode}&user={user}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("action=\"{}\"", tg.url(ACS))), "{html}");
    (form_value(&html, "SAMLResponse"), form_value(&html, "RelayState"))
}

async fn post(browser: &Browser, tg: &Tollgate, response: &str, relay: &str) -> (u16, Value) {
    let sent =
        browser.http.post(tg.url(ACS)).form(&[("SAMLResponse", response), ("RelayState", relay)]).send().await.unwrap();
    let status = sent.status().as_u16();
    let text = sent.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn saml_sign_in_on_sqlite() {
    let (dir, db) = on_sqlite("saml");
    run(dir, &db, &[]).await;
}

#[tokio::test]
async fn saml_sign_in_on_postgres() {
    let Some(url) = tollgate_tests::postgres_database().await else {
        return;
    };
    run(temp_dir("saml-pg"), &url, &[("TOLLGATE_DATABASE_URL", url.as_str())]).await;
}

async fn run(dir: std::path::PathBuf, db: &str, env: &[(&str, &str)]) {
    let tg = start_for_sso(dir, env);
    let idp = SamlIdp::start(&json!({
        "acs": tg.url(ACS),
        "accounts": {
            "alice@corp.test": {"email": "alice@corp.test", "name": "Alice"},
            "bob@corp.test": {"email": "bob@corp.test", "name": "Bob"},
            "eve@evil.test": {"email": "eve@evil.test", "name": "Eve"},
        },
    }));
    let root = platform_root(&tg).await;
    let owner = verified_owner(&tg, "admin@corp.test", "Corp").await;
    let admin = owner["access_token"].as_str().unwrap().to_owned();
    let tenant = owner["tenant"]["id"].as_str().unwrap().to_owned();
    let slug = owner["tenant"]["slug"].as_str().unwrap().to_owned();
    enterprise(&tg, &root, &tenant).await;
    let connections = format!("/api/v1/tenants/{tenant}/sso/connections");

    // Metadata that is not a signing IdP's is refused; the provider's own,
    // fetched by URL, is taken.
    let bad =
        json!({"type": "saml", "name": "Corp SAML", "idp_metadata": "<EntityDescriptor/>", "domains": ["corp.test"]});
    let (status, body) = tg.send("POST", &connections, Some(&admin), Some(bad)).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("idp_metadata")), "{body}");
    let oidc_field = json!({"type": "saml", "name": "Corp SAML", "idp_metadata_url": format!("{}/metadata", idp.base),
                            "client_id": "x", "domains": ["corp.test"]});
    let (status, body) = tg.send("POST", &connections, Some(&admin), Some(oidc_field)).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("client_id")), "{body}");
    let connection = json!({"type": "saml", "name": "Corp SAML", "idp_metadata_url": format!("{}/metadata", idp.base),
                            "domains": ["corp.test"]});
    let (status, created) = tg.send("POST", &connections, Some(&admin), Some(connection)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["idp_entity_id"].as_str(), Some(idp.base.as_str()));
    assert_eq!(created["idp_sso_url"].as_str(), Some(format!("{}/sso", idp.base).as_str()));
    assert_eq!(created["acs_url"].as_str(), Some(tg.url(ACS).as_str()));
    let sp_entity = created["sp_entity_id"].as_str().unwrap().to_owned();

    // Our SP metadata, for the provider.
    let (status, _, xml) = Browser::new().get(&tg.url(&format!("/api/v1/sso/{slug}/saml/metadata"))).await;
    assert_eq!(status, 200);
    assert!(xml.contains(&format!("entityID=\"{sp_entity}\"")), "{xml}");
    assert!(xml.contains(&format!("Location=\"{}\"", tg.url(ACS))) && xml.contains("WantAssertionsSigned=\"true\""));

    let login = format!("/api/v1/sso/{slug}/login");
    // Alice signs in (provisioned just in time); the same response posted
    // twice at once signs in once: the assertion is not taken again.
    let alice = Browser::new();
    let (response, relay) = answer(&alice, &tg, &idp, &login, "alice@corp.test", "sso").await;
    let (first, second) = tokio::join!(post(&alice, &tg, &response, &relay), post(&alice, &tg, &response, &relay));
    let mut answers = [first, second];
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!([answers[0].0, answers[1].0], [200, 401], "{answers:?}");
    let body = &answers[0].1;
    assert_eq!(body["tenant"]["id"].as_str(), Some(tenant.as_str()), "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["amr"], json!(["sso"]));
    let (status, me) = tg.send("GET", "/api/v1/me", body["access_token"].as_str(), None).await;
    assert_eq!((status, me["user"]["email"].as_str()), (200, Some("alice@corp.test")), "{me}");
    // Replayed later: refused.
    let (status, body) = post(&alice, &tg, &response, &relay).await;
    assert_eq!(status, 401, "replayed: {body}");

    // Bob's response tampered to name the tenant's owner: the signature
    // does not check. Bob's own, untouched, then signs Bob in.
    let bob = Browser::new();
    let (response, relay) = answer(&bob, &tg, &idp, &login, "bob@corp.test", "sso").await;
    let xml = String::from_utf8(STANDARD.decode(&response).unwrap()).unwrap();
    assert!(xml.contains("bob@corp.test"), "{xml}");
    let forged = STANDARD.encode(xml.replace("bob@corp.test", "admin@corp.test"));
    let (status, body) = post(&bob, &tg, &forged, &relay).await;
    assert_eq!(status, 401, "tampered: {body}");
    let (status, body) = post(&bob, &tg, &response, &relay).await;
    assert_eq!(status, 200, "{body}");
    let (_, me) = tg.send("GET", "/api/v1/me", body["access_token"].as_str(), None).await;
    assert_eq!(me["user"]["email"].as_str(), Some("bob@corp.test"));

    // An expired assertion, one for another audience.
    for mode in ["sso/expired", "sso/wrong-audience"] {
        let browser = Browser::new();
        let (response, relay) = answer(&browser, &tg, &idp, &login, "alice@corp.test", mode).await;
        let (status, body) = post(&browser, &tg, &response, &relay).await;
        assert_eq!(status, 401, "{mode}: {body}");
    }

    // Posted from a browser that did not start it; an unknown RelayState.
    let starter = Browser::new();
    let (response, relay) = answer(&starter, &tg, &idp, &login, "alice@corp.test", "sso").await;
    let (status, body) = post(&Browser::new(), &tg, &response, &relay).await;
    assert_eq!(status, 401, "another browser: {body}");
    let (status, body) = post(&starter, &tg, &response, "made-up").await;
    assert_eq!(status, 401, "unknown relay state: {body}");

    // An address of a domain the connection does not claim.
    let eve = Browser::new();
    let (response, relay) = answer(&eve, &tg, &idp, &login, "eve@evil.test", "sso").await;
    let (status, body) = post(&eve, &tg, &response, &relay).await;
    assert_eq!(status, 403, "{body}");

    for (reason, count) in [
        ("used before", 1),
        ("must be signed", 1),
        ("expired", 1),
        ("AudienceRequirement", 1),
        ("another browser", 2),
        ("domain is not one this connection claims", 1),
    ] {
        assert_eq!(events(db, "sso.login_failed", reason).await, count, "failures for {reason}");
    }
    assert_eq!(events(db, "sso.provisioned", "").await, 2, "alice and bob");
}

//! SCIM provisioning over HTTP on every test database: tokens, the user and
//! group lifecycles with their effect on members, roles, sessions and keys,
//! every error document, ETags, lists (filters evaluated in the database,
//! sorting, pages, projections), bulk, and isolation between tenants.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::harness::{Account, PASSWORD, Reply, TestApp, apps};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Puts the tenant on `plan` (as a platform administrator).
async fn set_plan(app: &TestApp, tenant: &str, plan: &str) {
    let root = format!("root-{}@scim.test", uuid::Uuid::new_v4().simple());
    let admin = app.owner(&root, "Platform").await;
    app.make_platform_admin(&root).await;
    let r = app.put(&format!("/api/v1/tenants/{tenant}/plan"), &admin.token, Some(json!({"plan": plan}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
}

/// An owner on the enterprise plan with a SCIM token.
async fn provisioned(app: &TestApp, email: &str, tenant: &str) -> (Account, String) {
    let owner = app.owner(email, tenant).await;
    set_plan(app, &owner.tenant_id, "enterprise").await;
    let token = scim_token(app, &owner).await;
    (owner, token)
}

async fn scim_token(app: &TestApp, owner: &Account) -> String {
    let r = app
        .post(&format!("/api/v1/tenants/{}/scim-tokens", owner.tenant_id), Some(&owner.token), json!({"name": "Okta"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", app.label());
    r.body["secret"].as_str().unwrap().to_owned()
}

async fn scim(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
    app.call(method, &format!("/scim/v2{path}"), Some(token), body).await
}

fn user(name: &str, email: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "name": {"givenName": "Ann", "familyName": name},
           "emails": [{"value": email, "type": "work", "primary": true}], "active": true})
}

async fn create_user(app: &TestApp, token: &str, name: &str, email: &str) -> Value {
    let r = scim(app, Method::POST, "/Users", token, Some(user(name, email))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", app.label());
    r.body
}

async fn members(app: &TestApp, owner: &Account) -> Vec<(String, String)> {
    let r = app.get(&format!("/api/v1/tenants/{}/members", owner.tenant_id), &owner.token).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect()
}

fn role_of(members: &[(String, String)], email: &str) -> Option<String> {
    members.iter().find(|(e, _)| e == email).map(|(_, r)| r.clone())
}

#[tokio::test]
async fn tokens_are_for_admins_shown_once_and_need_the_plan() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("own@tok.test", "Tokens").await;
        let t = owner.tenant_id.clone();
        let path = format!("/api/v1/tenants/{t}/scim-tokens");
        let r = app.post(&path, Some(&owner.token), json!({"name": "Okta"})).await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{l}: the free plan has no SCIM: {r:?}");
        assert_eq!(r.body["feature"], "scim", "{l}");
        assert!(r.body["plans"].as_array().unwrap().contains(&json!("enterprise")), "{l}: {r:?}");
        set_plan(&app, &t, "enterprise").await;
        let member = app.member(&owner, "mem@tok.test", "member").await;
        assert_eq!(app.post(&path, Some(&member.token), json!({"name": "x"})).await.status, StatusCode::FORBIDDEN);
        assert_eq!(
            app.post(&path, Some(&owner.token), json!({"name": ""})).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        let r = app.post(&path, Some(&owner.token), json!({"name": "Okta"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        let id = r.body["id"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("tgs_"), "{l}");
        let listed = app.get(&path, &owner.token).await;
        assert_eq!(listed.body["items"][0]["id"], id.as_str(), "{l}");
        assert!(!listed.body.to_string().contains(&secret), "{l}: the secret is shown once");
        let mut tx = app.state.store.tenant_tx(&t).await.unwrap();
        let stored: String =
            sqlx::query_scalar("SELECT secret_hash FROM scim_tokens").fetch_one(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(stored, tollgate_identity::secrets::hash(&secret), "{l}: stored hashed");

        let r = scim(&app, Method::GET, "/ServiceProviderConfig", &secret, None).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(r.headers["content-type"], "application/scim+json", "{l}");
        assert_eq!(r.body["bulk"]["maxOperations"], 100, "{l}");
        // Only /scim/v2: the token is no credential of the platform API,
        // and neither an access token nor an API key is a SCIM token.
        assert_eq!(app.get(&format!("/api/v1/tenants/{t}"), &secret).await.status, StatusCode::UNAUTHORIZED);
        let r = scim(&app, Method::GET, "/Users", &owner.token, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: {r:?}");
        assert!(r.headers.contains_key("www-authenticate"), "{l}");
        let forged = format!("{}x", &secret[..secret.len() - 1]);
        assert_eq!(scim(&app, Method::GET, "/Users", &forged, None).await.status, StatusCode::UNAUTHORIZED, "{l}");
        assert_eq!(app.call(Method::GET, "/scim/v2/Users", None, None).await.status, StatusCode::UNAUTHORIZED);

        // A plan without SCIM stops the token; revoking stops it for good.
        set_plan(&app, &t, "free").await;
        assert_eq!(scim(&app, Method::GET, "/Users", &secret, None).await.status, StatusCode::FORBIDDEN, "{l}");
        set_plan(&app, &t, "enterprise").await;
        assert_eq!(scim(&app, Method::GET, "/Users", &secret, None).await.status, StatusCode::OK, "{l}");
        // A suspended tenant provisions nothing.
        let root = format!("root-{}@scim.test", uuid::Uuid::new_v4().simple());
        let admin = app.owner(&root, "Platform").await;
        app.make_platform_admin(&root).await;
        let r = app.post(&format!("/api/v1/tenants/{t}/suspend"), Some(&admin.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(scim(&app, Method::GET, "/Users", &secret, None).await.status, StatusCode::FORBIDDEN, "{l}");
        let r = app.post(&format!("/api/v1/tenants/{t}/reactivate"), Some(&admin.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(scim(&app, Method::GET, "/Users", &secret, None).await.status, StatusCode::OK, "{l}");
        assert_eq!(app.delete(&format!("{path}/{id}"), &owner.token).await.status, StatusCode::NO_CONTENT);
        assert_eq!(app.delete(&format!("{path}/{id}"), &owner.token).await.status, StatusCode::NOT_FOUND);
        assert_eq!(scim(&app, Method::GET, "/Users", &secret, None).await.status, StatusCode::UNAUTHORIZED, "{l}");
    }
}

#[tokio::test]
async fn provisioning_makes_members_and_deprovisioning_ends_their_access() {
    for app in apps().await {
        let l = app.label();
        let (owner, token) = provisioned(&app, "own@life.test", "Life").await;
        let t = owner.tenant_id.clone();

        // A new address: an account is made, a member of the tenant.
        let created = create_user(&app, &token, "new.hire", "New.Hire@Life.test").await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["meta"]["resourceType"], "User", "{l}");
        assert_eq!(created["meta"]["location"], format!("http://tollgate.test/scim/v2/Users/{id}"), "{l}");
        assert_eq!(role_of(&members(&app, &owner).await, "new.hire@life.test").as_deref(), Some("member"), "{l}");

        // An existing member is linked, and deactivation (Entra ID's form)
        // takes the membership, sessions and keys at once.
        let member = app.member(&owner, "worker@life.test", "member").await;
        let key = app
            .post(&format!("/api/v1/tenants/{t}/api-keys"), Some(&member.token), json!({"name": "k", "scopes": ["*"]}))
            .await;
        assert_eq!(key.status, StatusCode::CREATED, "{l}: {key:?}");
        let key = key.body["secret"].as_str().unwrap().to_owned();
        let worker = create_user(&app, &token, "worker", "worker@life.test").await;
        let wid = worker["id"].as_str().unwrap().to_owned();
        let off = json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "value": {"active": "False"}}]});
        let r = scim(&app, Method::PATCH, &format!("/Users/{wid}"), &token, Some(off)).await;
        assert_eq!((r.status, &r.body["active"]), (StatusCode::OK, &json!(false)), "{l}: {r:?}");
        assert_eq!(role_of(&members(&app, &owner).await, "worker@life.test"), None, "{l}: no longer a member");
        assert_eq!(app.get("/api/v1/me", &member.token).await.status, StatusCode::UNAUTHORIZED, "{l}: token");
        assert_eq!(app.get("/api/v1/me", &key).await.status, StatusCode::UNAUTHORIZED, "{l}: key");
        let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": member.refresh})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: session: {r:?}");
        let r = app.login("worker@life.test", Some(&t)).await;
        assert_ne!(r.status, StatusCode::OK, "{l}: cannot sign in to the tenant: {r:?}");
        let on = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": true}]});
        let r = scim(&app, Method::PATCH, &format!("/Users/{wid}"), &token, Some(on)).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(role_of(&members(&app, &owner).await, "worker@life.test").as_deref(), Some("member"), "{l}");
        assert_eq!(app.login("worker@life.test", Some(&t)).await.status, StatusCode::OK, "{l}: back in");

        // Another tenant's person is invited, never taken over.
        let other = app.owner("elsewhere@other.test", "Other").await;
        let mut tx = app.state.store.tx().await.unwrap();
        tollgate_store::mark_email_verified(&mut tx, &other.user_id).await.unwrap();
        tx.commit().await.unwrap();
        let r = create_user(&app, &token, "elsewhere", "elsewhere@other.test").await;
        let pending = r["id"].as_str().unwrap().to_owned();
        assert_eq!(role_of(&members(&app, &owner).await, "elsewhere@other.test"), None, "{l}: not yet");
        let invitation = app.mailed_token("elsewhere@other.test", "tgi_").await;
        let r = app.post("/api/v1/invitations/accept", None, json!({"token": invitation})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: only the account itself accepts: {r:?}");
        let r = app.post("/api/v1/invitations/accept", Some(&other.token), json!({"token": invitation})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        assert_eq!(role_of(&members(&app, &owner).await, "elsewhere@other.test").as_deref(), Some("member"), "{l}");
        // Linked now: deprovisioning reaches it.
        let r = scim(&app, Method::DELETE, &format!("/Users/{pending}"), &token, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{l}: {r:?}");
        assert_eq!(role_of(&members(&app, &owner).await, "elsewhere@other.test"), None, "{l}");
        assert_eq!(app.get("/api/v1/me", &other.token).await.status, StatusCode::OK, "{l}: its own tenant stays");
        assert_eq!(
            scim(&app, Method::GET, &format!("/Users/{pending}"), &token, None).await.status,
            StatusCode::NOT_FOUND
        );

        // Provisioned inactive, invited only once activated.
        app.owner("later@third.test", "Third").await;
        let mails = |app: &TestApp| {
            let store = app.state.store.clone();
            async move {
                let mut tx = store.tx().await.unwrap();
                let n = tollgate_store::outbox(&mut tx, Some("later@third.test"), 100)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|m| m.body.contains("tgi_"))
                    .count();
                tx.commit().await.unwrap();
                n
            }
        };
        let mut body = user("later", "later@third.test");
        body["active"] = json!(false);
        let r = scim(&app, Method::POST, "/Users", &token, Some(body)).await;
        assert_eq!((r.status, mails(&app).await), (StatusCode::CREATED, 0), "{l}: {r:?}");
        let on = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": true}]});
        let later = r.body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            scim(&app, Method::PATCH, &format!("/Users/{later}"), &token, Some(on.clone())).await.status,
            StatusCode::OK
        );
        assert_eq!(mails(&app).await, 1, "{l}: invited when activated");
        scim(&app, Method::PATCH, &format!("/Users/{later}"), &token, Some(on)).await;
        assert_eq!(mails(&app).await, 1, "{l}: not again while the invitation is out");

        // The tenant's last owner is never deprovisioned.
        let me = create_user(&app, &token, "own", "own@life.test").await;
        let off = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]});
        let r = scim(&app, Method::PATCH, &format!("/Users/{}", me["id"].as_str().unwrap()), &token, Some(off)).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: {r:?}");
        assert_eq!(role_of(&members(&app, &owner).await, "own@life.test").as_deref(), Some("owner"), "{l}");

        // Every change is in the audit log.
        let mut tx = app.state.store.tenant_tx(&t).await.unwrap();
        let kinds: Vec<String> =
            sqlx::query_scalar("SELECT kind FROM security_events WHERE tenant_id = $1 AND kind LIKE 'scim.%'")
                .bind(&t)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        for kind in [
            "scim.token_created",
            "scim.user_created",
            "scim.user_patched",
            "scim.member_removed",
            "scim.member_added",
            "scim.user_linked",
            "scim.user_deleted",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{l}: {kind} in {kinds:?}");
        }
        let _ = PASSWORD;
    }
}

#[tokio::test]
async fn errors_are_rfc_7644_documents() {
    for app in apps().await {
        let l = app.label();
        let (_owner, token) = provisioned(&app, "own@err.test", "Errors").await;
        let u = create_user(&app, &token, "bjensen", "bjensen@err.test").await;
        let id = u["id"].as_str().unwrap().to_owned();
        let version = u["meta"]["version"].as_str().unwrap().to_owned();
        let path = format!("/Users/{id}");
        let expect = |r: &Reply, status: u16, scim_type: Option<&str>| {
            assert_eq!(r.status.as_u16(), status, "{l}: {r:?}");
            assert_eq!(r.body["scimType"].as_str(), scim_type, "{l}: {r:?}");
        };
        expect(
            &scim(&app, Method::POST, "/Users", &token, Some(user("BJensen", "x@err.test"))).await,
            409,
            Some("uniqueness"),
        );
        let mut dup = user("other", "y@err.test");
        dup["externalId"] = json!("ext-1");
        assert_eq!(scim(&app, Method::POST, "/Users", &token, Some(dup.clone())).await.status, StatusCode::CREATED);
        dup["userName"] = json!("third");
        expect(&scim(&app, Method::POST, "/Users", &token, Some(dup)).await, 409, Some("uniqueness"));
        expect(
            &scim(&app, Method::POST, "/Users", &token, Some(json!({"schemas": [USER]}))).await,
            400,
            Some("invalidValue"),
        );
        expect(
            &scim(&app, Method::POST, "/Users", &token, Some(json!({"userName": "nomail"}))).await,
            400,
            Some("invalidValue"),
        );
        expect(&scim(&app, Method::GET, "/Users?filter=userName%20eq", &token, None).await, 400, Some("invalidFilter"));
        expect(
            &scim(&app, Method::GET, "/Users?filter=password%20eq%20%22x%22", &token, None).await,
            400,
            Some("invalidFilter"),
        );
        expect(&scim(&app, Method::GET, "/Users?sortBy=emails", &token, None).await, 400, Some("invalidValue"));
        expect(&scim(&app, Method::GET, "/Users/00000000-0000-0000-0000-000000000000", &token, None).await, 404, None);
        let patch = |ops: Value| json!({"schemas": [PATCH], "Operations": ops});
        for (ops, scim_type) in [
            (json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]), "mutability"),
            (json!([{"op": "replace", "path": "emails[type eq]", "value": "x"}]), "invalidPath"),
            (json!([{"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x"}]), "noTarget"),
            (json!([{"op": "remove"}]), "noTarget"),
            (json!([{"op": "jump", "path": "userName", "value": "x"}]), "invalidSyntax"),
            (json!([{"op": "replace", "path": "active", "value": "perhaps"}]), "invalidValue"),
        ] {
            expect(&scim(&app, Method::PATCH, &path, &token, Some(patch(ops))).await, 400, Some(scim_type));
        }
        let r = app
            .call_with(
                Method::PATCH,
                &format!("/scim/v2{path}"),
                Some(&token),
                None,
                &[("content-type", "application/scim+json")],
            )
            .await;
        expect(&r, 400, Some("invalidSyntax"));
        expect(&scim(&app, Method::GET, "/Nothing", &token, None).await, 404, None);
        // ETags: a stale If-Match is 412; a current If-None-Match is 304.
        let rename = patch(json!([{"op": "replace", "path": "displayName", "value": "Babs"}]));
        let r = app
            .call_with(
                Method::PATCH,
                &format!("/scim/v2{path}"),
                Some(&token),
                Some(rename.clone()),
                &[("if-match", &version)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let current = r.headers["etag"].to_str().unwrap().to_owned();
        assert_ne!(current, version, "{l}: a change moves the version");
        let r = app
            .call_with(Method::PATCH, &format!("/scim/v2{path}"), Some(&token), Some(rename), &[("if-match", &version)])
            .await;
        expect(&r, 412, None);
        let r = app
            .call_with(Method::GET, &format!("/scim/v2{path}"), Some(&token), None, &[("if-none-match", &current)])
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{l}");
        let r = app
            .call_with(Method::GET, &format!("/scim/v2{path}"), Some(&token), None, &[("if-none-match", &version)])
            .await;
        assert_eq!((r.status, r.body["displayName"].as_str()), (StatusCode::OK, Some("Babs")), "{l}");
        // Nothing half-applied: the failed patches left the user as it was.
        assert_eq!(r.body["userName"], "bjensen", "{l}");
        assert_eq!(r.body["emails"][0]["value"], "bjensen@err.test", "{l}");
    }
}

#[tokio::test]
async fn lists_filter_in_the_database_sort_and_page() {
    for app in apps().await {
        let l = app.label();
        let (_owner, token) = provisioned(&app, "own@list.test", "Lists").await;
        let mut ids = Vec::new();
        for (name, email) in [
            ("carol", "carol@corp.test"),
            ("alice", "alice@corp.test"),
            ("bob", "bob@home.test"),
            ("dave", "dave@corp.test"),
            ("erin", "erin@home.test"),
        ] {
            ids.push(create_user(&app, &token, name, email).await["id"].as_str().unwrap().to_owned());
        }
        let list = |q: &str| {
            let token = token.clone();
            let q = q.to_owned();
            let app = &app;
            async move { scim(app, Method::GET, &format!("/Users?{q}"), &token, None).await }
        };
        let names = |r: &Reply| -> Vec<String> {
            r.body["Resources"].as_array().unwrap().iter().map(|u| u["userName"].as_str().unwrap().to_owned()).collect()
        };
        let r = list("filter=userName%20eq%20%22ALICE%22").await;
        assert_eq!((r.body["totalResults"].as_i64(), names(&r)), (Some(1), vec!["alice".to_owned()]), "{l}: {r:?}");
        let r = list("filter=emails%5Btype%20eq%20%22work%22%5D.value%20co%20%22%40corp%22&sortBy=userName").await;
        assert_eq!(names(&r), ["alice", "carol", "dave"], "{l}: {r:?}");
        let r = list("filter=emails%5Btype%20eq%20%22work%22%5D.value%20co%20%22%40corp%22&sortBy=userName&sortOrder=descending&startIndex=2&count=1").await;
        assert_eq!((r.body["totalResults"].as_i64(), names(&r)), (Some(3), vec!["carol".to_owned()]), "{l}: {r:?}");
        assert_eq!((r.body["startIndex"].as_i64(), r.body["itemsPerPage"].as_i64()), (Some(2), Some(1)), "{l}");
        let r = list(
            "filter=not%20(emails.value%20ew%20%22corp.test%22)%20and%20name.givenName%20sw%20%22a%22&sortBy=userName",
        )
        .await;
        assert_eq!(names(&r), ["bob", "erin"], "{l}: {r:?}");
        // Substrings too short for the trigram index are found all the same.
        let r = list("filter=emails%20co%20%22ho%22&sortBy=userName").await;
        assert_eq!(names(&r), ["bob", "erin"], "{l}: {r:?}");
        let r = list("filter=emails.value%20ew%20%22@corp.test%22%20and%20emails.value%20sw%20%22ca%22").await;
        assert_eq!(names(&r), ["carol"], "{l}: {r:?}");
        // Changes since a moment: meta.lastModified gt.
        let mid =
            list(&format!("filter=id%20eq%20%22{}%22", ids[2])).await.body["Resources"][0]["meta"]["lastModified"]
                .as_str()
                .unwrap()
                .to_owned();
        let r = list(&format!("filter=meta.lastModified%20gt%20%22{mid}%22&sortBy=meta.lastModified")).await;
        assert_eq!(names(&r), ["dave", "erin"], "{l}: {r:?}");
        let r = list("count=0").await;
        assert_eq!((r.body["totalResults"].as_i64(), names(&r).len()), (Some(5), 0), "{l}");
        let r = list("attributes=userName&filter=userName%20sw%20%22b%22").await;
        let only = &r.body["Resources"][0];
        assert!(only.get("emails").is_none() && only.get("meta").is_none() && only["id"].is_string(), "{l}: {only}");
        let r = list("excludedAttributes=emails,name&filter=userName%20eq%20%22bob%22").await;
        let only = &r.body["Resources"][0];
        assert!(only.get("emails").is_none() && only["userName"] == "bob", "{l}: {only}");
        // POST .search takes the same in a body.
        let r = scim(
            &app,
            Method::POST,
            "/Users/.search",
            &token,
            Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": "userName ew \"e\" or userName eq \"bob\"", "sortBy": "userName", "count": 10,
            "attributes": ["userName"]})),
        )
        .await;
        assert_eq!(names(&r), ["alice", "bob", "dave"], "{l}: {r:?}");
    }
}

#[tokio::test]
async fn groups_carry_members_and_map_to_roles() {
    for app in apps().await {
        let l = app.label();
        let (owner, token) = provisioned(&app, "own@grp.test", "Groups").await;
        let t = owner.tenant_id.clone();
        let settings = format!("/api/v1/tenants/{t}/scim/settings");
        let r = app
            .put(&settings, &owner.token, Some(json!({"default_role": "viewer", "group_roles": {"Owners": "owner"}})))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: provisioning never makes owners: {r:?}");
        let r = app
            .put(&settings, &owner.token, Some(json!({"default_role": "viewer", "group_roles": {"Admins": "admin"}})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let ann = create_user(&app, &token, "ann", "ann@grp.test").await["id"].as_str().unwrap().to_owned();
        let ben = create_user(&app, &token, "ben", "ben@grp.test").await["id"].as_str().unwrap().to_owned();
        assert_eq!(role_of(&members(&app, &owner).await, "ann@grp.test").as_deref(), Some("viewer"), "{l}");

        let r = scim(
            &app,
            Method::POST,
            "/Groups",
            &token,
            Some(json!({"schemas": [GROUP], "displayName": "Admins",
            "externalId": "okta-1", "members": [{"value": ann}]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let gid = r.body["id"].as_str().unwrap().to_owned();
        assert_eq!(r.body["members"][0]["value"], ann.as_str(), "{l}");
        assert_eq!(role_of(&members(&app, &owner).await, "ann@grp.test").as_deref(), Some("admin"), "{l}: mapped");
        let r = app.get(&format!("/api/v1/tenants/{t}/groups/{gid}"), &owner.token).await;
        assert_eq!(r.body["group"]["members"][0]["email"], "ann@grp.test", "{l}: the principal's group: {r:?}");
        let r = scim(&app, Method::GET, &format!("/Users/{ann}"), &token, None).await;
        assert_eq!(r.body["groups"][0]["value"], gid.as_str(), "{l}: groups read back: {r:?}");
        let r = scim(&app, Method::POST, "/Groups", &token, Some(json!({"displayName": "admins"}))).await;
        assert_eq!((r.status, r.body["scimType"].as_str()), (StatusCode::CONFLICT, Some("uniqueness")), "{l}");
        let r = scim(
            &app,
            Method::POST,
            "/Groups",
            &token,
            Some(json!({"displayName": "X", "members": [{"value": "nobody"}]})),
        )
        .await;
        // An id that is no user (deleted meanwhile) is left out, visibly.
        assert_eq!((r.status, &r.body["members"]), (StatusCode::CREATED, &json!([])), "{l}: {r:?}");

        // The platform API leaves provisioned groups to the provider.
        let r =
            app.put(&format!("/api/v1/tenants/{t}/groups/{gid}/members/{}", owner.user_id), &owner.token, None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: {r:?}");

        // Entra ID: add and remove members by PATCH.
        let p = |ops: Value| json!({"schemas": [PATCH], "Operations": ops});
        let r = scim(
            &app,
            Method::PATCH,
            &format!("/Groups/{gid}"),
            &token,
            Some(p(json!([{"op": "Add", "path": "members", "value": [{"value": ben}]}]))),
        )
        .await;
        assert_eq!(r.body["members"].as_array().map(Vec::len), Some(2), "{l}: {r:?}");
        let r = scim(
            &app,
            Method::PATCH,
            &format!("/Groups/{gid}"),
            &token,
            Some(p(json!([{"op": "Remove", "path": format!("members[value eq \"{ann}\"]")}]))),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let now = members(&app, &owner).await;
        assert_eq!(
            (role_of(&now, "ann@grp.test").as_deref(), role_of(&now, "ben@grp.test").as_deref()),
            (Some("viewer"), Some("admin")),
            "{l}"
        );
        // Okta: membership by PUT; a rename off the mapping drops the role.
        let r = scim(
            &app,
            Method::PUT,
            &format!("/Groups/{gid}"),
            &token,
            Some(json!({"schemas": [GROUP], "displayName": "Staff", "members": [{"value": ann}, {"value": ben}]})),
        )
        .await;
        assert_eq!(r.body["members"].as_array().map(Vec::len), Some(2), "{l}: {r:?}");
        assert_eq!(role_of(&members(&app, &owner).await, "ben@grp.test").as_deref(), Some("viewer"), "{l}");
        let r = scim(
            &app,
            Method::GET,
            "/Groups?filter=displayName%20eq%20%22staff%22&excludedAttributes=members",
            &token,
            None,
        )
        .await;
        assert_eq!(r.body["totalResults"], 1, "{l}: {r:?}");
        assert!(r.body["Resources"][0].get("members").is_none(), "{l}");
        let r =
            scim(&app, Method::GET, &format!("/Groups?filter=members.value%20eq%20%22{ann}%22"), &token, None).await;
        assert_eq!(r.body["totalResults"], 1, "{l}: {r:?}");
        let r = scim(&app, Method::GET, "/Users?filter=groups.display%20eq%20%22Staff%22", &token, None).await;
        assert_eq!(r.body["totalResults"], 2, "{l}: {r:?}");
        // Settings re-map at once; deleting the group takes its role.
        let r = app
            .put(&settings, &owner.token, Some(json!({"default_role": "member", "group_roles": {"staff": "admin"}})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}");
        assert_eq!(role_of(&members(&app, &owner).await, "ann@grp.test").as_deref(), Some("admin"), "{l}");
        assert_eq!(
            scim(&app, Method::DELETE, &format!("/Groups/{gid}"), &token, None).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(role_of(&members(&app, &owner).await, "ann@grp.test").as_deref(), Some("member"), "{l}");
    }
}

#[tokio::test]
async fn bulk_resolves_references_and_stops_on_errors() {
    for app in apps().await {
        let l = app.label();
        let (owner, token) = provisioned(&app, "own@bulk.test", "Bulk").await;
        let bulk = |ops: Value, fail: Option<u64>| {
            let mut body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
            if let Some(n) = fail {
                body["failOnErrors"] = json!(n);
            }
            body
        };
        let r = scim(
            &app,
            Method::POST,
            "/Bulk",
            &token,
            Some(bulk(
                json!([
                    {"method": "POST", "path": "/Users", "bulkId": "u1", "data": user("kim", "kim@bulk.test")},
                    {"method": "POST", "path": "/Groups", "bulkId": "g1",
                     "data": {"schemas": [GROUP], "displayName": "Team", "members": [{"value": "bulkId:u1"}]}},
                    {"method": "PATCH", "path": "/Users/bulkId:u1",
                     "data": {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "Lead"}]}},
                    {"method": "POST", "path": "/Users", "bulkId": "u2", "data": user("kim", "other@bulk.test")},
                    {"method": "DELETE", "path": "/Groups/bulkId:nope"},
                ]),
                None,
            )),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let statuses: Vec<&str> =
            r.body["Operations"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["201", "201", "200", "409", "400"], "{l}: {r:?}");
        assert_eq!(r.body["Operations"][3]["response"]["scimType"], "uniqueness", "{l}");
        let groups = scim(&app, Method::GET, "/Groups", &token, None).await;
        let kim = scim(&app, Method::GET, "/Users?filter=userName%20eq%20%22kim%22", &token, None).await;
        assert_eq!(groups.body["Resources"][0]["members"][0]["value"], kim.body["Resources"][0]["id"], "{l}");
        assert_eq!(kim.body["Resources"][0]["title"], "Lead", "{l}");
        let r = scim(
            &app,
            Method::POST,
            "/Bulk",
            &token,
            Some(bulk(
                json!([
                    {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": "x"}},
                    {"method": "POST", "path": "/Users", "bulkId": "b", "data": user("lee", "lee@bulk.test")},
                ]),
                Some(1),
            )),
        )
        .await;
        assert_eq!(r.body["Operations"].as_array().map(Vec::len), Some(1), "{l}: stopped after one error: {r:?}");
        // A bulk request may be far larger than the API's own bodies (64 KiB).
        let big: Vec<Value> = (0..60)
            .map(|i| {
                let mut u = user(&format!("big{i}"), &format!("big{i}@bulk.test"));
                u["title"] = json!("x".repeat(1000));
                json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"), "data": u})
            })
            .collect();
        let r = scim(&app, Method::POST, "/Bulk", &token, Some(bulk(Value::Array(big), None))).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert!(r.body["Operations"].as_array().unwrap().iter().all(|o| o["status"] == "201"), "{l}");
        let too_many: Vec<Value> =
            (0..101).map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")})).collect();
        let r = scim(&app, Method::POST, "/Bulk", &token, Some(bulk(Value::Array(too_many), None))).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{l}");
        let _ = owner;
    }
}

#[tokio::test]
async fn a_token_reaches_its_own_tenant_only() {
    for app in apps().await {
        let l = app.label();
        let (_a, token_a) = provisioned(&app, "own@a.test", "A").await;
        let (_b, token_b) = provisioned(&app, "own@b.test", "B").await;
        let ua = create_user(&app, &token_a, "shared", "one@a.test").await["id"].as_str().unwrap().to_owned();
        // The same userName is free in another tenant.
        let ub = create_user(&app, &token_b, "shared", "two@b.test").await["id"].as_str().unwrap().to_owned();
        let r = scim(&app, Method::POST, "/Groups", &token_b, Some(json!({"displayName": "G"}))).await;
        let gb = r.body["id"].as_str().unwrap().to_owned();
        for (method, path, body) in [
            (Method::GET, format!("/Users/{ub}"), None),
            (Method::PUT, format!("/Users/{ub}"), Some(user("stolen", "two@b.test"))),
            (
                Method::PATCH,
                format!("/Users/{ub}"),
                Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]})),
            ),
            (Method::DELETE, format!("/Users/{ub}"), None),
            (Method::GET, format!("/Groups/{gb}"), None),
            (Method::DELETE, format!("/Groups/{gb}"), None),
        ] {
            let r = scim(&app, method.clone(), &path, &token_a, body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {method} {path}: {r:?}");
        }
        let r = scim(
            &app,
            Method::POST,
            "/Groups",
            &token_a,
            Some(json!({"displayName": "Mine", "members": [{"value": ub}]})),
        )
        .await;
        assert_eq!(r.body["members"], json!([]), "{l}: another tenant's user is no member: {r:?}");
        let r = scim(&app, Method::GET, "/Users", &token_a, None).await;
        let ids: Vec<&str> =
            r.body["Resources"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [ua.as_str()], "{l}");
        assert_eq!(scim(&app, Method::GET, &format!("/Users/{ub}"), &token_b, None).await.body["active"], true, "{l}");
    }
}

//! Groups and plans: managed through the API, private to their tenant, and
//! seen by every decision (a tenant layer naming a group, a product policy
//! reading the plan).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Account, TestApp, apps};

async fn create_group(app: &TestApp, by: &Account, name: &str) -> String {
    let r = app.post(&format!("/api/v1/tenants/{}/groups", by.tenant_id), Some(&by.token), json!({"name": name})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}: {r:?}", app.label());
    r.body["group"]["id"].as_str().unwrap().to_owned()
}

fn emails(group: &Value) -> Vec<&str> {
    group["members"].as_array().unwrap().iter().map(|m| m["email"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn admins_manage_groups_and_members_see_them() {
    for app in apps().await {
        let owner = app.owner("grp@x.test", "Groups").await;
        let viewer = app.member(&owner, "gv@x.test", "viewer").await;
        let l = app.label();
        let base = format!("/api/v1/tenants/{}/groups", owner.tenant_id);

        let sales = create_group(&app, &owner, "Sales").await;
        let r = app.post(&base, Some(&owner.token), json!({"name": "Sales"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{l}: names are unique in a tenant");
        let r = app.post(&base, Some(&owner.token), json!({"name": "  "})).await;
        assert_eq!((r.status, r.body["errors"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("name")));
        let r = app.post(&base, Some(&owner.token), json!({"name": "x", "description": "a".repeat(501)})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");
        let r = app.post(&base, Some(&owner.token), json!({"name": "x", "tenant_id": "other"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: unknown fields are refused");
        let r = app.post(&base, Some(&viewer.token), json!({"name": "Mine"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: viewers do not manage groups");
        // An admin's key acts within its scopes: `groups:read` lists, nothing more.
        let r = app
            .post(
                &format!("/api/v1/tenants/{}/api-keys", owner.tenant_id),
                Some(&owner.token),
                json!({"name": "reader", "scopes": ["groups:read"]}),
            )
            .await;
        let key = r.body["secret"].as_str().unwrap().to_owned();
        assert_eq!(app.get(&base, &key).await.status, StatusCode::OK, "{l}");
        let r = app.post(&base, Some(&key), json!({"name": "By key"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: `groups:write` is not among its scopes");

        let member = |g: &str, u: &str| format!("{base}/{g}/members/{u}");
        assert_eq!(app.put(&member(&sales, &viewer.user_id), &owner.token, None).await.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.put(&member(&sales, &viewer.user_id), &owner.token, None).await.status,
            StatusCode::NO_CONTENT,
            "{l}: adding twice is harmless"
        );
        assert_eq!(
            app.put(&member(&sales, &owner.user_id), &viewer.token, None).await.status,
            StatusCode::FORBIDDEN,
            "{l}: viewers do not add members"
        );
        assert_eq!(app.put(&member(&sales, &owner.user_id), &owner.token, None).await.status, StatusCode::NO_CONTENT);

        // Viewers see the groups and who is in them.
        let r = app.get(&base, &viewer.token).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(
            (r.body["items"][0]["name"].as_str(), r.body["items"][0]["member_count"].as_i64()),
            (Some("Sales"), Some(2))
        );
        let r = app.get(&format!("{base}/{sales}"), &viewer.token).await;
        assert_eq!(emails(&r.body["group"]), ["grp@x.test", "gv@x.test"], "{l}: {r:?}");

        let r = app.patch(&format!("{base}/{sales}"), &owner.token, json!({"name": "Field sales"})).await;
        assert_eq!((r.status, r.body["group"]["name"].as_str()), (StatusCode::OK, Some("Field sales")), "{l}: {r:?}");
        assert_eq!(r.body["group"]["id"], sales.as_str(), "{l}: the id policies name does not change");

        assert_eq!(app.delete(&member(&sales, &owner.user_id), &owner.token).await.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.delete(&member(&sales, &owner.user_id), &owner.token).await.status,
            StatusCode::NOT_FOUND,
            "{l}: not in the group any more"
        );
        assert_eq!(app.put(&member(&sales, "no-such-user"), &owner.token, None).await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            app.put(&member("no-such-group", &viewer.user_id), &owner.token, None).await.status,
            StatusCode::NOT_FOUND
        );

        // Removing someone from the tenant takes them out of its groups.
        let r =
            app.delete(&format!("/api/v1/tenants/{}/members/{}", owner.tenant_id, viewer.user_id), &owner.token).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{l}: {r:?}");
        let r = app.get(&format!("{base}/{sales}"), &owner.token).await;
        assert_eq!(
            (r.body["group"]["member_count"].as_i64(), emails(&r.body["group"]).len()),
            (Some(0), 0),
            "{l}: {r:?}"
        );

        assert_eq!(app.delete(&format!("{base}/{sales}"), &owner.token).await.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&format!("{base}/{sales}"), &owner.token).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn groups_are_private_to_their_tenant() {
    for app in apps().await {
        let a = app.owner("ga@x.test", "Group A").await;
        let b = app.owner("gb@x.test", "Group B").await;
        let l = app.label();
        let a_group = create_group(&app, &a, "Secret").await;
        let b_group = create_group(&app, &b, "Secret").await;
        assert_ne!(a_group, b_group, "{l}: the same name in two tenants");

        // B by A's tenant path, and A's group by B's own path: both unknown.
        let a_base = format!("/api/v1/tenants/{}/groups", a.tenant_id);
        let b_base = format!("/api/v1/tenants/{}/groups", b.tenant_id);
        assert_eq!(app.get(&a_base, &b.token).await.status, StatusCode::NOT_FOUND, "{l}");
        assert_eq!(app.get(&format!("{b_base}/{a_group}"), &b.token).await.status, StatusCode::NOT_FOUND, "{l}");
        assert_eq!(app.delete(&format!("{b_base}/{a_group}"), &b.token).await.status, StatusCode::NOT_FOUND, "{l}");
        let r = app.patch(&format!("{b_base}/{a_group}"), &b.token, json!({"name": "Mine"})).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}");
        // Nobody joins another tenant's group, nor puts another tenant's user in their own.
        let r = app.put(&format!("{b_base}/{a_group}/members/{}", b.user_id), &b.token, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {r:?}");
        let r = app.put(&format!("{b_base}/{b_group}/members/{}", a.user_id), &b.token, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {r:?}");
        let r = app.get(&format!("{a_base}/{a_group}"), &a.token).await;
        assert_eq!(
            (r.body["group"]["name"].as_str(), r.body["group"]["member_count"].as_i64()),
            (Some("Secret"), Some(0))
        );
    }
}

/// Asks the decision point whether `principal` may write to the CRM.
async fn may_write(app: &TestApp, caller: &str, tenant: &str, principal: Option<&str>) -> Value {
    let mut question = json!({"action": "crm.write", "resource": {"type": "CrmApi", "id": "contacts"},
        "entities": [{"uid": {"type": "CrmApi", "id": "contacts"},
                      "attrs": {"tenant": {"__entity": {"type": "Tenant", "id": tenant}}},
                      "parents": [{"type": "Tenant", "id": tenant}]}]});
    if let Some(p) = principal {
        question["principal"] = json!({"type": "User", "id": p});
    }
    let r = app.post("/api/v1/authorize", Some(caller), question).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {r:?}", app.label());
    r.body
}

#[tokio::test]
async fn a_tenant_layer_naming_a_group_decides_for_its_members() {
    for app in apps().await {
        let owner = app.owner("gl@x.test", "Layered").await;
        let viewer = app.member(&owner, "glv@x.test", "viewer").await;
        let t = owner.tenant_id.as_str();
        let l = app.label();
        let sales = create_group(&app, &owner, "Sales").await;
        let source = format!(
            "@id(\"sales-write\") @reason(\"sales writes\")\npermit (principal in Group::\"{sales}\", action == Action::\"crm.write\", resource);"
        );
        let policies = format!("/api/v1/tenants/{t}/policies");
        let r = app.post(&policies, Some(&owner.token), json!({"source": source})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        app.post(&format!("{policies}/1/activate"), Some(&owner.token), json!({})).await;

        let r = may_write(&app, &owner.token, t, Some(&viewer.user_id)).await;
        assert_eq!(r["decision"], "deny", "{l}: a viewer outside the group: {r}");
        app.put(&format!("/api/v1/tenants/{t}/groups/{sales}/members/{}", viewer.user_id), &owner.token, None).await;
        let r = may_write(&app, &owner.token, t, Some(&viewer.user_id)).await;
        assert_eq!(r["decision"], "allow", "{l}: {r}");
        assert_eq!(r["policies"][0]["id"], format!("tenant:{t}:sales-write"));
        // The viewer asking for themselves is seen in the group too.
        let r = may_write(&app, &viewer.token, t, None).await;
        assert_eq!(r["decision"], "allow", "{l}: {r}");

        // A product cannot claim group membership through its own entities.
        let r = app
            .post(
                "/api/v1/authorize",
                Some(&owner.token),
                json!({"action": "crm.write", "resource": {"type": "CrmApi", "id": "contacts"},
                       "entities": [{"uid": {"type": "Group", "id": sales}, "parents": [{"type": "Tenant", "id": t}]}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");
    }
}

#[tokio::test]
async fn platform_admins_set_plans_and_policies_see_them() {
    for app in apps().await {
        let owner = app.owner("plan@x.test", "Planned").await;
        let root = app.owner("root@plans.test", "Platform").await;
        let t = owner.tenant_id.as_str();
        let l = app.label();
        let plan = format!("/api/v1/tenants/{t}/plan");
        let r = app.get(&format!("/api/v1/tenants/{t}"), &owner.token).await;
        assert_eq!(r.body["tenant"]["plan"], "free", "{l}: new tenants are on the free plan");

        // A key that may write to the CRM, refused by the free plan's rule.
        let r = app
            .post(
                &format!("/api/v1/tenants/{t}/api-keys"),
                Some(&owner.token),
                json!({"name": "sync", "scopes": ["authorize", "crm.write"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        let key = r.body["secret"].as_str().unwrap().to_owned();
        let r = may_write(&app, &key, t, None).await;
        assert_eq!(
            (r["decision"].as_str(), r["policies"][0]["id"].as_str()),
            (Some("deny"), Some("crm.free-plan-keys-read-only")),
            "{l}: {r}"
        );

        // Only platform administrators change plans, and only with a person's token.
        assert_eq!(
            app.put(&plan, &owner.token, Some(json!({"plan": "pro"}))).await.status,
            StatusCode::FORBIDDEN,
            "{l}"
        );
        assert_eq!(
            app.put(&plan, &root.token, Some(json!({"plan": "pro"}))).await.status,
            StatusCode::NOT_FOUND,
            "{l}"
        );
        app.make_platform_admin("root@plans.test").await;
        let r = app.put(&plan, &root.token, Some(json!({"plan": "Pro Plan!"}))).await;
        assert_eq!(
            (r.status, r.body["errors"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")),
            "{l}"
        );
        let r = app.put(&plan, &root.token, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: {r:?}");
        let r = app.put(&plan, &root.token, Some(json!({"plan": "pro"}))).await;
        assert_eq!((r.status, r.body["tenant"]["plan"].as_str()), (StatusCode::OK, Some("pro")), "{l}: {r:?}");

        let r = may_write(&app, &key, t, None).await;
        assert_eq!(
            (r["decision"].as_str(), r["policies"][0]["id"].as_str()),
            (Some("allow"), Some("crm.members-write")),
            "{l}: {r}"
        );
        let r = app.get(&format!("/api/v1/tenants/{t}"), &owner.token).await;
        assert_eq!(r.body["tenant"]["plan"], "pro", "{l}");
    }
}

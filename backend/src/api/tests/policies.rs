//! A tenant's policy layer through the API: validated on write, tested,
//! activated (the decision point follows), rolled back, and private.

use axum::http::StatusCode;
use serde_json::json;
use tollgate_identity::layers::LAYER_UNAVAILABLE;

use super::harness::{TestApp, apps};

/// Corrupts the stored source of `tenant_id`'s layers (as a schema change
/// could break them) and drops the cached engine, so the next decision
/// loads it again.
async fn break_layer(app: &TestApp, tenant_id: &str) {
    let mut tx = app.state.store.tenant_tx(tenant_id).await.unwrap();
    sqlx::query("UPDATE tenant_policies SET source = 'forbid (principal, action' WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.state.engines.invalidate(tenant_id).await;
}

const FREEZE: &str = "@id(\"freeze\") @reason(\"no deals close this quarter\")\nforbid (principal, action == Action::\"deal.close\", resource);";

#[tokio::test]
async fn layers_are_validated_activated_and_rolled_back() {
    for app in apps().await {
        let owner = app.owner("pol@x.test", "Policies").await;
        let viewer = app.member(&owner, "pv@x.test", "viewer").await;
        let base = format!("/api/v1/tenants/{}/policies", owner.tenant_id);
        let l = app.label();

        let r = app
            .post(
                &base,
                Some(&owner.token),
                json!({"source": "@id(\"bad\") permit(principal, action, resource) when { resource.nope };"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");
        assert!(r.body["errors"][0]["message"].as_str().unwrap().contains("nope"));
        let r = app.post(&base, Some(&owner.token), json!({"source": "permit(principal, action, resource);"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: policies need an @id");
        let r = app.post(&format!("{base}/validate"), Some(&owner.token), json!({"source": FREEZE})).await;
        assert_eq!(r.body["valid"], true, "{l}: {r:?}");

        let r = app.post(&base, Some(&viewer.token), json!({"source": FREEZE})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: viewers do not manage policies");
        let r = app.post(&base, Some(&owner.token), json!({"source": FREEZE, "description": "freeze"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: {r:?}");
        assert_eq!(
            (r.body["policy"]["version"].as_i64(), r.body["policy"]["status"].as_str()),
            (Some(1), Some("draft"))
        );

        let deal = json!({"uid": {"type": "Deal", "id": "d"}, "attrs": {
            "tenant": {"__entity": {"type": "Tenant", "id": owner.tenant_id}},
            "owner": {"__entity": {"type": "User", "id": owner.user_id}}, "amount": 5},
            "parents": [{"type": "Tenant", "id": owner.tenant_id}]});
        let question = json!({"action": "deal.close", "resource": {"type": "Deal", "id": "d"}, "entities": [deal]});
        let ask = || app.post("/api/v1/authorize", Some(&owner.token), question.clone());
        assert_eq!(ask().await.body["decision"], "allow", "{l}: a draft changes nothing");

        // Scenarios against the draft.
        let scenario = json!({"entities": [{"uid": {"type": "Tenant", "id": "t"}, "attrs": {"status": "active", "plan": "free", "features": [], "limits": {}}}],
            "requests": [{"name": "frozen", "principal": {"type": "User", "id": "u"}, "action": "deal.close",
                "resource": {"type": "Deal", "id": "d"}, "decision": "deny"}]});
        let r = app.post(&format!("{base}/1/test"), Some(&owner.token), scenario).await;
        assert_eq!((r.body["passed"].as_i64(), r.body["failed"].as_i64()), (Some(1), Some(0)), "{l}: {r:?}");

        let r = app.post(&format!("{base}/1/activate"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let r = ask().await;
        assert_eq!(r.body["decision"], "deny", "{l}: {r:?}");
        assert_eq!(r.body["policies"][0]["id"], format!("tenant:{}:freeze", owner.tenant_id));

        // A second version, then rollback to the first, then rollback to none.
        let second =
            format!("{FREEZE}\n@id(\"extra\") forbid (principal, action == Action::\"deal.update\", resource);");
        app.post(&base, Some(&owner.token), json!({"source": second})).await;
        app.post(&format!("{base}/2/activate"), Some(&owner.token), json!({})).await;
        let r = app.get(&base, &owner.token).await;
        assert_eq!(r.body["active_version"], 2, "{l}: {r:?}");
        let r = app.post(&format!("{base}/rollback"), Some(&owner.token), json!({})).await;
        assert_eq!(r.body["active_version"], 1, "{l}: {r:?}");
        let r = app.post(&format!("{base}/rollback"), Some(&owner.token), json!({})).await;
        assert_eq!(r.body["active_version"], serde_json::Value::Null, "{l}: {r:?}");
        assert_eq!(ask().await.body["decision"], "allow", "{l}: rolled back");
        let r = app.post(&format!("{base}/rollback"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);

        // Private to the tenant.
        let other = app.owner("polo@x.test", "Other").await;
        assert_eq!(app.get(&base, &other.token).await.status, StatusCode::NOT_FOUND);
        let theirs = format!("/api/v1/tenants/{}/policies/1", other.tenant_id);
        assert_eq!(app.get(&theirs, &owner.token).await.status, StatusCode::NOT_FOUND);
        let mine_from_there = format!("/api/v1/tenants/{}/policies", other.tenant_id);
        assert!(app.get(&mine_from_there, &other.token).await.body["items"].as_array().unwrap().is_empty());
        assert_eq!(app.get(&format!("{base}/abc"), &owner.token).await.status, StatusCode::NOT_FOUND);
    }
}

/// A layer that stops loading (here: its stored source corrupted) refuses
/// the tenant's questions with the same answer the gateway gives its
/// requests: 403 and the same detail, never a decision without the layer.
#[tokio::test]
async fn a_layer_that_cannot_be_loaded_refuses_the_decision_point() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("broken@x.test", "Broken").await;
        let base = format!("/api/v1/tenants/{}/policies", owner.tenant_id);
        assert_eq!(app.post(&base, Some(&owner.token), json!({"source": FREEZE})).await.status, StatusCode::CREATED);
        let r = app.post(&format!("{base}/1/activate"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let question = json!({"action": "crm.read", "resource": {"type": "CrmApi", "id": "contacts"},
            "entities": [{"uid": {"type": "CrmApi", "id": "contacts"},
                          "attrs": {"tenant": {"__entity": {"type": "Tenant", "id": owner.tenant_id}}},
                          "parents": [{"type": "Tenant", "id": owner.tenant_id}]}]});
        let r = app.post("/api/v1/authorize", Some(&owner.token), question.clone()).await;
        assert_eq!(r.body["decision"], "allow", "{l}: {r:?}");

        break_layer(&app, &owner.tenant_id).await;
        let r = app.post("/api/v1/authorize", Some(&owner.token), question).await;
        assert_eq!(
            (r.status, r.body["detail"].as_str()),
            (StatusCode::FORBIDDEN, Some(LAYER_UNAVAILABLE)),
            "{l}: {r:?}"
        );
    }
}

/// A tenant's layer decides its API calls too, as it does its products'
/// requests and its decision point's questions; only the calls that manage
/// the layer itself stay with the platform's policies, so no layer locks a
/// tenant out of repairing it.
#[tokio::test]
async fn a_tenant_layer_applies_to_the_tenants_api_calls() {
    for app in apps().await {
        let l = app.label();
        let owner = app.owner("layered@x.test", "Layered API").await;
        let member = app.member(&owner, "layered-member@x.test", "member").await;
        let keys = format!("/api/v1/tenants/{}/api-keys", owner.tenant_id);
        let key = json!({"name": "k", "scopes": ["members:read"]});
        assert_eq!(app.post(&keys, Some(&member.token), key.clone()).await.status, StatusCode::CREATED, "{l}");

        let base = format!("/api/v1/tenants/{}/policies", owner.tenant_id);
        let source = "@id(\"owners-mint-keys\") forbid (principal, action == Action::\"apikey.create\", resource) \
                      unless { principal in Role::\"owner\" };\n\
                      @id(\"no-layer-changes\") forbid (principal, action == Action::\"policy.manage\", resource);";
        assert_eq!(app.post(&base, Some(&owner.token), json!({"source": source})).await.status, StatusCode::CREATED);
        let r = app.post(&format!("{base}/1/activate"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let r = app.post(&keys, Some(&member.token), key.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: the layer's forbid holds on the API: {r:?}");
        assert_eq!(app.post(&keys, Some(&owner.token), key.clone()).await.status, StatusCode::CREATED, "{l}");
        // The layer forbids managing layers, yet the owner can roll it back.
        let r = app.post(&format!("{base}/rollback"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(app.post(&keys, Some(&member.token), key.clone()).await.status, StatusCode::CREATED, "{l}");

        // A layer that no longer loads refuses the tenant's calls, but not
        // the repair.
        assert_eq!(app.post(&format!("{base}/1/activate"), Some(&owner.token), json!({})).await.status, StatusCode::OK);
        break_layer(&app, &owner.tenant_id).await;
        let r = app.get(&format!("/api/v1/tenants/{}/members", owner.tenant_id), &owner.token).await;
        assert_eq!((r.status, r.body["detail"].as_str()), (StatusCode::FORBIDDEN, Some(LAYER_UNAVAILABLE)), "{l}");
        let r = app.post(&format!("{base}/rollback"), Some(&owner.token), json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        let r = app.get(&format!("/api/v1/tenants/{}/members", owner.tenant_id), &owner.token).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
    }
}

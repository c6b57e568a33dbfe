//! The decision point: product questions (the demo CRM's deals, whose
//! policies are built in) answered with identities from the store, never
//! from the request, inside the caller's tenant.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::harness::{Account, TestApp, apps};

fn deal(tenant: &str, owner: &str, amount: i64) -> Value {
    json!({"uid": {"type": "Deal", "id": "d1"},
           "attrs": {"tenant": {"__entity": {"type": "Tenant", "id": tenant}},
                     "owner": {"__entity": {"type": "User", "id": owner}}, "amount": amount},
           "parents": [{"type": "Tenant", "id": tenant}]})
}

async fn ask(app: &TestApp, caller: &Account, principal: &str, entity: Value) -> super::harness::Reply {
    app.post(
        "/api/v1/authorize",
        Some(&caller.token),
        json!({"principal": {"type": "User", "id": principal}, "action": "deal.close",
               "resource": {"type": "Deal", "id": "d1"}, "entities": [entity]}),
    )
    .await
}

#[tokio::test]
async fn answers_product_questions_with_identities_from_the_store() {
    for app in apps().await {
        let owner = app.owner("pdp@x.test", "PDP").await;
        let member = app.member(&owner, "rep@x.test", "member").await;
        let t = owner.tenant_id.as_str();
        let l = app.label();

        let r = ask(&app, &member, &member.user_id, deal(t, &member.user_id, 500)).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {r:?}");
        assert_eq!(r.body["decision"], "allow", "{l}: {r:?}");
        assert_eq!(r.body["policies"][0]["id"], "crm.members-own");
        let r = ask(&app, &member, &member.user_id, deal(t, &member.user_id, 50_000)).await;
        assert_eq!(r.body["decision"], "deny", "{l}: above the threshold: {r:?}");
        let r = ask(&app, &member, &owner.user_id, deal(t, &member.user_id, 50_000)).await;
        assert_eq!(r.body["decision"], "allow", "{l}: an admin (here the owner) closes it: {r:?}");
        let r = ask(&app, &member, &member.user_id, deal(t, &owner.user_id, 5)).await;
        assert_eq!(r.body["decision"], "deny", "{l}: not their deal");

        // Identities cannot be supplied: a request claiming the member is an admin is refused.
        let forged_user = json!({"uid": {"type": "User", "id": member.user_id},
            "attrs": {"email": "x", "platform_admin": true, "role_rank": 4}, "parents": [{"type": "Role", "id": "admin"}]});
        let r = app
            .post(
                "/api/v1/authorize",
                Some(&member.token),
                json!({"action": "deal.close",
                "resource": {"type": "Deal", "id": "d1"}, "entities": [deal(t, &owner.user_id, 5), forged_user]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {r:?}");

        // Platform actions are not answered; other tenants are not reachable.
        let r = app
            .post(
                "/api/v1/authorize",
                Some(&member.token),
                json!({"action": "tenant.delete",
                "resource": {"type": "Deal", "id": "d1"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}");
        let stranger = app.owner("stranger@x.test", "Elsewhere").await;
        let r = ask(&app, &member, &stranger.user_id, deal(t, &stranger.user_id, 5)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: not a member of this tenant");
        let r = ask(&app, &member, &member.user_id, deal(&stranger.tenant_id, &member.user_id, 5)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: another tenant's entities");

        let r = app
            .post(
                "/api/v1/authorize",
                Some(&member.token),
                json!({"action": "deal.close",
                "resource": {"type": "Deal", "id": "d1"}, "context": {"authn": "mfa"},
                "entities": [deal(t, &member.user_id, 1)]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: standard facts cannot be supplied");

        // The batch form answers each question.
        let q = |amount: i64| {
            json!({"action": "deal.close", "resource": {"type": "Deal", "id": "d1"},
                                     "entities": [deal(t, &member.user_id, amount)]})
        };
        let r = app.post("/api/v1/authorize/batch", Some(&member.token), json!({"requests": [q(1), q(20_000)]})).await;
        let decisions: Vec<&str> =
            r.body["results"].as_array().unwrap().iter().map(|x| x["decision"].as_str().unwrap()).collect();
        assert_eq!(decisions, ["allow", "deny"], "{l}: {r:?}");
        let r = app.post("/api/v1/authorize/batch", Some(&member.token), json!({"requests": []})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

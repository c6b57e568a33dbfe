//! The caller's own account: profile, password, email verification,
//! settings (with the theme mode) and sessions.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Verb::{Delete, Get, Patch, Post};
use super::validate::{self, Checks};
use super::{Api, Auth};
use crate::auth::password;
use crate::auth::principal::{Authenticated, PrincipalExt as _};
use crate::authz::{Action, Resource, authorize};
use crate::problem::{ApiError, ApiJson, ApiPath};
use crate::state::AppState;
use crate::views;
use tollgate_identity::principal::{Actor, User};
use tollgate_store as store;

/// Largest stored preferences document, in bytes of JSON.
const MAX_PREFERENCES_BYTES: usize = 16 * 1024;

pub fn routes(api: Api) -> Api {
    api.op(Get, "/me", "The caller's account and membership", Auth::Bearer, 200, me)
        .op(Patch, "/me", "Change name or password", Auth::Bearer, 200, update_me)
        .body::<UpdateMe>()
        .op(
            Post,
            "/me/verify-email",
            "Prove the account's address with the mailed token",
            Auth::Bearer,
            200,
            verify_email,
        )
        .body::<VerifyEmail>()
        .op(Post, "/me/verify-email/resend", "Mail a new verification token", Auth::Bearer, 202, resend_verification)
        .op(Get, "/me/settings", "The caller's preferences", Auth::Bearer, 200, settings)
        .op(Patch, "/me/settings", "Merge-patch the caller's preferences", Auth::Bearer, 200, update_settings)
        .body::<SettingsPatch>()
        .op(Get, "/me/sessions", "The caller's live sessions", Auth::Bearer, 200, sessions)
        .op(Delete, "/me/sessions/{id}", "Revoke one of the caller's sessions", Auth::Bearer, 204, revoke_session)
}

fn account_user<'a>(state: &AppState, p: &'a Authenticated, action: Action) -> Result<&'a User, ApiError> {
    let user = p.require_user()?;
    authorize(state, p, action, Resource::Account(&user.id), None)?;
    Ok(user)
}

async fn me(State(state): State<AppState>, p: Authenticated) -> Result<ApiJson<Value>, ApiError> {
    let user = account_user(&state, &p, Action::AccountRead)?;
    Ok(ApiJson(json!({
        "user": views::user(user),
        "tenant": views::tenant(&p.tenant, Some(&p.role.name)),
    })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateMe {
    name: Option<String>,
    password: Option<String>,
    current_password: Option<String>,
}

async fn update_me(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(body): ApiJson<UpdateMe>,
) -> Result<ApiJson<Value>, ApiError> {
    let user = account_user(&state, &p, Action::AccountUpdate)?;
    let mut checks = Checks::default();
    if let Some(name) = &body.name {
        checks.check("name", validate::name(name));
    }
    if let Some(pw) = &body.password {
        checks.check("password", validate::new_password(pw));
        if body.current_password.is_none() {
            checks.check("current_password", Err("is required to change the password".into()));
        }
    }
    checks.finish()?;
    let new_hash = match (&body.password, &body.current_password) {
        (Some(new), Some(current)) => {
            // The principal never carries a password hash: read it here.
            let mut tx = state.store.tx().await?;
            let row = store::user_by_id(&mut tx, &user.id).await?;
            tx.commit().await?;
            let stored = row.and_then(|r| r.password_hash).unwrap_or_default();
            let (current, new) = (current.clone(), new.clone());
            let result =
                state.hashing.run(move || password::verify(&current, &stored).then(|| password::hash(&new))).await?;
            match result {
                None => return Err(ApiError::field("current_password", "is not correct")),
                Some(hash) => Some(hash.map_err(|e| ApiError::Internal(e.to_string()))?),
            }
        }
        _ => None,
    };
    let mut tx = state.store.tx().await?;
    if let Some(name) = &body.name {
        store::update_user_name(&mut tx, &user.id, name.trim()).await?;
    }
    if let Some(hash) = &new_hash {
        store::set_password(&mut tx, &user.id, hash).await?;
        // A new password ends every other session: whoever knew the old one is out.
        let current = match &p.actor {
            Actor::User { session_id, .. } => Some(session_id.as_str()),
            Actor::ApiKey { .. } => None,
        };
        store::revoke_other_sessions(&mut tx, &user.id, current, "password_changed").await?;
        store::security_event(
            &mut tx,
            Some(&p.tenant.id),
            Some(&user.id),
            "user.password_changed",
            &p.client_ip,
            json!({}),
        )
        .await?;
    }
    let updated = store::user_by_id(&mut tx, &user.id).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(ApiJson(json!({"user": views::user(&User::from(updated))})))
}

fn defaults() -> Value {
    json!({"theme": {"mode": "system", "prefersReducedMotion": false}})
}

/// RFC 7396: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn validate_preferences(prefs: &Value) -> Result<(), ApiError> {
    let mut checks = Checks::default();
    if !prefs.is_object() {
        checks.check("preferences", Err("must be an object".into()));
    }
    if let Some(theme) = prefs.get("theme") {
        if !theme.is_object() {
            checks.check("preferences.theme", Err("must be an object".into()));
        }
        if let Some(mode) = theme.get("mode") {
            let ok = matches!(mode.as_str(), Some("system" | "light" | "dark"));
            checks.check(
                "preferences.theme.mode",
                if ok { Ok(()) } else { Err("must be `system`, `light` or `dark`".into()) },
            );
        }
        if let Some(motion) = theme.get("prefersReducedMotion") {
            checks.check(
                "preferences.theme.prefersReducedMotion",
                if motion.is_boolean() { Ok(()) } else { Err("must be a boolean".into()) },
            );
        }
    }
    if prefs.to_string().len() > MAX_PREFERENCES_BYTES {
        checks.check("preferences", Err(format!("must be at most {MAX_PREFERENCES_BYTES} bytes")));
    }
    checks.finish()
}

fn settings_view(stored: &Value) -> Value {
    let mut prefs = defaults();
    merge_patch(&mut prefs, stored);
    json!({"preferences": prefs})
}

async fn settings(State(state): State<AppState>, p: Authenticated) -> Result<ApiJson<Value>, ApiError> {
    let user = account_user(&state, &p, Action::AccountRead)?;
    let mut tx = state.store.tx().await?;
    let stored = store::settings(&mut tx, &user.id).await?;
    tx.commit().await?;
    Ok(ApiJson(settings_view(&stored)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    preferences: Value,
}

async fn update_settings(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(body): ApiJson<SettingsPatch>,
) -> Result<ApiJson<Value>, ApiError> {
    let user = account_user(&state, &p, Action::AccountUpdate)?;
    if !body.preferences.is_object() {
        return Err(ApiError::field("preferences", "must be an object"));
    }
    let mut tx = state.store.tx().await?;
    let mut stored = store::settings(&mut tx, &user.id).await?;
    merge_patch(&mut stored, &body.preferences);
    validate_preferences(&stored)?;
    store::save_settings(&mut tx, &user.id, &stored).await?;
    tx.commit().await?;
    Ok(ApiJson(settings_view(&stored)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct VerifyEmail {
    /// The `tgv_...` token of the verification mail.
    token: String,
}

/// The mailed token proves the mailbox; the caller's own access token proves
/// the account: both together make the address the account's.
async fn verify_email(
    State(state): State<AppState>,
    p: Authenticated,
    ApiJson(body): ApiJson<VerifyEmail>,
) -> Result<ApiJson<Value>, ApiError> {
    let user = account_user(&state, &p, Action::AccountUpdate)?;
    let mut tx = state.store.tx().await?;
    if !store::verify_email(&mut tx, &user.id, &tollgate_identity::secrets::hash(body.token.trim())).await? {
        return Err(ApiError::field("token", "is not a valid verification token for this account's address"));
    }
    store::security_event(&mut tx, None, Some(&user.id), "user.email_verified", &p.client_ip, json!({})).await?;
    let row = store::user_by_id(&mut tx, &user.id).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(ApiJson(json!({"user": views::user(&User::from(row))})))
}

async fn resend_verification(State(state): State<AppState>, p: Authenticated) -> Result<StatusCode, ApiError> {
    let user = account_user(&state, &p, Action::AccountUpdate)?;
    if user.email_verified {
        return Err(ApiError::Conflict("the address is already verified".into()));
    }
    let mut tx = state.store.tx().await?;
    super::session::send_verification(&state, &mut tx, &user.id, &user.email).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn sessions(State(state): State<AppState>, p: Authenticated) -> Result<ApiJson<Value>, ApiError> {
    let user = account_user(&state, &p, Action::AccountRead)?;
    let current = match &p.actor {
        Actor::User { session_id, .. } => Some(session_id.as_str()),
        Actor::ApiKey { .. } => None,
    };
    let mut tx = state.store.tx().await?;
    let rows = store::sessions_of_user(&mut tx, &user.id).await?;
    tx.commit().await?;
    let items: Vec<Value> = rows.iter().map(|s| views::session(s, current)).collect();
    Ok(ApiJson(json!({"items": items})))
}

async fn revoke_session(
    State(state): State<AppState>,
    p: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = account_user(&state, &p, Action::AccountUpdate)?;
    let mut tx = state.store.tx().await?;
    if !store::revoke_session(&mut tx, &user.id, &id, "revoked_by_user").await? {
        return Err(ApiError::NotFound);
    }
    store::security_event(
        &mut tx,
        Some(&p.tenant.id),
        Some(&user.id),
        "session.revoked",
        &p.client_ip,
        json!({"session": id}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": 1}}));
        assert_eq!(doc, json!({"a": {"b": 1}}));
    }
}

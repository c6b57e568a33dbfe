//! The API's JSON representations of stored rows: the wire shapes, kept
//! apart from the rows so a column never leaks by accident.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use tollgate_identity::principal::{Tenant, User};
use tollgate_store::{ApiKeyRow, CustomRoleRow, GroupRow, InvitationRow, MemberRow, ServiceAccountRow, SessionRow};

/// Unix seconds as RFC 3339.
pub fn ts(secs: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn opt_ts(secs: Option<i64>) -> Value {
    secs.map_or(Value::Null, ts)
}

pub fn user(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "platform_admin": u.platform_admin,
        "email_verified": u.email_verified,
        "created_at": ts(u.created_at),
        "updated_at": ts(u.updated_at),
    })
}

pub fn tenant(t: &Tenant, role: Option<&str>) -> Value {
    let settings: Value = serde_json::from_str(&t.settings).unwrap_or_else(|_| json!({}));
    let mut v = json!({
        "id": t.id,
        "slug": t.slug,
        "name": t.name,
        "status": t.status.as_str(),
        "plan": t.plan,
        "settings": settings,
        "created_at": ts(t.created_at),
        "updated_at": ts(t.updated_at),
    });
    if let Some(role) = role {
        v["role"] = json!(role);
    }
    v
}

pub fn member(m: &MemberRow) -> Value {
    json!({
        "user_id": m.user_id,
        "email": m.email,
        "name": m.name,
        "role": m.role,
        "joined_at": ts(m.created_at),
    })
}

pub fn session(s: &SessionRow, current: Option<&str>) -> Value {
    json!({
        "id": s.id,
        "tenant_id": s.tenant_id,
        "device": s.device,
        "ip": s.ip,
        "user_agent": s.user_agent,
        "amr": s.methods().collect::<Vec<_>>(),
        "sso_connection": s.sso_connection_id,
        "created_at": ts(s.created_at),
        "last_seen_at": ts(s.last_seen_at),
        "expires_at": ts(s.expires_at),
        "current": current == Some(s.id.as_str()),
    })
}

pub fn invitation(i: &InvitationRow) -> Value {
    let status = if i.accepted_at.is_some() {
        "accepted"
    } else if i.revoked_at.is_some() {
        "revoked"
    } else if i.expires_at <= tollgate_store::now() {
        "expired"
    } else {
        "pending"
    };
    json!({
        "id": i.id,
        "email": i.email,
        "role": i.role,
        "status": status,
        "created_at": ts(i.created_at),
        "expires_at": ts(i.expires_at),
    })
}

pub fn api_key(k: &ApiKeyRow) -> Value {
    let scopes: Value = serde_json::from_str(&k.scopes).unwrap_or_else(|_| json!([]));
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": scopes,
        "owner": match (&k.owner_user_id, &k.owner_service_account_id) {
            (Some(u), _) => json!({"type": "user", "id": u}),
            (_, Some(s)) => json!({"type": "service_account", "id": s}),
            _ => Value::Null,
        },
        "created_at": ts(k.created_at),
        "expires_at": opt_ts(k.expires_at),
        "last_used_at": opt_ts(k.last_used_at),
        "revoked_at": opt_ts(k.revoked_at),
    })
}

pub fn service_account(s: &ServiceAccountRow) -> Value {
    json!({"id": s.id, "name": s.name, "role": s.role, "created_at": ts(s.created_at)})
}

pub fn role(r: &CustomRoleRow) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "base_role": r.base_role,
        "description": r.description,
        "created_at": ts(r.created_at),
    })
}

pub fn group(g: &GroupRow) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "member_count": g.member_count,
        "created_at": ts(g.created_at),
        "updated_at": ts(g.updated_at),
    })
}

//! `/Bulk` (RFC 7644 §3.7): operations on users and groups in order, each
//! in its own transaction, with `bulkId` references to resources created
//! earlier in the same request (`"value": "bulkId:qwerty"` in a group's
//! members, or a path `/Users/bulkId:qwerty`), and `failOnErrors` stopping
//! after that many failures. Limits are those ServiceProviderConfig states.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_scim::schema::{BULK_REQUEST_SCHEMA, BULK_RESPONSE_SCHEMA};
use tollgate_scim::{ScimError, ScimType};

use super::{Body, Client, Ctx, Failure, Kind, MAX_BULK_OPERATIONS, Result, Scim};
use crate::state::AppState;

fn invalid(detail: impl Into<String>) -> Failure {
    Failure(ScimError::typed(ScimType::InvalidValue, detail))
}

/// `bulkId:x` strings replaced by the ids created for them.
fn resolve(value: &mut Value, created: &HashMap<String, String>) -> Result<()> {
    match value {
        Value::String(s) => {
            if let Some(bulk_id) = s.strip_prefix("bulkId:") {
                let id = created
                    .get(bulk_id)
                    .ok_or_else(|| invalid(format!("no resource was created as `bulkId:{bulk_id}`")))?;
                *s = id.clone();
            }
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| resolve(v, created))?,
        Value::Object(map) => map.values_mut().try_for_each(|v| resolve(v, created))?,
        _ => {}
    }
    Ok(())
}

/// One operation: its result (status and resource) or error.
async fn run(
    ctx: &Ctx<'_>,
    op: &Value,
    created: &mut HashMap<String, String>,
) -> std::result::Result<(StatusCode, Option<Value>), ScimError> {
    let method = op.get("method").and_then(Value::as_str).unwrap_or_default().to_ascii_uppercase();
    let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
    let version = op.get("version").and_then(Value::as_str);
    let trimmed = path.trim_start_matches('/');
    let (collection, id) = match trimmed.split_once('/') {
        Some((collection, id)) => (collection, Some(id)),
        None => (trimmed, None),
    };
    let kind = Kind::named(collection)
        .ok_or_else(|| ScimError::typed(ScimType::InvalidPath, format!("`{path}` is not /Users or /Groups[/id]")))?;
    let id = match id {
        Some(id) => {
            let mut v = Value::String(id.to_owned());
            resolve(&mut v, created).map_err(|f| f.0)?;
            Some(v.as_str().unwrap_or_default().to_owned())
        }
        None => None,
    };
    let mut data = op.get("data").cloned().unwrap_or(Value::Null);
    resolve(&mut data, created).map_err(|f| f.0)?;
    let result = match (method.as_str(), id.as_deref()) {
        ("POST", None) => kind.create(ctx, &data).await.map(|r| (StatusCode::CREATED, Some(r))),
        ("PUT", Some(id)) => kind.replace(ctx, id, &data, version).await.map(|r| (StatusCode::OK, Some(r))),
        ("PATCH", Some(id)) => kind.patch(ctx, id, &data, version).await.map(|r| (StatusCode::OK, Some(r))),
        ("DELETE", Some(id)) => kind.delete(ctx, id, version).await.map(|()| (StatusCode::NO_CONTENT, None)),
        _ => {
            return Err(ScimError::typed(
                ScimType::InvalidSyntax,
                format!(
                    "`{method} {path}` is not a bulk operation (POST to a collection; PUT, PATCH, DELETE to a resource)"
                ),
            ));
        }
    };
    result.map_err(|f| f.0)
}

pub(super) async fn bulk(State(state): State<AppState>, client: Client, Body(body): Body) -> Result<Scim> {
    let schemas = body.get("schemas").and_then(Value::as_array).cloned().unwrap_or_default();
    if !schemas.iter().any(|s| s == BULK_REQUEST_SCHEMA) {
        return Err(Failure(ScimError::typed(
            ScimType::InvalidSyntax,
            format!("`schemas` must hold `{BULK_REQUEST_SCHEMA}`"),
        )));
    }
    let operations = body.get("Operations").and_then(Value::as_array).cloned().unwrap_or_default();
    if operations.len() > MAX_BULK_OPERATIONS {
        return Err(Failure(ScimError::status(
            413,
            format!("a bulk request holds at most {MAX_BULK_OPERATIONS} operations"),
        )));
    }
    let fail_on_errors = match body.get("failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| invalid("`failOnErrors` must be a positive integer"))?)
        }
    };
    let ctx = Ctx { state: &state, client: &client };
    let mut created = HashMap::new();
    let mut results = Vec::with_capacity(operations.len());
    let mut errors = 0u64;
    for op in &operations {
        let bulk_id = op.get("bulkId").and_then(Value::as_str).map(str::to_owned);
        let method = op.get("method").and_then(Value::as_str).unwrap_or_default().to_ascii_uppercase();
        if method == "POST" && bulk_id.is_none() {
            errors += 1;
            results.push(json!({"method": method, "status": "400",
                "response": ScimError::typed(ScimType::InvalidSyntax, "a bulk POST needs a `bulkId`").document()}));
        } else {
            match run(&ctx, op, &mut created).await {
                Ok((status, resource)) => {
                    let mut entry = json!({"method": method, "status": status.as_u16().to_string()});
                    if let Some(bulk_id) = &bulk_id {
                        entry["bulkId"] = json!(bulk_id);
                    }
                    if let Some(resource) = &resource {
                        entry["location"] = resource.pointer("/meta/location").cloned().unwrap_or(Value::Null);
                        entry["version"] = resource.pointer("/meta/version").cloned().unwrap_or(Value::Null);
                        if let (Some(bulk_id), Some(id)) = (&bulk_id, resource.get("id").and_then(Value::as_str))
                            && status == StatusCode::CREATED
                        {
                            created.insert(bulk_id.clone(), id.to_owned());
                        }
                    }
                    results.push(entry);
                }
                Err(e) => {
                    errors += 1;
                    let mut entry = json!({"method": method, "status": e.status.to_string(), "response": e.document()});
                    if let Some(bulk_id) = &bulk_id {
                        entry["bulkId"] = json!(bulk_id);
                    }
                    results.push(entry);
                }
            }
        }
        if fail_on_errors.is_some_and(|max| errors >= max) {
            break;
        }
    }
    Ok(Scim { status: StatusCode::OK, body: json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": results}) })
}

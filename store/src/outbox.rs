//! The mail outbox: mails are queued in the transaction that makes them
//! (so none is sent for work that rolled back), read by the CLI, and
//! delivered by a relay that claims due mails under a lease, so relays of
//! several instances never send one mail twice while the lease holds.

use sqlx::FromRow;

use super::{DbKind, StoreError, Tx, new_id, now};

/// Queues a mail in the outbox.
pub async fn enqueue_mail(
    tx: &mut Tx,
    tenant_id: Option<&str>,
    recipient: &str,
    subject: &str,
    body: &str,
) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, kind, recipient, subject, body, created_at, next_attempt_at) \
         VALUES ($1, $2, 'email', $3, $4, $5, $6, $6)",
    )
    .bind(new_id())
    .bind(tenant_id)
    .bind(recipient)
    .bind(subject)
    .bind(body)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct OutboxRow {
    pub id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
    pub attempts: i64,
    pub sent_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
}

const COLUMNS: &str = "id, recipient, subject, body, created_at, attempts, sent_at, failed_at, last_error";

/// The newest mails, optionally for one recipient.
pub async fn outbox(tx: &mut Tx, recipient: Option<&str>, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM outbox WHERE ($1 IS NULL OR recipient = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
    )))
    .bind(recipient)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// Whether a mail with `subject` was queued to `recipient` since `since`.
pub async fn mailed_since(tx: &mut Tx, recipient: &str, subject: &str, since: i64) -> Result<bool, StoreError> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM outbox WHERE recipient = $1 AND subject = $2 AND created_at >= $3 LIMIT 1")
            .bind(recipient)
            .bind(subject)
            .bind(since)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

/// Whether any mail is due for delivery (a read, so an idle relay takes no
/// write lock).
pub async fn mail_due(tx: &mut Tx) -> Result<bool, StoreError> {
    let t = now();
    let found: Option<String> = sqlx::query_scalar(
        "SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 \
         AND lease_until <= $1 LIMIT 1",
    )
    .bind(t)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(found.is_some())
}

/// Claims up to `limit` due mails, oldest first, for `lease` seconds, and
/// counts the attempt. SQLite's writers take turns; on PostgreSQL a relay
/// skips the mails another is claiming, and the lease is checked again on
/// the rows updated, so two relays never both get one mail.
pub async fn claim_mail(tx: &mut Tx, kind: DbKind, limit: i64, lease: i64) -> Result<Vec<OutboxRow>, StoreError> {
    let t = now();
    let skip_locked = match kind {
        DbKind::Postgres => "FOR UPDATE SKIP LOCKED",
        DbKind::Sqlite => "",
    };
    // A CTE, evaluated once: as an `IN` subquery PostgreSQL may run it
    // again per row, each run skipping other rows, past the limit.
    let returning: String = COLUMNS.split(", ").map(|c| format!("outbox.{c}")).collect::<Vec<_>>().join(", ");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH due AS (SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $2 \
                      AND lease_until <= $2 ORDER BY created_at, id LIMIT $3 {skip_locked}) \
         UPDATE outbox SET lease_until = $1, attempts = attempts + 1 FROM due \
         WHERE outbox.id = due.id AND outbox.sent_at IS NULL AND outbox.failed_at IS NULL \
         AND outbox.lease_until <= $2 RETURNING {returning}"
    )))
    .bind(t + lease)
    .bind(t)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// The mail went out.
pub async fn mail_sent(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET sent_at = $1, lease_until = 0, last_error = NULL WHERE id = $2")
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The attempt failed; the next is due at `retry_at`, or never (`None`:
/// the mail failed for good).
pub async fn mail_failed(tx: &mut Tx, id: &str, error: &str, retry_at: Option<i64>) -> Result<(), StoreError> {
    let error: String = error.chars().take(500).collect();
    match retry_at {
        Some(at) => {
            sqlx::query("UPDATE outbox SET next_attempt_at = $1, lease_until = 0, last_error = $2 WHERE id = $3")
                .bind(at)
                .bind(&error)
                .bind(id)
                .execute(&mut **tx)
                .await?
        }
        None => {
            sqlx::query("UPDATE outbox SET failed_at = $1, lease_until = 0, last_error = $2 WHERE id = $3")
                .bind(now())
                .bind(&error)
                .bind(id)
                .execute(&mut **tx)
                .await?
        }
    };
    Ok(())
}

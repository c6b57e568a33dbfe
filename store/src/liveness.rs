//! The liveness change feed: the database's triggers name every session,
//! person, tenant, tenant's standings and API key whose row changed, with
//! the database's own time; gateways read what changed since their last
//! reading and drop those entries from their caches.

use sqlx::FromRow;

use super::{DbKind, StoreError, Tx};

/// What changed: which cache (`session`, `user`, `tenant`, `standing`,
/// `key`) and which entry (an id, a tenant id for standings, a key's
/// prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, FromRow)]
pub struct LivenessChange {
    pub kind: String,
    pub id: String,
}

/// The database's clock, in unix seconds: the feed's times are written by
/// it, so its readers count from it too.
pub async fn database_now(tx: &mut Tx, kind: DbKind) -> Result<i64, StoreError> {
    let sql = match kind {
        DbKind::Sqlite => "SELECT CAST(strftime('%s', 'now') AS INTEGER)",
        DbKind::Postgres => "SELECT CAST(extract(epoch FROM clock_timestamp()) AS BIGINT)",
    };
    Ok(sqlx::query_scalar(sql).fetch_one(&mut **tx).await?)
}

/// The changes recorded at `since` or later (by the database's clock),
/// each once.
pub async fn liveness_changes_since(tx: &mut Tx, since: i64) -> Result<Vec<LivenessChange>, StoreError> {
    Ok(sqlx::query_as("SELECT DISTINCT kind, id FROM liveness_changes WHERE changed_at >= $1")
        .bind(since)
        .fetch_all(&mut **tx)
        .await?)
}

/// Drops the changes recorded before `before`; how many.
pub async fn prune_liveness_changes(tx: &mut Tx, before: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query("DELETE FROM liveness_changes WHERE changed_at < $1")
        .bind(before)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

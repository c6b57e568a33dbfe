//! Tollgate's store: one sqlx `Any` pool over SQLite (embedded default) or
//! PostgreSQL, the migrations of each, the rows as the database holds them and
//! the queries by area, with transactions scoped to a tenant so that
//! PostgreSQL's row-level security backs every tenant check. It knows nothing
//! of the layers above it: rows here, domain types in `tollgate-identity`.

mod groups;
mod identity;
mod keys;
mod liveness;
mod mfa;
mod outbox;
mod policies;
mod scim;
mod sso;
mod tenancy;
mod usage;

pub use groups::*;
pub use identity::*;
pub use keys::*;
pub use liveness::*;
pub use mfa::*;
pub use outbox::*;
pub use policies::*;
pub use scim::*;
pub use sso::*;
pub use tenancy::*;
pub use usage::*;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url: expected `sqlite:` or `postgres://`")]
    UnsupportedUrl,
    #[error("corrupt stored value in `{0}`")]
    Corrupt(&'static str),
    #[error(
        "refusing to run on PostgreSQL as role `{0}`: a superuser or BYPASSRLS role is not bound by row-level \
         security; connect as a role of the application's own"
    )]
    UnsafeRole(String),
    /// One failure handed to every caller that waited on the same load (a
    /// cache filling one entry once for many requests).
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

impl StoreError {
    /// Whether the error is a unique-constraint violation (a conflict the
    /// caller can report, not a fault).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }

    /// Whether the error is a foreign-key violation: a row referred to
    /// vanished (or never existed) while the caller worked.
    pub fn is_foreign_key_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_foreign_key_violation(),
            _ => false,
        }
    }
}

pub type Tx = Transaction<'static, Any>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
}

impl Store {
    /// Connects to `url` (`sqlite:PATH` or `postgres://...`), creating a
    /// SQLite file when it does not exist.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbKind::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let url = match kind {
            DbKind::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match kind {
                DbKind::Sqlite => 4,
                DbKind::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == DbKind::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if kind == DbKind::Postgres {
            // Row-level security backs every tenant check: a role it does
            // not bind would silently make them the application's alone.
            let (role, unsafe_role): (String, bool) = sqlx::query_as(
                "SELECT current_user::text, (rolsuper OR rolbypassrls) FROM pg_roles WHERE rolname = current_user",
            )
            .fetch_one(&pool)
            .await?;
            if unsafe_role {
                pool.close().await;
                return Err(StoreError::UnsafeRole(role));
            }
        }
        Ok(Self { pool, kind })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Applies the pending forward-only migrations of this database kind.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.kind {
            DbKind::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            DbKind::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool, for maintenance and tests that must bypass the tenant scoping.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction outside any tenant: it reaches only tables without
    /// tenant data (users, sessions, tenants themselves, keys, outbox).
    pub async fn tx(&self) -> Result<Tx, StoreError> {
        self.begin().await
    }

    /// Begins a transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two transactions that read then write wait for
    /// each other under the busy timeout instead of one failing on upgrade.
    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    /// A read-only look-up outside any tenant. On SQLite it does not take the
    /// write lock, so look-ups (a gateway's cache misses among them) never
    /// queue behind writers or each other.
    pub async fn read_tx(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A read-only look-up bound to one tenant (see [`Store::tenant_tx`]).
    pub async fn tenant_read_tx(&self, tenant_id: &str) -> Result<Tx, StoreError> {
        let mut tx = self.read_tx().await?;
        self.set_local(&mut tx, "app.tenant_id", tenant_id).await?;
        Ok(tx)
    }

    /// A read-only look-up of the one API key with `prefix`.
    pub async fn key_prefix_read_tx(&self, prefix: &str) -> Result<Tx, StoreError> {
        let mut tx = self.read_tx().await?;
        self.set_local(&mut tx, "app.key_prefix", prefix).await?;
        Ok(tx)
    }

    /// A transaction bound to one tenant: on PostgreSQL row-level security
    /// then shows and accepts only that tenant's rows.
    pub async fn tenant_tx(&self, tenant_id: &str) -> Result<Tx, StoreError> {
        let mut tx = self.begin().await?;
        self.set_local(&mut tx, "app.tenant_id", tenant_id).await?;
        Ok(tx)
    }

    /// A transaction that sees one user's memberships in every tenant (and
    /// nothing else of those tenants).
    pub async fn user_tx(&self, user_id: &str) -> Result<Tx, StoreError> {
        let mut tx = self.begin().await?;
        self.set_local(&mut tx, "app.user_id", user_id).await?;
        Ok(tx)
    }

    /// A transaction that sees the one API key with `prefix`, whatever its tenant.
    pub async fn key_prefix_tx(&self, prefix: &str) -> Result<Tx, StoreError> {
        let mut tx = self.begin().await?;
        self.set_local(&mut tx, "app.key_prefix", prefix).await?;
        Ok(tx)
    }

    /// Serializes the transactions that call this with the same `key` until
    /// they end. SQLite's write transactions are serialized already; on
    /// PostgreSQL a transaction-scoped advisory lock does it.
    pub async fn serialize_on(&self, tx: &mut Tx, key: &str) -> Result<(), StoreError> {
        if self.kind == DbKind::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::text")
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Binds an open transaction to a tenant, for flows that create the
    /// tenant inside the transaction.
    pub async fn bind_tenant(&self, tx: &mut Tx, tenant_id: &str) -> Result<(), StoreError> {
        self.set_local(tx, "app.tenant_id", tenant_id).await
    }

    async fn set_local(&self, tx: &mut Tx, name: &str, value: &str) -> Result<(), StoreError> {
        if self.kind == DbKind::Postgres {
            sqlx::query("SELECT set_config($1, $2, true)").bind(name).bind(value).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A new random, time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

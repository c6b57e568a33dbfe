//! Test databases: a fresh SQLite file always, and a fresh PostgreSQL
//! database when `TOLLGATE_TEST_DATABASE_URL` names a server (CI always does:
//! with `CI` set and no URL, asking for the databases fails).

use std::path::PathBuf;

use super::{DbKind, Store};

/// The variable naming a PostgreSQL server (any database on it) whose role
/// may create databases; each test gets its own database there.
pub const POSTGRES_URL_VAR: &str = "TOLLGATE_TEST_DATABASE_URL";

/// A migrated, empty store and where it lives.
pub struct TestDb {
    pub store: Store,
    pub label: &'static str,
    pub url: String,
    pub dir: PathBuf,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The SQLite file and signing keys of this test; open handles do not
        // stop the removal on Unix.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{tag}-{}", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// The databases every store test runs on.
pub async fn databases() -> Vec<TestDb> {
    let mut dbs = Vec::new();
    let dir = temp_dir("sqlite");
    let url = format!("sqlite:{}", dir.join("tollgate.db").display());
    dbs.push(open("sqlite", url, dir).await);
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(admin_url) if !admin_url.is_empty() => {
            let url = create_postgres_database(&admin_url).await;
            dbs.push(open("postgres", url, temp_dir("pg")).await);
        }
        _ => assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the store tests on PostgreSQL: set {POSTGRES_URL_VAR}"
        ),
    }
    dbs
}

async fn open(label: &'static str, url: String, dir: PathBuf) -> TestDb {
    let store = match Store::connect(&url).await {
        Ok(s) => s,
        Err(e) => panic!("cannot connect to the {label} test database: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("cannot migrate the {label} test database: {e}");
    }
    assert_eq!(store.kind() == DbKind::Postgres, label == "postgres");
    TestDb { store, label, url, dir }
}

/// Creates a uniquely named database on the server of `admin_url` and
/// returns its URL.
async fn create_postgres_database(admin_url: &str) -> String {
    let name = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
    let admin = match Store::connect(admin_url).await {
        Ok(s) => s,
        Err(e) => panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"),
    };
    let create = format!("CREATE DATABASE {name}");
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(admin.pool()).await {
        panic!("cannot create test database: {e}");
    }
    admin.pool().close().await;
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    format!("{base}/{name}")
}

/// Backdates every change in the liveness feed by `secs` (as if recorded
/// that long ago), for tests of what readers do with old changes.
pub async fn backdate_liveness_changes(store: &Store, secs: i64) {
    let done =
        sqlx::query("UPDATE liveness_changes SET changed_at = changed_at - $1").bind(secs).execute(store.pool()).await;
    if let Err(e) = done {
        panic!("cannot backdate the liveness feed: {e}");
    }
}

/// How many changes the liveness feed holds.
pub async fn count_liveness_changes(store: &Store) -> i64 {
    match sqlx::query_scalar("SELECT COUNT(*) FROM liveness_changes").fetch_one(store.pool()).await {
        Ok(n) => n,
        Err(e) => panic!("cannot count the liveness feed: {e}"),
    }
}

/// A password session of `user_id` in `tenant_id` for an hour, from a test client.
pub fn new_session<'a>(user_id: &'a str, tenant_id: &'a str) -> super::NewSession<'a> {
    super::NewSession {
        user_id,
        tenant_id,
        device: "test",
        ip: "10.0.0.1",
        user_agent: "test",
        amr: "pwd",
        expires_at: super::now() + 3600,
        sso_connection: None,
    }
}

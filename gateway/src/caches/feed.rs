//! Following the store's liveness feed: once per [`FEED_EVERY`] a request
//! reads which sessions, people, tenants, standings and keys changed (the
//! database's triggers record every such write) and drops them from the
//! caches, together with every kept principal; so cached facts stay until
//! they change, however many callers there are, and a change reaches the
//! gateway within about a second. What cannot be read is not trusted: a
//! failed reading drops everything.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollgate_identity::layers::{FEED_EVERY, FEED_OVERLAP_SECS};
use tollgate_identity::plans::Catalog;
use tollgate_store::{self as store, LivenessChange, Store, StoreError};

use super::Caches;
use crate::metrics;

/// How long changes stay in the store's feed (pruned by its readers).
const KEPT_SECS: i64 = 3600;
/// How often a reader prunes the feed.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Where this gateway is in the feed.
pub(super) struct Feed {
    /// Milliseconds from `epoch`: when the feed is next due, and when it
    /// was last read.
    epoch: Instant,
    due_ms: AtomicU64,
    read_ms: AtomicU64,
    /// Bumped whenever something is dropped: a principal kept from an
    /// earlier generation is built again (from the facts still cached).
    generation: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The database's time at the last reading.
    since: Option<i64>,
    /// The plan catalog tenants were last loaded with, and when (database
    /// time) another took its place: tenants hold entitlements from it.
    catalog: Option<Arc<Catalog>>,
    catalog_changed: Option<i64>,
    pruned: Option<Instant>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            due_ms: AtomicU64::new(0),
            read_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            state: tokio::sync::Mutex::default(),
        }
    }
}

impl Feed {
    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Caches {
    /// Reads the feed when it is due, before a request looks anything up.
    /// One request reads it; the others go on with what they have, unless
    /// the last reading is more than two periods old (after a quiet spell):
    /// then they wait for it.
    pub(super) async fn follow(&self) {
        if self.feed.elapsed_ms() < self.feed.due_ms.load(Ordering::Acquire) {
            return;
        }
        Box::pin(self.read_feed()).await;
    }

    async fn read_feed(&self) {
        let feed = &self.feed;
        let period = FEED_EVERY.as_millis() as u64;
        let mut state = match feed.state.try_lock() {
            Ok(state) => state,
            Err(_) if feed.elapsed_ms() > feed.read_ms.load(Ordering::Acquire) + 2 * period => {
                let state = feed.state.lock().await;
                if feed.elapsed_ms() < feed.due_ms.load(Ordering::Acquire) {
                    return;
                }
                state
            }
            Err(_) => return,
        };
        let started = feed.elapsed_ms();
        if started < feed.due_ms.load(Ordering::Acquire) {
            return;
        }
        feed.due_ms.store(started + period, Ordering::Release);
        let read = match self.lookups().await {
            Ok(lookups) => read(lookups.store(), state.since).await,
            Err(e) => Err(e),
        };
        match read {
            Ok((now, changes)) => {
                metrics::liveness_feed("read", changes.len());
                let catalog = self.catalog.get();
                if state.catalog.as_ref().is_some_and(|seen| !Arc::ptr_eq(seen, &catalog)) {
                    state.catalog_changed = Some(now);
                }
                state.catalog = Some(catalog);
                // Applied again on every reading within the overlap: a load
                // that raced a change is dropped by the next one.
                let catalog_changed = state.catalog_changed.is_some_and(|at| at >= now - FEED_OVERLAP_SECS);
                self.drop_changed(&changes, catalog_changed).await;
                state.since = Some(now);
                feed.read_ms.store(started, Ordering::Release);
                if state.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY)
                    && let Ok(lookups) = self.lookups().await
                {
                    state.pruned = Some(Instant::now());
                    // A write (on SQLite it waits its turn): off the request's path.
                    let store = lookups.store().clone();
                    tokio::spawn(async move {
                        if let Err(e) = prune(&store, now - KEPT_SECS).await {
                            tracing::warn!(error = %e, "cannot prune the liveness feed");
                        }
                    });
                }
            }
            Err(e) => {
                metrics::liveness_feed("failed", 0);
                tracing::warn!(error = %e, "cannot read the liveness feed; dropping every cached fact");
                self.drop_everything();
            }
        }
    }

    /// Drops what `changes` name (and every tenant if the plan catalog
    /// changed), then every kept principal.
    async fn drop_changed(&self, changes: &[LivenessChange], catalog_changed: bool) {
        if changes.is_empty() && !catalog_changed {
            return;
        }
        let mut standings = HashSet::new();
        let mut tenants_named = catalog_changed;
        for change in changes {
            let id = &change.id;
            match change.kind.as_str() {
                "session" => self.sessions.invalidate(id).await,
                "user" => self.users.invalidate(id).await,
                "tenant" => {
                    self.tenants.invalidate(id).await;
                    tenants_named = true;
                }
                "standing" => {
                    standings.insert(id.clone());
                }
                "key" => self.api_keys.invalidate(id).await,
                other => {
                    tracing::warn!(kind = %other, "unknown kind of liveness change; dropping every cached fact");
                    self.drop_everything();
                    return;
                }
            }
        }
        if catalog_changed {
            self.tenants.invalidate_all();
        }
        if tenants_named {
            self.tenants_named.invalidate_all();
        }
        if !standings.is_empty()
            && self.standings.invalidate_entries_if(move |(tenant, _), _| standings.contains(tenant)).is_err()
        {
            self.standings.invalidate_all();
        }
        self.principals.invalidate_all();
        self.feed.bump();
    }

    fn drop_everything(&self) {
        self.sessions.invalidate_all();
        self.users.invalidate_all();
        self.tenants.invalidate_all();
        self.tenants_named.invalidate_all();
        self.standings.invalidate_all();
        self.api_keys.invalidate_all();
        self.principals.invalidate_all();
        self.feed.bump();
    }
}

/// The database's time now and the changes since `since` (from now on
/// the first reading), read back by the overlap.
async fn read(store: &Store, since: Option<i64>) -> Result<(i64, Vec<LivenessChange>), StoreError> {
    let mut tx = store.read_tx().await?;
    let now = store::database_now(&mut tx, store.kind()).await?;
    let changes = store::liveness_changes_since(&mut tx, since.unwrap_or(now) - FEED_OVERLAP_SECS).await?;
    tx.commit().await?;
    Ok((now, changes))
}

async fn prune(store: &Store, before: i64) -> Result<(), StoreError> {
    let mut tx = store.tx().await?;
    store::prune_liveness_changes(&mut tx, before).await?;
    tx.commit().await?;
    Ok(())
}

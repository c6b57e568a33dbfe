//! The gateway's side of the store's change feed ([`ChangeFeed`]): each
//! reading drops the sessions, people, tenants, standings and keys it
//! names from the caches, with every kept principal (built again from the
//! facts still cached), and hands the layer changes to the tenant engines;
//! so cached facts stay until they change, however many callers there are,
//! and a change reaches the gateway within about a second. What cannot be
//! read is not trusted: a failed reading drops everything.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tollgate_identity::feed::{ChangeFeed, FEED_OVERLAP_SECS, Reading};
use tollgate_identity::plans::Catalog;
use tollgate_store::LivenessChange;

use super::Caches;
use crate::metrics;

/// Where this gateway is in the feed.
#[derive(Default)]
pub(super) struct Feed {
    feed: ChangeFeed,
    /// Bumped whenever something is dropped: a principal kept from an
    /// earlier generation is built again (from the facts still cached).
    generation: AtomicU64,
    catalog: Mutex<CatalogSeen>,
}

/// The plan catalog tenants were last loaded with, and when (database
/// time) another took its place: tenants hold entitlements from it.
#[derive(Default)]
struct CatalogSeen {
    catalog: Option<Arc<Catalog>>,
    changed: Option<i64>,
}

impl Feed {
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Caches {
    /// Reads the feed when it is due, before a request looks anything up.
    pub(super) async fn follow(&self) {
        if !self.feed.feed.due() {
            return;
        }
        Box::pin(async {
            match self.lookups().await {
                Ok(lookups) => self.feed.feed.follow(lookups.store(), |reading| self.apply(reading)).await,
                Err(e) => self.apply(Err(e)).await,
            }
        })
        .await;
    }

    async fn apply(&self, reading: Reading) {
        self.engines.apply(&reading).await;
        match reading {
            Ok((now, changes)) => {
                metrics::liveness_feed("read", changes.len());
                let catalog_changed = self.catalog_changed(now);
                self.drop_changed(&changes, catalog_changed).await;
            }
            Err(e) => {
                metrics::liveness_feed("failed", 0);
                tracing::warn!(error = %e, "cannot read the change feed; dropping every cached fact");
                self.drop_everything();
            }
        }
    }

    /// Whether the plan catalog changed within the feed's overlap of `now`
    /// (applied again on every reading within it, like a change in the
    /// feed: a tenant a racing load put back is dropped by the next one).
    fn catalog_changed(&self, now: i64) -> bool {
        let catalog = self.catalog.get();
        let Ok(mut seen) = self.feed.catalog.lock() else {
            return true;
        };
        if seen.catalog.as_ref().is_some_and(|c| !Arc::ptr_eq(c, &catalog)) {
            seen.changed = Some(now);
        }
        seen.catalog = Some(catalog);
        seen.changed.is_some_and(|at| at >= now - FEED_OVERLAP_SECS)
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
                // The tenant engines' (applied above).
                "layer" => {}
                other => {
                    tracing::warn!(kind = %other, "unknown kind of change; dropping every cached fact");
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

//! Following the store's change feed (`liveness_changes`, written by the
//! database's triggers with its own clock): every instance that caches what
//! the store holds reads it once per [`FEED_EVERY`] and drops what it names,
//! instead of reading every entry again and again. One caller reads at a
//! time and applies the reading before others go on; the others go on with
//! what they have, unless the last reading is more than two periods old
//! (after a quiet spell), when they wait for it. Each reading goes back
//! [`FEED_OVERLAP_SECS`], so a write committed after its recorded time is
//! still seen, and a load that raced a change is dropped by the next one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollgate_store::{self as store, LivenessChange, Store, StoreError};

/// How often an instance reads the change feed.
pub const FEED_EVERY: Duration = Duration::from_secs(1);
/// Changes are read again for this long after they were recorded.
pub const FEED_OVERLAP_SECS: i64 = 10;
/// How long changes stay in the store's feed (pruned by its readers).
const KEPT_SECS: i64 = 3600;
/// How often a reader prunes the feed.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What a reading found: the database's time and the changes since the
/// last reading (each once), or why the feed could not be read.
pub type Reading = Result<(i64, Vec<LivenessChange>), StoreError>;

/// Where one instance is in the feed.
pub struct ChangeFeed {
    /// Milliseconds from `epoch`: when the feed is next due, and when it
    /// was last read.
    epoch: Instant,
    due_ms: AtomicU64,
    read_ms: AtomicU64,
    position: tokio::sync::Mutex<Position>,
}

#[derive(Default)]
struct Position {
    /// The database's time at the last reading.
    since: Option<i64>,
    pruned: Option<Instant>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            due_ms: AtomicU64::new(0),
            read_ms: AtomicU64::new(0),
            position: tokio::sync::Mutex::default(),
        }
    }
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed").field("read_ms", &self.read_ms).finish_non_exhaustive()
    }
}

impl ChangeFeed {
    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a reading is due (a clock reading and an atomic load: the
    /// check every request makes).
    pub fn due(&self) -> bool {
        self.elapsed_ms() >= self.due_ms.load(Ordering::Acquire)
    }

    /// Reads the feed if it is due and hands the reading to `apply` (while
    /// holding the feed, so that callers who wait see it applied).
    pub async fn follow<F, Fut>(&self, store: &Store, apply: F)
    where
        F: FnOnce(Reading) -> Fut,
        Fut: Future<Output = ()>,
    {
        let period = FEED_EVERY.as_millis() as u64;
        let mut position = match self.position.try_lock() {
            Ok(position) => position,
            Err(_) if self.elapsed_ms() > self.read_ms.load(Ordering::Acquire) + 2 * period => {
                self.position.lock().await
            }
            Err(_) => return,
        };
        let started = self.elapsed_ms();
        if started < self.due_ms.load(Ordering::Acquire) {
            return;
        }
        self.due_ms.store(started + period, Ordering::Release);
        let reading = read(store, position.since).await;
        if let Ok((now, _)) = &reading {
            let now = *now;
            position.since = Some(now);
            self.read_ms.store(started, Ordering::Release);
            if position.pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                position.pruned = Some(Instant::now());
                // A write (on SQLite it waits its turn): off the caller's path.
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(e) = prune(&store, now - KEPT_SECS).await {
                        tracing::warn!(error = %e, "cannot prune the change feed");
                    }
                });
            }
        }
        apply(reading).await;
    }
}

/// The database's time now and the changes since `since` (from now on
/// the first reading), read back by the overlap.
async fn read(store: &Store, since: Option<i64>) -> Reading {
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

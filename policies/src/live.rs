//! Live policies: the current engine snapshot behind an atomic pointer, and a
//! watcher that reloads a policies directory when its files change. A change
//! that fails to parse or validate is refused and the old snapshot keeps
//! serving; readers never see a half-loaded set.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher as _};

use crate::engine::{LoadError, PolicyEngine};

/// The engine in force, swapped whole on reload.
pub struct LivePolicies {
    current: ArcSwap<PolicyEngine>,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for LivePolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePolicies").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The result of one reload, for logs and metrics.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new set is in force, with this many policies.
    Swapped(usize),
    /// The change was refused; the previous set keeps serving.
    Refused(LoadError),
}

impl LivePolicies {
    /// A fixed set that never reloads (the policies built into the binary).
    pub fn fixed(engine: PolicyEngine) -> Self {
        Self { current: ArcSwap::from_pointee(engine), dir: None }
    }

    /// The set of a policies directory, reloadable from it.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let engine = PolicyEngine::from_dir(dir)?;
        Ok(Self { current: ArcSwap::from_pointee(engine), dir: Some(dir.to_owned()) })
    }

    /// The snapshot to evaluate a request against: hold it for the request.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.current.load_full()
    }

    /// Whether `engine` is the snapshot in force (no reload since it was
    /// taken), without taking a reference to the current one.
    pub fn is_current(&self, engine: &Arc<PolicyEngine>) -> bool {
        Arc::ptr_eq(&self.current.load(), engine)
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Loads the directory again and swaps the new set in when it is valid.
    pub fn reload(&self) -> ReloadOutcome {
        let Some(dir) = &self.dir else {
            return ReloadOutcome::Swapped(self.current().len());
        };
        match PolicyEngine::from_dir(dir) {
            Ok(engine) => {
                let n = engine.len();
                self.current.store(Arc::new(engine));
                ReloadOutcome::Swapped(n)
            }
            Err(e) => ReloadOutcome::Refused(e),
        }
    }
}

/// Watches a policies directory; dropping it stops the watching.
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher").finish_non_exhaustive()
    }
}

/// How long changes are gathered before one reload (editors write in steps).
const SETTLE: Duration = Duration::from_millis(200);

impl PolicyWatcher {
    /// Reloads `live` whenever a file under its directory changes, telling
    /// `report` each outcome. `None` when the set is fixed.
    pub fn start(
        live: Arc<LivePolicies>,
        report: impl Fn(&ReloadOutcome) + Send + 'static,
    ) -> Result<Option<Self>, notify::Error> {
        let Some(dir) = live.dir().map(Path::to_owned) else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&dir, RecursiveMode::Recursive)?;
        std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Let a burst of writes settle, then reload once.
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    report(&live.reload());
                }
            })
            .map_err(notify::Error::io)?;
        Ok(Some(Self { _watcher: watcher }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::engine::{BUILTIN_POLICIES, BUILTIN_SCHEMA};

    fn policies_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tg-live-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(dir.join("platform")).unwrap();
        std::fs::write(dir.join("schema.cedarschema"), BUILTIN_SCHEMA).unwrap();
        for (name, text) in BUILTIN_POLICIES {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn uuid_like() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    }

    fn wait_for(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn file_changes_swap_valid_sets_and_refuse_broken_ones() {
        let dir = policies_dir();
        let live = Arc::new(LivePolicies::from_dir(&dir).unwrap());
        let before = live.current().len();
        let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&outcomes);
        let _watcher = PolicyWatcher::start(Arc::clone(&live), move |o| {
            seen.lock().unwrap().push(matches!(o, ReloadOutcome::Swapped(_)));
        })
        .unwrap()
        .unwrap();

        std::fs::write(
            dir.join("platform/extra.cedar"),
            "@id(\"extra\") forbid(principal, action, resource) when { false };",
        )
        .unwrap();
        wait_for("the new policy", || live.current().len() == before + 1);

        let held = live.current();
        std::fs::write(
            dir.join("platform/extra.cedar"),
            "@id(\"extra\") permit(principal, action, resource) when { resource.nope };",
        )
        .unwrap();
        wait_for("the refusal", || outcomes.lock().unwrap().contains(&false));
        assert_eq!(live.current().len(), before + 1, "the old set keeps serving");
        assert!(Arc::ptr_eq(&held, &live.current()), "a refused change swaps nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fixed_sets_do_not_watch() {
        let live = Arc::new(LivePolicies::fixed(PolicyEngine::builtin().unwrap()));
        assert!(PolicyWatcher::start(live, |_| {}).unwrap().is_none());
    }
}

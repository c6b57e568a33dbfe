//! Admissions kept whole. A request that repeats an earlier one in all the
//! pipeline reads of it (its credential, method, path, tenant header, host
//! and client address) is admitted as that one was, in one look-up, as long
//! as everything the admission was made from still holds:
//! - its caller's principal is still the one kept for the credential, and
//!   may still be handed out: no change read from the liveness feed since
//!   it was built (the feed is read first when due, as for every request),
//!   its facts fresh, its credential unexpired;
//! - the platform's policies are the snapshot it was decided with (a
//!   tenant's layer changes through the feed, above);
//! - nothing it was decided on has changed with time: its tenant's
//!   entitlements, and the second, when a policy reads the time;
//! - its assertion is still handed out;
//! - it is younger than the feed's period, whatever else holds.
//!
//! Only allows for a kept principal are kept: anonymous callers and
//! credentials seen once are admitted anew every time. The quota stage
//! and the request's own ids run for every request, kept or not; a key's
//! use (a record of minutes) is recorded by the request its admission is
//! made for, so at most a second late.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_identity::feed::FEED_EVERY;
use tollgate_policies::PolicyEngine;
use tollgate_store::now;

use crate::authenticate::Caller;
use crate::caches::{Caches, KeptPrincipal, credential_digest};
use crate::forward::Assertions;
use crate::metrics::{self, Looked};
use crate::pipeline::Incoming;
use crate::policy::Permit;

/// The oldest an admission is handed out: a bound of its own behind the
/// checks above, so that no safety net behind the feed (the caches' own
/// time limits) is stretched by more than this.
const MAX_AGE: Duration = FEED_EVERY;
/// At most this many bytes of admissions, each weighed as its key twice
/// (the path is in the permit too) and [`ENTRY_BYTES`]: about 15,000 of
/// usual size, fewer when callers send long paths. A caller beyond it is
/// admitted anew, as every request once was.
pub(crate) const CAPACITY_BYTES: u64 = 16 << 20;
/// What an admission holds besides its key's bytes (a permit and the
/// cache's own entry), rounded up.
pub(crate) const ENTRY_BYTES: usize = 1024;

/// What the pipeline reads of a request, as one key: the credential's hash
/// and each other part with its length, so that no two requests share one.
#[derive(Debug)]
pub struct Asked {
    digest: [u8; 32],
    key: Vec<u8>,
}

impl Asked {
    /// The key of `req`; `None` without a bearer credential.
    pub fn of(req: &Incoming<'_>) -> Option<Self> {
        let digest = credential_digest(req.authorization?)?;
        let parts = [Some(req.method), Some(req.path), Some(req.client_ip), req.tenant_header, req.host];
        let mut key = Vec::with_capacity(32 + parts.iter().map(|p| 5 + p.map_or(0, str::len)).sum::<usize>());
        key.extend_from_slice(&digest);
        for part in parts {
            match part {
                Some(text) => {
                    key.push(1);
                    // Header values and paths are far below 4 GiB.
                    key.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
                    key.extend_from_slice(text.as_bytes());
                }
                None => key.push(0),
            }
        }
        Some(Self { digest, key })
    }
}

/// An admission as made for a request, and what bounds its keeping.
#[derive(Debug)]
struct Kept {
    permit: Permit,
    principal: KeptPrincipal,
    /// The platform's policies it was decided with.
    platform: Arc<PolicyEngine>,
    made: Instant,
    /// Seconds since the Unix epoch; handed out only before it.
    until: i64,
}

/// Whether an admission made at `made`, holding before `until` (seconds),
/// is young enough at `instant` and `at` (seconds) for the rest to be
/// checked.
fn in_time(made: Instant, until: i64, instant: Instant, at: i64, max_age: Duration) -> bool {
    instant.saturating_duration_since(made) < max_age && at < until
}

/// The admissions of recent requests.
pub struct Admissions {
    cache: moka::sync::Cache<Box<[u8]>, Arc<Kept>, foldhash::quality::RandomState>,
    /// [`MAX_AGE`], but in tests.
    max_age: Duration,
}

impl std::fmt::Debug for Admissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admissions").field("entries", &self.cache.entry_count()).finish()
    }
}

impl Default for Admissions {
    fn default() -> Self {
        Self::with_max_age(MAX_AGE)
    }
}

/// When an admission began to be made, and the platform's policies in
/// force then: taken before any stage runs, so that a change during the
/// stages leaves the admission already stale.
#[derive(Debug)]
pub struct Began {
    made: Instant,
    platform: Arc<PolicyEngine>,
}

impl Began {
    pub fn now(caches: &Caches) -> Self {
        Self { made: Instant::now(), platform: caches.platform() }
    }
}

impl Admissions {
    /// Handing out admissions at most `max_age` old.
    pub(crate) fn with_max_age(max_age: Duration) -> Self {
        let cache = moka::sync::Cache::<Box<[u8]>, Arc<Kept>, _>::builder()
            .max_capacity(CAPACITY_BYTES)
            .weigher(|key, _| u32::try_from(2 * key.len() + ENTRY_BYTES).unwrap_or(u32::MAX))
            .time_to_live(max_age);
        Self { cache: cache.build_with_hasher(foldhash::quality::RandomState::default()), max_age }
    }

    /// The permit of an earlier request that `asked` repeats, for this
    /// one, with the time (seconds) it was found at; `None` when there is
    /// none or it no longer holds.
    pub async fn recall(&self, caches: &Caches, asked: &Asked, client_ip: &str) -> Option<(Permit, i64)> {
        metrics::cache_lookup(Looked::Admissions);
        let found = self.cache.get(asked.key.as_slice());
        let (instant, at) = (Instant::now(), now());
        let kept = match found {
            Some(kept)
                if in_time(kept.made, kept.until, instant, at, self.max_age)
                    && caches.is_platform(&kept.platform)
                    && caches.still_kept(&kept.principal, client_ip, instant, at).await =>
            {
                kept
            }
            _ => {
                metrics::cache_miss(Looked::Admissions);
                return None;
            }
        };
        // A key's use was recorded when the admission was made (its
        // authentication records it, at most once a minute): the requests
        // it serves, within a second of that, add nothing to the record.
        Some((kept.permit.again(), at))
    }

    /// Until when (seconds) the admission kept for `asked` holds at most.
    #[cfg(test)]
    pub(crate) fn until(&self, asked: &Asked) -> Option<i64> {
        self.cache.get(asked.key.as_slice()).map(|kept| kept.until)
    }

    /// How many admissions are kept, and their weight in bytes.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Keeps `permit`, made for the request `asked` since `began`, if its
    /// caller is the principal kept for the credential; its assertion is
    /// signed (or found) now and kept with it.
    pub fn keep(&self, caches: &Caches, assertions: &Assertions, asked: Asked, began: Began, permit: &mut Permit) {
        let Caller::Known(principal) = permit.caller() else {
            return;
        };
        let Some(kept_principal) = caches.kept_as(&asked.digest, principal) else {
            return;
        };
        let Ok(signed) = assertions.signed(permit) else {
            return;
        };
        let until = permit.decided_until().map_or(signed.reuse_until(), |u| u.min(signed.reuse_until()));
        permit.keep_assertion(signed);
        let kept = Kept {
            permit: permit.clone(),
            principal: kept_principal,
            platform: began.platform,
            made: began.made,
            until,
        };
        self.cache.insert(asked.key.into_boxed_slice(), Arc::new(kept));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming<'a>(path: &'a str, tenant_header: Option<&'a str>, host: Option<&'a str>) -> Incoming<'a> {
        Incoming { method: "GET", path, authorization: Some("Bearer t0k"), tenant_header, host, client_ip: "10.0.0.1" }
    }

    /// Requests differing in any part the pipeline reads have different
    /// keys, however their parts could be run together.
    #[test]
    fn requests_differing_in_anything_read_have_different_keys() {
        let key = |req: &Incoming<'_>| Asked::of(req).map(|a| a.key);
        let base = incoming("/a", Some("acme"), None);
        let variants = [
            Incoming { authorization: Some("Bearer t0K"), ..base },
            Incoming { method: "PUT", ..base },
            Incoming { client_ip: "10.0.0.2", ..base },
            incoming("/ab", Some("cme"), None),
            incoming("/a", None, Some("acme")),
            incoming("/a", Some("acme"), Some("")),
            incoming("/a", Some(""), None),
            incoming("/a", None, None),
        ];
        for variant in &variants {
            assert_ne!(key(&base), key(variant), "{variant:?}");
        }
        assert_eq!(key(&base), key(&incoming("/a", Some("acme"), None)));
        // The same credential, however its scheme is written.
        assert_eq!(key(&base), key(&Incoming { authorization: Some("bearer t0k"), ..base }));
        // No bearer credential, nothing kept.
        assert!(key(&Incoming { authorization: None, ..base }).is_none());
        assert!(key(&Incoming { authorization: Some("Basic dTpw"), ..base }).is_none());
    }

    /// An admission is handed out before its `until` (the next second when
    /// a policy reads the time) and within the feed's period, never after.
    #[test]
    fn an_admission_is_in_time_only_before_its_bounds() {
        let made = Instant::now();
        let at = 1_000;
        let in_time = |until, instant, now| in_time(made, until, instant, now, MAX_AGE);
        assert!(in_time(at + 1, made, at));
        assert!(in_time(at + 1, made + MAX_AGE / 2, at));
        assert!(!in_time(at + 1, made, at + 1), "the next second is past `until`");
        assert!(!in_time(at + 60, made + MAX_AGE, at), "the feed's period is the most");
        assert!(!in_time(at, made, at));
    }
}

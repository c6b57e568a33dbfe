//! The quota stage: rate limits per client address (anonymous callers), per
//! API key, per person and per tenant, and the tenant's monthly quota of API
//! calls, checked after the policy stage allowed a request and before it is
//! forwarded, so refused requests spend nothing.
//!
//! Rate limits are GCRA token buckets in this process's memory (one word
//! each, in shards behind short locks), `q` requests per window with a
//! burst of `q`; full buckets are swept away (forgetting a full bucket
//! changes nothing) and the number of buckets is bounded (past it, new
//! callers share one overflow bucket per policy), so made-up keys or
//! addresses cannot grow memory. The monthly quota and usage metering share
//! one counter per tenant ([`Meter`]): counted here, added to the store in
//! batches every [`FLUSH_INTERVAL`], and re-read from it then, so that every
//! gateway on one database sees the others' counts within one interval.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use tollgate_identity::plans::{LimitName, month_of};
use tollgate_identity::principal::{Name, Tenant};
use tollgate_store::{Store, StoreError};

use crate::policy::Permit;
use crate::reject::Reject;

/// The metric the gateway counts against the monthly quota: requests
/// forwarded to products.
pub const API_CALLS: &str = "api_calls";

/// What the gateway counts per tenant: requests forwarded to its products
/// (against the monthly quota) and its calls of the platform's own API
/// (counted, never limited, so a tenant over quota can still manage itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    ApiCalls,
    PlatformCalls,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::ApiCalls, Metric::PlatformCalls];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ApiCalls => API_CALLS,
            Metric::PlatformCalls => "platform_calls",
        }
    }
}
/// How often counts go to the store and come back with other gateways'.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The most rate-limit buckets held at once.
pub const MAX_BUCKETS: u64 = 100_000;
const SHARDS: usize = 32;
/// A shard is swept for full buckets every this many of its look-ups.
const SWEEP_EVERY: u64 = 1024;
const SECOND_NS: u64 = 1_000_000_000;

/// The rate limits the configuration sets (the plan sets the tenant's and
/// keys'); `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Anonymous requests per second per client address.
    pub per_ip: Option<u64>,
    /// Requests per second per person (per tenant).
    pub per_user: Option<u64>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { per_ip: Some(100), per_user: Some(100) }
    }
}

/// A client address as buckets know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Address {
    Ip(IpAddr),
    /// An address that does not parse (no peer address): one shared bucket.
    Other,
}

impl Address {
    fn of(source_ip: &str) -> Self {
        source_ip.parse().map_or(Address::Other, Address::Ip)
    }
}

/// Whose bucket, as a request names it (borrowing its names: a look-up
/// allocates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Whose<'a> {
    /// Everyone who arrived while the table was full, per policy.
    Overflow(&'static str),
    Address(Address),
    User {
        tenant: &'a str,
        user: &'a str,
    },
    Key(&'a str),
    Tenant(&'a str),
    /// A route's own limit per client address, and for everyone.
    RouteAddress(usize, Address),
    Route(usize),
}

/// Whose bucket, as the table keeps it. It hashes and compares as the
/// [`Whose`] it was made from, so the table is searched with a `Whose`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BucketKey {
    Overflow(&'static str),
    Address(Address),
    User { tenant: Box<str>, user: Box<str> },
    Key(Box<str>),
    Tenant(Box<str>),
    RouteAddress(usize, Address),
    Route(usize),
}

impl BucketKey {
    fn of(whose: Whose<'_>) -> Self {
        match whose {
            Whose::Overflow(policy) => BucketKey::Overflow(policy),
            Whose::Address(address) => BucketKey::Address(address),
            Whose::User { tenant, user } => BucketKey::User { tenant: tenant.into(), user: user.into() },
            Whose::Key(key) => BucketKey::Key(key.into()),
            Whose::Tenant(tenant) => BucketKey::Tenant(tenant.into()),
            Whose::RouteAddress(route, address) => BucketKey::RouteAddress(route, address),
            Whose::Route(route) => BucketKey::Route(route),
        }
    }

    fn whose(&self) -> Whose<'_> {
        match self {
            BucketKey::Overflow(policy) => Whose::Overflow(policy),
            BucketKey::Address(address) => Whose::Address(*address),
            BucketKey::User { tenant, user } => Whose::User { tenant, user },
            BucketKey::Key(key) => Whose::Key(key),
            BucketKey::Tenant(tenant) => Whose::Tenant(tenant),
            BucketKey::RouteAddress(route, address) => Whose::RouteAddress(*route, *address),
            BucketKey::Route(route) => Whose::Route(*route),
        }
    }
}

impl std::hash::Hash for BucketKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.whose().hash(state);
    }
}

impl hashbrown::Equivalent<BucketKey> for Whose<'_> {
    fn equivalent(&self, key: &BucketKey) -> bool {
        *self == key.whose()
    }
}

/// A GCRA bucket: the theoretical arrival time of the next request, in
/// nanoseconds since the limiter's epoch.
#[derive(Debug, Default, Clone, Copy)]
struct Gcra {
    tat: u64,
}

/// How a request stands against one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// `ip`, `user`, `key`, `tenant`, `route-ip`, `route` or `monthly`.
    pub policy: &'static str,
    /// Requests allowed per window.
    pub quota: u64,
    /// The window in seconds (a bucket of `quota` per window, with a burst
    /// of `quota`).
    pub window: u64,
    /// Requests left in the window after this one.
    pub remaining: u64,
    /// Seconds until the quota is whole again (allowed), or until a request
    /// can pass (refused).
    pub reset: u64,
}

impl Standing {
    /// The `RateLimit-Policy` field value.
    pub fn policy_field(&self) -> String {
        self.item([("q", self.quota), ("w", self.window)])
    }

    /// The `RateLimit` field value.
    pub fn field(&self) -> String {
        self.item([("r", self.remaining), ("t", self.reset)])
    }

    /// The policy's name as a structured-field string with `parameters`,
    /// written without the formatting machinery (it is in every limited
    /// response).
    fn item(&self, parameters: [(&str, u64); 2]) -> String {
        let mut out = String::with_capacity(self.policy.len() + 48);
        out.push('"');
        out.push_str(self.policy);
        out.push('"');
        let mut digits = itoa::Buffer::new();
        for (name, value) in parameters {
            out.push(';');
            out.push_str(name);
            out.push('=');
            out.push_str(digits.format(value));
        }
        out
    }

    /// Which of two standings is tighter: the smaller share left.
    fn tighter(self, other: Standing) -> Standing {
        // remaining/quota < other.remaining/other.quota, without division.
        if u128::from(self.remaining) * u128::from(other.quota) <= u128::from(other.remaining) * u128::from(self.quota)
        {
            self
        } else {
            other
        }
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(SECOND_NS)
}

impl Gcra {
    /// Takes one request from a bucket of `quota` per `window` seconds at
    /// `now` (ns).
    fn take(&mut self, policy: &'static str, quota: u64, window: u64, now: u64) -> Result<Standing, Standing> {
        let span = window.max(1).saturating_mul(SECOND_NS);
        let interval = (span / quota.max(1)).max(1);
        let next = self.tat.max(now) + interval;
        if next > now + span {
            let wait = next - (now + span);
            return Err(Standing { policy, quota, window, remaining: 0, reset: ceil_secs(wait).max(1) });
        }
        self.tat = next;
        let remaining = (now + span - next) / interval;
        Ok(Standing { policy, quota, window, remaining, reset: ceil_secs(next - now) })
    }

    /// A bucket whose theoretical arrival time has passed is full:
    /// forgetting it loses nothing.
    fn is_full(self, now: u64) -> bool {
        self.tat <= now
    }
}

type Hasher = foldhash::quality::RandomState;

/// One shard of the buckets and its count of look-ups (every
/// [`SWEEP_EVERY`]th sweeps it).
struct Shard {
    buckets: hashbrown::HashMap<BucketKey, Gcra, Hasher>,
    lookups: u64,
}

/// The buckets, in shards behind short locks: a request takes from its
/// bucket under its shard's lock, which is the only memory it writes there.
/// Keys are hashed with a seeded hash.
struct Buckets {
    shards: Vec<Mutex<Shard>>,
    hasher: Hasher,
    held: AtomicU64,
    max: u64,
}

impl Buckets {
    fn new(max: u64) -> Self {
        let hasher = Hasher::default();
        let shard = || Shard { buckets: hashbrown::HashMap::with_hasher(hasher.clone()), lookups: 0 };
        Self { shards: (0..SHARDS).map(|_| Mutex::new(shard())).collect(), hasher, held: AtomicU64::new(0), max }
    }

    fn shard(&self, whose: Whose<'_>) -> &Mutex<Shard> {
        shard_of(&self.shards, &self.hasher, whose)
    }

    /// Takes one request from the bucket of `whose` (made when missing; with
    /// the table full, from the policy's overflow bucket, shared by every
    /// newcomer).
    fn take(
        &self,
        whose: Whose<'_>,
        policy: &'static str,
        quota: u64,
        window: u64,
        now: u64,
    ) -> Result<Standing, Standing> {
        let mut shard = lock(self.shard(whose));
        shard.lookups += 1;
        if shard.lookups.is_multiple_of(SWEEP_EVERY) {
            self.sweep(&mut shard, now);
        }
        if let Some(bucket) = shard.buckets.get_mut(&whose) {
            return bucket.take(policy, quota, window, now);
        }
        if self.held.load(Ordering::Relaxed) >= self.max {
            drop(shard);
            self.sweep_all(now);
            if self.held.load(Ordering::Relaxed) >= self.max {
                let overflow = Whose::Overflow(policy);
                let mut shard = lock(self.shard(overflow));
                let bucket = shard.buckets.entry(BucketKey::of(overflow)).or_insert_with(|| {
                    self.held.fetch_add(1, Ordering::Relaxed);
                    Gcra::default()
                });
                return bucket.take(policy, quota, window, now);
            }
            shard = lock(self.shard(whose));
        }
        let bucket = shard.buckets.entry(BucketKey::of(whose)).or_insert_with(|| {
            self.held.fetch_add(1, Ordering::Relaxed);
            Gcra::default()
        });
        bucket.take(policy, quota, window, now)
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        let before = shard.buckets.len();
        shard.buckets.retain(|_, bucket| !bucket.is_full(now));
        self.held.fetch_sub(u64::try_from(before - shard.buckets.len()).unwrap_or(0), Ordering::Relaxed);
    }

    fn sweep_all(&self, now: u64) {
        for shard in &self.shards {
            self.sweep(&mut lock(shard), now);
        }
    }

    fn len(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// One tenant's count of API calls this month.
#[derive(Debug)]
struct MeterState {
    period: String,
    /// The store's total as last read (every gateway's flushed counts).
    base: u64,
    /// Counted here and being written to the store.
    flushing: u64,
    /// Counted here since the last flush.
    pending: u64,
    /// When the tenant last sent a request, in seconds.
    last_seen: i64,
}

impl MeterState {
    fn used(&self) -> u64 {
        self.base + self.flushing + self.pending
    }
}

#[derive(Debug)]
struct TenantMeter {
    /// Whether the store's total was read once (a new meter waits for it).
    loaded: Arc<tokio::sync::OnceCell<()>>,
    state: MeterState,
}

/// One metric's meters by tenant (ids of tenants that exist, so a fast hash
/// will do), in shards behind short locks: a request counts under its
/// tenant's shard's lock, which is the only memory it writes here.
#[derive(Debug)]
struct Meters {
    metric: Metric,
    shards: [Mutex<foldhash::HashMap<String, TenantMeter>>; METER_SHARDS],
    hasher: foldhash::fast::FixedState,
}

const METER_SHARDS: usize = 16;

impl Meters {
    fn new(metric: Metric) -> Self {
        Self { metric, shards: Default::default(), hasher: foldhash::fast::FixedState::default() }
    }

    fn shard(&self, tenant_id: &str) -> &Mutex<foldhash::HashMap<String, TenantMeter>> {
        shard_of(&self.shards, &self.hasher, tenant_id)
    }
}

/// The month in which calls are counted: from `start` (the first call seen
/// in it) to `next` (the next month's first second).
#[derive(Debug)]
struct Month {
    start: i64,
    next: i64,
    name: String,
}

/// Every tenant's API calls this month: the monthly quota and usage
/// metering. Shared by the quota stage (counting) and the flusher (writing
/// and re-reading the store).
#[derive(Debug)]
pub struct Meter {
    /// By metric (`Metric as usize`).
    meters: [Meters; 2],
    month: ArcSwap<Month>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            meters: Metric::ALL.map(Meters::new),
            month: ArcSwap::from_pointee(Month { start: 0, next: 0, name: String::new() }),
        }
    }
}

/// How long a tenant with nothing to flush keeps its meter.
const METER_IDLE_SECS: i64 = 120;

/// The one of `shards` (never empty) that `key` falls in.
fn shard_of<'s, T>(shards: &'s [T], hasher: &impl std::hash::BuildHasher, key: impl std::hash::Hash) -> &'s T {
    let i = usize::try_from(hasher.hash_one(key) % shards.len() as u64).unwrap_or(0);
    &shards[i]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Meter {
    /// The month of `now`, computed once a month.
    fn month(&self, now: i64) -> arc_swap::Guard<Arc<Month>> {
        let month = self.month.load();
        if (month.start..month.next).contains(&now) {
            return month;
        }
        let (name, next) = month_of(now);
        let start = if now < month.start { i64::MIN } else { now };
        self.month.store(Arc::new(Month { start, next, name }));
        self.month.load()
    }

    /// Counts one API call of `tenant_id` at `now` against `limit` (`None`
    /// unlimited); the first call of a tenant reads its total from `store`.
    pub async fn admit(
        &self,
        store: &Store,
        tenant_id: &str,
        metric: Metric,
        limit: Option<u64>,
        now: i64,
    ) -> Result<Result<Standing, Standing>, StoreError> {
        let meters = &self.meters[metric as usize];
        loop {
            let (loading, period) = {
                let month = self.month(now);
                let mut shard = lock(meters.shard(tenant_id));
                let loading = match shard.get_mut(tenant_id) {
                    Some(meter) if meter.loaded.initialized() => {
                        return Ok(count(&mut meter.state, &month, limit, now));
                    }
                    Some(meter) => Arc::clone(&meter.loaded),
                    None => {
                        let loaded = Arc::new(tokio::sync::OnceCell::new());
                        let state =
                            MeterState { period: month.name.clone(), base: 0, flushing: 0, pending: 0, last_seen: now };
                        shard.insert(tenant_id.to_owned(), TenantMeter { loaded: Arc::clone(&loaded), state });
                        loaded
                    }
                };
                (loading, month.name.clone())
            };
            // Boxed: the read is not part of the future of every request.
            Box::pin(loading.get_or_try_init(|| async {
                let mut tx = store.tenant_read_tx(tenant_id).await?;
                let total = tollgate_store::usage_of(&mut tx, tenant_id, metric.as_str(), &period).await?;
                tx.commit().await?;
                let mut shard = lock(meters.shard(tenant_id));
                if let Some(meter) = shard.get_mut(tenant_id)
                    && meter.state.period == period
                {
                    meter.state.base = meter.state.base.max(u64::try_from(total).unwrap_or(0));
                }
                Ok::<(), StoreError>(())
            }))
            .await?;
        }
    }

    /// Writes the counts taken since the last flush to the store and reads
    /// back each active tenant's total (with other gateways' counts). On a
    /// store failure the counts stay here for the next flush.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<(), StoreError> {
        let mut batch: Vec<(&Meters, String, String, u64)> = Vec::new();
        for meters in &self.meters {
            for shard in &meters.shards {
                let mut shard = lock(shard);
                shard.retain(|_, m| {
                    let s = &m.state;
                    s.pending > 0 || s.flushing > 0 || now - s.last_seen < METER_IDLE_SECS
                });
                batch.extend(shard.iter_mut().filter(|(_, m)| m.loaded.initialized()).map(|(id, m)| {
                    let s = &mut m.state;
                    let n = s.pending;
                    s.flushing += n;
                    s.pending = 0;
                    (meters, id.clone(), s.period.clone(), n)
                }));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let written: Result<Vec<i64>, StoreError> = async {
            let mut tx = store.tx().await?;
            let mut totals = Vec::with_capacity(batch.len());
            for (meters, tenant_id, period, n) in &batch {
                store.bind_tenant(&mut tx, tenant_id).await?;
                let metric = meters.metric.as_str();
                let total = if *n > 0 {
                    let n = i64::try_from(*n).unwrap_or(i64::MAX);
                    tollgate_store::add_usage(&mut tx, tenant_id, metric, period, n).await?
                } else {
                    tollgate_store::usage_of(&mut tx, tenant_id, metric, period).await?
                };
                totals.push(total);
            }
            tx.commit().await?;
            Ok(totals)
        }
        .await;
        // Meters with counts being flushed are kept (above), so each is
        // still there.
        let flushed = |meters: &Meters, tenant_id: &str, update: &mut dyn FnMut(&mut MeterState)| {
            if let Some(meter) = lock(meters.shard(tenant_id)).get_mut(tenant_id) {
                update(&mut meter.state);
            }
        };
        match written {
            Ok(totals) => {
                for ((meters, tenant_id, period, n), total) in batch.iter().zip(totals) {
                    flushed(meters, tenant_id, &mut |s| {
                        if s.period == *period {
                            s.flushing -= n;
                            s.base = u64::try_from(total).unwrap_or(0);
                        }
                    });
                }
                crate::metrics::usage_flushed(batch.iter().map(|b| b.3).sum());
                Ok(())
            }
            Err(e) => {
                for (meters, tenant_id, period, n) in &batch {
                    // Counts of a month that has ended meanwhile are not
                    // carried into the new one.
                    flushed(meters, tenant_id, &mut |s| {
                        if s.period == *period {
                            s.flushing -= n;
                            s.pending += n;
                        }
                    });
                }
                Err(e)
            }
        }
    }

    /// Counts not yet in the store.
    pub fn unflushed(&self) -> u64 {
        let shards = self.meters.iter().flat_map(|m| &m.shards);
        shards.map(|shard| lock(shard).values().map(|m| m.state.pending).sum::<u64>()).sum()
    }
}

/// Counts one call in `state` against `limit` in `month` (whose first call
/// starts the tenant's count afresh).
fn count(state: &mut MeterState, month: &Month, limit: Option<u64>, now: i64) -> Result<Standing, Standing> {
    if state.period != month.name {
        // A new month: nothing counted yet (the next flush reads what
        // other gateways counted meanwhile).
        *state = MeterState { period: month.name.clone(), base: 0, flushing: 0, pending: 0, last_seen: now };
    }
    state.last_seen = now;
    let until_next = u64::try_from(month.next - now).unwrap_or(1).max(1);
    let used = state.used();
    let Some(quota) = limit else {
        state.pending += 1;
        return Ok(Standing { policy: "monthly", quota: u64::MAX, window: 0, remaining: u64::MAX, reset: 0 });
    };
    if used >= quota {
        return Err(Standing { policy: "monthly", quota, window: until_next, remaining: 0, reset: until_next });
    }
    state.pending += 1;
    Ok(Standing { policy: "monthly", quota, window: until_next, remaining: quota - used - 1, reset: until_next })
}

/// The rate-limit buckets and the monthly meter.
pub struct Quotas {
    limits: RateLimits,
    buckets: Buckets,
    epoch: Instant,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// How a permitted request stands against its limits: the tightest policy,
/// for the `RateLimit` fields of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Within(pub Option<Standing>);

impl Quotas {
    pub fn new(limits: RateLimits) -> Self {
        Self { limits, buckets: Buckets::new(MAX_BUCKETS), epoch: Instant::now(), meter: Arc::new(Meter::default()) }
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Buckets held now, for tests and metrics.
    pub fn buckets(&self) -> u64 {
        self.buckets.len()
    }

    fn take(&self, whose: Whose<'_>, policy: &'static str, quota: u64, window: u64) -> Result<Standing, Standing> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.buckets.take(whose, policy, quota, window, now)
    }

    /// The rate limits of the caller: per API key (its plan's), per person
    /// (the configuration's), or per client address for anonymous callers.
    fn caller_limit<'p>(&self, permit: &'p Permit, at: i64) -> Option<(Whose<'p>, &'static str, u64)> {
        match (permit.principal(), permit.tenant()) {
            (Name::ApiKey(key), tenant) => {
                let quota = tenant?.entitlements.limit(LimitName::RequestsPerSecondPerKey, at)?;
                return Some((Whose::Key(key), "key", quota));
            }
            (Name::User(user), Some(tenant)) => {
                let quota = self.limits.per_user?;
                return Some((Whose::User { tenant: &tenant.id, user }, "user", quota));
            }
            _ => {}
        }
        let quota = self.limits.per_ip?;
        Some((Whose::Address(Address::of(permit.source_ip())), "ip", quota))
    }

    /// Counts a permitted request against every limit that applies: the
    /// caller's rate, and on a tenant's product routes the tenant's rate and
    /// its monthly quota (the platform's own API is neither, so a tenant over
    /// quota can still manage itself and upgrade).
    pub async fn check(&self, permit: &Permit, store: &Store, at: i64) -> Result<Within, Reject> {
        let mut tightest: Option<Standing> = None;
        let mut note = |s: Standing| tightest = Some(tightest.take().map_or(s.clone(), |t| t.tighter(s)));
        if let Some((whose, policy, quota)) = self.caller_limit(permit, at) {
            note(self.take(whose, policy, quota, 1).map_err(too_many)?);
        }
        if let Some(limit) = &permit.route_limit() {
            let window = limit.window_secs;
            let route = permit.route().route;
            if let Some(quota) = limit.per_ip {
                let whose = Whose::RouteAddress(route, Address::of(permit.source_ip()));
                note(self.take(whose, "route-ip", quota, window).map_err(too_many)?);
            }
            if let Some(quota) = limit.global {
                note(self.take(Whose::Route(route), "route", quota, window).map_err(too_many)?);
            }
        }
        if let Some(tenant) = permit.tenant().filter(|_| !permit.route().needs_tenant()) {
            // The platform's own API: counted, never limited.
            if let Err(e) = self.meter.admit(store, &tenant.id, Metric::PlatformCalls, None, at).await {
                tracing::warn!(error = %e, "cannot read a tenant's usage");
            }
        }
        let tenant = permit.tenant().filter(|_| permit.route().needs_tenant());
        if let Some(tenant) = tenant {
            if let Some(quota) = tenant.entitlements.limit(LimitName::RequestsPerSecond, at) {
                note(self.take(Whose::Tenant(&tenant.id), "tenant", quota, 1).map_err(too_many)?);
            }
            let monthly = self.monthly(store, tenant, at).await?;
            if monthly.window > 0 {
                note(monthly);
            }
        }
        Ok(Within(tightest))
    }

    async fn monthly(&self, store: &Store, tenant: &Tenant, at: i64) -> Result<Standing, Reject> {
        let limit = tenant.entitlements.limit(LimitName::ApiCallsPerMonth, at);
        match self.meter.admit(store, &tenant.id, Metric::ApiCalls, limit, at).await {
            Ok(Ok(standing)) => {
                crate::metrics::api_call(&tenant.plan);
                Ok(standing)
            }
            Ok(Err(standing)) => {
                crate::metrics::rate_limited(standing.policy);
                Err(Reject::QuotaExceeded(standing))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read a tenant's usage");
                Err(Reject::Internal)
            }
        }
    }
}

fn too_many(standing: Standing) -> Reject {
    crate::metrics::rate_limited(standing.policy);
    Reject::TooManyRequests(standing)
}

#[cfg(test)]
mod tests;

//! The quota stage: rate limits per client address (anonymous callers), per
//! API key, per person and per tenant, and the tenant's monthly quota of API
//! calls, checked after the policy stage allowed a request and before it is
//! forwarded, so refused requests spend nothing.
//!
//! Rate limits are GCRA token buckets in this process's memory (one atomic
//! word each), `q` requests per window with a burst of `q`; full buckets are
//! swept away (forgetting a full bucket changes nothing) and the number of
//! buckets is bounded (past it, new callers share one overflow bucket per
//! policy), so made-up keys or
//! addresses cannot grow memory. The monthly quota and usage metering share
//! one counter per tenant ([`Meter`]): counted here, added to the store in
//! batches every [`FLUSH_INTERVAL`], and re-read from it then, so that every
//! gateway on one database sees the others' counts within one interval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// One shard is swept for full buckets every this many look-ups.
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

/// Whose bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BucketKey {
    /// Everyone who arrived while the table was full, per policy.
    Overflow(&'static str),
    Ip(IpAddr),
    /// An address that does not parse (no peer address): one shared bucket.
    OtherAddress,
    User {
        tenant: String,
        user: String,
    },
    Key(String),
    Tenant(String),
    /// A route's own limit per client address, and for everyone.
    RouteAddress(usize, Box<BucketKey>),
    Route(usize),
}

/// A GCRA bucket: the theoretical arrival time of the next request, in
/// nanoseconds since the limiter's epoch.
#[derive(Debug, Default)]
struct Gcra {
    tat: AtomicU64,
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
        format!("\"{}\";q={};w={}", self.policy, self.quota, self.window)
    }

    /// The `RateLimit` field value.
    pub fn field(&self) -> String {
        format!("\"{}\";r={};t={}", self.policy, self.remaining, self.reset)
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
    fn take(&self, policy: &'static str, quota: u64, window: u64, now: u64) -> Result<Standing, Standing> {
        let span = window.max(1).saturating_mul(SECOND_NS);
        let interval = (span / quota.max(1)).max(1);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + interval;
            if next > now + span {
                let wait = next - (now + span);
                return Err(Standing { policy, quota, window, remaining: 0, reset: ceil_secs(wait).max(1) });
            }
            match self.tat.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let remaining = (now + span - next) / interval;
                    return Ok(Standing { policy, quota, window, remaining, reset: ceil_secs(next - now) });
                }
                Err(current) => tat = current,
            }
        }
    }
}

/// The buckets, in shards behind short locks. A bucket whose theoretical
/// arrival time has passed is full: sweeping it away loses nothing.
struct Buckets {
    shards: Vec<Mutex<HashMap<BucketKey, Arc<Gcra>>>>,
    hasher: std::hash::RandomState,
    held: AtomicU64,
    lookups: AtomicU64,
    max: u64,
}

impl Buckets {
    fn new(max: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::hash::RandomState::new(),
            held: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            max,
        }
    }

    fn shard(&self, key: &BucketKey) -> &Mutex<HashMap<BucketKey, Arc<Gcra>>> {
        use std::hash::BuildHasher as _;
        let i = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[i]
    }

    /// The bucket of `key`, made when missing; with the table full, the
    /// policy's overflow bucket, shared by every newcomer.
    fn get(&self, key: BucketKey, policy: &'static str, now: u64) -> Arc<Gcra> {
        let n = self.lookups.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(SWEEP_EVERY) {
            self.sweep_shard(usize::try_from(n / SWEEP_EVERY).unwrap_or(0) % SHARDS, now);
        }
        let mut shard = lock(self.shard(&key));
        if let Some(bucket) = shard.get(&key) {
            return Arc::clone(bucket);
        }
        if self.held.load(Ordering::Relaxed) >= self.max {
            drop(shard);
            self.sweep_all(now);
            if self.held.load(Ordering::Relaxed) >= self.max {
                let overflow = BucketKey::Overflow(policy);
                let mut shard = lock(self.shard(&overflow));
                return Arc::clone(shard.entry(overflow).or_insert_with(|| {
                    self.held.fetch_add(1, Ordering::Relaxed);
                    Arc::default()
                }));
            }
            shard = lock(self.shard(&key));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        Arc::clone(shard.entry(key).or_default())
    }

    fn sweep_shard(&self, i: usize, now: u64) {
        let mut shard = lock(&self.shards[i]);
        let before = shard.len();
        shard.retain(|_, bucket| bucket.tat.load(Ordering::Relaxed) > now);
        self.held.fetch_sub(u64::try_from(before - shard.len()).unwrap_or(0), Ordering::Relaxed);
    }

    fn sweep_all(&self, now: u64) {
        for i in 0..SHARDS {
            self.sweep_shard(i, now);
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
    metric: Metric,
    /// Whether the store's total was read once (a new meter waits for it).
    loaded: tokio::sync::OnceCell<()>,
    state: Mutex<MeterState>,
}

/// Every tenant's API calls this month: the monthly quota and usage
/// metering. Shared by the quota stage (counting) and the flusher (writing
/// and re-reading the store).
#[derive(Debug, Default)]
pub struct Meter {
    /// By metric (`Metric as usize`), then tenant (ids of tenants that
    /// exist, so a fast hash will do).
    tenants: [Mutex<foldhash::HashMap<String, Arc<TenantMeter>>>; 2],
    /// The month of the last call: its first second, the next month's, its name.
    month: Mutex<(i64, i64, Arc<str>)>,
}

/// How long a tenant with nothing to flush keeps its meter.
const METER_IDLE_SECS: i64 = 120;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Meter {
    fn tenant(&self, metric: Metric, tenant_id: &str, period: &str, now: i64) -> Arc<TenantMeter> {
        let mut tenants = lock(&self.tenants[metric as usize]);
        if let Some(meter) = tenants.get(tenant_id) {
            return Arc::clone(meter);
        }
        Arc::clone(tenants.entry(tenant_id.to_owned()).or_insert_with(|| {
            Arc::new(TenantMeter {
                metric,
                loaded: tokio::sync::OnceCell::new(),
                state: Mutex::new(MeterState {
                    period: period.to_owned(),
                    base: 0,
                    flushing: 0,
                    pending: 0,
                    last_seen: now,
                }),
            })
        }))
    }

    /// The month of `now` and the second the next one starts, computed once a month.
    fn month(&self, now: i64) -> (Arc<str>, i64) {
        let mut month = lock(&self.month);
        if !(month.0..month.1).contains(&now) {
            let (name, next) = month_of(now);
            let start = if now < month.0 { i64::MIN } else { now };
            *month = (start, next, Arc::from(name));
        }
        (Arc::clone(&month.2), month.1)
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
        let (period, next_period) = self.month(now);
        let meter = self.tenant(metric, tenant_id, &period, now);
        if !meter.loaded.initialized() {
            // Boxed: the read is not part of the future of every request.
            Box::pin(meter.loaded.get_or_try_init(|| async {
                let mut tx = store.tenant_read_tx(tenant_id).await?;
                let total = tollgate_store::usage_of(&mut tx, tenant_id, metric.as_str(), &period).await?;
                tx.commit().await?;
                let mut state = lock(&meter.state);
                if *state.period == *period {
                    state.base = state.base.max(u64::try_from(total).unwrap_or(0));
                }
                Ok::<(), StoreError>(())
            }))
            .await?;
        }
        let mut state = lock(&meter.state);
        if *state.period != *period {
            // A new month: nothing counted yet (the next flush reads what
            // other gateways counted meanwhile).
            *state = MeterState { period: String::from(&*period), base: 0, flushing: 0, pending: 0, last_seen: now };
        }
        state.last_seen = now;
        let until_next = u64::try_from(next_period - now).unwrap_or(1).max(1);
        let used = state.used();
        let Some(quota) = limit else {
            state.pending += 1;
            return Ok(Ok(Standing { policy: "monthly", quota: u64::MAX, window: 0, remaining: u64::MAX, reset: 0 }));
        };
        if used >= quota {
            return Ok(Err(Standing { policy: "monthly", quota, window: until_next, remaining: 0, reset: until_next }));
        }
        state.pending += 1;
        Ok(Ok(Standing {
            policy: "monthly",
            quota,
            window: until_next,
            remaining: quota - used - 1,
            reset: until_next,
        }))
    }

    /// Writes the counts taken since the last flush to the store and reads
    /// back each active tenant's total (with other gateways' counts). On a
    /// store failure the counts stay here for the next flush.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<(), StoreError> {
        let batch: Vec<(String, Arc<TenantMeter>, String, u64)> = {
            let mut batch = Vec::new();
            for tenants in &self.tenants {
                let mut tenants = lock(tenants);
                tenants.retain(|_, m| {
                    let s = lock(&m.state);
                    s.pending > 0 || s.flushing > 0 || now - s.last_seen < METER_IDLE_SECS
                });
                batch.extend(tenants.iter().filter(|(_, m)| m.loaded.initialized()).map(|(id, m)| {
                    let mut s = lock(&m.state);
                    let n = s.pending;
                    s.flushing += n;
                    s.pending = 0;
                    (id.clone(), Arc::clone(m), s.period.clone(), n)
                }));
            }
            batch
        };
        if batch.is_empty() {
            return Ok(());
        }
        let written: Result<Vec<i64>, StoreError> = async {
            let mut tx = store.tx().await?;
            let mut totals = Vec::with_capacity(batch.len());
            for (tenant_id, meter, period, n) in &batch {
                store.bind_tenant(&mut tx, tenant_id).await?;
                let metric = meter.metric.as_str();
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
        match written {
            Ok(totals) => {
                for ((_, meter, period, n), total) in batch.iter().zip(totals) {
                    let mut s = lock(&meter.state);
                    if s.period == *period {
                        s.flushing -= n;
                        s.base = u64::try_from(total).unwrap_or(0);
                    }
                }
                crate::metrics::usage_flushed(batch.iter().map(|b| b.3).sum());
                Ok(())
            }
            Err(e) => {
                for (_, meter, period, n) in &batch {
                    let mut s = lock(&meter.state);
                    s.flushing -= n;
                    if s.period == *period {
                        s.pending += n;
                    }
                }
                Err(e)
            }
        }
    }

    /// Counts not yet in the store.
    pub fn unflushed(&self) -> u64 {
        self.tenants.iter().map(|t| lock(t).values().map(|m| lock(&m.state).pending).sum::<u64>()).sum()
    }
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

    fn take(&self, key: BucketKey, policy: &'static str, quota: u64, window: u64) -> Result<Standing, Standing> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.buckets.get(key, policy, now).take(policy, quota, window, now)
    }

    /// The rate limits of the caller: per API key (its plan's), per person
    /// (the configuration's), or per client address for anonymous callers.
    fn caller_limit(&self, permit: &Permit, at: i64) -> Option<(BucketKey, &'static str, u64)> {
        match (permit.principal(), permit.tenant()) {
            (Name::ApiKey(key), tenant) => {
                let quota = tenant?.entitlements.limit(LimitName::RequestsPerSecondPerKey, at)?;
                return Some((BucketKey::Key(key.to_owned()), "key", quota));
            }
            (Name::User(user), Some(tenant)) => {
                let quota = self.limits.per_user?;
                return Some((BucketKey::User { tenant: tenant.id.clone(), user: user.to_owned() }, "user", quota));
            }
            _ => {}
        }
        let quota = self.limits.per_ip?;
        let key = permit.source_ip().parse().map_or(BucketKey::OtherAddress, BucketKey::Ip);
        Some((key, "ip", quota))
    }

    /// Counts a permitted request against every limit that applies: the
    /// caller's rate, and on a tenant's product routes the tenant's rate and
    /// its monthly quota (the platform's own API is neither, so a tenant over
    /// quota can still manage itself and upgrade).
    pub async fn check(&self, permit: &Permit, store: &Store, at: i64) -> Result<Within, Reject> {
        let mut tightest: Option<Standing> = None;
        let mut note = |s: Standing| tightest = Some(tightest.take().map_or(s.clone(), |t| t.tighter(s)));
        if let Some((key, policy, quota)) = self.caller_limit(permit, at) {
            note(self.take(key, policy, quota, 1).map_err(too_many)?);
        }
        if let Some(limit) = &permit.route_limit() {
            let window = limit.window_secs;
            if let Some(quota) = limit.per_ip {
                let address = permit.source_ip().parse().map_or(BucketKey::OtherAddress, BucketKey::Ip);
                let key = BucketKey::RouteAddress(permit.route().route, Box::new(address));
                note(self.take(key, "route-ip", quota, window).map_err(too_many)?);
            }
            if let Some(quota) = limit.global {
                note(self.take(BucketKey::Route(permit.route().route), "route", quota, window).map_err(too_many)?);
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
                note(self.take(BucketKey::Tenant(tenant.id.clone()), "tenant", quota, 1).map_err(too_many)?);
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

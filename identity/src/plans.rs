//! Plans and entitlements: the plan catalog (built in, replaced plan by plan
//! from the config file), a tenant's overrides granted by platform
//! administrators, and the effective entitlements the gateway's
//! entitlements and quota stages, the backend's count limits and Cedar's
//! tenant entity all read: the plan's features and limits, with each
//! unexpired override in place of the plan's value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tollgate_store::{OverrideRow, PlanRow, Store, StoreError};

/// The limits a plan sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitName {
    /// Members of the tenant.
    MaxMembers,
    /// Live (unrevoked, unexpired) API keys of the tenant.
    MaxApiKeys,
    /// Requests forwarded to products in a calendar month (UTC).
    ApiCallsPerMonth,
    /// Requests per second of the whole tenant, at each gateway.
    RequestsPerSecond,
    /// Requests per second of each API key, at each gateway.
    RequestsPerSecondPerKey,
}

impl LimitName {
    pub const ALL: [LimitName; 5] = [
        LimitName::MaxMembers,
        LimitName::MaxApiKeys,
        LimitName::ApiCallsPerMonth,
        LimitName::RequestsPerSecond,
        LimitName::RequestsPerSecondPerKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::MaxMembers => "max_members",
            LimitName::MaxApiKeys => "max_api_keys",
            LimitName::ApiCallsPerMonth => "api_calls_per_month",
            LimitName::RequestsPerSecond => "requests_per_second",
            LimitName::RequestsPerSecondPerKey => "requests_per_second_per_key",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A plan's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits([Option<u64>; 5]);

impl Limits {
    pub fn get(&self, name: LimitName) -> Option<u64> {
        self.0[name.index()]
    }

    pub fn set(&mut self, name: LimitName, value: Option<u64>) {
        self.0[name.index()] = value;
    }

    /// Every limit zero: what a tenant on a plan the catalog does not know gets.
    fn zero() -> Self {
        Self([Some(0); 5])
    }
}

/// How often a plan is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingPeriod {
    Month,
    Year,
}

impl BillingPeriod {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

/// A plan of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub display_name: String,
    /// The price per billing period in the currency's minor unit (cents).
    pub price_minor: u64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub period: BillingPeriod,
    pub features: BTreeSet<String>,
    pub limits: Limits,
}

/// The features the built-in plans speak of; any identifier may be a feature.
pub const KNOWN_FEATURES: [&str; 6] = ["sso", "scim", "audit_export", "custom_policies", "reports", "api_write"];

/// Whether `name` can name a plan or a feature: 1 to 64 of `a-z`, `0-9`,
/// `_` and `-`, starting with a letter.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Why a catalog is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("plan name `{0}` is not an identifier (lowercase letters, digits, `_` and `-`)")]
    BadName(String),
    #[error("feature `{feature}` of plan `{plan}` is not an identifier")]
    BadFeature { plan: String, feature: String },
    #[error("currency `{currency}` of plan `{plan}` is not a three-letter ISO 4217 code")]
    BadCurrency { plan: String, currency: String },
    #[error("the catalog has no `{0}` plan, which new tenants start on")]
    NoDefault(String),
}

/// The plans tenants can be on, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    plans: BTreeMap<String, Arc<Plan>>,
}

fn plan(
    name: &str,
    display_name: &str,
    price_minor: u64,
    features: &[&str],
    limits: [(LimitName, Option<u64>); 5],
) -> Plan {
    let mut set = Limits::default();
    for (limit, value) in limits {
        set.set(limit, value);
    }
    Plan {
        name: name.to_owned(),
        display_name: display_name.to_owned(),
        price_minor,
        currency: "USD".into(),
        period: BillingPeriod::Month,
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        limits: set,
    }
}

impl Catalog {
    /// The built-in plans: `free`, `pro` and `enterprise`.
    pub fn builtin() -> Self {
        use LimitName::*;
        let plans = [
            plan(
                "free",
                "Free",
                0,
                &[],
                [
                    (MaxMembers, Some(5)),
                    (MaxApiKeys, Some(3)),
                    (ApiCallsPerMonth, Some(100_000)),
                    (RequestsPerSecond, Some(50)),
                    (RequestsPerSecondPerKey, Some(20)),
                ],
            ),
            plan(
                "pro",
                "Pro",
                4_900,
                &["api_write", "reports", "audit_export", "custom_policies"],
                [
                    (MaxMembers, Some(50)),
                    (MaxApiKeys, Some(25)),
                    (ApiCallsPerMonth, Some(5_000_000)),
                    (RequestsPerSecond, Some(500)),
                    (RequestsPerSecondPerKey, Some(100)),
                ],
            ),
            plan(
                "enterprise",
                "Enterprise",
                49_900,
                &KNOWN_FEATURES,
                [
                    (MaxMembers, None),
                    (MaxApiKeys, None),
                    (ApiCallsPerMonth, None),
                    (RequestsPerSecond, Some(5_000)),
                    (RequestsPerSecondPerKey, Some(1_000)),
                ],
            ),
        ];
        Self { plans: plans.into_iter().map(|p| (p.name.clone(), Arc::new(p))).collect() }
    }

    /// The built-in catalog with `plans` added or replacing built-in plans
    /// of the same name.
    pub fn with(plans: Vec<Plan>) -> Result<Self, CatalogError> {
        let mut all: BTreeMap<String, Plan> =
            Self::builtin().plans.into_values().map(|p| (p.name.clone(), (*p).clone())).collect();
        for plan in plans {
            all.insert(plan.name.clone(), plan);
        }
        Self::of(all.into_values())
    }

    /// A catalog of exactly `plans`, checked.
    pub fn of(plans: impl IntoIterator<Item = Plan>) -> Result<Self, CatalogError> {
        let mut catalog = Self { plans: BTreeMap::new() };
        for plan in plans {
            if !is_identifier(&plan.name) {
                return Err(CatalogError::BadName(plan.name));
            }
            if let Some(feature) = plan.features.iter().find(|f| !is_identifier(f)) {
                return Err(CatalogError::BadFeature { plan: plan.name.clone(), feature: feature.clone() });
            }
            if !(plan.currency.len() == 3 && plan.currency.chars().all(|c| c.is_ascii_uppercase())) {
                return Err(CatalogError::BadCurrency { plan: plan.name.clone(), currency: plan.currency.clone() });
            }
            catalog.plans.insert(plan.name.clone(), Arc::new(plan));
        }
        if !catalog.plans.contains_key(tollgate_store::DEFAULT_PLAN) {
            return Err(CatalogError::NoDefault(tollgate_store::DEFAULT_PLAN.into()));
        }
        Ok(catalog)
    }

    /// The catalog as stored rows.
    pub fn to_rows(&self) -> Vec<PlanRow> {
        self.plans
            .values()
            .map(|p| {
                let limits: serde_json::Map<String, serde_json::Value> = LimitName::ALL
                    .iter()
                    .map(|l| (l.as_str().to_owned(), serde_json::json!(p.limits.get(*l))))
                    .collect();
                PlanRow {
                    name: p.name.clone(),
                    display_name: p.display_name.clone(),
                    price_minor: i64::try_from(p.price_minor).unwrap_or(i64::MAX),
                    currency: p.currency.clone(),
                    period: p.period.as_str().to_owned(),
                    features: serde_json::json!(p.features).to_string(),
                    limits: serde_json::Value::Object(limits).to_string(),
                }
            })
            .collect()
    }

    /// The catalog of stored rows; `None` when none is stored.
    pub fn from_rows(rows: &[PlanRow]) -> Result<Option<Self>, CatalogError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let corrupt = |name: &str| CatalogError::BadName(format!("{name} (unreadable stored plan)"));
        let plans = rows
            .iter()
            .map(|row| {
                let features: BTreeSet<String> = serde_json::from_str(&row.features).map_err(|_| corrupt(&row.name))?;
                let values: BTreeMap<String, Option<u64>> =
                    serde_json::from_str(&row.limits).map_err(|_| corrupt(&row.name))?;
                let mut limits = Limits::default();
                for (name, value) in values {
                    let limit = LimitName::parse(&name).ok_or_else(|| corrupt(&row.name))?;
                    limits.set(limit, value);
                }
                Ok(Plan {
                    name: row.name.clone(),
                    display_name: row.display_name.clone(),
                    price_minor: u64::try_from(row.price_minor).unwrap_or(0),
                    currency: row.currency.clone(),
                    period: BillingPeriod::parse(&row.period).ok_or_else(|| corrupt(&row.name))?,
                    features,
                    limits,
                })
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        Self::of(plans).map(Some)
    }

    pub fn plan(&self, name: &str) -> Option<&Arc<Plan>> {
        self.plans.get(name)
    }

    pub fn plans(&self) -> impl Iterator<Item = &Arc<Plan>> {
        self.plans.values()
    }

    /// The names of the plans that include `feature`.
    pub fn plans_with(&self, feature: &str) -> Vec<String> {
        self.plans.values().filter(|p| p.features.contains(feature)).map(|p| p.name.clone()).collect()
    }

    /// The entitlements of `plan` without overrides.
    pub fn plan_entitlements(&self, plan: &str) -> Entitlements {
        Entitlements { plan_name: plan.to_owned(), plan: self.plan(plan).cloned(), overrides: Arc::from([]) }
    }

    /// A tenant's entitlements: its plan's (none when the catalog does not
    /// know the plan: every limit zero, no feature) and `overrides`.
    pub fn entitlements(&self, plan: &str, overrides: &[OverrideRow]) -> Result<Entitlements, StoreError> {
        let overrides = overrides.iter().map(Override::try_from).collect::<Result<Vec<_>, _>>()?;
        Ok(Entitlements { plan_name: plan.to_owned(), plan: self.plan(plan).cloned(), overrides: overrides.into() })
    }
}

/// How often a process reads the stored catalog again: a catalog seeded
/// by another process is in force everywhere within this bound.
pub const CATALOG_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes `catalog` the store's, for every process on it (the backend does
/// at start, from its configuration).
pub async fn seed_catalog(store: &Store, catalog: &Catalog) -> Result<(), StoreError> {
    let mut tx = store.tx().await?;
    tollgate_store::replace_plans(&mut tx, &catalog.to_rows()).await?;
    tx.commit().await?;
    Ok(())
}

/// The catalog in force: the store's, read again every
/// [`CATALOG_REFRESH`] and swapped whole when it changed (the one given at
/// start until the store has one).
#[derive(Debug)]
pub struct LiveCatalog {
    current: ArcSwap<Catalog>,
}

impl LiveCatalog {
    pub fn new(initial: Catalog) -> Self {
        Self { current: ArcSwap::from_pointee(initial) }
    }

    /// The catalog now.
    pub fn get(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// `f` of the catalog now, without taking a reference count (for the
    /// request path).
    pub fn with<R>(&self, f: impl FnOnce(&Catalog) -> R) -> R {
        f(&self.current.load())
    }

    /// Reads the store's catalog; whether it replaced the one in force. A
    /// stored catalog that cannot be read keeps the one in force.
    pub async fn reload(&self, store: &Store) -> Result<bool, StoreError> {
        let mut tx = store.read_tx().await?;
        let rows = tollgate_store::plans(&mut tx).await?;
        tx.commit().await?;
        match Catalog::from_rows(&rows) {
            Ok(Some(stored)) if *self.current.load_full() != stored => {
                self.current.store(Arc::new(stored));
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                tracing::error!(error = %e, "the stored plan catalog is unreadable; keeping the one in force");
                Ok(false)
            }
        }
    }

    /// Reloads every [`CATALOG_REFRESH`] for as long as the runtime runs,
    /// calling `on_change` with each new catalog.
    pub fn spawn_refresh(self: Arc<Self>, store: Store, on_change: impl Fn(&Catalog) + Send + 'static) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CATALOG_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.reload(&store).await {
                    Ok(true) => {
                        tracing::info!("a new plan catalog is in force");
                        on_change(&self.get());
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the plan catalog; keeping the one in force"),
                }
            }
        });
    }
}

/// What an override grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Feature(bool),
    Limit(LimitName, Option<u64>),
}

/// One override of a tenant, in force until `expires_at` (when given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub grant: Grant,
    pub expires_at: Option<i64>,
}

impl Override {
    pub fn in_force(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// The stored form, granted by `granted_by` at `created_at`.
    pub fn to_row(&self, tenant_id: &str, granted_by: &str, created_at: i64) -> OverrideRow {
        let (kind, value) = match self.grant {
            Grant::Feature(on) => ("feature", Some(i64::from(on))),
            Grant::Limit(_, value) => ("limit", value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))),
        };
        OverrideRow {
            tenant_id: tenant_id.to_owned(),
            name: self.name.clone(),
            kind: kind.into(),
            value,
            expires_at: self.expires_at,
            granted_by: granted_by.to_owned(),
            created_at,
        }
    }
}

impl TryFrom<&OverrideRow> for Override {
    type Error = StoreError;

    fn try_from(row: &OverrideRow) -> Result<Self, StoreError> {
        let corrupt = StoreError::Corrupt("entitlement_overrides");
        let grant = match (row.kind.as_str(), row.value) {
            ("feature", Some(v)) => Grant::Feature(v != 0),
            ("limit", value) => Grant::Limit(
                LimitName::parse(&row.name).ok_or(StoreError::Corrupt("entitlement_overrides.name"))?,
                value.map(|v| u64::try_from(v).unwrap_or(0)),
            ),
            _ => return Err(corrupt),
        };
        Ok(Self { name: row.name.clone(), grant, expires_at: row.expires_at })
    }
}

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Plan,
    /// An override, in force until the time given (if any).
    Override {
        expires_at: Option<i64>,
    },
    /// The tenant's plan is not in the catalog: nothing is granted.
    UnknownPlan,
}

/// A tenant's entitlements: its plan and its overrides, evaluated at a time
/// (overrides expire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlements {
    plan_name: String,
    plan: Option<Arc<Plan>>,
    overrides: Arc<[Override]>,
}

impl Entitlements {
    /// Entitlements nothing was loaded for: no feature, every limit zero.
    /// What a tenant read for display only carries; enforcement always
    /// loads the real ones.
    pub fn unresolved(plan: &str) -> Self {
        Self { plan_name: plan.to_owned(), plan: None, overrides: Arc::from([]) }
    }

    pub fn plan_name(&self) -> &str {
        &self.plan_name
    }

    fn active(&self, now: i64) -> impl Iterator<Item = &Override> {
        self.overrides.iter().filter(move |o| o.in_force(now))
    }

    /// Whether the tenant has `feature` at `now`, and why.
    pub fn feature(&self, feature: &str, now: i64) -> (bool, Source) {
        for o in self.active(now) {
            if let (Grant::Feature(on), true) = (o.grant, o.name == feature) {
                return (on, Source::Override { expires_at: o.expires_at });
            }
        }
        match &self.plan {
            Some(plan) => (plan.features.contains(feature), Source::Plan),
            None => (false, Source::UnknownPlan),
        }
    }

    pub fn has_feature(&self, feature: &str, now: i64) -> bool {
        self.feature(feature, now).0
    }

    /// The tenant's `limit` at `now` (`None` unlimited), and why.
    pub fn limit_with_source(&self, limit: LimitName, now: i64) -> (Option<u64>, Source) {
        for o in self.active(now) {
            if let Grant::Limit(name, value) = o.grant
                && name == limit
            {
                return (value, Source::Override { expires_at: o.expires_at });
            }
        }
        match &self.plan {
            Some(plan) => (plan.limits.get(limit), Source::Plan),
            None => (Limits::zero().get(limit), Source::UnknownPlan),
        }
    }

    pub fn limit(&self, limit: LimitName, now: i64) -> Option<u64> {
        self.limit_with_source(limit, now).0
    }

    /// Every feature the tenant has at `now`.
    pub fn features(&self, now: i64) -> BTreeSet<String> {
        let mut names: BTreeSet<&str> = self.plan.iter().flat_map(|p| p.features.iter().map(String::as_str)).collect();
        names.extend(self.overrides.iter().filter(|o| matches!(o.grant, Grant::Feature(_))).map(|o| o.name.as_str()));
        names.into_iter().filter(|f| self.has_feature(f, now)).map(str::to_owned).collect()
    }

    /// Every feature the plan or an override speaks of, with its value and
    /// source at `now`.
    pub fn all_features(&self, now: i64) -> BTreeMap<String, (bool, Source)> {
        let mut names: BTreeSet<&str> = self.plan.iter().flat_map(|p| p.features.iter().map(String::as_str)).collect();
        names.extend(self.overrides.iter().filter(|o| matches!(o.grant, Grant::Feature(_))).map(|o| o.name.as_str()));
        names.into_iter().map(|f| (f.to_owned(), self.feature(f, now))).collect()
    }

    /// The overrides as granted, expired ones included.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// The earliest time after `now` at which an override expires: until
    /// then, the entitlements at `now` hold.
    pub fn next_change(&self, now: i64) -> Option<i64> {
        self.overrides.iter().filter_map(|o| o.expires_at).filter(|at| *at > now).min()
    }
}

/// The calendar month (UTC) of `unix` as `YYYY-MM`, and the second the next
/// one starts.
pub fn month_of(unix: i64) -> (String, i64) {
    let date = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month) = (date.year(), date.month() as u8);
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let next =
        time::Date::from_calendar_date(next_year, time::Month::try_from(next_month).unwrap_or(time::Month::January), 1)
            .map(|d| d.midnight().assume_utc().unix_timestamp())
            .unwrap_or(i64::MAX);
    (format!("{year:04}-{month:02}"), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_survives_the_store_unchanged() {
        let team = Plan {
            name: "team".into(),
            display_name: "Team".into(),
            price_minor: 1_900,
            currency: "EUR".into(),
            period: BillingPeriod::Year,
            features: ["reports".to_owned()].into(),
            limits: Limits::default(),
        };
        let catalog = Catalog::with(vec![team]).unwrap();
        assert_eq!(Catalog::from_rows(&catalog.to_rows()), Ok(Some(catalog)));
        assert_eq!(Catalog::from_rows(&[]), Ok(None), "nothing stored: the configured catalog stays");
        let mut rows = Catalog::builtin().to_rows();
        rows.retain(|r| r.name != "free");
        assert!(matches!(Catalog::from_rows(&rows), Err(CatalogError::NoDefault(_))));
        let mut rows = Catalog::builtin().to_rows();
        rows[0].limits = "{\"max_seats\": 3}".into();
        assert!(Catalog::from_rows(&rows).is_err(), "an unknown limit is not read as no limit");
    }

    #[tokio::test]
    async fn every_process_comes_to_the_seeded_catalog() {
        for db in tollgate_store::testing::databases().await {
            // A process configured with the built-in plans only…
            let live = LiveCatalog::new(Catalog::builtin());
            assert!(!live.reload(&db.store).await.unwrap(), "{}: nothing seeded yet", db.label);
            // …takes up the catalog another process seeded.
            let mut team = (**Catalog::builtin().plan("pro").unwrap()).clone();
            team.name = "team".into();
            let seeded = Catalog::with(vec![team]).unwrap();
            seed_catalog(&db.store, &seeded).await.unwrap();
            assert!(live.reload(&db.store).await.unwrap(), "{}", db.label);
            assert_eq!(*live.get(), seeded, "{}", db.label);
            assert!(!live.reload(&db.store).await.unwrap(), "{}: unchanged, not swapped", db.label);
            seed_catalog(&db.store, &Catalog::builtin()).await.unwrap();
            assert!(live.reload(&db.store).await.unwrap());
            assert!(live.get().plan("team").is_none(), "{}: a plan seeded away is gone", db.label);
        }
    }

    fn row(name: &str, kind: &str, value: Option<i64>, expires_at: Option<i64>) -> OverrideRow {
        OverrideRow {
            tenant_id: "t1".into(),
            name: name.into(),
            kind: kind.into(),
            value,
            expires_at,
            granted_by: "user:admin".into(),
            created_at: 0,
        }
    }

    #[test]
    fn overrides_win_until_they_expire() {
        let catalog = Catalog::builtin();
        let rows = [row("reports", "feature", Some(1), Some(100)), row("max_members", "limit", Some(500), None)];
        let e = catalog.entitlements("free", &rows).unwrap();
        assert_eq!(e.feature("reports", 99), (true, Source::Override { expires_at: Some(100) }));
        assert_eq!(e.feature("reports", 100), (false, Source::Plan), "expired at its second");
        assert_eq!(e.limit(LimitName::MaxMembers, 1_000_000), Some(500));
        assert_eq!(e.limit(LimitName::MaxApiKeys, 0), Some(3));
        assert_eq!(e.features(99), BTreeSet::from(["reports".to_owned()]));
        assert!(e.features(100).is_empty());
        assert_eq!(e.next_change(50), Some(100));
        assert_eq!(e.next_change(100), None);
    }

    #[test]
    fn an_override_can_take_a_feature_away_or_lift_a_limit() {
        let rows = [row("reports", "feature", Some(0), None), row("api_calls_per_month", "limit", None, None)];
        let e = Catalog::builtin().entitlements("pro", &rows).unwrap();
        assert!(!e.has_feature("reports", 0));
        assert!(e.has_feature("api_write", 0));
        assert_eq!(e.limit_with_source(LimitName::ApiCallsPerMonth, 0).0, None);
    }

    #[test]
    fn an_unknown_plan_grants_nothing() {
        let e = Catalog::builtin().entitlements("gold", &[]).unwrap();
        assert_eq!(e.feature("sso", 0), (false, Source::UnknownPlan));
        assert_eq!(e.limit(LimitName::RequestsPerSecond, 0), Some(0));
        assert_eq!(Entitlements::unresolved("pro").limit(LimitName::MaxMembers, 0), Some(0));
    }

    #[test]
    fn the_catalog_is_extended_and_checked() {
        let mut team = plan(
            "team",
            "Team",
            1_900,
            &["reports"],
            [
                (LimitName::MaxMembers, Some(10)),
                (LimitName::MaxApiKeys, None),
                (LimitName::ApiCallsPerMonth, None),
                (LimitName::RequestsPerSecond, None),
                (LimitName::RequestsPerSecondPerKey, None),
            ],
        );
        let catalog = Catalog::with(vec![team.clone()]).unwrap();
        assert_eq!(catalog.plans().count(), 4);
        assert_eq!(catalog.plans_with("reports"), ["enterprise", "pro", "team"]);
        team.currency = "usd".into();
        assert!(matches!(Catalog::with(vec![team.clone()]), Err(CatalogError::BadCurrency { .. })));
        team.currency = "EUR".into();
        team.features.insert("Bad Feature".into());
        assert!(matches!(Catalog::with(vec![team]), Err(CatalogError::BadFeature { .. })));
        assert!(Catalog::builtin().plans().all(|p| p.features.iter().all(|f| is_identifier(f))));
    }

    #[test]
    fn months_roll_over_in_utc() {
        assert_eq!(month_of(0), ("1970-01".to_owned(), 2_678_400));
        // 2026-12-31T23:59:59Z and the second after.
        assert_eq!(month_of(1_798_761_599), ("2026-12".to_owned(), 1_798_761_600));
        assert_eq!(month_of(1_798_761_600).0, "2027-01");
    }
}

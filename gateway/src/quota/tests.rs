use super::*;

const MS: u64 = 1_000_000;

#[test]
fn a_bucket_passes_its_burst_then_one_request_per_interval() {
    let mut bucket = Gcra::default();
    let t0 = 10 * SECOND_NS;
    let first = bucket.take("key", 5, 1, t0).unwrap();
    assert_eq!((first.remaining, first.reset), (4, 1));
    for left in (0..4).rev() {
        assert_eq!(bucket.take("key", 5, 1, t0).unwrap().remaining, left);
    }
    let refused = bucket.take("key", 5, 1, t0).unwrap_err();
    assert_eq!((refused.remaining, refused.reset), (0, 1), "one request back after 200 ms: retry in 1 s");
    assert_eq!(refused.policy_field(), "\"key\";q=5;w=1");
    assert_eq!(refused.field(), "\"key\";r=0;t=1");
    // 200 ms later exactly one request has come back.
    assert!(bucket.take("key", 5, 1, t0 + 200 * MS).is_ok());
    assert!(bucket.take("key", 5, 1, t0 + 200 * MS).is_err());
    // After a whole window the bucket is full again.
    assert_eq!(bucket.take("key", 5, 1, t0 + 2 * SECOND_NS).unwrap().remaining, 4);
}

#[test]
fn a_bucket_over_a_longer_window_refills_over_it() {
    let mut bucket = Gcra::default();
    let t0 = 10 * SECOND_NS;
    for _ in 0..10 {
        assert!(bucket.take("route-ip", 10, 60, t0).is_ok());
    }
    let refused = bucket.take("route-ip", 10, 60, t0).unwrap_err();
    assert_eq!((refused.policy_field(), refused.reset), ("\"route-ip\";q=10;w=60".to_owned(), 6));
    assert!(bucket.take("route-ip", 10, 60, t0 + 6 * SECOND_NS).is_ok(), "one back every 6 s");
}

#[test]
fn the_fields_name_the_policy_and_its_numbers() {
    let monthly =
        Standing { policy: "monthly", quota: 1_000_000_000_000, window: 2_678_400, remaining: 0, reset: 86_399 };
    assert_eq!(monthly.policy_field(), "\"monthly\";q=1000000000000;w=2678400");
    assert_eq!(monthly.field(), "\"monthly\";r=0;t=86399");
    let most = Standing { policy: "route-ip", quota: u64::MAX, window: 10, remaining: u64::MAX - 1, reset: 1 };
    assert_eq!(most.policy_field(), format!("\"route-ip\";q={};w=10", u64::MAX));
    assert_eq!(most.field(), format!("\"route-ip\";r={};t=1", u64::MAX - 1));
}

#[test]
fn the_tightest_policy_is_the_smallest_share_left() {
    let standing = |policy, quota, remaining| Standing { policy, quota, window: 1, remaining, reset: 1 };
    let tight = standing("tenant", 100, 5).tighter(standing("key", 10, 9));
    assert_eq!(tight.policy, "tenant");
    assert_eq!(standing("tenant", 100, 50).tighter(standing("key", 10, 1)).policy, "key");
}

#[test]
fn made_up_addresses_cannot_grow_the_buckets_past_the_bound() {
    let quotas = Quotas::new(RateLimits::default());
    for i in 0..(MAX_BUCKETS + 50_000) {
        let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) << 16 | 0xfe80));
        let _ = quotas.take(Whose::Address(Address::Ip(ip)), "ip", 10, 1);
    }
    assert!(quotas.buckets() <= MAX_BUCKETS + 1, "{} buckets", quotas.buckets());
}

#[test]
fn full_buckets_are_swept_and_newcomers_share_the_overflow() {
    let buckets = Buckets::new(3);
    let t0 = 5 * SECOND_NS;
    let ip = |n: u8| Whose::Address(Address::Ip(IpAddr::from([10, 0, 0, n])));
    for n in 0..3 {
        buckets.take(ip(n), "ip", 1, 1, t0).unwrap();
    }
    assert_eq!(buckets.len(), 3);
    // Full table, all three busy: a newcomer shares the overflow bucket...
    assert!(buckets.take(ip(9), "ip", 1, 1, t0).is_ok());
    assert!(buckets.take(ip(10), "ip", 1, 1, t0).is_err(), "...with every other newcomer");
    // ...and once the three are full again they are swept to make room.
    let later = t0 + 2 * SECOND_NS;
    assert!(buckets.take(ip(11), "ip", 1, 1, later).is_ok());
    assert_eq!(buckets.len(), 1, "the full buckets went, the newcomer has its own");
    // A busy bucket is never swept: its state would be lost.
    assert!(buckets.take(ip(11), "ip", 1, 1, later).is_err());
}

/// The table is searched with the borrowed names of a request: each kept
/// key must hash and compare as the names it was made from, and as no
/// other's (a key whose user and tenant swap places, or a key named like a
/// tenant, is someone else).
#[test]
fn buckets_are_found_by_whose_they_are_and_no_one_else_s() {
    use std::hash::BuildHasher as _;
    let all = [
        Whose::Overflow("key"),
        Whose::Address(Address::Ip(IpAddr::from([10, 0, 0, 1]))),
        Whose::Address(Address::Other),
        Whose::User { tenant: "t1", user: "u1" },
        Whose::User { tenant: "u1", user: "t1" },
        Whose::User { tenant: "t1u", user: "1" },
        Whose::Key("t1"),
        Whose::Tenant("t1"),
        Whose::RouteAddress(0, Address::Other),
        Whose::RouteAddress(1, Address::Other),
        Whose::Route(0),
    ];
    let hasher = Hasher::default();
    for whose in all {
        let kept = BucketKey::of(whose);
        assert_eq!(hasher.hash_one(&kept), hasher.hash_one(whose), "{whose:?}");
        for other in all {
            assert_eq!(hashbrown::Equivalent::equivalent(&other, &kept), other == whose, "{other:?} / {whose:?}");
        }
    }
    // Through the table: each has a bucket of its own.
    let buckets = Buckets::new(100);
    let t0 = SECOND_NS;
    for whose in all {
        assert!(buckets.take(whose, "p", 1, 1, t0).is_ok(), "{whose:?}: its own bucket, full");
    }
    for whose in all {
        assert!(buckets.take(whose, "p", 1, 1, t0).is_err(), "{whose:?}: its one request is taken");
    }
    assert_eq!(buckets.len(), all.len() as u64);
}

async fn tenants(store: &Store, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut tx = store.tx().await.unwrap();
    for i in 0..n {
        ids.push(tollgate_store::insert_tenant(&mut tx, "Acme", &format!("acme-{i}")).await.unwrap().id);
    }
    tx.commit().await.unwrap();
    ids
}

#[tokio::test]
async fn the_monthly_quota_stops_a_tenant_and_no_other() {
    for db in tollgate_store::testing::databases().await {
        let l = db.label;
        let ids = tenants(&db.store, 2).await;
        let (a, b) = (&ids[0], &ids[1]);
        let meter = Meter::default();
        let now = 1_800_000_000;
        for left in (0..3).rev() {
            let s = meter.admit(&db.store, a, Metric::ApiCalls, Some(3), now).await.unwrap().unwrap();
            assert_eq!((s.policy, s.remaining), ("monthly", left), "{l}");
        }
        let refused = meter.admit(&db.store, a, Metric::ApiCalls, Some(3), now).await.unwrap().unwrap_err();
        assert_eq!(refused.remaining, 0, "{l}");
        assert!(refused.reset > 0 && refused.reset <= 31 * 86_400, "{l}: until the month ends");
        assert!(
            meter.admit(&db.store, b, Metric::ApiCalls, Some(3), now).await.unwrap().is_ok(),
            "{l}: another tenant is unaffected"
        );
        for _ in 0..5 {
            let platform = meter.admit(&db.store, a, Metric::PlatformCalls, None, now).await.unwrap();
            assert!(platform.is_ok(), "{l}: platform calls are counted, never limited");
        }
        meter.flush(&db.store, now).await.unwrap();
        assert_eq!(meter.unflushed(), 0, "{l}");
        let mut tx = db.store.tenant_tx(a).await.unwrap();
        let (period, _) = month_of(now);
        assert_eq!(tollgate_store::usage_of(&mut tx, a, API_CALLS, &period).await.unwrap(), 3, "{l}");
        assert_eq!(tollgate_store::usage_of(&mut tx, a, "platform_calls", &period).await.unwrap(), 5, "{l}");
        tx.commit().await.unwrap();
        // A second gateway (a fresh meter on the same store) starts from the total.
        let other = Meter::default();
        assert!(other.admit(&db.store, a, Metric::ApiCalls, Some(3), now).await.unwrap().is_err(), "{l}");
        // A new month starts from nothing.
        let (_, next_month) = month_of(now);
        assert!(meter.admit(&db.store, a, Metric::ApiCalls, Some(3), next_month).await.unwrap().is_ok(), "{l}");
    }
}

/// Two gateways that flush every `k` admissions each: the total they admit
/// never passes `limit + (gateways - 1) * k`, the documented overshoot.
#[tokio::test]
async fn gateways_sharing_a_store_overshoot_at_most_one_interval_each() {
    for db in tollgate_store::testing::databases().await {
        let l = db.label;
        let tenant = tenants(&db.store, 1).await.remove(0);
        let gateways = [Meter::default(), Meter::default()];
        let (limit, k, now) = (50_u64, 7_u64, 1_800_000_000);
        let mut admitted = 0;
        for _round in 0..20 {
            for meter in &gateways {
                for _ in 0..k {
                    if meter.admit(&db.store, &tenant, Metric::ApiCalls, Some(limit), now).await.unwrap().is_ok() {
                        admitted += 1;
                    }
                }
            }
            for meter in &gateways {
                meter.flush(&db.store, now).await.unwrap();
            }
        }
        assert!(admitted >= limit, "{l}: the quota is reachable ({admitted})");
        assert!(admitted <= limit + (gateways.len() as u64 - 1) * k, "{l}: {admitted} admitted");
    }
}

//! Store tests, on SQLite and (when configured) PostgreSQL.

use super::testing::databases;
use super::*;

async fn tenant_with_owner(store: &Store, name: &str, email: &str) -> (TenantRow, UserRow) {
    let mut tx = store.tx().await.unwrap();
    let user = insert_user(&mut tx, email, "Owner", Some("x"), true).await.unwrap();
    let tenant = insert_tenant(&mut tx, name, "acme").await.unwrap();
    store.bind_tenant(&mut tx, &tenant.id).await.unwrap();
    insert_membership(&mut tx, &tenant.id, &user.id, "owner").await.unwrap();
    tx.commit().await.unwrap();
    (tenant, user)
}

#[tokio::test]
async fn migrations_are_idempotent_and_slugs_unique() {
    for db in databases().await {
        db.store.migrate().await.unwrap();
        let (a, _) = tenant_with_owner(&db.store, "Acme", "a@x.test").await;
        let (b, _) = tenant_with_owner(&db.store, "Acme", "b@x.test").await;
        let (c, _) = tenant_with_owner(&db.store, "Acme", "c@x.test").await;
        assert_eq!((a.slug.as_str(), b.slug.as_str(), c.slug.as_str()), ("acme", "acme-2", "acme-3"), "{}", db.label);
    }
}

#[tokio::test]
async fn duplicate_email_is_a_unique_violation() {
    for db in databases().await {
        let mut tx = db.store.tx().await.unwrap();
        insert_user(&mut tx, "same@x.test", "A", None, false).await.unwrap();
        let err = insert_user(&mut tx, "same@x.test", "B", None, false).await.unwrap_err();
        assert!(err.is_unique_violation(), "{}: {err}", db.label);
    }
}

#[tokio::test]
async fn tenant_scoped_transactions_see_only_their_tenant() {
    for db in databases().await {
        let (a, alice) = tenant_with_owner(&db.store, "A", "alice@x.test").await;
        let (b, _) = tenant_with_owner(&db.store, "B", "bob@x.test").await;
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        assert!(membership(&mut tx, &a.id, &alice.id).await.unwrap().is_some(), "{}", db.label);
        let page = members(&mut tx, &a.id, None, None, 10).await.unwrap();
        assert_eq!(page.len(), 1, "{}", db.label);
        let b_rows = members(&mut tx, &b.id, None, None, 10).await.unwrap();
        // SQLite relies on the application's tenant checks alone; PostgreSQL's
        // row-level security hides B's rows even from a query that asks for them.
        assert_eq!(b_rows.is_empty(), db.store.kind() == DbKind::Postgres, "{}", db.label);
        tx.commit().await.unwrap();
    }
}

/// Row-level security on PostgreSQL: without the tenant set a query sees no
/// tenant rows at all, whatever its WHERE clause; with one tenant set it sees
/// only that tenant's; writes into another tenant are refused.
#[tokio::test]
async fn postgres_row_level_security_backs_tenant_checks() {
    for db in databases().await {
        if db.store.kind() != DbKind::Postgres {
            continue;
        }
        let (a, _) = tenant_with_owner(&db.store, "A", "alice@x.test").await;
        let (b, bob) = tenant_with_owner(&db.store, "B", "bob@x.test").await;
        let unscoped: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM memberships").fetch_one(db.store.pool()).await.unwrap();
        assert_eq!(unscoped, 0, "a query without the tenant set sees nothing");
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships").fetch_one(&mut *tx).await.unwrap();
        assert_eq!(seen, 1);
        let bob_seen = membership(&mut tx, &b.id, &bob.id).await.unwrap();
        assert!(bob_seen.is_none(), "tenant A's transaction cannot read tenant B's rows");
        let cross_write = insert_membership(&mut tx, &b.id, &bob.id, "viewer").await;
        assert!(cross_write.is_err(), "tenant A's transaction cannot write tenant B's rows");
        drop(tx);
        let invitations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys").fetch_one(db.store.pool()).await.unwrap();
        assert_eq!(invitations, 0);
    }
}

/// Every table holding a tenant's rows is bound by forced row-level
/// security, but for those listed with why; the SCIM values filters match
/// against are readable (their trigram index needs it) but written only for
/// the transaction's own tenant.
#[tokio::test]
async fn postgres_binds_every_tenant_table() {
    // Sessions are found by id before their tenant is known, the outbox and
    // the security log are the platform's.
    const NOT_BOUND: [&str; 3] = ["outbox", "security_events", "sessions"];
    for db in databases().await {
        if db.store.kind() != DbKind::Postgres {
            continue;
        }
        let tables: Vec<(String, bool, bool)> = sqlx::query_as(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
             WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND EXISTS \
             (SELECT 1 FROM information_schema.columns col WHERE col.table_schema = 'public' \
              AND col.table_name = c.relname AND col.column_name = 'tenant_id') ORDER BY 1",
        )
        .fetch_all(db.store.pool())
        .await
        .unwrap();
        assert!(tables.len() > 10, "{tables:?}");
        let unbound: Vec<&str> =
            tables.iter().filter(|(_, on, forced)| !(*on && *forced)).map(|t| t.0.as_str()).collect();
        assert_eq!(unbound, NOT_BOUND);

        let (a, _) = tenant_with_owner(&db.store, "A", "alice@values.test").await;
        let (b, _) = tenant_with_owner(&db.store, "B", "bob@values.test").await;
        let fields = |name: &str| ScimUserFields {
            email: format!("{name}@values.test"),
            user_name: name.to_owned(),
            external_id: None,
            display_name: None,
            given_name: None,
            family_name: None,
            active: true,
            resource: "{}".to_owned(),
            values: vec![ScimValue {
                attr: "emails",
                value: format!("{name}@values.test"),
                type_: None,
                display: None,
                primary: true,
            }],
        };
        let mut tx = db.store.tenant_tx(&b.id).await.unwrap();
        let bs = insert_scim_user(&mut tx, &b.id, None, &fields("bee")).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        let forged = sqlx::query(
            "INSERT INTO scim_user_values (tenant_id, scim_user_id, attr, position, value_lower, is_primary) \
             VALUES ($1, $2, 'emails', 9, 'x@forged.test', 0)",
        )
        .bind(&b.id)
        .bind(&bs.id)
        .execute(&mut *tx)
        .await;
        assert!(forged.is_err(), "tenant A's transaction cannot write tenant B's values");
        drop(tx);
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        let gone =
            sqlx::query("DELETE FROM scim_user_values WHERE scim_user_id = $1").bind(&bs.id).execute(&mut *tx).await;
        assert_eq!(gone.unwrap().rows_affected(), 0, "nor delete them");
        tx.commit().await.unwrap();
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        assert!(scim_user(&mut tx, &b.id, &bs.id).await.unwrap().is_none(), "the users stay bound");
        tx.commit().await.unwrap();
    }
}

/// Group memberships are tied to the group's tenant by the schema itself:
/// on both databases a member of one tenant cannot be put into another
/// tenant's group, even by a query that names them; on PostgreSQL row-level
/// security also hides other tenants' groups.
#[tokio::test]
async fn group_members_stay_inside_their_tenant() {
    for db in databases().await {
        let l = db.label;
        let (a, alice) = tenant_with_owner(&db.store, "A", "alice@x.test").await;
        let (b, bob) = tenant_with_owner(&db.store, "B", "bob@x.test").await;
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        let group = insert_group(&mut tx, &a.id, "Sales", "").await.unwrap();
        assert!(add_group_member(&mut tx, &a.id, &group.id, &alice.id).await.unwrap(), "{l}");
        assert!(!add_group_member(&mut tx, &a.id, &group.id, &alice.id).await.unwrap(), "{l}: already in");
        tx.commit().await.unwrap();
        // Each refused write in a transaction of its own (a failed statement
        // aborts a PostgreSQL transaction).
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        let refused = add_group_member(&mut tx, &a.id, &group.id, &bob.id).await.unwrap_err();
        assert!(refused.is_foreign_key_violation(), "{l}: bob is not A's member: {refused}");
        tx.rollback().await.unwrap();
        let mut tx = db.store.tenant_tx(&b.id).await.unwrap();
        let smuggled = add_group_member(&mut tx, &b.id, &group.id, &bob.id).await;
        assert!(smuggled.is_err(), "{l}: A's group under B's tenant id");
        tx.rollback().await.unwrap();

        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        assert_eq!(
            group_ids_of_member(&mut tx, &a.id, &alice.id).await.unwrap(),
            std::slice::from_ref(&group.id),
            "{l}"
        );
        delete_membership(&mut tx, &a.id, &alice.id).await.unwrap();
        assert!(group_ids_of_member(&mut tx, &a.id, &alice.id).await.unwrap().is_empty(), "{l}: left with the tenant");
        tx.commit().await.unwrap();

        if db.store.kind() == DbKind::Postgres {
            let unscoped: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM tenant_groups").fetch_one(db.store.pool()).await.unwrap();
            assert_eq!(unscoped, 0, "a query without the tenant set sees no groups");
            let mut tx = db.store.tenant_tx(&b.id).await.unwrap();
            assert!(group_by_id(&mut tx, &a.id, &group.id).await.unwrap().is_none(), "B cannot read A's group");
            assert!(insert_group(&mut tx, &a.id, "Planted", "").await.is_err(), "B cannot write into A");
        }
    }
}

#[tokio::test]
async fn login_throttle_locks_after_failures_and_resets_on_success() {
    for db in databases().await {
        let mut tx = db.store.tx().await.unwrap();
        let e = "who@x.test";
        assert_eq!(
            LoginAttempts::throttle(&mut tx, e, "ip", 900, 900).await.unwrap(),
            LoginThrottle::Open { failures: 0 }
        );
        for _ in 0..3 {
            LoginAttempts::record(&mut tx, e, "ip", "failure").await.unwrap();
        }
        LoginAttempts::record(&mut tx, e, "other-ip", "failure").await.unwrap();
        assert_eq!(
            LoginAttempts::throttle(&mut tx, e, "ip", 900, 900).await.unwrap(),
            LoginThrottle::Open { failures: 3 }
        );
        let everyone = LoginAttempts::throttle(&mut tx, e, ANY_CLIENT, 900, 900).await.unwrap();
        assert_eq!(everyone, LoginThrottle::Open { failures: 4 });
        LoginAttempts::record(&mut tx, e, "ip", "locked").await.unwrap();
        assert!(matches!(
            LoginAttempts::throttle(&mut tx, e, "ip", 900, 900).await.unwrap(),
            LoginThrottle::Locked { until } if until > now()
        ));
        // Locked for that address only.
        let elsewhere = LoginAttempts::throttle(&mut tx, e, "other-ip", 900, 900).await.unwrap();
        assert_eq!(elsewhere, LoginThrottle::Open { failures: 1 });
        // A lock of zero length has passed: the failures before it no longer count.
        assert_eq!(
            LoginAttempts::throttle(&mut tx, e, "ip", 900, 0).await.unwrap(),
            LoginThrottle::Open { failures: 0 }
        );
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn api_key_lookup_by_prefix_crosses_no_other_key() {
    for db in databases().await {
        let (a, alice) = tenant_with_owner(&db.store, "A", "alice@x.test").await;
        let mut tx = db.store.tenant_tx(&a.id).await.unwrap();
        for prefix in ["tg_aaaaaaaaaaaa", "tg_bbbbbbbbbbbb"] {
            insert_api_key(
                &mut tx,
                &NewApiKey {
                    tenant_id: &a.id,
                    prefix,
                    secret_hash: "h",
                    name: "k",
                    scopes: &["*".to_owned()],
                    owner_user_id: Some(&alice.id),
                    owner_service_account_id: None,
                    created_by: "test",
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let mut tx = db.store.key_prefix_tx("tg_aaaaaaaaaaaa").await.unwrap();
        let key = api_key_by_prefix(&mut tx, "tg_aaaaaaaaaaaa").await.unwrap().unwrap();
        assert_eq!(key.tenant_id, a.id);
        if db.store.kind() == DbKind::Postgres {
            let other = api_key_by_prefix(&mut tx, "tg_bbbbbbbbbbbb").await.unwrap();
            assert!(other.is_none(), "a prefix transaction sees only its own key");
        }
    }
}

/// A role that row-level security does not bind (a superuser, or one with
/// BYPASSRLS) is refused at connect, before it could serve a request.
#[tokio::test]
async fn postgres_refuses_roles_that_bypass_row_level_security() {
    let Ok(url) = std::env::var("TOLLGATE_TEST_SUPERUSER_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test: set TOLLGATE_TEST_SUPERUSER_URL");
        return;
    };
    match Store::connect(&url).await {
        Err(StoreError::UnsafeRole(role)) => assert_eq!(role, "postgres"),
        other => panic!("a superuser was accepted: {:?}", other.map(|s| s.kind())),
    }
}

/// Look-ups do not wait for writers: a read transaction proceeds while
/// another connection holds the write lock (SQLite's `BEGIN IMMEDIATE`).
#[tokio::test]
async fn reads_do_not_queue_behind_a_writer() {
    for db in databases().await {
        let (tenant, owner) = tenant_with_owner(&db.store, "Reads", "reads@x.test").await;
        let writer = db.store.tenant_tx(&tenant.id).await.unwrap();
        let read = async {
            let mut tx = db.store.tenant_read_tx(&tenant.id).await.unwrap();
            let found = membership(&mut tx, &tenant.id, &owner.id).await.unwrap();
            tx.commit().await.unwrap();
            found
        };
        let found = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
        assert!(matches!(found, Ok(Some(_))), "{}: the read waited for the writer", db.label);
        writer.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn relays_claim_each_due_mail_once_under_a_lease() {
    for db in databases().await {
        let mut tx = db.store.tx().await.unwrap();
        for n in 0..5 {
            enqueue_mail(&mut tx, None, &format!("r{n}@x.test"), "s", "b").await.unwrap();
        }
        tx.commit().await.unwrap();
        let mut tx = db.store.read_tx().await.unwrap();
        assert!(mail_due(&mut tx).await.unwrap(), "{}", db.label);
        tx.commit().await.unwrap();
        // Two relays at once share the due mails without overlap.
        let claim = |limit| {
            let store = db.store.clone();
            async move {
                let mut tx = store.tx().await.unwrap();
                let rows = claim_mail(&mut tx, store.kind(), limit, 60).await.unwrap();
                tx.commit().await.unwrap();
                rows
            }
        };
        let (a, b) = tokio::join!(claim(3), claim(3));
        let mut ids: Vec<String> = a.iter().chain(&b).map(|r| r.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!((a.len() + b.len(), ids.len()), (5, 5), "{}: each mail once", db.label);
        assert!(a.iter().chain(&b).all(|r| r.attempts == 1), "{}", db.label);
        // Leased: nothing more is due until the lease runs out or the
        // outcome is recorded.
        assert!(claim(10).await.is_empty(), "{}", db.label);
        let mut tx = db.store.tx().await.unwrap();
        mail_sent(&mut tx, &a[0].id).await.unwrap();
        mail_failed(&mut tx, &a[1].id, "550 no such mailbox", None).await.unwrap();
        mail_failed(&mut tx, &b[0].id, "connection refused", Some(now() - 1)).await.unwrap();
        tx.commit().await.unwrap();
        let again = claim(10).await;
        assert_eq!(again.iter().map(|r| (r.id.as_str(), r.attempts)).collect::<Vec<_>>(), [(b[0].id.as_str(), 2)]);
        let mut tx = db.store.read_tx().await.unwrap();
        let all = outbox(&mut tx, None, 10).await.unwrap();
        tx.commit().await.unwrap();
        let row = |id: &str| all.iter().find(|r| r.id == id).unwrap().clone();
        assert!(row(&a[0].id).sent_at.is_some(), "{}", db.label);
        let failed = row(&a[1].id);
        assert!(failed.failed_at.is_some() && failed.last_error.as_deref() == Some("550 no such mailbox"));
    }
}

/// The liveness feed's changes at the database's time now or later.
async fn changes_from(store: &Store, since: i64) -> std::collections::BTreeSet<(String, String)> {
    let mut tx = store.read_tx().await.unwrap();
    let changes = liveness_changes_since(&mut tx, since).await.unwrap();
    tx.commit().await.unwrap();
    changes.into_iter().map(|c| (c.kind, c.id)).collect()
}

/// Deletes the whole feed, so that each step below sees only its own change.
async fn clear_feed(store: &Store) {
    let mut tx = store.tx().await.unwrap();
    prune_liveness_changes(&mut tx, i64::MAX).await.unwrap();
    tx.commit().await.unwrap();
}

/// Every write that changes what a gateway caches about a caller, or a
/// tenant's active policy layer, names it in the change feed, whichever
/// function writes it; a session's or a key's mere use, a draft layer
/// version, name nothing.
#[tokio::test]
async fn every_change_to_a_callers_facts_is_in_the_liveness_feed() {
    for db in databases().await {
        let l = db.label;
        let store = &db.store;
        let (tenant, owner) = tenant_with_owner(store, "Feed", "owner@feed.test").await;
        let mut tx = store.tx().await.unwrap();
        let since = database_now(&mut tx, store.kind()).await.unwrap() - 1;
        let user = insert_user(&mut tx, "member@feed.test", "Member", Some("x"), true).await.unwrap();
        let new = super::testing::new_session(&owner.id, &tenant.id);
        let session = insert_session(&mut tx, &new, "refresh-feed").await.unwrap();
        tx.commit().await.unwrap();
        clear_feed(store).await;

        // One write at a time, each with the change it must record.
        let standing = || ("standing".to_owned(), tenant.id.clone());
        let tenant_change = || ("tenant".to_owned(), tenant.id.clone());
        let mut key_prefix = String::new();
        for step in 0..16 {
            let mut tx = store.tx().await.unwrap();
            store.bind_tenant(&mut tx, &tenant.id).await.unwrap();
            let expected = match step {
                0 => {
                    touch_session(&mut tx, &session, "10.0.0.2").await.unwrap();
                    None
                }
                1 => {
                    assert!(revoke_session(&mut tx, &owner.id, &session, "test").await.unwrap(), "{l}");
                    Some(("session".to_owned(), session.clone()))
                }
                2 => {
                    update_user_name(&mut tx, &user.id, "Renamed").await.unwrap();
                    Some(("user".to_owned(), user.id.clone()))
                }
                3 => {
                    set_tenant_status(&mut tx, &tenant.id, "suspended").await.unwrap();
                    Some(tenant_change())
                }
                4 => {
                    set_tenant_plan(&mut tx, &tenant.id, "pro").await.unwrap();
                    Some(tenant_change())
                }
                5 => {
                    let row = OverrideRow {
                        tenant_id: tenant.id.clone(),
                        name: "sso".into(),
                        kind: "feature".into(),
                        value: Some(1),
                        expires_at: None,
                        granted_by: owner.id.clone(),
                        created_at: now(),
                    };
                    replace_entitlement_overrides(&mut tx, &tenant.id, &[row]).await.unwrap();
                    Some(tenant_change())
                }
                6 => {
                    insert_membership(&mut tx, &tenant.id, &user.id, "member").await.unwrap();
                    Some(standing())
                }
                7 => {
                    set_member_role(&mut tx, &tenant.id, &user.id, "viewer").await.unwrap();
                    Some(standing())
                }
                8 => {
                    insert_role(&mut tx, &tenant.id, "auditor", "viewer", "").await.unwrap();
                    Some(standing())
                }
                9 => {
                    let group = insert_group(&mut tx, &tenant.id, "ops", "").await.unwrap();
                    assert!(add_group_member(&mut tx, &tenant.id, &group.id, &user.id).await.unwrap(), "{l}");
                    Some(standing())
                }
                10 => {
                    insert_service_account(&mut tx, &tenant.id, "ci", "member", &owner.id).await.unwrap();
                    Some(standing())
                }
                11 => {
                    key_prefix = format!("feed{}", &new_id()[..8]);
                    let key = insert_api_key(
                        &mut tx,
                        &NewApiKey {
                            tenant_id: &tenant.id,
                            prefix: &key_prefix,
                            secret_hash: "hash",
                            name: "feed",
                            scopes: &["crm.read".to_owned()],
                            owner_user_id: Some(&owner.id),
                            owner_service_account_id: None,
                            created_by: &owner.id,
                            expires_at: None,
                        },
                    )
                    .await
                    .unwrap();
                    touch_api_key(&mut tx, &tenant.id, &key.id).await.unwrap();
                    None
                }
                12 => {
                    let key = api_key_by_prefix(&mut tx, &key_prefix).await.unwrap().unwrap();
                    assert!(revoke_api_key(&mut tx, &tenant.id, &key.id).await.unwrap(), "{l}");
                    Some(("key".to_owned(), key_prefix.clone()))
                }
                13 => {
                    delete_membership(&mut tx, &tenant.id, &user.id).await.unwrap();
                    Some(standing())
                }
                14 => {
                    let layer = "@id(\"extra\") permit (principal, action == Action::\"crm.read\", resource);";
                    insert_policy_version(&mut tx, &tenant.id, layer, "", &owner.id).await.unwrap();
                    None
                }
                _ => {
                    activate_policy(&mut tx, &tenant.id, 1).await.unwrap();
                    Some(("layer".to_owned(), tenant.id.clone()))
                }
            };
            tx.commit().await.unwrap();
            let changes = changes_from(store, since).await;
            let expected: std::collections::BTreeSet<_> = expected.into_iter().collect();
            assert_eq!(changes, expected, "{l}: step {step}");
            clear_feed(store).await;
        }

        // A change older than `since` is not read again.
        let mut tx = store.tx().await.unwrap();
        update_user_name(&mut tx, &owner.id, "Owner again").await.unwrap();
        let later = database_now(&mut tx, store.kind()).await.unwrap() + 1;
        tx.commit().await.unwrap();
        assert!(changes_from(store, later).await.is_empty(), "{l}");
        assert_eq!(changes_from(store, since).await.len(), 1, "{l}");
    }
}

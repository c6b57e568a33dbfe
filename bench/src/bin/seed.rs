//! Seeds a store for the growth scenario: TENANTS tenants with an owner each,
//! and USERS members in one more tenant, every person with a live session,
//! and prints an access token per person: first the owners' (one per
//! tenant), then the big tenant's members'.
//!
//! Usage: `seed DATABASE_URL KEY_DIR ISSUER TENANTS USERS`; KEY_DIR is the
//! data dir's `keys/` of the instance whose key should sign.

use tollgate_identity::tokens::KeyRing;
use tollgate_store::{self as store, NewSession, Store, StoreError, now};

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// A person with a session in `tenant_id`: (user id, session id).
async fn person(tx: &mut store::Tx, email: &str, tenant_id: &str, role: &str) -> Result<(String, String), StoreError> {
    let user = store::insert_user(tx, email, "Seeded", None, true).await?;
    store::insert_membership(tx, tenant_id, &user.id, role).await?;
    let session = NewSession {
        user_id: &user.id,
        tenant_id,
        device: "seed",
        ip: "127.0.0.1",
        user_agent: "seed",
        amr: "pwd",
        expires_at: now() + 86_400,
        sso_connection: None,
    };
    let session_id = store::insert_session(tx, &session, &store::new_id()).await?;
    Ok((user.id, session_id))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key_dir, issuer, tenants, users] = args.as_slice() else {
        eprintln!("usage: seed DATABASE_URL KEY_DIR ISSUER TENANTS USERS");
        std::process::exit(2);
    };
    let (Ok(tenants), Ok(users)) = (tenants.parse::<usize>(), users.parse::<usize>()) else {
        fail("TENANTS and USERS must be numbers");
    };
    let store = Store::connect(url).await.unwrap_or_else(|e| fail(e));
    let keys = KeyRing::open(store.clone(), key_dir.into(), issuer.clone(), 900).await.unwrap_or_else(|e| fail(e));
    let mut people = Vec::with_capacity(tenants + users);
    let seeded: Result<(), StoreError> = async {
        let mut tx = store.tx().await?;
        for i in 0..tenants {
            let tenant = store::insert_tenant(&mut tx, &format!("Growth {i}"), &format!("growth-{i}")).await?;
            store.bind_tenant(&mut tx, &tenant.id).await?;
            let (user, session) = person(&mut tx, &format!("owner{i}@growth.test"), &tenant.id, "owner").await?;
            people.push((user, tenant.id, session, "owner"));
        }
        let big = store::insert_tenant(&mut tx, "Growth Big", "growth-big").await?;
        store.bind_tenant(&mut tx, &big.id).await?;
        // All of the members' traffic goes to this one tenant: lift its rates.
        let lifted: Vec<store::OverrideRow> = ["requests_per_second", "api_calls_per_month"]
            .into_iter()
            .map(|name| store::OverrideRow {
                tenant_id: big.id.clone(),
                name: name.into(),
                kind: "limit".into(),
                value: None,
                expires_at: None,
                granted_by: "seed".into(),
                created_at: now(),
            })
            .collect();
        store::replace_entitlement_overrides(&mut tx, &big.id, &lifted).await?;
        for i in 0..users {
            let (user, session) = person(&mut tx, &format!("member{i}@growth.test"), &big.id, "member").await?;
            people.push((user, big.id.clone(), session, "member"));
        }
        tx.commit().await?;
        Ok(())
    }
    .await;
    seeded.unwrap_or_else(|e| fail(e));
    let mut out = String::new();
    for (user, tenant, session, role) in &people {
        let (token, _) =
            keys.issue(user, tenant, session, vec![(*role).to_owned()], vec!["pwd".into()]).unwrap_or_else(|e| fail(e));
        out.push_str(&token);
        out.push('\n');
    }
    print!("{out}");
}

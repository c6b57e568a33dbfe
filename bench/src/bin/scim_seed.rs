//! Seeds one tenant with COUNT SCIM users for the SCIM scale bench: each
//! with a `userName`, a name, a work and a home address (work addresses
//! spread over 100 domains `corpN.test`) and an `externalId`, written with
//! the store's own SCIM functions (so the rows and indexes are what
//! provisioning writes), in transactions of 1,000. The records link to no
//! account: the list queries read the SCIM tables alone.
//!
//! Usage: `scim-seed DATABASE_URL TENANT_ID COUNT`

use serde_json::json;
use tollgate_store::{self as store, ScimUserFields, ScimValue, Store, StoreError};

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn fields(i: usize) -> ScimUserFields {
    let user_name = format!("user{i}@scale.test");
    let work = format!("user{i}@corp{}.test", i % 100);
    let home = format!("u{i}@home.test");
    let family = format!("Family{}", i % 5000);
    let resource = json!({
        "userName": user_name,
        "externalId": format!("ext-{i}"),
        "name": {"givenName": "Seeded", "familyName": family},
        "displayName": format!("Seeded {family}"),
        "active": true,
        "emails": [{"value": work, "type": "work", "primary": true}, {"value": home, "type": "home"}],
    });
    ScimUserFields {
        email: work.clone(),
        user_name,
        external_id: Some(format!("ext-{i}")),
        display_name: Some(format!("Seeded {family}")),
        given_name: Some("Seeded".into()),
        family_name: Some(family),
        active: true,
        resource: resource.to_string(),
        values: vec![
            ScimValue { attr: "emails", value: work, type_: Some("work".into()), display: None, primary: true },
            ScimValue { attr: "emails", value: home, type_: Some("home".into()), display: None, primary: false },
        ],
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, tenant, count] = args.as_slice() else {
        eprintln!("usage: scim-seed DATABASE_URL TENANT_ID COUNT");
        std::process::exit(2);
    };
    let Ok(count) = count.parse::<usize>() else { fail("COUNT must be a number") };
    let store = Store::connect(url).await.unwrap_or_else(|e| fail(e));
    let seeded: Result<(), StoreError> = async {
        for start in (0..count).step_by(1000) {
            let mut tx = store.tenant_tx(tenant).await?;
            for i in start..(start + 1000).min(count) {
                store::insert_scim_user(&mut tx, tenant, None, &fields(i)).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
    .await;
    seeded.unwrap_or_else(|e| fail(e));
}

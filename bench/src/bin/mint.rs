//! Mints many access tokens for one existing session, for the load
//! harness's "fresh token on every request" scenario: each token is
//! distinct (its own `jti`), so none is ever a cache hit at the gateway.
//!
//! Usage: `mint DATABASE_URL KEY_DIR ISSUER USER_ID TENANT_ID SESSION_ID COUNT`;
//! prints one token per line. KEY_DIR is the data dir's `keys/` of the
//! instance whose key should sign.

use tollgate_identity::tokens::KeyRing;
use tollgate_store::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key_dir, issuer, user, tenant, session, count] = args.as_slice() else {
        eprintln!("usage: mint DATABASE_URL KEY_DIR ISSUER USER_ID TENANT_ID SESSION_ID COUNT");
        std::process::exit(2);
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("error: COUNT must be a number");
        std::process::exit(2);
    };
    let keys = match Store::connect(url).await {
        Ok(store) => KeyRing::open(store, key_dir.into(), issuer.clone(), 900).await,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let keys = keys.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    let mut out = String::new();
    for _ in 0..count {
        match keys.issue(user, tenant, session, vec!["owner".into()], vec!["pwd".into()]) {
            Ok((token, _)) => {
                out.push_str(&token);
                out.push('\n');
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
    print!("{out}");
}

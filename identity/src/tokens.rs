//! Access tokens: Ed25519 signing keys (private halves in each instance's data
//! dir, public halves in the store for every instance to publish), the JWKS,
//! and the signing and strict verification of our JWTs.
//!
//! Instances that share a store share one key set: each signs with a key of
//! its own and publishes everyone's. An instance that starts without a
//! current key of its own adds one and retires nobody else's; `tollgate keys
//! rotate` replaces the keys of the data dir it runs on, and retired keys stay
//! published until every token they signed has expired.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use tollgate_store::{self as store, Store, StoreError, now};

use crate::assertion::{ASSERTION_TYPE, Assertion, verify_assertion};

/// The JWT `typ` of our access tokens (RFC 9068), so no other JWT we sign
/// can be replayed as one.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The audience of our access tokens.
pub const AUDIENCE: &str = "tollgate";
const ALGORITHM: &str = "EdDSA";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub tid: String,
    pub sid: String,
    pub jti: String,
    pub roles: Vec<String>,
    pub amr: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot access signing key file `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("signing key `{0}` is unusable")]
    BadKey(String),
    #[error("no signing key with its private half in the data dir; run `tollgate keys rotate`")]
    NoSigningKey,
}

/// Why a token was refused. Callers answer 401 for every one of them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token type is not accepted")]
    WrongType,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token is invalid or expired")]
    Invalid,
}

struct PublishedKey {
    kid: String,
    x: String,
    decoding: DecodingKey,
    /// When tokens signed with it can no longer be valid; `None` while current.
    published_until: Option<i64>,
}

struct Snapshot {
    signing: Option<Signer>,
    published: Vec<PublishedKey>,
}

/// The key this instance signs with, parsed once when the keys are loaded
/// (not per signature: deriving the key pair from its PKCS#8 form costs as
/// much as a signature).
struct Signer {
    kid: String,
    pair: Ed25519KeyPair,
}

impl Signer {
    /// A compact JWS (EdDSA) of `claims` with header `typ` and our `kid`.
    fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let bad = || KeyError::BadKey(self.kid.clone());
        let header = serde_json::to_vec(&serde_json::json!({"typ": typ, "alg": ALGORITHM, "kid": self.kid}))
            .map_err(|_| bad())?;
        let payload = serde_json::to_vec(claims).map_err(|_| bad())?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

impl Snapshot {
    /// The published key `kid`, while tokens it signed may still be valid.
    fn published_key(&self, kid: &str) -> Option<&PublishedKey> {
        let t = now();
        self.published.iter().find(|k| k.kid == kid && k.published_until.is_none_or(|until| until > t))
    }
}

/// The signing keys: reloaded from the store so a rotation by another process
/// is picked up, swapped as a whole.
pub struct KeyRing {
    store: Store,
    key_dir: PathBuf,
    issuer: String,
    access_ttl: i64,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.pk8"))
}

/// Generates a key, writes its private half (mode 0600) to `key_dir` and
/// publishes it, retiring the current keys whose private halves are in
/// `key_dir` (this instance's own); other instances' keys are left alone.
/// Returns the new `kid`.
pub async fn rotate(store: &Store, key_dir: &Path) -> Result<String, KeyError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| KeyError::Io { path, source }
    };
    std::fs::create_dir_all(key_dir).map_err(io(key_dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(key_dir, std::fs::Permissions::from_mode(0o700)).map_err(io(key_dir))?;
    }
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::BadKey("new".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::BadKey("new".into()))?;
    let kid = format!("k{}", uuid::Uuid::now_v7().simple());
    let path = key_path(key_dir, &kid);
    write_private(&path, pkcs8.as_ref()).map_err(io(&path))?;
    let mut tx = store.tx().await?;
    let own: Vec<String> = store::signing_keys(&mut tx)
        .await?
        .into_iter()
        .filter(|row| row.retired_at.is_none() && key_path(key_dir, &row.kid).exists())
        .map(|row| row.kid)
        .collect();
    store::retire_signing_keys(&mut tx, &own).await?;
    store::add_signing_key(&mut tx, &kid, ALGORITHM, &URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(kid)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

impl KeyRing {
    /// Loads the keys, adding one of this instance's own when the store has
    /// no current key whose private half is in `key_dir`.
    pub async fn open(store: Store, key_dir: PathBuf, issuer: String, access_ttl: i64) -> Result<Self, KeyError> {
        let ring = Self {
            store,
            key_dir,
            issuer,
            access_ttl,
            snapshot: RwLock::new(Arc::new(Snapshot { signing: None, published: Vec::new() })),
        };
        ring.reload().await?;
        if ring.current().signing.is_none() {
            rotate(&ring.store, &ring.key_dir).await?;
            ring.reload().await?;
        }
        if ring.current().signing.is_none() {
            return Err(KeyError::NoSigningKey);
        }
        Ok(ring)
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reloads the keys every `every`, so a rotation by another process
    /// (`tollgate keys rotate`, another instance) is picked up without a
    /// restart. Runs on the current tokio runtime.
    pub fn spawn_reload(keys: Arc<Self>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.tick().await;
            loop {
                interval.tick().await;
                if let Err(e) = keys.reload().await {
                    tracing::warn!(error = %e, "signing key reload failed");
                }
            }
        })
    }

    /// Re-reads the published keys from the store and swaps the snapshot.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let mut tx = self.store.tx().await?;
        let rows = store::signing_keys(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let t = now();
        let mut published = Vec::new();
        let mut signing = None;
        for row in rows {
            let published_until = row.retired_at.map(|r| r + self.access_ttl + 60);
            if published_until.is_some_and(|until| until <= t) || row.algorithm != ALGORITHM {
                continue;
            }
            let decoding =
                DecodingKey::from_ed_components(&row.public_key).map_err(|_| KeyError::BadKey(row.kid.clone()))?;
            // The newest current key whose private half is ours.
            if row.retired_at.is_none() && signing.is_none() {
                let path = key_path(&self.key_dir, &row.kid);
                match std::fs::read(&path) {
                    Ok(der) => {
                        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| KeyError::BadKey(row.kid.clone()))?;
                        signing = Some(Signer { kid: row.kid.clone(), pair });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(KeyError::Io { path: path.display().to_string(), source });
                    }
                }
            }
            published.push(PublishedKey { kid: row.kid, x: row.public_key, decoding, published_until });
        }
        let snapshot = Arc::new(Snapshot { signing, published });
        match self.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        Ok(())
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn access_ttl(&self) -> i64 {
        self.access_ttl
    }

    /// The JWKS document of every key whose tokens may still be valid.
    pub fn jwks(&self) -> serde_json::Value {
        let t = now();
        let keys: Vec<_> = self
            .current()
            .published
            .iter()
            .filter(|k| k.published_until.is_none_or(|until| until > t))
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": ALGORITHM, "use": "sig", "kid": k.kid, "x": k.x,
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs an access token for a session.
    pub fn issue(
        &self,
        user_id: &str,
        tenant_id: &str,
        session_id: &str,
        roles: Vec<String>,
        amr: Vec<String>,
    ) -> Result<(String, AccessClaims), KeyError> {
        let snapshot = self.current();
        let Some(signer) = &snapshot.signing else {
            return Err(KeyError::NoSigningKey);
        };
        let t = now();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            sub: user_id.to_owned(),
            tid: tenant_id.to_owned(),
            sid: session_id.to_owned(),
            jti: crate::decision::new_decision_id(),
            roles,
            amr,
            iat: t,
            nbf: t,
            exp: t + self.access_ttl,
        };
        let token = signer.sign(ACCESS_TOKEN_TYPE, &claims)?;
        Ok((token, claims))
    }

    /// Signs a JWT of type `typ` (never [`ACCESS_TOKEN_TYPE`], which only
    /// [`KeyRing::issue`] signs) with the current key, e.g. the gateway's
    /// identity assertions for upstreams.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let snapshot = self.current();
        let Some(signer) = &snapshot.signing else {
            return Err(KeyError::NoSigningKey);
        };
        if typ == ACCESS_TOKEN_TYPE {
            return Err(KeyError::BadKey(signer.kid.clone()));
        }
        signer.sign(typ, claims)
    }

    /// Signs an upstream identity assertion.
    pub fn sign_assertion(&self, assertion: &Assertion) -> Result<String, KeyError> {
        self.sign(ASSERTION_TYPE, assertion)
    }

    /// Verifies one of our access tokens: EdDSA only, a `kid` we publish, our
    /// `typ`, issuer and audience, and the time claims.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify_typed(token, ACCESS_TOKEN_TYPE, AUDIENCE, &["exp", "nbf", "iss", "aud", "sub"])
    }

    /// Verifies a gateway assertion addressed to `audience` (an upstream's
    /// name), with the same strictness as an access token.
    pub fn verify_assertion(&self, token: &str, audience: &str) -> Result<Assertion, TokenError> {
        let kid = crate::assertion::assertion_kid(token)?;
        let snapshot = self.current();
        let key = snapshot.published_key(&kid).ok_or(TokenError::UnknownKey)?;
        verify_assertion(token, &key.decoding, &self.issuer, audience)
    }

    fn verify_typed<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
        audience: &str,
        required: &[&str],
    ) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let snapshot = self.current();
        let key = snapshot.published_key(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(required);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }
}

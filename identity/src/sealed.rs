//! Secrets the platform must read back (TOTP seeds; later, SSO client
//! secrets), sealed at rest with AES-256-GCM under a key from configuration.
//! A sealed value is `v1.<nonce>.<ciphertext>` (base64url); the context it
//! was sealed for (`totp:<user id>`) is its associated data, so a value
//! copied to another row does not open there.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the secrets key file `{path}`: {message}")]
    KeyFile { path: String, message: String },
    #[error("a sealed secret does not open with this key and context")]
    Unopenable,
}

/// Seals and opens secrets with one key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer with a 32-byte key.
    pub fn with_key(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("32 bytes is AES-256's key"));
        Self { key: LessSafeKey::new(unbound) }
    }

    /// The key in `path` (base64url of 32 bytes); a new one is written
    /// there (mode 0600) when the file does not exist. Instances that share
    /// a database must share the file.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let fail = |message: String| SealError::KeyFile { path: path.display().to_string(), message };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let encoded = URL_SAFE_NO_PAD.encode(key);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                }
                write_private(path, &encoded).map_err(|e| fail(e.to_string()))?;
                encoded
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| fail("not base64url".into()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| fail("not 32 bytes".into()))?;
        Ok(Self::with_key(&key))
    }

    /// Seals `plaintext` for `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut data)
            .unwrap_or_else(|_| unreachable!("AES-GCM seals any message this size"));
        format!("{VERSION}.{}.{}", URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(data))
    }

    /// Whether `stored` is a sealed value (else a value from before sealing).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with("v1.")
    }

    /// Opens what [`Sealer::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let mut parts = sealed.split('.');
        let (Some(VERSION), Some(nonce), Some(data), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Unopenable);
        };
        let nonce: [u8; NONCE_LEN] =
            URL_SAFE_NO_PAD.decode(nonce).ok().and_then(|n| n.try_into().ok()).ok_or(SealError::Unopenable)?;
        let mut data = URL_SAFE_NO_PAD.decode(data).map_err(|_| SealError::Unopenable)?;
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError::Unopenable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Unopenable)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let sealer = Sealer::with_key(&[7; 32]);
        let sealed = sealer.seal("JBSWY3DPEHPK3PXP", "totp:u1");
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(sealed, sealer.seal("JBSWY3DPEHPK3PXP", "totp:u1"), "a fresh nonce each time");
        assert_eq!(sealer.open(&sealed, "totp:u1").unwrap(), "JBSWY3DPEHPK3PXP");
        assert!(sealer.open(&sealed, "totp:u2").is_err(), "another row's context");
        assert!(Sealer::with_key(&[8; 32]).open(&sealed, "totp:u1").is_err(), "another key");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open(&String::from_utf8(tampered).unwrap(), "totp:u1").is_err());
        for bad in ["", "v1", "v1.x.y", "v2.AAAA.BBBB", &format!("{sealed}.x")] {
            assert!(sealer.open(bad, "totp:u1").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        let dir = std::env::temp_dir().join(format!("tollgate-sealed-{}", uuid::Uuid::new_v4()));
        let path = dir.join("keys").join("secrets.key");
        let first = Sealer::load_or_create(&path).unwrap();
        let sealed = first.seal("s", "c");
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, "c").unwrap(), "s", "the same key is read back");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(Sealer::load_or_create(&path).is_err(), "a malformed key is refused, not replaced");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Opaque secrets (refresh tokens, API keys, invitation tokens): generation,
//! parsing, SHA-256 hashing for storage, and constant-time comparison.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `n` random lowercase hex characters.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

/// SHA-256 of a secret, hex: what the store keeps instead of the secret.
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn matches(secret: &str, stored: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored.as_bytes()).into()
}

pub const REFRESH_PREFIX: &str = "tgr_";
pub const API_KEY_PREFIX: &str = "tg_";
pub const INVITATION_PREFIX: &str = "tgi_";
pub const VERIFICATION_PREFIX: &str = "tgv_";
pub const MFA_CHALLENGE_PREFIX: &str = "tgm_";
pub const PASSWORD_RESET_PREFIX: &str = "tgp_";
pub const SCIM_TOKEN_PREFIX: &str = "tgs_";

pub fn new_refresh_token() -> String {
    format!("{REFRESH_PREFIX}{}", random_token())
}

/// A new API key: `(lookup prefix, full secret)`, where the secret is
/// `tg_<12 hex>_<43 base64url>` and the prefix its first part.
pub fn new_api_key() -> (String, String) {
    let prefix = format!("{API_KEY_PREFIX}{}", random_hex(12));
    let secret = format!("{prefix}_{}", random_token());
    (prefix, secret)
}

/// The lookup prefix of a presented API key, when it has the key's shape.
pub fn api_key_prefix(presented: &str) -> Option<&str> {
    lookup_prefix(presented, API_KEY_PREFIX)
}

/// A new SCIM token: `(lookup prefix, full secret)`, shaped like an API key
/// but `tgs_`, so neither is ever taken for the other.
pub fn new_scim_token() -> (String, String) {
    let prefix = format!("{SCIM_TOKEN_PREFIX}{}", random_hex(12));
    let secret = format!("{prefix}_{}", random_token());
    (prefix, secret)
}

/// The lookup prefix of a presented SCIM token, when it has the shape.
pub fn scim_token_prefix(presented: &str) -> Option<&str> {
    lookup_prefix(presented, SCIM_TOKEN_PREFIX)
}

/// `<kind><12 hex>_<43 base64url>` -> `<kind><12 hex>`.
fn lookup_prefix<'a>(presented: &'a str, kind: &str) -> Option<&'a str> {
    let rest = presented.strip_prefix(kind)?;
    let (hex, secret) = rest.split_once('_')?;
    let well_formed = hex.len() == 12
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 43
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| &presented[..kind.len() + 12])
}

/// A new email verification token.
pub fn new_verification_token() -> String {
    format!("{VERIFICATION_PREFIX}{}", random_token())
}

/// A new password reset token, mailed to the account's address.
pub fn new_password_reset_token() -> String {
    format!("{PASSWORD_RESET_PREFIX}{}", random_token())
}

/// A new login challenge, answered with a second factor.
pub fn new_mfa_challenge() -> String {
    format!("{MFA_CHALLENGE_PREFIX}{}", random_token())
}

/// A new invitation token naming its tenant: `tgi_<tenant id>_<secret>`.
pub fn new_invitation_token(tenant_id: &str) -> String {
    format!("{INVITATION_PREFIX}{tenant_id}_{}", random_token())
}

/// The tenant id an invitation token names, when it has the token's shape.
pub fn invitation_tenant(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(INVITATION_PREFIX)?;
    let (tenant, secret) = rest.split_once('_')?;
    (uuid::Uuid::parse_str(tenant).is_ok() && secret.len() == 43).then_some(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_and_match() {
        let (prefix, secret) = new_api_key();
        assert_eq!(api_key_prefix(&secret), Some(prefix.as_str()));
        assert!(matches(&secret, &hash(&secret)));
        assert!(!matches(&format!("{secret}x"), &hash(&secret)));
        assert_eq!(api_key_prefix("tg_short_x"), None);
        assert_eq!(api_key_prefix("Bearer tg_"), None);
        assert_eq!(api_key_prefix(&secret.replace("tg_", "tx_")), None);
        let (scim_prefix, scim) = new_scim_token();
        assert_eq!(scim_token_prefix(&scim), Some(scim_prefix.as_str()));
        assert_eq!(api_key_prefix(&scim), None, "a SCIM token is never an API key");
        assert_eq!(scim_token_prefix(&secret), None, "nor an API key a SCIM token");
    }

    #[test]
    fn invitation_tokens_name_their_tenant() {
        let tenant = uuid::Uuid::now_v7().to_string();
        let token = new_invitation_token(&tenant);
        assert_eq!(invitation_tenant(&token), Some(tenant.as_str()));
        assert_eq!(invitation_tenant("tgi_not-a-uuid_xxx"), None);
    }
}

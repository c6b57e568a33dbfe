//! Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30-second
//! steps): new secrets, their base32 form and `otpauth://` URI for
//! authenticator apps, and verification that accepts one step of clock skew
//! either way and never the same step twice.

use ring::hmac;
use subtle::ConstantTimeEq as _;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps of clock skew accepted before and after the current one.
const SKEW_STEPS: i64 = 1;

/// A shared secret: 20 random bytes, as RFC 4226 recommends.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl Secret {
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = vec![0; 20];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The RFC 4648 base32 form without padding, as authenticator apps take it.
    pub fn to_base32(&self) -> String {
        let mut out = String::with_capacity(self.0.len().div_ceil(5) * 8);
        let (mut buffer, mut bits) = (0u32, 0u32);
        for byte in &self.0 {
            buffer = (buffer << 8) | u32::from(*byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
            }
        }
        if bits > 0 {
            out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
        }
        out
    }

    /// Parses the base32 form (case-insensitive, padding and spaces ignored).
    pub fn from_base32(text: &str) -> Option<Self> {
        let mut bytes = Vec::new();
        let (mut buffer, mut bits) = (0u32, 0u32);
        for c in text.chars().filter(|c| *c != '=' && !c.is_whitespace()) {
            let value = BASE32.iter().position(|b| char::from(*b) == c.to_ascii_uppercase())?;
            buffer = (buffer << 5) | value as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push(((buffer >> bits) & 0xff) as u8);
            }
        }
        (!bytes.is_empty()).then_some(Self(bytes))
    }

    /// The code of `step` (RFC 4226 dynamic truncation).
    pub fn code_at_step(&self, step: i64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let digest = tag.as_ref();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let binary =
            u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
        format!("{:0width$}", binary % 10u32.pow(DIGITS), width = DIGITS as usize)
    }

    /// The code at `unix` seconds.
    pub fn code_at(&self, unix: i64) -> String {
        self.code_at_step(step_of(unix))
    }

    /// The step `code` is valid for at `unix` (one step of skew either way),
    /// if it is later than `last_used` (a code is good once); compared in
    /// constant time.
    pub fn verify(&self, code: &str, unix: i64, last_used: i64) -> Option<i64> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = step_of(unix);
        let mut matched = None;
        for step in (now - SKEW_STEPS)..=(now + SKEW_STEPS) {
            let expected = self.code_at_step(step);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && step > last_used && matched.is_none() {
                matched = Some(step);
            }
        }
        matched
    }

    /// The `otpauth://` URI an authenticator app enrols from.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let enc = |s: &str| percent_encode(s);
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            enc(issuer),
            enc(account),
            self.to_base32(),
            enc(issuer)
        )
    }
}

/// How many recovery codes an enrolment gets.
pub const RECOVERY_CODES: usize = 10;

/// Ten single-use recovery codes, `xxxxx-xxxxx` (50 random bits each).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let text = Secret::generate().to_base32().to_ascii_lowercase();
            format!("{}-{}", &text[..5], &text[5..10])
        })
        .collect()
}

/// A recovery code as stored (hashed) and compared: lower case, without
/// separators.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

fn step_of(unix: i64) -> i64 {
    unix.div_euclid(STEP_SECS)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B (SHA1), last six digits of the eight.
    #[test]
    fn the_rfc_vectors() {
        let secret = Secret(b"12345678901234567890".to_vec());
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(secret.code_at(t), code, "at {t}");
        }
        assert_eq!(secret.to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(Secret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"), Some(secret));
    }

    #[test]
    fn codes_pass_once_within_a_step_of_skew() {
        let secret = Secret::generate();
        let now = 1_800_000_000;
        let code = secret.code_at(now);
        let step = secret.verify(&code, now, 0).unwrap();
        assert_eq!(secret.verify(&code, now, step), None, "never twice");
        assert!(secret.verify(&secret.code_at(now - STEP_SECS), now, 0).is_some(), "a step behind");
        assert!(secret.verify(&secret.code_at(now + STEP_SECS), now, 0).is_some(), "a step ahead");
        assert_eq!(secret.verify(&secret.code_at(now - 3 * STEP_SECS), now, 0), None, "too old");
        for bad in ["", "12345", "1234567", "abcdef"] {
            assert_eq!(secret.verify(bad, now, 0), None, "{bad:?}");
        }
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(normalize_recovery_code(&codes[0].to_uppercase()).len(), 10);
        let uri = secret.otpauth_uri("Tollgate", "ada@example.com");
        assert!(uri.starts_with("otpauth://totp/Tollgate:ada@example.com?secret="), "{uri}");
    }
}

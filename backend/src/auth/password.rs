//! Passwords: argon2id hashing and verification, and the strength check
//! (length and a list of common passwords) applied wherever one is set.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_LENGTH: usize = 10;
pub const MAX_LENGTH: usize = 128;

/// The most common passwords of at least the minimum length; a password equal
/// to one of them (ignoring case) is refused.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789a",
    "0123456789",
    "1111111111",
    "0000000000",
    "1q2w3e4r5t",
    "qwertyuiop",
    "qwerty1234",
    "qwerty12345",
    "1qaz2wsx3edc",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd12",
    "iloveyou12",
    "abc1234567",
    "abcdefghij",
    "letmein123",
    "welcome123",
    "welcome1234",
    "admin12345",
    "administrator",
    "changeme123",
    "football123",
    "baseball123",
    "superman123",
    "sunshine123",
    "princess123",
    "trustno1234",
    "monkey12345",
    "dragon12345",
    "master12345",
    "qazwsxedc123",
    "asdfghjkl1",
    "zxcvbnm123",
    "1234qwerasdf",
    "p@ssw0rd123",
    "p@ssword123",
    "secret12345",
    "computer123",
    "internet123",
    "starwars123",
    "whatever123",
    "chocolate1",
    "michael123",
    "jennifer123",
    "1234567890a",
    "a1234567890",
    "aa12345678",
    "passwordpassword",
    "qwertyqwerty",
    "11111111111",
    "987654321a",
    "9876543210",
    "summer2024",
    "winter2024",
    "spring2024",
    "autumn2024",
    "summer2025",
    "winter2025",
    "summer2026",
    "winter2026",
    "company123",
    "tollgate123",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakPassword {
    #[error("password must be at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("password must be at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("password is too common")]
    Common,
}

/// Checks a new password's strength.
pub fn check_strength(password: &str) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(WeakPassword::TooShort);
    }
    if chars > MAX_LENGTH {
        return Err(WeakPassword::TooLong);
    }
    let lower = password.to_lowercase();
    let first = lower.chars().next();
    if COMMON.contains(&lower.as_str()) || lower.chars().all(|c| Some(c) == first) {
        return Err(WeakPassword::Common);
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 iterations, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| HashError)
}

/// Verifies a password against a stored PHC hash; malformed hashes never match.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Why a hashing job did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashingError {
    /// As many jobs as allowed are running and waiting: try again shortly.
    #[error("too many password checks in progress")]
    Busy,
    #[error("password hashing failed")]
    Failed,
}

/// Password hashing and verification (19 MiB and tens of milliseconds of
/// CPU each, reachable without authentication) on the blocking pool, with
/// at most `running` jobs at once and at most `waiting` more queued; past
/// that a job is refused at once rather than piling up memory and CPU.
#[derive(Debug, Clone)]
pub struct Hashing {
    running: std::sync::Arc<tokio::sync::Semaphore>,
    queued: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Hashing {
    pub fn new(running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        Self {
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(running)),
            queued: std::sync::Arc::new(tokio::sync::Semaphore::new(running + waiting)),
        }
    }

    /// A bound fitted to this machine: one job per core, four times as many
    /// waiting.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::new(cores, 4 * cores)
    }

    /// Runs `job` on the blocking pool within the bounds.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, HashingError> {
        let place = std::sync::Arc::clone(&self.queued).try_acquire_owned().map_err(|_| HashingError::Busy)?;
        let turn = std::sync::Arc::clone(&self.running).acquire_owned().await.map_err(|_| HashingError::Failed)?;
        tokio::task::spawn_blocking(move || {
            let _held = (place, turn);
            job()
        })
        .await
        .map_err(|_| HashingError::Failed)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashingError> {
        self.run(move || hash(&password)).await?.map_err(|_| HashingError::Failed)
    }

    pub async fn verify(&self, password: String, stored: String) -> Result<bool, HashingError> {
        self.run(move || verify(&password, &stored)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashing_beyond_the_bound_is_refused_at_once() {
        let hashing = Hashing::new(1, 1);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let busy = hashing.clone();
        let first = tokio::spawn(async move {
            busy.run(move || {
                let _ = started.send(());
                let _ = hold.recv();
            })
            .await
        });
        running.await.unwrap();
        // One waits for the running job; the next finds no place at all.
        let waiting = tokio::spawn({
            let hashing = hashing.clone();
            async move { hashing.run(|| 7).await }
        });
        tokio::task::yield_now().await;
        while hashing.queued.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hashing.run(|| 8).await, Err(HashingError::Busy));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!(hashing.run(|| 9).await, Ok(9), "places free up again");
    }

    #[test]
    fn strength_rules() {
        assert_eq!(check_strength("short"), Err(WeakPassword::TooShort));
        assert_eq!(check_strength("Password123"), Err(WeakPassword::Common));
        assert_eq!(check_strength("aaaaaaaaaaaa"), Err(WeakPassword::Common));
        assert_eq!(check_strength(&"x1".repeat(65)), Err(WeakPassword::TooLong));
        assert_eq!(check_strength("correct horse battery"), Ok(()));
    }

    #[test]
    fn hash_roundtrip_and_salting() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salts differ");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("correct horse battery", "not a hash"));
    }
}

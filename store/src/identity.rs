//! Users, their settings, sessions with refresh-token families, login
//! attempts, the mail outbox and the security event log.

use sqlx::FromRow;

use super::{StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub platform_admin: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the owner proved the mailbox; `None` while the address is only claimed.
    pub email_verified_at: Option<i64>,
}

macro_rules! user_columns {
    () => {
        "id, email, name, password_hash, platform_admin, created_at, updated_at, email_verified_at"
    };
}

/// A new account. `verified` when the caller has just proved the mailbox
/// (an invitation token mailed to it).
pub async fn insert_user(
    tx: &mut Tx,
    email: &str,
    name: &str,
    password_hash: Option<&str>,
    verified: bool,
) -> Result<UserRow, StoreError> {
    let id = new_id();
    let t = now();
    let verified_at = verified.then_some(t);
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, platform_admin, created_at, updated_at, email_verified_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $5, $6)",
    )
    .bind(&id)
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .bind(t)
    .bind(verified_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO user_settings (user_id, preferences, updated_at) VALUES ($1, '{}', $2)")
        .bind(&id)
        .bind(t)
        .execute(&mut **tx)
        .await?;
    Ok(UserRow {
        id,
        email: email.to_owned(),
        name: name.to_owned(),
        password_hash: password_hash.map(str::to_owned),
        platform_admin: 0,
        created_at: t,
        updated_at: t,
        email_verified_at: verified_at,
    })
}

/// Records a verification token (its hash) for `user_id`'s current address.
pub async fn insert_email_verification(
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO email_verifications (id, user_id, email, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(user_id)
    .bind(email)
    .bind(token_hash)
    .bind(now())
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Spends the unexpired, unused verification token with `token_hash` issued
/// to `user_id` for its current address, and marks that address verified.
/// False when there is no such token.
pub async fn verify_email(tx: &mut Tx, user_id: &str, token_hash: &str) -> Result<bool, StoreError> {
    let t = now();
    let spent = sqlx::query(
        "UPDATE email_verifications SET used_at = $1 WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL \
         AND expires_at > $1 AND email = (SELECT email FROM users WHERE id = $3)",
    )
    .bind(t)
    .bind(token_hash)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    if spent.rows_affected() != 1 {
        return Ok(false);
    }
    mark_email_verified(tx, user_id).await?;
    Ok(true)
}

/// Marks `user_id`'s current address as verified.
pub async fn mark_email_verified(tx: &mut Tx, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET email_verified_at = $1, updated_at = $1 WHERE id = $2 AND email_verified_at IS NULL")
        .bind(now())
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Takes an unverified claim on an address away from its account, once the
/// mailbox's owner has proved it some other way: the account keeps its data
/// but no longer holds the address (nor can sign in with it). False when the
/// account's address is verified.
pub async fn release_unverified_email(tx: &mut Tx, user_id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE users SET email = $1, updated_at = $2 WHERE id = $3 AND email_verified_at IS NULL")
        .bind(format!("{user_id}@released.invalid"))
        .bind(now())
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn user_by_email(tx: &mut Tx, email: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn user_by_id(tx: &mut Tx, id: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn update_user_name(tx: &mut Tx, id: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET name = $1, updated_at = $2 WHERE id = $3")
        .bind(name)
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_password(tx: &mut Tx, id: &str, hash: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_platform_admin(tx: &mut Tx, email: &str, admin: bool) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE users SET platform_admin = $1, updated_at = $2 WHERE email = $3")
        .bind(i64::from(admin))
        .bind(now())
        .bind(email)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn settings(tx: &mut Tx, user_id: &str) -> Result<serde_json::Value, StoreError> {
    let text: Option<String> = sqlx::query_scalar("SELECT preferences FROM user_settings WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
    match text {
        None => Ok(serde_json::json!({})),
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("user_settings")),
    }
}

pub async fn save_settings(tx: &mut Tx, user_id: &str, preferences: &serde_json::Value) -> Result<(), StoreError> {
    let text = preferences.to_string();
    let t = now();
    let done = sqlx::query("UPDATE user_settings SET preferences = $1, updated_at = $2 WHERE user_id = $3")
        .bind(&text)
        .bind(t)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        sqlx::query("INSERT INTO user_settings (user_id, preferences, updated_at) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(&text)
            .bind(t)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Login attempts per email: failures, successes and lockouts. Lockout is
/// decided from these rows alone, so unknown emails lock like known ones.
pub struct LoginAttempts;

/// The state of an email's login throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginThrottle {
    /// Open, with the failures counted since the last success or lockout.
    Open { failures: i64 },
    /// Locked until this time.
    Locked { until: i64 },
}

/// The `ip` of attempts and locks that count for every client address.
pub const ANY_CLIENT: &str = "*";

/// How many failures within the window lock an email: for one client
/// address, and for all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub per_client: i64,
    pub per_email: i64,
}

/// The answer to a login attempt's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt may verify the password; it counts as a failure (row
    /// `id`) until [`LoginAttempts::succeeded`] says otherwise.
    Granted { id: i64 },
    /// Locked until this time: no password is verified.
    Locked { until: i64 },
}

impl LoginAttempts {
    /// Reserves a login attempt for `email` from `ip` before any password is
    /// checked, atomically with the throttle check (the transaction must be
    /// bound to `email` with [`crate::Store::serialize_on`]): so many
    /// concurrent guesses get no more verifications than sequential ones.
    /// Failures lock the email for one client address at `per_client`
    /// (so nobody locks an account out for everyone), and for every address
    /// at `per_email` (so many addresses get no more guesses in total).
    pub async fn reserve(
        tx: &mut Tx,
        email: &str,
        ip: &str,
        window: i64,
        lock_for: i64,
        limits: LoginLimits,
    ) -> Result<Reservation, StoreError> {
        for (scope, threshold) in [(ANY_CLIENT, limits.per_email), (ip, limits.per_client)] {
            match Self::throttle(tx, email, scope, window, lock_for).await? {
                LoginThrottle::Locked { until } => return Ok(Reservation::Locked { until }),
                LoginThrottle::Open { failures } if failures >= threshold => {
                    Self::record(tx, email, scope, "locked").await?;
                    return Ok(Reservation::Locked { until: now() + lock_for });
                }
                LoginThrottle::Open { .. } => {}
            }
        }
        let id = sqlx::query_scalar(
            "INSERT INTO login_attempts (email, ip, outcome, created_at) VALUES ($1, $2, 'failure', $3) RETURNING id",
        )
        .bind(email)
        .bind(ip)
        .bind(now())
        .fetch_one(&mut **tx)
        .await?;
        Ok(Reservation::Granted { id })
    }

    /// Turns a reserved attempt into a success, which resets the counts.
    pub async fn succeeded(tx: &mut Tx, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE login_attempts SET outcome = 'success' WHERE id = $1").bind(id).execute(&mut **tx).await?;
        Ok(())
    }

    /// Records an attempt; a `locked` one with `ip` [`ANY_CLIENT`] locks the
    /// email for every client address.
    pub async fn record(tx: &mut Tx, email: &str, ip: &str, outcome: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO login_attempts (email, ip, outcome, created_at) VALUES ($1, $2, $3, $4)")
            .bind(email)
            .bind(ip)
            .bind(outcome)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Whether `email` is locked for the client address `scope` (or, with
    /// [`ANY_CLIENT`], for every address), and otherwise how many failures
    /// from there count towards a lock within `window` seconds.
    pub async fn throttle(
        tx: &mut Tx,
        email: &str,
        scope: &str,
        window: i64,
        lock_for: i64,
    ) -> Result<LoginThrottle, StoreError> {
        let t = now();
        let last_lock: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(created_at) FROM login_attempts WHERE email = $1 AND outcome = 'locked' AND ip = $2",
        )
        .bind(email)
        .bind(scope)
        .fetch_one(&mut **tx)
        .await?;
        if let Some(locked_at) = last_lock
            && locked_at + lock_for > t
        {
            return Ok(LoginThrottle::Locked { until: locked_at + lock_for });
        }
        // Attempts are ordered by id: a success (from anywhere) or a lockout
        // of this scope resets the count, even within the same second.
        let last_reset: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(id) FROM login_attempts WHERE email = $1 AND (outcome = 'success' OR (outcome = 'locked' AND ip = $2))",
        )
        .bind(email)
        .bind(scope)
        .fetch_one(&mut **tx)
        .await?;
        let failures = sqlx::query_scalar(
            "SELECT COUNT(*) FROM login_attempts WHERE email = $1 AND outcome = 'failure' AND created_at >= $2 AND id > $3 \
             AND ($4 = '*' OR ip = $4)",
        )
        .bind(email)
        .bind(t - window)
        .bind(last_reset.unwrap_or(0))
        .bind(scope)
        .fetch_one(&mut **tx)
        .await?;
        Ok(LoginThrottle::Open { failures })
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub tenant_id: String,
    pub device: String,
    pub ip: String,
    pub user_agent: String,
    pub amr: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The SSO connection the session signed in through.
    pub sso_connection_id: Option<String>,
}

impl SessionRow {
    /// How the session was authenticated (`amr` values, e.g. `pwd`, `otp`, `sso`).
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.amr.split(' ').filter(|m| !m.is_empty())
    }

    /// Whether this session still backs an access token of `user_id` in
    /// `tenant_id`: not revoked, not expired, and the token's own.
    pub fn is_live_for(&self, user_id: &str, tenant_id: &str) -> bool {
        self.user_id == user_id && self.tenant_id == tenant_id && self.revoked_at.is_none() && self.expires_at > now()
    }
}

macro_rules! session_columns {
    () => {
        "id, user_id, tenant_id, device, ip, user_agent, amr, created_at, last_seen_at, expires_at, revoked_at, \
         sso_connection_id"
    };
}

pub struct NewSession<'a> {
    pub user_id: &'a str,
    pub tenant_id: &'a str,
    pub device: &'a str,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub amr: &'a str,
    pub expires_at: i64,
    /// The SSO connection the user signed in through, if any.
    pub sso_connection: Option<&'a str>,
}

/// Creates a session (a refresh-token family) with its first refresh token.
pub async fn insert_session(tx: &mut Tx, new: &NewSession<'_>, refresh_hash: &str) -> Result<String, StoreError> {
    let id = new_id();
    let t = now();
    sqlx::query(
        "INSERT INTO sessions (id, user_id, tenant_id, device, ip, user_agent, amr, created_at, last_seen_at, \
         expires_at, sso_connection_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)",
    )
    .bind(&id)
    .bind(new.user_id)
    .bind(new.tenant_id)
    .bind(new.device)
    .bind(new.ip)
    .bind(new.user_agent)
    .bind(new.amr)
    .bind(t)
    .bind(new.expires_at)
    .bind(new.sso_connection)
    .execute(&mut **tx)
    .await?;
    insert_refresh(tx, &id, refresh_hash).await?;
    Ok(id)
}

pub async fn insert_refresh(tx: &mut Tx, session_id: &str, hash: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(session_id)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The refresh token with `hash`: its session id and whether it was used.
pub async fn refresh_by_hash(tx: &mut Tx, hash: &str) -> Result<Option<(String, Option<i64>)>, StoreError> {
    Ok(sqlx::query_as("SELECT session_id, used_at FROM refresh_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Marks a refresh token used; false when another request used it first.
pub async fn mark_refresh_used(tx: &mut Tx, hash: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
        .bind(now())
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn session_by_id(tx: &mut Tx, id: &str) -> Result<Option<SessionRow>, StoreError> {
    Ok(sqlx::query_as(concat!("SELECT ", session_columns!(), " FROM sessions WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn touch_session(tx: &mut Tx, id: &str, ip: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1, ip = $2 WHERE id = $3")
        .bind(now())
        .bind(ip)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The user's live sessions, newest first.
pub async fn sessions_of_user(tx: &mut Tx, user_id: &str) -> Result<Vec<SessionRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(user_id)
    .bind(now())
    .fetch_all(&mut **tx)
    .await?)
}

/// Revokes one of the user's sessions; false when it is not theirs or gone.
pub async fn revoke_session(tx: &mut Tx, user_id: &str, id: &str, reason: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(reason)
    .bind(id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every live session of the user except `keep` (the caller's own).
pub async fn revoke_other_sessions(
    tx: &mut Tx,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4)",
    )
    .bind(now())
    .bind(reason)
    .bind(user_id)
    .bind(keep)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Appends to the security event log.
pub async fn security_event(
    tx: &mut Tx,
    tenant_id: Option<&str>,
    user_id: Option<&str>,
    kind: &str,
    ip: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO security_events (id, tenant_id, user_id, kind, ip, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(tenant_id)
    .bind(user_id)
    .bind(kind)
    .bind(ip)
    .bind(detail.to_string())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The kinds of a user's security events, oldest first (for tests and support).
pub async fn security_event_kinds(tx: &mut Tx, user_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT kind FROM security_events WHERE user_id = $1 ORDER BY created_at, id")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?)
}

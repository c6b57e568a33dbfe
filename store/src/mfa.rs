//! Second factors: a person's TOTP secret (unconfirmed until a first code
//! proves the app has it), hashed single-use recovery codes, and the login
//! challenges between a correct password and the second factor; and
//! mailed password resets.

use sqlx::FromRow;

use super::{StoreError, Tx, new_id, now};

#[derive(Debug, Clone, FromRow)]
pub struct TotpRow {
    pub user_id: String,
    /// Sealed (`v1.`...) by the backend; base32 in rows from before sealing.
    pub secret: String,
    pub confirmed_at: Option<i64>,
    /// The last step whose code was accepted: a code is good once.
    pub last_step: i64,
    pub created_at: i64,
}

pub async fn totp_of(tx: &mut Tx, user_id: &str) -> Result<Option<TotpRow>, StoreError> {
    Ok(sqlx::query_as("SELECT user_id, secret, confirmed_at, last_step, created_at FROM mfa_totp WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Starts (or restarts) an unconfirmed enrolment with `secret`.
pub async fn begin_totp(tx: &mut Tx, user_id: &str, secret: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    sqlx::query(
        "INSERT INTO mfa_totp (user_id, secret, confirmed_at, last_step, created_at) VALUES ($1, $2, NULL, 0, $3)",
    )
    .bind(user_id)
    .bind(secret)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The TOTP secrets stored before secrets were sealed: (user, base32).
pub async fn unsealed_totp_secrets(tx: &mut Tx) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as("SELECT user_id, secret FROM mfa_totp WHERE secret NOT LIKE 'v1.%'").fetch_all(&mut **tx).await?)
}

/// Replaces a person's stored TOTP secret (with its sealed form).
pub async fn replace_totp_secret(tx: &mut Tx, user_id: &str, from: &str, to: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE mfa_totp SET secret = $1 WHERE user_id = $2 AND secret = $3")
        .bind(to)
        .bind(user_id)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records that the code of `step` was used; false when a code of that step
/// or a later one was used already (a replay, or a race lost).
pub async fn use_totp_step(tx: &mut Tx, user_id: &str, step: i64, confirm: bool) -> Result<bool, StoreError> {
    let confirmed_at = confirm.then(now);
    let updated = sqlx::query(
        "UPDATE mfa_totp SET last_step = $1, confirmed_at = COALESCE(confirmed_at, $2) \
         WHERE user_id = $3 AND last_step < $1",
    )
    .bind(step)
    .bind(confirmed_at)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Removes the second factor and its recovery codes.
pub async fn remove_totp(tx: &mut Tx, user_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    Ok(())
}

/// Replaces the person's recovery codes with these hashes.
pub async fn replace_recovery_codes(tx: &mut Tx, user_id: &str, hashes: &[String]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    for hash in hashes {
        sqlx::query("INSERT INTO mfa_recovery_codes (id, user_id, code_hash, used_at) VALUES ($1, $2, $3, NULL)")
            .bind(new_id())
            .bind(user_id)
            .bind(hash)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Uses the unused recovery code with this hash; false when there is none.
pub async fn use_recovery_code(tx: &mut Tx, user_id: &str, hash: &str) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(now())
    .bind(user_id)
    .bind(hash)
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() >= 1)
}

pub async fn unused_recovery_codes(tx: &mut Tx, user_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?)
}

/// A login waiting for its second factor.
#[derive(Debug, Clone, FromRow)]
pub struct ChallengeRow {
    pub id: String,
    pub user_id: String,
    /// The tenant the login asked for, if any.
    pub tenant: Option<String>,
    pub device: String,
    pub ip: String,
    pub user_agent: String,
    pub attempts: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What a new challenge remembers of its login.
#[derive(Debug, Clone)]
pub struct NewChallenge<'a> {
    pub user_id: &'a str,
    pub tenant: Option<&'a str>,
    pub device: &'a str,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub expires_at: i64,
}

pub async fn insert_challenge(tx: &mut Tx, new: &NewChallenge<'_>, token_hash: &str) -> Result<String, StoreError> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO mfa_challenges (id, user_id, token_hash, tenant, device, ip, user_agent, attempts, expires_at, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
    )
    .bind(&id)
    .bind(new.user_id)
    .bind(token_hash)
    .bind(new.tenant)
    .bind(new.device)
    .bind(new.ip)
    .bind(new.user_agent)
    .bind(new.expires_at)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

pub async fn challenge_by_token(tx: &mut Tx, token_hash: &str) -> Result<Option<ChallengeRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, tenant, device, ip, user_agent, attempts, expires_at, used_at \
         FROM mfa_challenges WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Counts a wrong code against the challenge.
pub async fn challenge_failed(tx: &mut Tx, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE mfa_challenges SET attempts = attempts + 1 WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// Spends the challenge; false when it was spent already.
pub async fn spend_challenge(tx: &mut Tx, id: &str) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE mfa_challenges SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// A mailed password reset.
#[derive(Debug, Clone, FromRow)]
pub struct PasswordResetRow {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub async fn insert_password_reset(
    tx: &mut Tx,
    user_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO password_resets (id, user_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id())
    .bind(user_id)
    .bind(token_hash)
    .bind(now())
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest reset mailed to `user_id` that is still good.
pub async fn live_password_reset(tx: &mut Tx, user_id: &str) -> Result<Option<PasswordResetRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, created_at, expires_at, used_at FROM password_resets \
         WHERE user_id = $1 AND used_at IS NULL AND expires_at > $2 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(user_id)
    .bind(now())
    .fetch_optional(&mut **tx)
    .await?)
}

pub async fn password_reset_by_token(tx: &mut Tx, token_hash: &str) -> Result<Option<PasswordResetRow>, StoreError> {
    Ok(sqlx::query_as("SELECT id, user_id, created_at, expires_at, used_at FROM password_resets WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Spends every outstanding reset of `user_id`; false when `id` was spent already.
pub async fn spend_password_resets(tx: &mut Tx, user_id: &str, id: &str) -> Result<bool, StoreError> {
    let spent = sqlx::query("UPDATE password_resets SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now())
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(spent.rows_affected() == 1)
}

//! Delivery of the outbox through an SMTP relay (lettre), when one is
//! configured; without one, mail stays in the outbox (read with
//! `tollgate outbox`).
//!
//! Each instance's relay polls for due mail every second (a read; it takes
//! the write lock only when mail is due), claims a batch under a lease that
//! outlasts the batch's slowest sending (so relays of several instances
//! never send one mail twice while it holds),
//! and records each outcome: sent; a temporary failure (the server said 4xx,
//! refused the relay's credentials, or could not be reached) retried after
//! 30 s, doubling to an hour, up to 8 attempts; a permanent one (another
//! 5xx, an address that does not parse) failed at once. Mail older than 7 days is failed unsent (its tokens have
//! expired). A relay stopped mid-send leaves the mail leased: it is sent
//! again when the lease (6 minutes: a batch of 10 each allowed 30 s, and a
//! minute more) runs out, so delivery is at least once.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tollgate_store::{OutboxRow, Store, StoreError, now};

const POLL: Duration = Duration::from_secs(1);
const BATCH: i64 = 10;
const SMTP_TIMEOUT_SECS: i64 = 30;
const SMTP_TIMEOUT: Duration = Duration::from_secs(SMTP_TIMEOUT_SECS as u64);
/// How long claimed mail is other relays' to leave alone: long enough for
/// the whole batch to time out one by one, so no mail of a slow batch is
/// claimed again while its relay still holds it.
pub const LEASE: i64 = BATCH * SMTP_TIMEOUT_SECS + 60;
const MAX_ATTEMPTS: i64 = 8;
const MAX_AGE: i64 = 7 * 86_400;
/// Permanent replies about the relay's credentials rather than the mail.
const AUTH_REFUSED: [&str; 4] = ["530", "534", "535", "538"];

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on a loopback address.
    None,
}

/// The SMTP relay's settings, validated by the CLI.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, `Name <address>` or an address.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("`{0}` is not a sender address like `Tollgate <no-reply@example.com>`")]
    From(String),
    #[error("cannot set up the SMTP relay: {0}")]
    Smtp(String),
}

/// What became of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    Retry(String),
    Failed(String),
}

/// Sends due mail from the outbox through the relay.
pub struct Relay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    store: Store,
}

impl Relay {
    pub fn new(config: &SmtpConfig, store: Store) -> Result<Self, RelayError> {
        let from: Mailbox = config.from.parse().map_err(|_| RelayError::From(config.from.clone()))?;
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls | SmtpTls::Tls => {
                let parameters =
                    TlsParameters::new(config.host.clone()).map_err(|e| RelayError::Smtp(e.to_string()))?;
                if config.tls == SmtpTls::Tls { Tls::Wrapper(parameters) } else { Tls::Required(parameters) }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
            .port(config.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self { transport: builder.build(), from, store })
    }

    /// Delivers the mail due now; how many attempts were made.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let mut tx = self.store.read_tx().await?;
        let due = tollgate_store::mail_due(&mut tx).await?;
        tx.commit().await?;
        if !due {
            return Ok(0);
        }
        let mut tx = self.store.tx().await?;
        let batch = tollgate_store::claim_mail(&mut tx, self.store.kind(), BATCH, LEASE).await?;
        tx.commit().await?;
        for mail in &batch {
            let outcome = self.attempt(mail).await;
            let mut tx = self.store.tx().await?;
            match &outcome {
                Outcome::Sent => tollgate_store::mail_sent(&mut tx, &mail.id).await?,
                Outcome::Retry(error) if mail.attempts < MAX_ATTEMPTS => {
                    let at = now() + backoff(mail.attempts);
                    tollgate_store::mail_failed(&mut tx, &mail.id, error, Some(at)).await?;
                }
                Outcome::Retry(error) | Outcome::Failed(error) => {
                    tollgate_store::mail_failed(&mut tx, &mail.id, error, None).await?;
                }
            }
            tx.commit().await?;
            match outcome {
                Outcome::Sent => tracing::info!(mail = %mail.id, "mail sent"),
                Outcome::Retry(error) | Outcome::Failed(error) => {
                    tracing::warn!(mail = %mail.id, attempts = mail.attempts, error = %error, "mail not sent");
                }
            }
        }
        Ok(batch.len())
    }

    async fn attempt(&self, mail: &OutboxRow) -> Outcome {
        if mail.created_at < now() - MAX_AGE {
            return Outcome::Failed("expired unsent".into());
        }
        let Ok(to) = mail.recipient.parse::<Mailbox>() else {
            return Outcome::Failed(format!("`{}` is not an address", mail.recipient));
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone());
        let message = match message {
            Ok(message) => message,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        match self.transport.send(message).await {
            Ok(_) => Outcome::Sent,
            // Refused credentials are the configuration's fault, not the
            // mail's: it waits for the relay to be set right.
            Err(e) if e.status().is_some_and(|c| AUTH_REFUSED.contains(&c.to_string().as_str())) => {
                Outcome::Retry(e.to_string())
            }
            Err(e) if e.is_permanent() => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Delivers due mail every second until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            // Stopping mid-send leaves the mail leased: it goes again later.
            tokio::select! {
                delivered = self.deliver_due() => {
                    if let Err(e) = delivered {
                        tracing::warn!(error = %e, "cannot read the outbox; trying again");
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Seconds before attempt `attempts + 1`: 30 s, doubling, at most an hour.
fn backoff(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    (30_i64 << doublings).min(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        let waits: Vec<i64> = (1..=8).map(backoff).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600]);
    }

    #[test]
    fn the_password_is_never_printed() {
        let config = SmtpConfig {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            username: Some("tollgate".into()),
            password: Some("hunter2".into()),
            from: "no-reply@example.com".into(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && printed.contains("<redacted>"), "{printed}");
    }
}

//! The outbox delivered through a real SMTP relay (`smtp-server` on
//! loopback, requiring credentials): mail goes out from the configured
//! sender with what the outbox holds, a token delivered by mail works, and
//! a recipient the relay refuses for good fails without retries; the CLI
//! shows each mail's status.

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::{SmtpServer, Tollgate, temp_dir};

/// Polls the outbox CLI until the mail to `to` has a status starting with `status`.
fn wait_for_status(tg: &Tollgate, to: &str, status: &str) -> String {
    let started = Instant::now();
    loop {
        let outbox = String::from_utf8_lossy(&tg.cli(&["outbox", "--to", to]).stdout).into_owned();
        if outbox.contains(&format!("Status: {status}")) {
            return outbox;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no `{status}` mail to {to}: {outbox}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn the_outbox_goes_out_through_the_smtp_relay() {
    let mut smtp = SmtpServer::start(&json!({
        "username": "tollgate", "password": "relay-secret", "reject": ["bounce@mail.test"],
    }));
    let port = smtp.port.to_string();
    let tg = Tollgate::start_with(
        temp_dir("mail"),
        &[
            ("TOLLGATE_SMTP_HOST", "127.0.0.1"),
            ("TOLLGATE_SMTP_PORT", port.as_str()),
            ("TOLLGATE_SMTP_TLS", "none"),
            ("TOLLGATE_SMTP_USERNAME", "tollgate"),
            ("TOLLGATE_SMTP_PASSWORD", "relay-secret"),
            ("TOLLGATE_SMTP_FROM", "Tollgate <no-reply@tollgate.test>"),
        ],
    );

    // Signing up queues the verification mail; the relay delivers it.
    let owner = tg.signup_and_login("ann@mail.test", "Mail").await;
    let mail = smtp.next_mail(Duration::from_secs(20)).expect("the verification mail is delivered");
    assert_eq!(mail["to"], json!(["ann@mail.test"]));
    assert_eq!(mail["from"], json!("no-reply@tollgate.test"));
    assert_eq!(mail["user"], json!("tollgate"), "sent after AUTH with the configured credentials");
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: Confirm your email address"), "{data}");
    assert!(data.contains("From: Tollgate <no-reply@tollgate.test>"), "{data}");
    let queued = tg.mailed_token("ann@mail.test", "tgv_");
    assert!(data.contains(&queued), "the mail carries the outbox's token: {data}");
    wait_for_status(&tg, "ann@mail.test", "sent");
    // The token as delivered proves the mailbox.
    let token = owner["access_token"].as_str().unwrap();
    let (status, body) = tg.send("POST", "/api/v1/me/verify-email", Some(token), Some(json!({"token": queued}))).await;
    assert_eq!((status, body["user"]["email_verified"].as_bool()), (200, Some(true)), "{body}");

    // A recipient the relay refuses for good: failed once, not retried.
    let tenant = owner["tenant"]["id"].as_str().unwrap();
    let (status, body) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/invitations"),
            Some(token),
            Some(json!({"email": "bounce@mail.test", "role": "member"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let outbox = wait_for_status(&tg, "bounce@mail.test", "failed");
    assert!(outbox.contains("550"), "{outbox}");
    // Mail to others still flows.
    let (status, _) = tg
        .send(
            "POST",
            &format!("/api/v1/tenants/{tenant}/invitations"),
            Some(token),
            Some(json!({"email": "bob@mail.test", "role": "member"})),
        )
        .await;
    assert_eq!(status, 201);
    let mail = smtp.next_mail(Duration::from_secs(20)).expect("the invitation is delivered");
    assert_eq!(mail["to"], json!(["bob@mail.test"]));
}

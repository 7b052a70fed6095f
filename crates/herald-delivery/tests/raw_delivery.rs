//! A message received over SMTP, stored in a real SQLite database, claimed by
//! the worker and sent to the test SMTP server: the envelope sender is the
//! provider's, the header section changes only in the sender's fields, and
//! the body arrives byte for byte.

use std::sync::Arc;

use herald_core::*;
use herald_delivery::WorkerConfig;
use herald_store::*;
use herald_testsmtp::TestSmtpServer;

mod common;
use common::{DEADLINE, worker};

/// The header section as the SMTP listener stores it: its `Received:` first.
const HEAD: &[u8] = b"Received: from app.example ([192.0.2.7])\r\n\tby herald with ESMTPSA; Mon, 30 Nov 2026 18:00:00 +0000\r\nReturn-Path: <app@app.example>\r\nFrom: =?utf-8?q?Backup_J=C3=B6b?= <app@app.example>\r\nTo: Ops <ops@example.com>\r\nBcc: hidden@example.com\r\nSubject: Backup done\r\nDate: Mon, 30 Nov 2026 17:59:59 +0000\r\nMessage-ID: <42@app.example>\r\nContent-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: 8bit\r\n";

/// A body a re-encoding would change: Latin-1 bytes, a NUL, lines that
/// start with a dot or `From `, a line of 990 octets, no final line break
/// after the last empty line.
fn body() -> Vec<u8> {
    let mut body = b"\r\nSicherung abgeschlossen: 12 Dateien, 0 Fehler. Gr\xfc\xdfe\x00\r\n.hidden\r\n..\r\nFrom here on\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'=', 990));
    body.extend_from_slice(b"\r\n\r\n");
    body
}

fn received(tenant: TenantId) -> NewMessage {
    let mut raw = HEAD.to_vec();
    raw.extend(body());
    NewMessage {
        text: None,
        to: vec![Mailbox::parse("Ops <ops@example.com>").unwrap()],
        bcc: vec![EmailAddress::parse("hidden@example.com").unwrap()],
        origin: Origin::Smtp(SmtpOrigin {
            credential_id: None,
            connector_id: None,
            client_addr: "192.0.2.7".into(),
        }),
        raw: Some(raw),
        ..common::message(tenant, "ops@example.com", "Backup done")
    }
}

#[tokio::test]
async fn a_message_received_over_smtp_is_sent_as_received_but_for_the_senders_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("herald.db")).unwrap());
    let tenant = store
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme".into())
        .await
        .unwrap();
    let id = store.submit(received(tenant.id)).await.unwrap().id;

    let smtp = TestSmtpServer::start().await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(
        worker(
            store.clone(),
            &smtp,
            Some("Herald"),
            WorkerConfig::default(),
        )
        .run(shutdown),
    );
    let sent = smtp.wait_for_messages(1, DEADLINE).await;
    let view = herald_testkit::eventually("the attempts recorded", DEADLINE, || async {
        let view = store.message(tenant.id, id).await.unwrap();
        view.recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Sent)
            .then_some(view)
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();

    assert_eq!(sent.len(), 1);
    let message = &sent[0];
    assert_eq!(message.mail_from, "herald@example.com");
    let mut rcpt = message.rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["hidden@example.com", "ops@example.com"]);

    let mut expected = b"Received: from app.example ([192.0.2.7])\r\n\tby herald with ESMTPSA; Mon, 30 Nov 2026 18:00:00 +0000\r\nFrom: Herald <herald@example.com>\r\nReply-To: Backup =?utf-8?q?J=C3=B6b?= <app@app.example>\r\nTo: Ops <ops@example.com>\r\nSubject: Backup done\r\nDate: Mon, 30 Nov 2026 17:59:59 +0000\r\nMessage-ID: <42@app.example>\r\nContent-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: 8bit\r\n".to_vec();
    expected.extend(body());
    assert_eq!(
        message.data,
        expected,
        "{}",
        String::from_utf8_lossy(&message.data)
    );
    for recipient in &view.recipients {
        assert_eq!(
            recipient.attempts[0].sender_policy.as_deref(),
            Some("fixed, reply-to the original From")
        );
    }
}

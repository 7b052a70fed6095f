//! End-to-end delivery: configuration over HTTP, messages over SMTP into the test server,
//! and what the attempts record when the server defers, refuses or drops the connection.

use herald_testsmtp::{Action, Command, Rule, ServerConfig, TestSmtpServer};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn delivers_three_messages_through_the_tenants_provider() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;

    let mut ids = Vec::new();
    for i in 1..=3 {
        let id = app
            .submit(&acme, json!({"to": [format!("user{i}@acme.example")], "subject": format!("Alert {i}"), "text": "disk full"}))
            .await;
        ids.push(id);
    }

    let received = smtp.wait_for_messages(3, DEADLINE).await;
    assert_eq!(received.len(), 3);
    for i in 1..=3 {
        let to = format!("user{i}@acme.example");
        let m = received
            .iter()
            .find(|m| m.rcpt_to == vec![to.clone()])
            .unwrap_or_else(|| panic!("no message for {to}"));
        assert_eq!(m.mail_from, "alerts@acme.example");
        assert_eq!(
            m.header("Subject").as_deref(),
            Some(format!("Alert {i}").as_str())
        );
        assert_eq!(
            m.header("From").as_deref(),
            Some("Acme Alerts <alerts@acme.example>")
        );
        assert_eq!(m.header("To").as_deref(), Some(format!("<{to}>").as_str()));
    }
    for id in &ids {
        let message = app.wait_for_status(&acme, id, "sent").await;
        let attempt = first_attempt_of(&message);
        assert_eq!(attempt["code"], 250, "{message}");
        assert_eq!(attempt["outcome"], "sent");
        assert_eq!(attempt["server"], format!("127.0.0.1:{}", smtp.port()));
        assert!(
            attempt["response"].as_str().unwrap().starts_with("250"),
            "{attempt}"
        );
    }
    // Nothing beyond the three was sent.
    assert_eq!(smtp.messages().len(), 3);
}

#[tokio::test]
async fn a_message_without_recipient_goes_to_the_fallback_recipient() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;

    let id = app
        .submit(&acme, json!({"subject": "No recipient", "text": "x"}))
        .await;
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].rcpt_to, vec!["ops@acme.example".to_owned()]);
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(message["used_fallback"], true);
    assert_eq!(message["recipients"][0]["address"], "ops@acme.example");
}

#[tokio::test]
async fn without_a_provider_mail_lands_in_the_capture_mailbox() {
    let (app, acme) = app_with_acme().await;

    let id = app
        .submit(&acme, json!({"subject": "Hello", "text": "first message"}))
        .await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(message["used_fallback"], true);
    assert_eq!(
        message["recipients"][0]["address"],
        "fallback@herald.localhost"
    );
    assert_eq!(message["recipients"][0]["attempts"][0]["server"], "capture");

    let (_, captured) = app.get_as_sender(&acme, "captured").await;
    let first = &captured["messages"][0];
    assert_eq!(first["message_id"], id.as_str());
    assert_eq!(first["recipients"], json!(["fallback@herald.localhost"]));
    assert!(
        first["content"]
            .as_str()
            .unwrap()
            .contains("Subject: Hello"),
        "{first}"
    );
}

#[tokio::test]
async fn a_451_defers_and_a_later_attempt_sends() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(reply(Command::Rcpt, 451, "4.3.0 mailbox busy, try later").times(1));
    let (app, acme) = app_sending_to(&smtp).await;

    let id = app.submit_to(&acme, "a@acme.example", "Retry me").await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 2, "{message}");
    assert_eq!(attempts[0]["outcome"], "deferred");
    assert_eq!(attempts[0]["code"], 451);
    assert_eq!(attempts[0]["enhanced_code"], "4.3.0");
    assert_eq!(attempts[0]["step"], "rcpt");
    assert_eq!(attempts[0]["response"], "451 4.3.0 mailbox busy, try later");
    assert_eq!(attempts[1]["outcome"], "sent");
    assert_eq!(attempts[1]["code"], 250);
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_550_fails_one_recipient_with_the_servers_words_and_not_the_others() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(
        reply(
            Command::Rcpt,
            550,
            "5.1.1 <gone@acme.example>: user unknown",
        )
        .matching("gone@"),
    );
    let (app, acme) = app_sending_to(&smtp).await;

    let id = app
        .submit(&acme, json!({"to": ["gone@acme.example", "here@acme.example"], "subject": "Two", "text": "x"}))
        .await;
    let message = app.wait_for_status(&acme, &id, "failed").await;
    let recipients = message["recipients"].as_array().unwrap();
    let gone = recipients
        .iter()
        .find(|r| r["address"] == "gone@acme.example")
        .unwrap();
    let here = recipients
        .iter()
        .find(|r| r["address"] == "here@acme.example")
        .unwrap();
    assert_eq!(gone["status"], "failed");
    assert_eq!(gone["attempts"][0]["code"], 550);
    assert_eq!(gone["attempts"][0]["enhanced_code"], "5.1.1");
    assert_eq!(
        gone["attempts"][0]["response"],
        "550 5.1.1 <gone@acme.example>: user unknown"
    );
    assert_eq!(
        gone["attempts"].as_array().unwrap().len(),
        1,
        "a 5xx is not retried"
    );
    assert_eq!(here["status"], "sent");
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received[0].rcpt_to, vec!["here@acme.example".to_owned()]);
}

#[tokio::test]
async fn a_connection_dropped_mid_data_is_retried() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(Rule::new(Command::Data, Action::DropMidData).times(1));
    let (app, acme) = app_sending_to(&smtp).await;

    let id = app.submit_to(&acme, "a@acme.example", "Dropped").await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 2, "{message}");
    assert_eq!(attempts[0]["outcome"], "deferred");
    assert_eq!(attempts[0]["step"], "data");
    assert!(attempts[0]["code"].is_null());
    assert!(
        attempts[0]["response"].as_str().unwrap().contains("closed"),
        "{}",
        attempts[0]
    );
    assert_eq!(attempts[1]["outcome"], "sent");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_421_greeting_defers_with_the_step_named() {
    let smtp = TestSmtpServer::start().await;
    smtp.script(reply(Command::Connect, 421, "4.3.2 service not available").times(1));
    let (app, acme) = app_sending_to(&smtp).await;

    let id = app.submit_to(&acme, "a@acme.example", "Greeting").await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    let first = first_attempt_of(&message);
    assert_eq!(first["outcome"], "deferred");
    assert_eq!(first["step"], "greeting");
    assert_eq!(first["code"], 421);
    assert_eq!(first["enhanced_code"], "4.3.2");
}

#[tokio::test]
async fn bodies_reach_the_server_as_crlf_text_dot_stuffed() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;

    let text = "line one\nbare cr\rhere\n.\nafter a lone dot\n.\r\nand\r\n.\r\n end";
    app.submit(
        &acme,
        json!({"to": ["a@acme.example"], "subject": "Dots", "text": text}),
    )
    .await;
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    let raw = &received[0].raw_data;
    // No bare CR or LF on the wire.
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\n' {
            assert_eq!(raw.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    let body = String::from_utf8(received[0].body()).unwrap();
    assert_eq!(
        body.trim_end(),
        "line one\r\nbare cr\r\nhere\r\n.\r\nafter a lone dot\r\n.\r\nand\r\n.\r\n end"
    );
    // Every dot line was stuffed on the wire.
    assert!(String::from_utf8_lossy(raw).contains("\r\n..\r\nafter a lone dot"));
}

#[tokio::test]
async fn long_lines_are_encoded_within_the_rfc_5321_line_limit() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;

    let long = "word ".repeat(1000);
    app.submit(&acme, json!({"to": ["a@acme.example"], "subject": "Long", "text": long, "html": format!("<p>{long}</p>")})).await;
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    for line in received[0].raw_data.split(|b| *b == b'\n') {
        assert!(
            line.len() <= 999,
            "a line of {} octets went on the wire",
            line.len()
        );
    }
}

#[tokio::test]
async fn a_batch_answers_each_message_and_delivers_the_accepted_ones() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;

    let mut messages: Vec<serde_json::Value> = (0..20)
        .map(|i| json!({"to": [format!("u{i}@acme.example")], "subject": format!("batch {i}"), "text": "x"}))
        .collect();
    messages[3] = json!({"to": ["not an address"], "subject": "bad", "text": "x"});
    messages[7] = json!({"to": ["a@acme.example"], "subject": "bad", "text": "x", "priority": 1});
    let (status, answer) = app.submit_batch(&acme, messages).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 18);
    assert_eq!(answer["refused"], 2);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    assert_eq!(
        results[3]["error"]["type"],
        "urn:herald:problem:invalid-fields"
    );
    assert_eq!(results[3]["error"]["errors"][0]["field"], "to[0]");
    assert_eq!(
        results[7]["error"]["type"],
        "urn:herald:problem:malformed-request"
    );
    assert!(
        results[7]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("priority")
    );
    assert!(results.iter().enumerate().all(|(i, r)| r["index"] == i));
    let received = smtp.wait_for_messages(18, DEADLINE).await;
    assert_eq!(received.len(), 18);
    assert_eq!(app.message_count(&acme).await, 18);

    let too_many: Vec<serde_json::Value> = (0..1001)
        .map(|_| json!({"subject": "x", "text": "x"}))
        .collect();
    let (status, problem) = app.submit_batch(&acme, too_many).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "messages");
    assert_eq!(app.message_count(&acme).await, 18);
}

#[tokio::test]
async fn names_quoted_local_parts_and_internationalised_addresses_reach_the_server() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;

    let to = [
        "Ada Lovelace <ada@acme.example>",
        "\"john doe\"@acme.example",
        "\"Müller, Jörg\" <jörg@münchen.example>",
    ];
    let id = app
        .submit(
            &acme,
            json!({"to": to, "cc": ["用户@例子.广告"], "subject": "Names", "text": "x"}),
        )
        .await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    let addresses: Vec<&str> = message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [
            "ada@acme.example",
            "\"john doe\"@acme.example",
            "jörg@münchen.example",
            "用户@例子.广告"
        ]
    );
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    // The envelope has the bare addresses, with SMTPUTF8 for the non-ASCII ones.
    assert_eq!(received[0].rcpt_to, addresses);
    let commands = smtp.commands();
    let mail = commands.iter().find(|c| c.starts_with("MAIL")).unwrap();
    // The server advertises SIZE, so the size is declared too (RFC 1870).
    assert!(
        mail.starts_with("MAIL FROM:<alerts@acme.example> SIZE=") && mail.ends_with(" SMTPUTF8"),
        "{mail}"
    );
    // The header shows the names.
    let header = received[0].header("To").unwrap();
    assert!(header.contains("Ada Lovelace"), "{header}");
    assert!(header.contains("<ada@acme.example>"), "{header}");
    assert!(header.contains("\"john doe\"@acme.example"), "{header}");
    assert!(header.contains("jörg@münchen.example"), "{header}");
    let cc = received[0].header("Cc").unwrap();
    assert!(cc.contains("用户@例子.广告"), "{cc}");
}

#[tokio::test]
async fn an_internationalised_address_fails_at_once_where_the_server_lacks_smtputf8() {
    let smtp = TestSmtpServer::start_with(ServerConfig::new().without_smtputf8()).await;
    let (app, acme) = app_sending_to(&smtp).await;

    let id = app.submit_to(&acme, "jörg@acme.example", "x").await;
    let message = app.wait_for_status(&acme, &id, "failed").await;
    let attempts = attempts_of(&message);
    assert_eq!(attempts.len(), 1, "retrying cannot help: {message}");
    let response = attempts[0]["response"].as_str().unwrap();
    assert!(response.contains("SMTPUTF8"), "{response}");
    assert!(smtp.commands().iter().all(|c| !c.starts_with("MAIL")));

    // ASCII mail still goes to the same server, without the parameter.
    let id = app.submit_to(&acme, "joerg@acme.example", "x").await;
    app.wait_for_status(&acme, &id, "sent").await;
    let commands = smtp.commands();
    let mail = commands.iter().find(|c| c.starts_with("MAIL")).unwrap();
    assert!(
        mail.starts_with("MAIL FROM:<alerts@acme.example> SIZE=") && !mail.contains("SMTPUTF8"),
        "{mail}"
    );
}

#[tokio::test]
async fn an_address_as_helo_name_is_sent_as_an_address_literal() {
    // RFC 5321 4.1.3: a client named by its address says EHLO [a.b.c.d], or
    // [IPv6:…]; a bare address is not a valid EHLO argument.
    for (helo, said) in [
        ("192.0.2.10", "EHLO [192.0.2.10]"),
        ("[192.0.2.11]", "EHLO [192.0.2.11]"),
        ("2001:db8::1", "EHLO [IPv6:2001:db8::1]"),
        ("herald.acme.example", "EHLO herald.acme.example"),
    ] {
        let smtp = TestSmtpServer::start().await;
        let app = spawn_app().await;
        let entry = json!({"name": "relay", "host": "127.0.0.1", "port": smtp.port(),
                           "security": "none", "helo_name": helo});
        let acme = app.configured_tenant("acme", entry, None).await;
        let id = app.submit_to(&acme, "user@acme.example", "Hello").await;
        app.wait_for_status(&acme, &id, "sent").await;
        let commands = smtp.commands();
        assert!(
            commands.iter().any(|c| c == said),
            "helo_name {helo:?}: expected {said:?} among {commands:?}"
        );
    }
}

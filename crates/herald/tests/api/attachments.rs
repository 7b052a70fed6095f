//! Attachments on API mail: delivered byte for byte with their names (inline
//! images beside the HTML), listed in the message view, and every invalid
//! one refused by field and rule with nothing stored.

use base64::Engine;
use herald_testsmtp::TestSmtpServer;
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every byte value, NUL and 0xff included, and then some.
fn binary() -> Vec<u8> {
    (0..=255u8).cycle().take(5000).collect()
}

/// Not a real image, but bytes a text decoder would mangle.
fn image() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    png.extend((0..2000u32).map(|i| (i * 7 % 256) as u8));
    png
}

/// A valid message with `attachments`, text and HTML.
fn with(attachments: Value) -> Value {
    json!({
        "to": ["ops@acme.example"],
        "subject": "Monthly report",
        "text": "The report is attached.",
        "html": "<p><img src=\"cid:logo@acme.example\"> The report is attached.</p>",
        "attachments": attachments,
    })
}

#[tokio::test]
async fn attachments_and_an_inline_image_arrive_byte_for_byte_with_their_names() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let (binary, image) = (binary(), image());
    let id = app
        .submit(
            &acme,
            with(json!([
                {"filename": "Bericht für Jürgen (März).bin", "content_type": "application/octet-stream",
                 "content_base64": b64(&binary)},
                {"filename": "logo.png", "content_type": "image/png",
                 "content_base64": b64(&image), "content_id": "logo@acme.example"},
            ])),
        )
        .await;

    let received = smtp.wait_for_messages(1, DEADLINE).await;
    let data = &received[0].data;
    let parsed = MessageParser::new().parse(data).expect("a message");
    assert!(
        parsed
            .content_type()
            .is_some_and(|ct| ct.c_type == "multipart" && ct.c_subtype.as_deref() == Some("mixed")),
        "{}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(
        parsed.body_text(0).as_deref().map(str::trim_end),
        Some("The report is attached.")
    );
    assert!(
        parsed
            .body_html(0)
            .is_some_and(|h| h.contains("cid:logo@acme.example"))
    );
    let files: Vec<_> = parsed.attachments().collect();
    assert_eq!(files.len(), 2, "{}", String::from_utf8_lossy(data));
    let file = files
        .iter()
        .find(|p| p.content_id().is_none())
        .expect("the attachment");
    assert_eq!(
        file.attachment_name(),
        Some("Bericht für Jürgen (März).bin")
    );
    assert!(file.is_content_type("application", "octet-stream"));
    assert_eq!(
        file.content_disposition().map(|d| d.c_type.as_ref()),
        Some("attachment")
    );
    assert_eq!(file.contents(), &binary[..]);
    let inline = files
        .iter()
        .find(|p| p.content_id().is_some())
        .expect("the inline image");
    assert_eq!(inline.content_id(), Some("logo@acme.example"));
    assert_eq!(inline.attachment_name(), Some("logo.png"));
    assert!(inline.is_content_type("image", "png"));
    assert_eq!(
        inline.content_disposition().map(|d| d.c_type.as_ref()),
        Some("inline")
    );
    assert_eq!(inline.contents(), &image[..]);
    // The inline image sits beside the HTML, which refers to it.
    let text = String::from_utf8_lossy(data);
    assert!(
        text.contains("Content-Type: multipart/related; type=\"text/html\""),
        "{text}"
    );
    assert!(
        text.contains("Content-ID: <logo@acme.example>\r\n"),
        "{text}"
    );

    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(
        message["attachments"],
        json!([
            {"filename": "Bericht für Jürgen (März).bin", "content_type": "application/octet-stream",
             "size": binary.len()},
            {"filename": "logo.png", "content_type": "image/png", "content_id": "logo@acme.example",
             "size": image.len()},
        ]),
        "{message}"
    );
}

#[tokio::test]
async fn each_invalid_attachment_is_refused_by_field_and_rule_and_nothing_is_stored() {
    let (app, acme) = app_with_acme().await;
    let file = |change: Value| {
        let mut file = json!({"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="});
        for (key, value) in change.as_object().unwrap() {
            file[key] = value.clone();
        }
        file
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            file(json!({"filename": ""})),
            "filename",
            "1 to 255 characters",
        ),
        (
            file(json!({"filename": "x".repeat(256)})),
            "filename",
            "1 to 255 characters",
        ),
        (
            file(json!({"filename": "../etc/passwd"})),
            "filename",
            "/ or \\",
        ),
        (file(json!({"filename": "a\\b.txt"})), "filename", "/ or \\"),
        (
            file(json!({"filename": "a\r\nBcc: x.txt"})),
            "filename",
            "control characters",
        ),
        (
            file(json!({"filename": "a\u{0}.txt"})),
            "filename",
            "control characters",
        ),
        (
            file(json!({"content_type": "text"})),
            "content_type",
            "type/subtype",
        ),
        (
            file(json!({"content_type": "text/plain; charset=utf-8"})),
            "content_type",
            "without parameters",
        ),
        (
            file(json!({"content_type": "text/pl ain"})),
            "content_type",
            "token characters",
        ),
        (
            file(json!({"content_type": "text/plain\r\nBcc: x@y"})),
            "content_type",
            "type/subtype",
        ),
        (
            file(json!({"content_base64": "not base64!"})),
            "content_base64",
            "must be base64 (RFC 4648",
        ),
        (
            file(json!({"content_base64": "aGVsbG8"})),
            "content_base64",
            "padded",
        ),
        (
            file(json!({"content_base64": "aGVs\nbG8="})),
            "content_base64",
            "no line breaks",
        ),
        (
            file(json!({"content_base64": "aGVsbG8_"})),
            "content_base64",
            "standard alphabet",
        ),
        (
            file(json!({"content_id": ""})),
            "content_id",
            "1 to 200 printable ASCII",
        ),
        (
            file(json!({"content_id": "<logo@acme.example>"})),
            "content_id",
            "< or >",
        ),
        (
            file(json!({"content_id": "logo @acme"})),
            "content_id",
            "without spaces",
        ),
        (
            file(json!({"content_id": "x".repeat(201)})),
            "content_id",
            "1 to 200",
        ),
    ];
    for (attachment, field, rule) in &cases {
        let (status, body) = app
            .post_as_sender(&acme, "messages", with(json!([attachment])))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{attachment}: {body}"
        );
        let field = format!("attachments[0].{field}");
        let errors = field_errors(&body);
        assert!(
            errors.iter().any(|(f, r)| *f == field && r.contains(rule)),
            "{attachment}: expected {field} ({rule}) in {errors:?}"
        );
        assert!(body["detail"].as_str().unwrap().contains(&field), "{body}");
    }

    // An inline part needs HTML to show it, and content ids must differ.
    let mut text_only = with(json!([file(json!({"content_id": "logo@acme.example"}))]));
    text_only.as_object_mut().unwrap().remove("html");
    let (status, body) = app.post_as_sender(&acme, "messages", text_only).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_errors(&body),
        vec![(
            "attachments[0].content_id".to_owned(),
            "makes an inline part of the html, and the message has no html".to_owned()
        )]
    );
    let twice = file(json!({"content_id": "logo@acme.example"}));
    let (status, body) = app
        .post_as_sender(&acme, "messages", with(json!([twice, twice])))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_errors(&body),
        vec![(
            "attachments[1].content_id".to_owned(),
            "must be unique among the attachments".to_owned()
        )]
    );

    // At most 100 files.
    let many: Vec<Value> = (0..101).map(|_| file(json!({}))).collect();
    let (status, body) = app
        .post_as_sender(&acme, "messages", with(json!(many)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_errors(&body),
        vec![(
            "attachments".to_owned(),
            "must hold at most 100 files (got 101)".to_owned()
        )]
    );

    // Every invalid field of every file is named in one answer.
    let (status, body) = app
        .post_as_sender(
            &acme,
            "messages",
            with(json!([
                file(json!({"filename": ""})),
                file(json!({"content_type": "x", "content_base64": "!"}))
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = error_fields(&body);
    assert_eq!(
        fields,
        [
            "attachments[0].filename",
            "attachments[1].content_type",
            "attachments[1].content_base64"
        ]
    );

    // An unknown field in a file is refused too.
    let (status, body) = app
        .post_as_sender(
            &acme,
            "messages",
            with(json!([file(json!({"content": "hello"}))])),
        )
        .await;
    assert!(status.is_client_error(), "{status}: {body}");

    assert_eq!(app.message_count(&acme).await, 0);
}

#[tokio::test]
async fn attachments_count_against_the_message_size_decoded() {
    let app = spawn_app_with(|s| s.limits.max_message_bytes = 1000).await;
    let acme = app.tenant("acme").await;
    let message = |size: usize| {
        json!({
            "to": ["ops@acme.example"], "subject": "Sized", "text": "x".repeat(100),
            "attachments": [{"filename": "a.bin", "content_type": "application/octet-stream",
                             "content_base64": b64(&vec![0xffu8; size])}],
        })
    };
    // Base64 of 900 bytes is 1,200 characters; only the decoded size counts.
    let (status, body) = app.post_as_sender(&acme, "messages", message(900)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = app.post_as_sender(&acme, "messages", message(901)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_errors(&body),
        vec![(
            "attachments".to_owned(),
            "with text and html must be at most 1000 bytes, counted decoded (got 1001)".to_owned()
        )]
    );
    assert_eq!(app.message_count(&acme).await, 1);
}

#[tokio::test]
async fn a_batch_refuses_only_the_message_with_a_bad_attachment() {
    let (app, acme) = app_with_acme().await;
    let good = with(json!([
        {"filename": "a.bin", "content_type": "application/octet-stream", "content_base64": b64(&binary())}
    ]));
    let bad = with(json!([
        {"filename": "b.bin", "content_type": "application/octet-stream", "content_base64": "%%%"}
    ]));
    let (status, body) = app.submit_batch(&acme, vec![good, bad]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["refused"], 1, "{body}");
    let results = body["results"].as_array().unwrap();
    let id = results[0]["id"].as_str().expect("the first is accepted");
    assert_eq!(
        field_errors(&results[1]["error"]),
        vec![(
            "attachments[0].content_base64".to_owned(),
            "must be base64 (RFC 4648: the standard alphabet, padded, no line breaks)".to_owned()
        )]
    );
    assert_eq!(app.message_count(&acme).await, 1);
    let message = app.message(&acme, id).await;
    assert_eq!(message["attachments"][0]["size"], binary().len());
}

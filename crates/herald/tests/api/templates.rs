//! Templates over the API: syntax checked when saved (422 with the part, line
//! and column), rendered at submission with strict variables, HTML escaped in
//! the html part only, versions recorded on the message, previews; and
//! scheduled messages (`send_at`) with their cancellation.

use herald_core::timestamp::{now_ms, parse_rfc3339, rfc3339};
use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Creates a template; returns the answer.
async fn create_template(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    app.create_as_admin(tenant, "templates", body).await
}

fn disk_full() -> Value {
    json!({
        "name": "disk-full",
        "description": "A volume ran out of space",
        "subject": "Disk {{ volume }} is full on {{ host.name }}",
        "text": "Hello {{ who }},\n{{ volume }} <b>& co</b> is full.\n",
        "html": "<p>Hello {{ who }},</p>\n<p>{{ volume }} is full: {{ note }}</p>\n",
    })
}

fn disk_data() -> Value {
    json!({"volume": "/var", "host": {"name": "db1"}, "who": "Ops", "note": "<b>&</b>"})
}

#[tokio::test]
async fn a_syntax_error_is_refused_with_its_part_line_and_column() {
    let (app, acme) = app_with_acme().await;
    let (status, answer) = app
        .post_as_admin(
            &acme,
            "templates",
            json!({"name": "broken", "subject": "ok", "html": "<p>fine</p>\n<p>{{ name </p>\n"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let errors = field_errors(&answer);
    assert_eq!(errors.len(), 1, "{answer}");
    let (field, rule) = &errors[0];
    assert_eq!(field, "html");
    assert!(rule.contains("line 2"), "{rule}");
    assert!(rule.contains("column"), "{rule}");
    // Nothing was stored.
    let (_, list) = app.get_as_admin(&acme, "templates").await;
    assert_eq!(list, json!([]));

    // A change that breaks a part is refused too, and the template keeps its version.
    let created = create_template(&app, &acme, disk_full()).await;
    let id = created["id"].as_str().unwrap();
    let (status, answer) = app
        .patch_as_admin(
            &acme,
            &format!("templates/{id}"),
            json!({"subject": "{% if x %}"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(field_errors(&answer)[0].0, "subject");
    let (_, kept) = app.get_as_admin(&acme, &format!("templates/{id}")).await;
    assert_eq!(kept["version"], 1);
}

#[tokio::test]
async fn names_are_unique_and_every_change_is_a_new_version() {
    let (app, acme) = app_with_acme().await;
    let created = create_template(&app, &acme, disk_full()).await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["name"], "disk-full");
    let (status, answer) = app.post_as_admin(&acme, "templates", disk_full()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");

    let id = created["id"].as_str().unwrap();
    let (status, changed) = app
        .patch_as_admin(
            &acme,
            &format!("templates/{id}"),
            json!({"text": "Short: {{ volume }}"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["text"], "Short: {{ volume }}");
    assert_eq!(
        changed["html"], created["html"],
        "what was not given is kept"
    );
    // A blank html removes it; a template keeps at least one part.
    let (status, changed) = app
        .patch_as_admin(&acme, &format!("templates/{id}"), json!({"html": ""}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert!(changed["html"].is_null());
    assert_eq!(changed["version"], 3);
    // A change that changes nothing is no new version.
    for same in [json!({}), json!({"text": "Short: {{ volume }}"})] {
        let (status, answer) = app
            .patch_as_admin(&acme, &format!("templates/{id}"), same)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["version"], 3, "{answer}");
    }
    let (status, answer) = app
        .patch_as_admin(&acme, &format!("templates/{id}"), json!({"text": ""}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    // Senders may read and use templates, not change them.
    let (status, _) = app.get_as_sender(&acme, &format!("templates/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post_as_sender(&acme, "templates", disk_full()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = app.delete_as_admin(&acme, &format!("templates/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get_as_admin(&acme, &format!("templates/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_preview_renders_with_data_and_escapes_html_only() {
    let (app, acme) = app_with_acme().await;
    let id = create_template(&app, &acme, disk_full()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, rendered) = app
        .post_as_sender(
            &acme,
            &format!("templates/{id}/preview"),
            json!({"data": disk_data()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rendered}");
    assert_eq!(rendered["subject"], "Disk /var is full on db1");
    assert_eq!(rendered["text"], "Hello Ops,\n/var <b>& co</b> is full.\n");
    let html = rendered["html"].as_str().unwrap();
    assert!(html.contains("is full: &lt;b&gt;&amp;&lt;/b&gt;"), "{html}");
    assert!(html.starts_with("<p>Hello Ops,</p>"), "{html}");

    // A variable the data lacks is named.
    let (status, answer) = app
        .post_as_sender(
            &acme,
            &format!("templates/{id}/preview"),
            json!({"data": {"volume": "/var", "who": "Ops", "note": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let errors = field_errors(&answer);
    assert_eq!(errors[0].0, "data", "{answer}");
    assert!(errors[0].1.contains("host"), "{answer}");
}

/// Submits `message`, which the node must refuse (422): the first field
/// error's field and rule, and the answer for failure messages.
async fn refused(app: &TestApp, tenant: &TestTenant, message: Value) -> (String, String, Value) {
    let (status, answer) = app.post_as_sender(tenant, "messages", message).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (field, rule) = field_errors(&answer).remove(0);
    (field, rule, answer)
}

#[tokio::test]
async fn a_message_names_a_template_and_a_missing_variable_refuses_it() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    create_template(&app, &acme, disk_full()).await;

    let mut data = disk_data();
    data.as_object_mut().unwrap().remove("who");
    let (field, rule, answer) = refused(
        &app,
        &acme,
        json!({"to": ["ops@acme.example"], "template": "disk-full", "data": data}),
    )
    .await;
    assert_eq!(field, "data", "{answer}");
    assert!(rule.contains("who"), "{answer}");

    // A template and content of the message's own are one too many.
    let (field, _, answer) = refused(
        &app,
        &acme,
        json!({"to": ["ops@acme.example"], "template": "disk-full", "data": disk_data(), "subject": "mine"}),
    )
    .await;
    assert_eq!(field, "subject", "{answer}");
    let (field, _, answer) = refused(
        &app,
        &acme,
        json!({"to": ["ops@acme.example"], "template": "no-such", "data": {}}),
    )
    .await;
    assert_eq!(field, "template", "{answer}");
    // Data that is not an object is named once, with its rule.
    let (field, rule, answer) = refused(
        &app,
        &acme,
        json!({"to": ["ops@acme.example"], "template": "disk-full", "data": [1]}),
    )
    .await;
    assert_eq!(
        (field.as_str(), rule.as_str()),
        ("data", "must be a JSON object"),
        "{answer}"
    );
    // A subject the template renders too long is the template's fault:
    // the message gave no subject.
    let mut long = disk_data();
    long["volume"] = json!("v".repeat(1_000));
    let (field, rule, answer) = refused(
        &app,
        &acme,
        json!({"to": ["ops@acme.example"], "template": "disk-full", "data": long}),
    )
    .await;
    assert_eq!(field, "template", "{answer}");
    assert!(
        rule.starts_with("renders a subject that is not valid"),
        "{answer}"
    );
    assert_eq!(app.message_count(&acme).await, 0, "nothing was stored");

    let id = app
        .submit(
            &acme,
            json!({"to": ["ops@acme.example"], "template": "disk-full", "data": disk_data()}),
        )
        .await;
    let message = app.wait_for_status(&acme, &id, "sent").await;
    assert_eq!(message["subject"], "Disk /var is full on db1");
    assert_eq!(message["template"]["version"], 1);
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    let data = String::from_utf8_lossy(&received[0].data).into_owned();
    assert!(
        data.contains("/var <b>& co</b> is full."),
        "text is not escaped: {data}"
    );
    assert!(
        data.contains("&lt;b&gt;&amp;&lt;/b&gt;"),
        "html is escaped: {data}"
    );
}

#[tokio::test]
async fn a_scheduled_message_waits_for_its_time_and_keeps_what_it_was_rendered_to() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let template = create_template(&app, &acme, disk_full()).await;
    let template_id = template["id"].as_str().unwrap();

    let send_at = now_ms() + 3_000;
    let id = app
        .submit(
            &acme,
            json!({
                "to": ["ops@acme.example"], "template": template_id, "data": disk_data(),
                "send_at": rfc3339(send_at),
            }),
        )
        .await;
    let message = app.message(&acme, &id).await;
    assert_eq!(message["status"], "scheduled", "{message}");
    assert_eq!(message["recipients"][0]["status"], "scheduled");
    assert_eq!(
        parse_rfc3339(message["send_at"].as_str().unwrap()).unwrap(),
        send_at
    );
    let (_, page) = app.get_as_sender(&acme, "messages?status=scheduled").await;
    assert_eq!(page["messages"][0]["id"], id.as_str(), "{page}");
    let (_, page) = app.get_as_sender(&acme, "messages?status=queued").await;
    assert_eq!(page["messages"], json!([]), "{page}");

    // The template changes while the message waits: the message keeps its content.
    let (status, changed) = app
        .patch_as_admin(
            &acme,
            &format!("templates/{template_id}"),
            json!({"subject": "Changed {{ volume }}", "text": "changed", "html": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert!(
        smtp.messages().is_empty(),
        "nothing is sent before its time"
    );

    let message = app.wait_for_status(&acme, &id, "sent").await;
    let attempt = first_attempt_of(&message);
    let sent_at = parse_rfc3339(attempt["at"].as_str().unwrap()).unwrap();
    assert!(
        sent_at >= send_at,
        "sent at {sent_at}, before its time {send_at}"
    );
    assert_eq!(message["template"]["version"], 1);
    let received = smtp.wait_for_messages(1, DEADLINE).await;
    assert_eq!(
        received[0].header("Subject").as_deref(),
        Some("Disk /var is full on db1")
    );
    let data = String::from_utf8_lossy(&received[0].data).into_owned();
    assert!(!data.contains("changed"), "{data}");
}

#[tokio::test]
async fn send_at_is_checked() {
    let (app, acme) = app_with_acme().await;
    for (send_at, rule) in [
        ("tomorrow", "RFC 3339"),
        (
            rfc3339(now_ms() + 400 * 24 * 3600 * 1000).as_str(),
            "a year",
        ),
    ] {
        let (status, answer) = app
            .post_as_sender(
                &acme,
                "messages",
                json!({"to": ["a@acme.example"], "subject": "s", "text": "t", "send_at": send_at}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let errors = field_errors(&answer);
        assert_eq!(errors[0].0, "send_at");
        assert!(errors[0].1.contains(rule), "{answer}");
    }
}

#[tokio::test]
async fn a_waiting_message_can_be_cancelled_and_one_being_sent_cannot() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let id = app
        .submit(
            &acme,
            json!({"to": ["a@acme.example", "b@acme.example"], "subject": "later", "text": "t",
                   "send_at": rfc3339(now_ms() + 3_600_000)}),
        )
        .await;
    let (status, cancelled) = app
        .call(
            reqwest::Method::DELETE,
            &tenant_path(&acme, &format!("messages/{id}")),
            Some(&acme.sender),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    for recipient in cancelled["recipients"].as_array().unwrap() {
        assert_eq!(recipient["status"], "cancelled");
        assert!(recipient["next_attempt_at"].is_null());
    }
    // A second cancellation finds it final.
    let (status, answer) = app.delete_as_admin(&acme, &format!("messages/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (_, page) = app.get_as_sender(&acme, "messages?status=cancelled").await;
    assert_eq!(page["messages"][0]["id"], id.as_str());
    let (_, audit) = app.get_as_admin(&acme, "audit").await;
    assert!(audit.to_string().contains("message.cancel"), "{audit}");

    // A message whose recipient is being sent (the server holds it at DATA) cannot be.
    smtp.script(Rule::new(Command::Data, Action::Stall));
    let sending = submit_until_each_reaches_data(&app, &acme, &smtp, 1).await;
    let (status, answer) = app
        .delete_as_admin(&acme, &format!("messages/{}", sending[0]))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("sending"),
        "{answer}"
    );
    // Another tenant's message is not found.
    let other = app.tenant("other").await;
    let (status, _) = app.delete_as_admin(&other, &format!("messages/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

//! The console's templates and schedules pages over plain HTTP: a template
//! written in its editor (a syntax error beside its part, with its line), its
//! preview (the HTML shown as escaped source, a missing variable named), a
//! schedule made from it with its next runs, turned off and on, run now into
//! a message whose page opens, refusals shown as notices, deletion, and who
//! may use these pages.

use reqwest::StatusCode;

use crate::console::{
    ADA_PASSWORD, GLOBEX_PASSWORD, console_with_two_tenants, heading, member_is_refused, unescaped,
};
use crate::console_http::{HttpSession, Page, listed};
use crate::helpers::OPERATOR;

const TEMPLATES: &str = "/t/acme/templates";
const SCHEDULES: &str = "/t/acme/schedules";

/// The new-template form's fields.
fn template_fields(html: &str) -> Vec<(&str, &str)> {
    vec![
        ("name", "welcome"),
        ("description", "The first message"),
        ("subject", "Welcome, {{ user.name }}"),
        ("text", "Hello {{ user.name }}"),
        ("html", html),
    ]
}

/// The new-schedule form's fields for acme's template `template`.
fn schedule_fields<'a>(cron: &'a str, template: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", "weekday"),
        ("cron", cron),
        ("timezone", "Europe/Berlin"),
        ("template", template),
        ("data", "{\"user\": {\"name\": \"Ada\"}}"),
        ("to", "ops@acme.example,\r\ndev@acme.example"),
        ("enabled", "on"),
    ]
}

/// A tenant administrator's template and schedule, from their forms to
/// their deletion, each change seen through the API.
#[tokio::test]
async fn a_tenant_administrator_writes_templates_and_schedules_in_the_console() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, TEMPLATES).await;
    let invalid = |html: &str, field: &str| html.contains(&format!("id=\"e-{field}\""));

    // Both pages are in the navigation.
    let html = admin.get_html(TEMPLATES).await;
    let text = unescaped(&html);
    assert!(
        text.contains("<a href=\"/t/acme/templates\" aria-current=\"page\">Templates</a>")
            && text.contains("<a href=\"/t/acme/schedules\" >Schedules</a>"),
        "{text}"
    );
    assert_eq!(
        admin.get(&format!("{TEMPLATES}/new")).await.status,
        StatusCode::OK
    );

    // A syntax error in the HTML: beside its field, with its line, what was typed kept.
    let broken = "<p>Hello</p>\n<p>{{ user.name }</p>";
    let page = admin.post(TEMPLATES, &template_fields(broken)).await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(invalid(&page.html, "html"), "{}", page.html);
    let text = page.text();
    assert!(text.contains("html: syntax error at line 2"), "{text}");
    assert!(text.contains("<p>{{ user.name }</p></textarea>"), "{text}");
    assert!(
        text.contains("value=\"Welcome, {{ user.name }}\""),
        "{text}"
    );
    assert!(listed(app, "templates").await.is_empty());

    // Saved: the editor of version 1.
    let markup = "<p>Hello <b>{{ user.name }}</b></p>";
    let Page {
        status, location, ..
    } = admin.post(TEMPLATES, &template_fields(markup)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let templates = listed(app, "templates").await;
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0]["html"], markup);
    let template_id = templates[0]["id"].as_str().unwrap().to_owned();
    let editor = format!("{TEMPLATES}/{template_id}");
    assert_eq!(location, format!("{editor}?done=template-added"));
    let page = admin.get(&location).await;
    assert!(page.html.contains("Template added"), "{}", page.html);
    let text = admin.get(TEMPLATES).await.text();
    assert!(
        text.contains("welcome") && text.contains("The first message"),
        "{text}"
    );

    // The preview: the HTML as escaped source (the data's markup escaped
    // by the template, then the whole escaped again by the page).
    let preview = format!("{editor}/preview");
    let page = admin
        .post(
            &preview,
            &[("data", "{\"user\": {\"name\": \"<Ada & co>\"}}")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let html = &page.html;
    assert!(
        html.contains(
            "<pre id=\"preview-html\">&lt;p&gt;Hello &lt;b&gt;&amp;lt;Ada &amp;amp; co&amp;gt;&lt;"
        ),
        "{html}"
    );
    assert!(
        !html.contains("<b>"),
        "no rendered markup on the page: {html}"
    );
    assert!(
        html.contains("<pre id=\"preview-text\">Hello &lt;Ada &amp; co&gt;</pre>"),
        "{html}"
    );
    assert!(
        html.contains("id=\"preview-subject\">Welcome, &lt;Ada &amp; co&gt;</dd>"),
        "{html}"
    );
    // Data without the variable: named beside the data, as typed.
    let page = admin.post(&preview, &[("data", "{\"other\": 1}")]).await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(invalid(&page.html, "data"), "{}", page.html);
    let text = page.text();
    assert!(text.contains("undefined variable user"), "{text}");
    assert!(text.contains("{\"other\": 1}</textarea>"), "{text}");
    let page = admin.post(&preview, &[("data", "[1, 2")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text().contains("must be JSON"), "{}", page.html);

    // A change is version 2.
    let mut changed = template_fields(markup);
    changed[2] = ("subject", "Hello again, {{ user.name }}");
    assert!(
        admin
            .post_redirected(&editor, &changed, &format!("{editor}?done=template-saved"))
            .await
            .html
            .contains("version 2")
    );
    assert_eq!(listed(app, "templates").await[0]["version"], 2);

    // A schedule: the template offered in the form, a bad expression beside its field.
    let new = format!("{SCHEDULES}/new");
    let html = admin.get_html(&new).await;
    assert!(
        html.contains(&format!("<option value=\"{template_id}\">welcome</option>")),
        "{html}"
    );
    let page = admin
        .post(SCHEDULES, &schedule_fields("every minute", &template_id))
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(invalid(&page.html, "cron"), "{}", page.html);
    assert!(
        page.text().contains("value=\"every minute\""),
        "{}",
        page.html
    );
    assert!(listed(app, "schedules").await.is_empty());

    let Page {
        status, location, ..
    } = admin
        .post(SCHEDULES, &schedule_fields("0 9 * * 1-5", &template_id))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let schedules = listed(app, "schedules").await;
    assert_eq!(schedules.len(), 1);
    let schedule = &schedules[0];
    assert_eq!(schedule["timezone"], "Europe/Berlin");
    assert_eq!(schedule["to"].as_array().unwrap().len(), 2, "{schedule}");
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();
    let page_path = format!("{SCHEDULES}/{schedule_id}");
    assert_eq!(location, format!("{page_path}?done=schedule-added"));

    // Its page: five next runs at 09:00 Berlin time, each also in UTC.
    let html = admin.get_html(&location).await;
    assert!(html.contains("Schedule added"), "{html}");
    let local = html.matches(" 09:00 +0").count();
    assert_eq!(local, 5, "{html}");
    assert!(html.matches(":00 UTC</td>").count() >= 5, "{html}");
    let text = admin.get(SCHEDULES).await.text();
    assert!(
        text.contains("weekday") && text.contains("0 9 * * 1-5") && text.contains(">welcome</a>"),
        "{text}"
    );

    // Off, then on again.
    let enabled = format!("{page_path}/enabled");
    let html = admin
        .post_redirected(
            &enabled,
            &[("enabled", "false")],
            &format!("{page_path}?done=schedule-disabled"),
        )
        .await
        .html;
    assert!(
        html.contains("Schedule disabled") && html.contains("Enable the schedule"),
        "{html}"
    );
    assert_eq!(listed(app, "schedules").await[0]["enabled"], false);
    let Page { status, .. } = admin.post(&enabled, &[("enabled", "true")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(listed(app, "schedules").await[0]["enabled"], true);

    // Run now: a manual firing whose message's page opens, with its template.
    let run = format!("{page_path}/run");
    let text = admin
        .post_redirected(&run, &[], &format!("{page_path}?done=schedule-run"))
        .await
        .text();
    let (status, runs) = app
        .get(
            &format!("/v1/tenants/acme/schedules/{schedule_id}/runs"),
            OPERATOR,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    let message_id = runs[0]["message_id"].as_str().unwrap().to_owned();
    let message_path = format!("/t/acme/messages/{message_id}");
    assert!(
        text.contains("<td>manual</td>") && text.contains(&format!("href=\"{message_path}\"")),
        "{text}"
    );
    let html = admin.get_html(&message_path).await;
    assert_eq!(heading(&html), Some("Hello again, Ada"));
    assert!(html.contains("id=\"message-template\""), "{html}");

    // The template in use cannot be deleted: the confirmation page says by what.
    let delete_template = format!("{editor}/delete");
    admin.get_html(&delete_template).await;
    let html = admin
        .post_answered(&delete_template, &[], StatusCode::CONFLICT)
        .await;
    assert!(html.contains("weekday"), "{html}");
    assert_eq!(listed(app, "templates").await.len(), 1);

    // A template changed to need what the data lacks: running refused, said why.
    let (status, patched) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/acme/templates/{template_id}"),
            Some(OPERATOR),
            Some(serde_json::json!({"text": "Hello {{ user.name }} from {{ site }}"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let page = admin.post(&run, &[]).await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(page.html.contains("id=\"refused\""), "{}", page.html);
    assert!(
        page.text().contains("undefined variable site"),
        "{}",
        page.html
    );

    // Deleted after its confirmation page; then the template may go too.
    let delete_schedule = format!("{page_path}/delete");
    let html = admin.get_html(&delete_schedule).await;
    assert!(heading(&html).unwrap().starts_with("Delete the schedule"));
    assert!(
        admin
            .post_redirected(
                &delete_schedule,
                &[],
                &format!("{SCHEDULES}?done=schedule-deleted")
            )
            .await
            .html
            .contains("Schedule deleted")
    );
    assert!(listed(app, "schedules").await.is_empty());
    assert_eq!(admin.get(&page_path).await.status, StatusCode::NOT_FOUND);
    admin
        .post_redirected(
            &delete_template,
            &[],
            &format!("{TEMPLATES}?done=template-deleted"),
        )
        .await;
    assert!(listed(app, "templates").await.is_empty());

    // The messages page filters by the new statuses too.
    let html = admin.get("/t/acme/messages").await.html;
    assert!(
        html.contains("value=\"scheduled\"") && html.contains("value=\"cancelled\""),
        "{html}"
    );
}

/// The pages and their forms are a tenant administrator's: acme's member is
/// refused (403) and has no link to them, another tenant's administrator is
/// told acme's objects do not exist (404); none of them changes anything.
#[tokio::test]
async fn only_the_tenant_s_administrators_manage_its_templates_and_schedules() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, TEMPLATES).await;
    let markup = "<p>{{ user.name }}</p>";
    let Page { status, .. } = admin.post(TEMPLATES, &template_fields(markup)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let template_id = listed(app, "templates").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .post_answered(
            SCHEDULES,
            &schedule_fields("0 9 * * *", &template_id),
            StatusCode::SEE_OTHER,
        )
        .await;
    let schedule_id = listed(app, "schedules").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (templates, schedules) = (
        listed(app, "templates").await,
        listed(app, "schedules").await,
    );
    let editor = format!("{TEMPLATES}/{template_id}");
    let page = format!("{SCHEDULES}/{schedule_id}");
    let pages = [
        TEMPLATES.to_owned(),
        format!("{TEMPLATES}/new"),
        editor.clone(),
        SCHEDULES.to_owned(),
        format!("{SCHEDULES}/new"),
        page.clone(),
        format!("{page}/edit"),
    ];
    let forms = [
        (TEMPLATES.to_owned(), template_fields(markup)),
        (editor.clone(), template_fields(markup)),
        (format!("{editor}/preview"), vec![("data", "{}")]),
        (format!("{editor}/delete"), vec![]),
        (
            SCHEDULES.to_owned(),
            schedule_fields("0 9 * * *", &template_id),
        ),
        (
            format!("{page}/edit"),
            schedule_fields("0 9 * * *", &template_id),
        ),
        (format!("{page}/enabled"), vec![("enabled", "false")]),
        (format!("{page}/run"), vec![]),
        (format!("{page}/delete"), vec![]),
    ];

    member_is_refused(app, &pages, &forms, &[TEMPLATES, SCHEDULES]).await;

    let stranger =
        HttpSession::sign_in(app, "admin@globex.example", GLOBEX_PASSWORD, "/t/globex").await;
    for path in pages
        .iter()
        .filter(|p| p.contains(&template_id) || p.contains(&schedule_id))
    {
        let theirs = path.replace("/t/acme/", "/t/globex/");
        let Page { status, .. } = stranger.get(&theirs).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {theirs}");
    }
    for (path, fields) in forms
        .iter()
        .filter(|(p, _)| p.contains(&template_id) || p.contains(&schedule_id))
    {
        let Page { status, .. } = stranger.post(path, fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
        let theirs = path.replace("/t/acme/", "/t/globex/");
        let Page { status, .. } = stranger.post(&theirs, fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {theirs}");
    }
    assert_eq!(listed(app, "templates").await, templates);
    assert_eq!(listed(app, "schedules").await, schedules);
    let (_, runs) = app
        .get(
            &format!("/v1/tenants/acme/schedules/{schedule_id}/runs"),
            OPERATOR,
        )
        .await;
    assert_eq!(runs, serde_json::json!([]), "no one else ran it");
}

//! Rendering: the templates (compiled into the binary), HTML answers, and how
//! the API's errors become pages.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use herald_api::ApiError;
use minijinja::{Environment, Value, context};

/// The templates named, each compiled in from `templates/` under its file's name.
macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

/// Every template, by name; `.html` names are auto-escaped.
const TEMPLATES: &[(&str, &str)] = templates![
    "base.html",
    "macros.html",
    "sign_in.html",
    "status.html",
    "dashboard.html",
    "servers.html",
    "server_form.html",
    "providers.html",
    "provider_form.html",
    "properties.html",
    "messages.html",
    "message.html",
    "test_result.html",
    "test_steps.html",
    "audit.html",
    "persons.html",
    "tenants.html",
    "nodes.html",
    "checklist.html",
    "tokens.html",
    "token_created.html",
    "token_revoke.html",
    "smtp.html",
    "smtp_credential_created.html",
    "smtp_credential_revoke.html",
    "smtp_connector_delete.html",
    "webhooks.html",
    "webhook.html",
    "webhook_secret.html",
    "webhook_delete.html",
    "templates.html",
    "template_form.html",
    "template_delete.html",
    "schedules.html",
    "schedule_form.html",
    "schedule.html",
    "schedule_delete.html",
    "gateways.html",
    "gateway_token.html",
    "gateway_new_token.html",
    "gateway_delete.html",
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name} does not parse: {e}"));
        }
        env.add_filter("time", |ms: i64| herald_core::timestamp::rfc3339(ms));
        env.add_filter("when", crate::when::filter);
        env.add_filter("bytes", bytes);
        env.set_formatter(visible_then_escaped);
        env
    })
}

/// A size in bytes as people read it: `812 bytes`, `14.2 KiB`, `3.1 MiB`.
fn bytes(size: u64) -> String {
    const KIB: u64 = 1024;
    match size {
        1 => "1 byte".into(),
        s if s < KIB => format!("{s} bytes"),
        s if s < KIB * KIB => format!("{:.1} KiB", s as f64 / KIB as f64),
        s => format!("{:.1} MiB", s as f64 / (KIB * KIB) as f64),
    }
}

/// Whether a character is invisible or reorders the text around it: control
/// characters (C0, DEL, C1) other than the whitespace HTML shows as space, the
/// bidirectional embeddings, overrides, isolates and marks, and the zero-width
/// characters. A server's reply holding one could make the page say something
/// other than what the server said.
fn is_invisible(c: char) -> bool {
    // Line breaks and tabs lay a page out; everything else the terminal rule
    // escapes is escaped here too.
    herald_core::terminal::is_invisible(c) && !matches!(c, '\t' | '\n' | '\r')
}

/// The text with every invisible character (see [`is_invisible`]) written out
/// as its code point, `\u{202e}`, so that it is seen and has no effect.
fn make_visible(text: &str) -> String {
    text.chars()
        .map(|c| {
            if is_invisible(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Every value a template prints goes through here: invisible characters are
/// made visible, then HTML is escaped as usual. Doing it for every value, not
/// with a filter, means no template can forget it where text from a remote
/// server (SMTP replies, the steps of a diagnosis) is shown.
fn visible_then_escaped(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(text) if text.chars().any(is_invisible) => {
            let shown = make_visible(text);
            let shown = if value.is_safe() {
                Value::from_safe_string(shown)
            } else {
                Value::from(shown)
            };
            minijinja::escape_formatter(out, state, &shown)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// The page of a template that failed to render: plain HTML that needs no
/// template, with the way back.
const UNRENDERED: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Not available · Herald</title><link rel=\"stylesheet\" href=\"/static/console.css\"></head>\
<body><main id=\"main\"><section class=\"narrow\"><h1>Not available</h1>\
<div class=\"alert\" role=\"alert\">This page could not be shown; the error has been logged.</div>\
<p><a href=\"/\">Go to the dashboard</a> · <a href=\"/sign-in\">Sign in</a></p>\
</section></main></body></html>\n";

/// Renders a template into a 200 HTML answer; a template error is a logged 500.
pub fn page(name: &str, ctx: Value) -> Response {
    let rendered = environment()
        .get_template(name)
        .and_then(|template| template.render(ctx));
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, template = name, "a console template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, Html(UNRENDERED)).into_response()
        }
    }
}

/// Renders a template with a status other than 200 (a form with errors is 422).
pub fn page_with(status: StatusCode, name: &str, ctx: Value) -> Response {
    let mut response = page(name, ctx);
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}

/// A page that only says what happened.
pub fn status_page(status: StatusCode, message: &str) -> Response {
    page_with(
        status,
        "status.html",
        context! { status => status.as_u16(), message, me => Value::from(()) },
    )
}

/// An API error shown as a page: the same status, a message people can read,
/// and never a 5xx cause (those are logged).
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = describe(self.0);
        status_page(status, &message)
    }
}

/// The status and a readable message of an error; 5xx causes are logged, not shown.
pub fn describe(error: ApiError) -> (StatusCode, String) {
    match error {
        ApiError::NotFound(what) => (StatusCode::NOT_FOUND, format!("No such {what}.")),
        ApiError::Forbidden(why) => (StatusCode::FORBIDDEN, why),
        ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Please sign in.".into()),
        ApiError::Conflict(why) => (StatusCode::CONFLICT, why),
        ApiError::NotEntitled => (
            StatusCode::FORBIDDEN,
            "This tenant may not store passwords or tokens: the operator has not granted it the credential storage entitlement.".into(),
        ),
        ApiError::NoGateway(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The test message would not be sent now: {why}. Start the gateway in the tenant's network and try again."),
        ),
        ApiError::NoWorker => (
            StatusCode::SERVICE_UNAVAILABLE,
            "No worker node is alive, so the test message would not be sent now. Start a node with the worker role and try again.".into(),
        ),
        ApiError::Invalid(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.rule))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ApiError::QueueFull { limit } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("This tenant already has {limit} recipients waiting, the most this installation accepts; nothing was queued. Try again once some are delivered."),
        ),
        ApiError::TooManyTests { limit } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("This tenant already has {limit} test messages waiting to be sent, the most it may have; nothing was queued. Send another once one of them has finished (its page shows each step)."),
        ),
        // The console makes no gateway claims; said plainly all the same.
        e @ ApiError::TooManyWaitingClaims { .. } => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        ApiError::Malformed(why) => (StatusCode::BAD_REQUEST, why),
        ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.".into()),
        ApiError::UnsupportedMediaType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The form was not sent as a form.".into(),
        ),
        ApiError::BodyTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "The form did not arrive in time; nothing was changed. Send it again.".into(),
        ),
        ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Not allowed.".into()),
        ApiError::Unavailable(why) => {
            tracing::error!(error = %herald_api::Chain(why.as_ref()), "the database is unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not available; nothing was changed. Try again shortly.".into(),
            )
        }
        ApiError::Internal(why) => {
            tracing::error!(error = %herald_api::Chain(why.as_ref()), "internal error in the console");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong; it has been logged.".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap();
        }
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(812), "812 bytes");
        assert_eq!(bytes(14_540), "14.2 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 100_000), "3.1 MiB");
    }

    /// A server's reply that tries to reorder or hide text is shown with those
    /// characters written out, in the steps and in the reply alike.
    #[test]
    fn remote_text_cannot_reorder_or_hide_itself() {
        let reply =
            "250 ok \u{202e}gnp.exe\u{202c} \u{2066}x\u{2069}\u{200f}\u{1b}[2J\u{9b}\u{7f}<b>";
        let html = environment()
            .get_template("test_steps.html")
            .unwrap()
            .render(context! {
                tenant => context! { slug => "acme" },
                result => context! {
                    status => "sent", finished => true, message_id => "m",
                    steps => vec![context! { step => "data", ok => true, detail => reply, elapsed_ms => 1 }],
                    attempt => context! { response => reply },
                },
            })
            .unwrap();
        for hidden in [
            '\u{202e}', '\u{202c}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{1b}', '\u{9b}',
            '\u{7f}',
        ] {
            assert!(
                !html.contains(hidden),
                "{hidden:?} reaches the page: {html}"
            );
        }
        assert_eq!(
            html.matches("\\u{202e}gnp.exe\\u{202c}").count(),
            2,
            "{html}"
        );
        assert!(
            html.contains("\\u{1b}[2J") && html.contains("&lt;b&gt;"),
            "{html}"
        );
        // Ordinary text, right-to-left scripts and line breaks are left alone.
        assert_eq!(make_visible("שלום\n日本語 é\t"), "שלום\n日本語 é\t");
    }

    #[test]
    fn values_are_escaped() {
        let html = environment()
            .get_template("status.html")
            .unwrap()
            .render(context! { status => 404, message => "<script>x</script>" })
            .unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>x"));
    }
}

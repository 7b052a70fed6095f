//! HTML forms as typed, and their translation into the API's request bodies.
//!
//! A form keeps exactly what was typed, so a page with errors shows it again;
//! secrets are the exception and are never sent back. Only what HTML cannot
//! express (a number typed as text, a checkbox) is checked here: every other
//! rule is the API's, and its field errors are shown beside the fields.

use std::collections::BTreeMap;

use herald_api::ApiError;
use herald_api::service::{
    AccountBody, ConnectorBody, CredentialBody, GatewayBody, OAuth2Body, ProviderBody,
    ScheduleBody, ServerBody, TemplateBody, WebhookBody,
};
use herald_core::FieldError;
use herald_store::{Provider, Schedule, SmtpServer, Template};
use serde::{Deserialize, Serialize};

/// Field name to the rule it broke, as shown beside the field.
pub type FieldErrors = BTreeMap<String, String>;

/// A form's API body when none of its fields was refused, or the refusals.
fn checked<T>(body: T, errors: FieldErrors) -> Result<T, FieldErrors> {
    if errors.is_empty() {
        Ok(body)
    } else {
        Err(errors)
    }
}

/// What a failed submission shows: the errors beside their fields, and any
/// error that belongs to no field (a conflict, a missing entitlement).
#[derive(Default, Serialize)]
pub struct Problems {
    pub fields: FieldErrors,
    pub general: Option<String>,
}

impl Problems {
    /// Field errors found in the form itself (a number that is not one), as
    /// the API's error, so they are shown exactly like the API's own.
    pub fn invalid(fields: FieldErrors) -> ApiError {
        ApiError::Invalid(
            fields
                .into_iter()
                .map(|(field, rule)| FieldError { field, rule })
                .collect(),
        )
    }

    /// The API's error, split into field errors and a general one. The API
    /// names nested fields `oauth2.client_id`; the form names them `client_id`.
    pub fn from_api(error: ApiError) -> (axum::http::StatusCode, Problems) {
        match error {
            ApiError::Invalid(errors) => {
                let fields = errors
                    .into_iter()
                    .map(|e| {
                        let field = e.field.strip_prefix("oauth2.").unwrap_or(&e.field);
                        (field.to_owned(), e.rule)
                    })
                    .collect();
                (
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    Problems {
                        fields,
                        general: None,
                    },
                )
            }
            other => {
                let (status, message) = crate::render::describe(other);
                (
                    status,
                    Problems {
                        fields: FieldErrors::new(),
                        general: Some(message),
                    },
                )
            }
        }
    }

    /// The API's field names as a form names its fields (`field` maps one),
    /// so each error shows beside its field; where several API fields land
    /// on one form field (`events[0]`, `events[1]`), the first error shows.
    pub fn renamed(self, field: impl Fn(&str) -> String) -> Problems {
        let mut fields = FieldErrors::new();
        for (name, rule) in self.fields {
            fields.entry(field(&name)).or_insert(rule);
        }
        Problems {
            fields,
            general: self.general,
        }
    }
}

/// A whole number typed in a text field; empty is `None`.
fn number(errors: &mut FieldErrors, field: &str, typed: &str) -> Option<i64> {
    let typed = typed.trim();
    if typed.is_empty() {
        return None;
    }
    match typed.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.insert(field.to_owned(), "must be a whole number".into());
            None
        }
    }
}

/// A required text field: when creating, empty means absent (the API says
/// "is required"); when editing, it is sent as typed so that it is checked.
fn required(typed: &str, editing: bool) -> Option<String> {
    if typed.trim().is_empty() && !editing {
        None
    } else {
        Some(typed.to_owned())
    }
}

/// An SMTP server as typed in its form.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerForm {
    pub name: String,
    pub host: String,
    pub port: String,
    pub security: String,
    /// A checkbox: present when ticked.
    pub requires_auth: Option<String>,
    pub allow_plaintext_auth: Option<String>,
    pub tls_verify: Option<String>,
    pub tls_ca_pem: String,
    pub tls_server_name: String,
    pub helo_name: String,
    pub max_connections: String,
    pub max_messages_per_connection: String,
    pub idle_timeout_secs: String,
    pub rate_limit_per_minute: String,
    pub command_timeout_secs: String,
    /// The id of the tenant's gateway that delivers the server's mail; empty
    /// for Herald's own nodes.
    pub gateway_id: String,
}

impl ServerForm {
    /// The form of a new server, filled from a preset's `smtp_server` (or defaults).
    pub fn from_preset(preset: Option<&serde_json::Value>) -> ServerForm {
        let field = |name: &str| preset.and_then(|p| p.get(name));
        let text = |name: &str| {
            field(name)
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let ticked = |on: bool| on.then(|| "on".to_owned());
        // A preset's example host (`relay.example.internal`) is only shown as
        // the field's placeholder, so it can never be submitted as the host.
        let host = text("host");
        ServerForm {
            host: if is_example_host(&host) {
                String::new()
            } else {
                host
            },
            port: text("port"),
            security: text("security"),
            requires_auth: ticked(field("requires_auth").and_then(|v| v.as_bool()) == Some(true)),
            tls_verify: ticked(true),
            ..ServerForm::default()
        }
    }

    /// The form of a stored server, for editing.
    pub fn from_server(server: &SmtpServer) -> ServerForm {
        let s = &server.settings;
        let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        ServerForm {
            name: s.name.clone(),
            host: s.host.to_string(),
            port: s.port.get().to_string(),
            security: s.security.as_str().to_owned(),
            requires_auth: s.requires_auth.then(|| "on".to_owned()),
            allow_plaintext_auth: s.allow_plaintext_auth.then(|| "on".to_owned()),
            tls_verify: s.tls_verify.then(|| "on".to_owned()),
            tls_ca_pem: s.tls_ca_pem.clone().unwrap_or_default(),
            tls_server_name: s
                .tls_server_name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            helo_name: s
                .helo_name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            max_connections: s.max_connections.to_string(),
            max_messages_per_connection: s.max_messages_per_connection.to_string(),
            idle_timeout_secs: s.idle_timeout_secs.to_string(),
            rate_limit_per_minute: opt(s.rate_limit_per_minute),
            command_timeout_secs: opt(s.command_timeout_secs),
            gateway_id: s.gateway_id.map(|g| g.to_string()).unwrap_or_default(),
        }
    }

    /// The API's body, or the fields that are not even numbers.
    pub fn body(&self, editing: bool) -> Result<ServerBody, FieldErrors> {
        let mut errors = FieldErrors::new();
        let body = ServerBody {
            name: required(&self.name, editing),
            host: required(self.host.trim(), editing),
            port: number(&mut errors, "port", &self.port),
            security: Some(self.security.clone()).filter(|s| !s.is_empty()),
            requires_auth: Some(self.requires_auth.is_some()),
            allow_plaintext_auth: Some(self.allow_plaintext_auth.is_some()),
            tls_verify: Some(self.tls_verify.is_some()),
            tls_ca_pem: Some(self.tls_ca_pem.clone()),
            tls_server_name: Some(self.tls_server_name.trim().to_owned()),
            helo_name: Some(self.helo_name.trim().to_owned()),
            max_connections: number(&mut errors, "max_connections", &self.max_connections),
            max_messages_per_connection: number(
                &mut errors,
                "max_messages_per_connection",
                &self.max_messages_per_connection,
            ),
            idle_timeout_secs: number(&mut errors, "idle_timeout_secs", &self.idle_timeout_secs),
            rate_limit_per_minute: number(
                &mut errors,
                "rate_limit_per_minute",
                &self.rate_limit_per_minute,
            ),
            command_timeout_secs: number(
                &mut errors,
                "command_timeout_secs",
                &self.command_timeout_secs,
            ),
            // Always sent: empty means Herald's own nodes, and clears a gateway
            // when editing, as choosing "None" in the form says.
            gateway_id: Some(self.gateway_id.trim().to_owned()),
        };
        checked(body, errors)
    }
}

/// Whether a preset's host only shows the form of a name: a reserved example
/// name (RFC 2606: a label `example`) or a part to fill in (`<tenant>.…`).
pub fn is_example_host(host: &str) -> bool {
    host.contains(['<', '>']) || host.split('.').any(|label| label == "example")
}

/// An SMTP account as typed. The secrets are never shown again.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AccountForm {
    pub username: String,
    pub mechanism: String,
    #[serde(skip_serializing)]
    pub password: String,
    #[serde(skip_serializing)]
    pub access_token: String,
    pub token_url: String,
    pub client_id: String,
    #[serde(skip_serializing)]
    pub client_secret: String,
    pub scope: String,
    pub person_id: String,
}

impl AccountForm {
    /// The API's body. Only the fields of the chosen mechanism are sent: a
    /// password for PLAIN and LOGIN, a token or OAuth2 client for XOAUTH2.
    /// Without scripts or `:has()` a browser shows every field, and whatever
    /// was typed in the other mechanism's fields must not be stored.
    pub fn body(&self) -> AccountBody {
        let given = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        let xoauth2 = self.mechanism == "xoauth2";
        let oauth2 = (xoauth2 && !self.token_url.trim().is_empty()).then(|| OAuth2Body {
            token_url: self.token_url.trim().to_owned(),
            client_id: self.client_id.trim().to_owned(),
            client_secret: self.client_secret.clone(),
            scope: given(self.scope.trim()),
        });
        AccountBody {
            username: self.username.clone(),
            mechanism: given(&self.mechanism),
            password: given(&self.password).filter(|_| !xoauth2),
            access_token: given(&self.access_token).filter(|_| xoauth2),
            oauth2,
            person_id: given(&self.person_id),
        }
    }
}

/// A notification provider as typed.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ProviderForm {
    pub name: String,
    pub smtp_server_id: String,
    pub account_id: String,
    pub from_address: String,
    pub from_name: String,
    pub reply_to: String,
    pub fallback_recipient: String,
    pub sender_policy: String,
}

impl ProviderForm {
    pub fn from_provider(provider: &Provider) -> ProviderForm {
        let s = &provider.settings;
        ProviderForm {
            name: s.name.clone(),
            smtp_server_id: s.smtp_server_id.to_string(),
            account_id: s.account_id.map(|a| a.to_string()).unwrap_or_default(),
            from_address: s.from_address.to_string(),
            from_name: s
                .from_name
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            reply_to: s
                .reply_to
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            fallback_recipient: s
                .fallback_recipient
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            sender_policy: s.sender_policy.as_str().to_owned(),
        }
    }

    pub fn body(&self, editing: bool) -> ProviderBody {
        ProviderBody {
            name: required(&self.name, editing),
            smtp_server_id: required(&self.smtp_server_id, editing),
            account_id: Some(self.account_id.clone()),
            from_address: required(self.from_address.trim(), editing),
            from_name: Some(self.from_name.clone()),
            reply_to: Some(self.reply_to.trim().to_owned()),
            fallback_recipient: Some(self.fallback_recipient.trim().to_owned()),
            sender_policy: Some(self.sender_policy.clone()).filter(|s| !s.is_empty()),
        }
    }
}

/// A limit in messages per minute typed as text; empty is no limit. A whole
/// number the API's `u32` cannot hold (negative, or past four billion) is out
/// of its range as surely as 0 is, so it is sent as 0 and refused by the
/// API's own rule, which names the range.
fn per_minute(errors: &mut FieldErrors, field: &str, typed: &str) -> Option<u32> {
    number(errors, field, typed).map(|n| u32::try_from(n).unwrap_or(0))
}

/// A new SMTP credential as typed. The page holds two forms, so its fields
/// carry the form's name (an id is unique on a page).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CredentialForm {
    pub credential_name: String,
    pub credential_rate_limit: String,
}

impl CredentialForm {
    /// The API's body, or the fields that are not even numbers.
    pub fn body(&self) -> Result<CredentialBody, FieldErrors> {
        let mut errors = FieldErrors::new();
        let rate_limit_per_minute = per_minute(
            &mut errors,
            "credential_rate_limit",
            &self.credential_rate_limit,
        );
        let body = CredentialBody {
            name: self.credential_name.clone(),
            rate_limit_per_minute,
        };
        checked(body, errors)
    }

    /// The API's field names as this form names its fields.
    pub fn field(api: &str) -> String {
        match api {
            "name" => "credential_name".into(),
            "rate_limit_per_minute" => "credential_rate_limit".into(),
            other => other.into(),
        }
    }
}

/// The on/off toggle of a schedule or a webhook: its one field, whether
/// it is to be on.
#[derive(Deserialize)]
pub struct EnabledForm {
    pub enabled: bool,
}

/// A new gateway as typed: only its name.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GatewayForm {
    pub name: String,
}

impl GatewayForm {
    pub fn body(&self) -> GatewayBody {
        GatewayBody {
            name: Some(self.name.trim().to_owned()).filter(|n| !n.is_empty()),
        }
    }
}

/// A new IP connector as typed: its networks one per line or separated by commas.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ConnectorForm {
    pub connector_name: String,
    pub cidrs: String,
    pub connector_rate_limit: String,
}

impl ConnectorForm {
    /// The networks as typed, in order, without the empty entries a blank
    /// line or a trailing comma leave; the API's `cidrs[i]` counts these.
    pub fn networks(&self) -> Vec<String> {
        self.cidrs
            .split(['\n', ','])
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The API's body, or the fields that are not even numbers.
    pub fn body(&self) -> Result<ConnectorBody, FieldErrors> {
        let mut errors = FieldErrors::new();
        let rate_limit_per_minute = per_minute(
            &mut errors,
            "connector_rate_limit",
            &self.connector_rate_limit,
        );
        let body = ConnectorBody {
            name: self.connector_name.clone(),
            cidrs: self.networks(),
            rate_limit_per_minute,
        };
        checked(body, errors)
    }

    /// The API's field names as this form names its fields (`cidrs[1]` stays:
    /// the page shows it beside the networks, with the network it names).
    pub fn field(api: &str) -> String {
        match api {
            "name" => "connector_name".into(),
            "rate_limit_per_minute" => "connector_rate_limit".into(),
            other => other.into(),
        }
    }
}

/// A new webhook as typed: its URL, the event types ticked (one checkbox
/// named `events` each, so the form repeats the name) and whether it is on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WebhookForm {
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
}

impl WebhookForm {
    /// The form of a new webhook: on, and no event ticked yet.
    pub fn new() -> WebhookForm {
        WebhookForm {
            enabled: true,
            ..WebhookForm::default()
        }
    }

    /// The form from its fields as posted, in order; a name HTML repeats
    /// (`events`) is more than a plain struct can take.
    pub fn from_fields(fields: Vec<(String, String)>) -> WebhookForm {
        let mut form = WebhookForm::default();
        for (name, value) in fields {
            match name.as_str() {
                "url" => form.url = value,
                "events" => form.events.push(value),
                "enabled" => form.enabled = true,
                _ => {}
            }
        }
        form
    }

    pub fn body(&self) -> WebhookBody {
        WebhookBody {
            url: Some(self.url.trim().to_owned()).filter(|u| !u.is_empty()),
            events: Some(self.events.clone()),
            enabled: Some(self.enabled),
        }
    }

    /// The API's field names as this form names its fields: every
    /// `events[i]` is the checkboxes' error.
    pub fn field(api: &str) -> String {
        if api.starts_with("events[") {
            "events".into()
        } else {
            api.into()
        }
    }
}

/// A message template as typed: its name, description and the three parts' sources.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TemplateForm {
    pub name: String,
    pub description: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl TemplateForm {
    pub fn from_template(template: &Template) -> TemplateForm {
        let c = &template.content;
        TemplateForm {
            name: template.name.clone(),
            description: template.description.clone().unwrap_or_default(),
            subject: c.subject.clone(),
            text: c.text.clone().unwrap_or_default(),
            html: c.html.clone().unwrap_or_default(),
        }
    }

    /// The API's body. A browser sends a textarea's line breaks as CRLF;
    /// they are kept as LF so a saved template reads as it was typed.
    pub fn body(&self, editing: bool) -> TemplateBody {
        let lf = |s: &str| s.replace("\r\n", "\n");
        // Creating: an empty optional part is absent. Editing: sent as typed,
        // since a blank description, text or html removes it.
        let optional = |s: &str| Some(lf(s)).filter(|s| editing || !s.trim().is_empty());
        TemplateBody {
            name: required(&self.name, editing),
            description: optional(&self.description),
            subject: required(&self.subject, editing),
            text: optional(&self.text),
            html: optional(&self.html),
        }
    }
}

/// A recurring schedule as typed: the data as JSON text, the recipients one
/// per line or separated by commas.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ScheduleForm {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The template's id, from the list of the tenant's templates.
    pub template: String,
    pub data: String,
    pub to: String,
    pub cc: String,
    pub bcc: String,
    /// A checkbox: present when ticked.
    pub enabled: Option<String>,
}

/// Addresses one per line or separated by commas, without the empty entries
/// a blank line or a trailing comma leave; the API's `to[i]` counts these.
fn addresses(typed: &str) -> Vec<String> {
    typed
        .split(['\n', ','])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ScheduleForm {
    /// The form of a new schedule: UTC, data `{}`, on.
    pub fn new() -> ScheduleForm {
        ScheduleForm {
            timezone: "UTC".into(),
            data: "{}".into(),
            enabled: Some("on".into()),
            ..ScheduleForm::default()
        }
    }

    pub fn from_schedule(schedule: &Schedule) -> ScheduleForm {
        let f = &schedule.fields;
        let lines = |list: Vec<String>| list.join("\n");
        ScheduleForm {
            name: f.name.clone(),
            cron: f.cron.clone(),
            timezone: f.timezone.clone(),
            template: f.template_id.to_string(),
            data: serde_json::to_string_pretty(&f.data).unwrap_or_default(),
            to: lines(f.to.iter().map(ToString::to_string).collect()),
            cc: lines(f.cc.iter().map(ToString::to_string).collect()),
            bcc: lines(f.bcc.iter().map(ToString::to_string).collect()),
            enabled: f.enabled.then(|| "on".into()),
        }
    }

    /// The API's body, or the data field when it is not JSON.
    pub fn body(&self, editing: bool) -> Result<ScheduleBody, FieldErrors> {
        let mut errors = FieldErrors::new();
        let data = match self.data.trim() {
            "" => None,
            typed => match serde_json::from_str(typed) {
                Ok(value) => Some(value),
                Err(e) => {
                    errors.insert("data".into(), format!("must be JSON: {e}"));
                    None
                }
            },
        };
        let body = ScheduleBody {
            name: required(&self.name, editing),
            cron: required(&self.cron, editing),
            timezone: Some(self.timezone.trim().to_owned()).filter(|t| !t.is_empty()),
            template: required(&self.template, editing),
            data,
            to: Some(addresses(&self.to)),
            cc: Some(addresses(&self.cc)),
            bcc: Some(addresses(&self.bcc)),
            enabled: Some(self.enabled.is_some()),
        };
        checked(body, errors)
    }

    /// The API's field names as this form names its fields: every `to[i]`
    /// is the `to` field's error.
    pub fn field(api: &str) -> String {
        api.split('[').next().unwrap_or(api).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_are_not_numbers_are_named() {
        let form = ServerForm {
            port: "twenty-five".into(),
            max_connections: "4".into(),
            ..ServerForm::default()
        };
        let Err(errors) = form.body(false) else {
            panic!("a port that is not a number is refused")
        };
        assert_eq!(errors["port"], "must be a whole number");
        assert!(!errors.contains_key("max_connections"));
    }

    #[test]
    fn a_preset_fills_an_example_host_only_as_a_placeholder() {
        let presets = herald_core::presets::all();
        let host_of = |id: &str| {
            let preset = presets
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == id)
                .unwrap();
            ServerForm::from_preset(Some(&preset["smtp_server"])).host
        };
        assert_eq!(host_of("gateway-relay"), "");
        assert_eq!(host_of("exchange-account"), "");
        assert_eq!(host_of("m365-connector"), "");
        // A real public name is the value to keep.
        assert_eq!(host_of("m365-submission"), "smtp.office365.com");
        assert!(!is_example_host("relay.examples.org"));
    }

    #[test]
    fn only_the_chosen_mechanism_s_fields_are_sent() {
        let typed = AccountForm {
            username: "herald".into(),
            password: "a-password".into(),
            access_token: "a-token".into(),
            token_url: "https://login.example/token".into(),
            client_id: "client".into(),
            client_secret: "client-secret".into(),
            ..AccountForm::default()
        };
        for mechanism in ["plain", "login", ""] {
            let body = AccountForm {
                mechanism: mechanism.into(),
                ..typed.clone()
            }
            .body();
            assert_eq!(body.password.as_deref(), Some("a-password"));
            assert!(body.access_token.is_none() && body.oauth2.is_none());
        }
        let body = AccountForm {
            mechanism: "xoauth2".into(),
            ..typed
        }
        .body();
        assert!(body.password.is_none());
        assert_eq!(body.access_token.as_deref(), Some("a-token"));
        assert_eq!(body.oauth2.unwrap().client_id, "client");
    }

    #[test]
    fn secrets_are_never_serialised_back_into_a_form() {
        let form = AccountForm {
            username: "herald".into(),
            password: "hunter2-hunter2".into(),
            client_secret: "very-secret".into(),
            ..AccountForm::default()
        };
        let shown = serde_json::to_string(&form).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("very-secret"));
    }

    #[test]
    fn networks_are_read_one_per_line_or_between_commas() {
        let form = ConnectorForm {
            connector_name: "printers".into(),
            cidrs: "192.0.2.0/24\r\n\r\n 198.51.100.7, 2001:db8::/48,\n".into(),
            connector_rate_limit: String::new(),
        };
        let body = form.body().unwrap();
        assert_eq!(
            body.cidrs,
            ["192.0.2.0/24", "198.51.100.7", "2001:db8::/48"]
        );
        assert_eq!(body.rate_limit_per_minute, None);
    }

    #[test]
    fn a_limit_that_is_not_a_number_is_named_and_one_out_of_range_is_the_api_s() {
        let typed = |limit: &str| CredentialForm {
            credential_name: "grafana".into(),
            credential_rate_limit: limit.into(),
        };
        let Err(errors) = typed("sixty").body() else {
            panic!("a limit that is not a number is refused")
        };
        assert_eq!(errors["credential_rate_limit"], "must be a whole number");
        assert_eq!(typed("-5").body().unwrap().rate_limit_per_minute, Some(0));
        assert_eq!(
            typed(" 60 ").body().unwrap().rate_limit_per_minute,
            Some(60)
        );
        assert_eq!(CredentialForm::field("name"), "credential_name");
        assert_eq!(ConnectorForm::field("cidrs[1]"), "cidrs[1]");
    }

    #[test]
    fn a_webhook_form_takes_every_ticked_event_and_names_their_errors_once() {
        let posted = [
            ("csrf", "t"),
            ("url", " https://hooks.example.com/h "),
            ("events", "message.sent"),
            ("events", "message.failed"),
        ];
        let form = WebhookForm::from_fields(
            posted
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(form.events, ["message.sent", "message.failed"]);
        assert!(!form.enabled, "an unticked box is not posted");
        let body = form.body();
        assert_eq!(body.url.as_deref(), Some("https://hooks.example.com/h"));
        assert_eq!(body.enabled, Some(false));
        assert_eq!(WebhookForm::field("events[1]"), "events");
        assert_eq!(WebhookForm::field("url"), "url");
        assert!(WebhookForm::from_fields(Vec::new()).body().url.is_none());
    }

    #[test]
    fn a_schedule_form_reads_json_and_address_lists() {
        let form = ScheduleForm {
            name: "daily".into(),
            cron: "0 9 * * *".into(),
            template: "welcome".into(),
            data: "{\"user\": {\"name\": \"Ada\"}}".into(),
            to: "a@example.com,\r\n b@example.com\n\n".into(),
            ..ScheduleForm::default()
        };
        let body = form.body(false).unwrap();
        assert_eq!(body.to.unwrap(), ["a@example.com", "b@example.com"]);
        assert_eq!(body.data.unwrap()["user"]["name"], "Ada");
        assert_eq!(body.enabled, Some(false), "an unticked box is not posted");
        assert!(body.timezone.is_none());
        let Err(errors) = ScheduleForm {
            data: "{nope".into(),
            ..form
        }
        .body(false) else {
            panic!("data that is not JSON is refused")
        };
        assert!(errors["data"].starts_with("must be JSON"), "{errors:?}");
        assert_eq!(ScheduleForm::field("cc[2]"), "cc");
    }

    #[test]
    fn a_template_form_drops_empty_parts_only_when_creating() {
        let form = TemplateForm {
            name: "welcome".into(),
            subject: "Hi".into(),
            text: "Hello\r\nthere".into(),
            ..TemplateForm::default()
        };
        let created = form.body(false);
        assert_eq!(created.text.as_deref(), Some("Hello\nthere"));
        assert!(created.html.is_none() && created.description.is_none());
        assert_eq!(form.body(true).html.as_deref(), Some(""));
    }
}

//! The confirmation a page shows after a save, with the obvious next step.
//!
//! The redirect after a POST names what was done in its query
//! (`?done=server-added`); the page it leads to says so in words of its own,
//! from its own stored state (whether the server requires authentication,
//! whether the provider is the tenant's). The codes are a fixed list, so a
//! link can make a page say nothing but these sentences, and nothing is kept
//! on the server, so the page may come from any node.

use serde::Serialize;

/// What was saved, as the redirect's `done` query names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    ServerAdded,
    ServerChanged,
    ServerDeleted,
    AccountAdded,
    AccountDeleted,
    ProviderAdded,
    ProviderChanged,
    ProviderDeleted,
    ProviderChosen,
    Refreshed,
    PersonAdded,
    PasswordSet,
    TokenRevoked,
    SmtpCredentialRevoked,
    SmtpConnectorAdded,
    SmtpConnectorDeleted,
    WebhookEnabled,
    WebhookDisabled,
    WebhookDeleted,
    TemplateAdded,
    TemplateChanged,
    TemplateDeleted,
    ScheduleAdded,
    ScheduleChanged,
    ScheduleEnabled,
    ScheduleDisabled,
    ScheduleRun,
    ScheduleDeleted,
    GatewayDeleted,
    TenantAdded,
    EntitlementsChanged,
}

const CODES: &[(Saved, &str)] = &[
    (Saved::ServerAdded, "server-added"),
    (Saved::ServerChanged, "server-saved"),
    (Saved::ServerDeleted, "server-deleted"),
    (Saved::AccountAdded, "account-added"),
    (Saved::AccountDeleted, "account-deleted"),
    (Saved::ProviderAdded, "provider-added"),
    (Saved::ProviderChanged, "provider-saved"),
    (Saved::ProviderDeleted, "provider-deleted"),
    (Saved::ProviderChosen, "provider-chosen"),
    (Saved::Refreshed, "refreshed"),
    (Saved::PersonAdded, "person-added"),
    (Saved::PasswordSet, "password-set"),
    (Saved::TokenRevoked, "token-revoked"),
    (Saved::SmtpCredentialRevoked, "smtp-credential-revoked"),
    (Saved::SmtpConnectorAdded, "smtp-connector-added"),
    (Saved::SmtpConnectorDeleted, "smtp-connector-deleted"),
    (Saved::WebhookEnabled, "webhook-enabled"),
    (Saved::WebhookDisabled, "webhook-disabled"),
    (Saved::WebhookDeleted, "webhook-deleted"),
    (Saved::TemplateAdded, "template-added"),
    (Saved::TemplateChanged, "template-saved"),
    (Saved::TemplateDeleted, "template-deleted"),
    (Saved::ScheduleAdded, "schedule-added"),
    (Saved::ScheduleChanged, "schedule-saved"),
    (Saved::ScheduleEnabled, "schedule-enabled"),
    (Saved::ScheduleDisabled, "schedule-disabled"),
    (Saved::ScheduleRun, "schedule-run"),
    (Saved::ScheduleDeleted, "schedule-deleted"),
    (Saved::GatewayDeleted, "gateway-deleted"),
    (Saved::TenantAdded, "tenant-added"),
    (Saved::EntitlementsChanged, "entitlements-saved"),
];

impl Saved {
    fn code(self) -> &'static str {
        CODES
            .iter()
            .find(|(saved, _)| *saved == self)
            .map(|(_, code)| *code)
            .expect("every variant has a code")
    }

    fn parse(code: &str) -> Option<Saved> {
        CODES
            .iter()
            .find(|(_, known)| *known == code)
            .map(|(saved, _)| *saved)
    }

    /// The path to redirect to, with this in its query (before any `#fragment`).
    pub fn on(self, path: &str) -> String {
        let (path, fragment) = match path.split_once('#') {
            Some((path, fragment)) => (path, format!("#{fragment}")),
            None => (path, String::new()),
        };
        let join = if path.contains('?') { '&' } else { '?' };
        format!("{path}{join}done={}{fragment}", self.code())
    }
}

/// The `done` query of a page, and the egress rule a server's save found
/// (`egress`); an unknown, repeated or malformed value is ignored (the first
/// of each counts), never an error.
#[derive(Default)]
pub struct Done {
    done: String,
    egress: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Done {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let first = |key: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Ok(Done {
            done: first("done").unwrap_or_default(),
            egress: first("egress"),
        })
    }
}

impl Done {
    pub fn saved(&self) -> Option<Saved> {
        Saved::parse(&self.done)
    }

    /// What the page says was saved, when it is one of those `said` names,
    /// each with its sentence; anything else it says nothing about.
    pub fn notice(&self, said: &[(Saved, &str)]) -> Option<Notice> {
        let saved = self.saved()?;
        said.iter()
            .find(|(known, _)| *known == saved)
            .map(|(_, text)| Notice::new(*text))
    }

    /// The code of the egress rule the save found refusing the server's host.
    pub fn egress(&self) -> Option<&str> {
        self.egress.as_deref()
    }
}

/// What the page says was done, and a link to what to do next.
#[derive(Serialize, Debug)]
pub struct Notice {
    pub text: String,
    pub next: Option<Next>,
}

/// The obvious next step: a link.
#[derive(Serialize, Debug)]
pub struct Next {
    pub label: String,
    pub href: String,
}

impl Notice {
    pub fn new(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            next: None,
        }
    }

    pub fn then(self, label: impl Into<String>, href: impl Into<String>) -> Notice {
        Notice {
            next: Some(Next {
                label: label.into(),
                href: href.into(),
            }),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_lands_before_the_fragment() {
        for (saved, code) in CODES {
            assert_eq!(Saved::parse(code), Some(*saved));
        }
        assert_eq!(
            Saved::AccountAdded.on("/t/acme/servers/s1#accounts"),
            "/t/acme/servers/s1?done=account-added#accounts"
        );
        assert_eq!(
            Saved::ServerAdded.on("/t/acme/servers?x=1"),
            "/t/acme/servers?x=1&done=server-added"
        );
        assert_eq!(Saved::parse("<script>"), None);
    }
}

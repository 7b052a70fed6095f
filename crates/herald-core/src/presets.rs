//! Ready server and provider templates for the setups tenants ask for most,
//! each with what must be set up on the mail service's side.

use serde_json::{Value, json};

/// Every preset: an id, a title, the SMTP server body, whether an account is
/// needed (and which mechanisms fit), the provider fields, and the mail
/// service's side of the setup.
pub fn all() -> Value {
    json!([
        {
            "id": "exchange-account",
            "title": "On-premises Exchange, direct account",
            "smtp_server": {"host": "mail.example.com", "port": 587, "security": "starttls", "requires_auth": true},
            "account": {"mechanisms": ["login", "plain"], "username": "the mailbox's user principal name"},
            "provider": {"sender_policy": "fixed"},
            "mail_service_setup": "Create a mailbox (or use a service account) with SMTP submission enabled on the client frontend receive connector (port 587, TLS, basic authentication offered); Herald sends as that mailbox."
        },
        {
            "id": "gateway-relay",
            "title": "Relay on the gateway machine (host and port only)",
            "smtp_server": {"host": "relay.example.internal", "port": 25, "security": "starttls", "requires_auth": false},
            "account": null,
            "provider": {"sender_policy": "fixed"},
            "mail_service_setup": "Name the tenant's gateway in the server's gateway_id and run `herald gateway` on that machine (with --egress-allow 127.0.0.1/32 when the relay listens on loopback there); allow relaying from the gateway's address on the relay (for Postfix, mynetworks or an access map); give the relay's internal CA in tls_ca_pem and its certificate name in tls_server_name when it is reached by IP."
        },
        {
            "id": "m365-connector",
            "title": "Microsoft 365 connector (authenticated by IP)",
            "smtp_server": {"host": "<tenant>.mail.protection.outlook.com", "port": 25, "security": "starttls", "requires_auth": false},
            "account": null,
            "provider": {"sender_policy": "fixed"},
            "mail_service_setup": "In Exchange admin center, add an inbound connector from your organisation's email server that accepts mail by the public IP address it comes from: your network's, with the server pinned to the tenant's gateway running there (gateway_id), or the Herald nodes' without a gateway (or by a certificate name matching helo_name); send only from accepted domains."
        },
        {
            "id": "m365-submission",
            "title": "Microsoft 365 submission (smtp.office365.com, account or XOAUTH2)",
            "smtp_server": {"host": "smtp.office365.com", "port": 587, "security": "starttls", "requires_auth": true},
            "account": {"mechanisms": ["xoauth2", "login"], "oauth2": {"token_url": "https://login.microsoftonline.com/<tenant-id>/oauth2/v2.0/token", "scope": "https://outlook.office365.com/.default"}},
            "provider": {"sender_policy": "fixed"},
            "mail_service_setup": "Enable Authenticated SMTP for the sending mailbox. For XOAUTH2, register an application in Entra ID with the SMTP.SendAsApp permission, grant admin consent, and register its service principal in Exchange Online with access to the mailbox; basic authentication is disabled for many tenants."
        },
        {
            "id": "google-relay-ip",
            "title": "Google Workspace SMTP relay, by IP address",
            "smtp_server": {"host": "smtp-relay.gmail.com", "port": 587, "security": "starttls", "requires_auth": false},
            "account": null,
            "provider": {"sender_policy": "fixed"},
            "mail_service_setup": "In the Google Admin console, Gmail, Routing, SMTP relay service: allow only addresses in your domains, require TLS, and add the public IP address the mail comes from: your network's, with the server pinned to the tenant's gateway running there (gateway_id), or the Herald nodes' without a gateway; set helo_name to a name of your domain."
        },
        {
            "id": "google-relay-auth",
            "title": "Google Workspace SMTP relay, by user and password",
            "smtp_server": {"host": "smtp-relay.gmail.com", "port": 465, "security": "tls", "requires_auth": true},
            "account": {"mechanisms": ["plain", "login"], "username": "a Workspace user of your domain"},
            "provider": {"sender_policy": "fixed"},
            "mail_service_setup": "In the SMTP relay service settings, choose 'Require SMTP Authentication' and 'Require TLS encryption'; use an app password if the user has 2-step verification."
        }
    ])
}

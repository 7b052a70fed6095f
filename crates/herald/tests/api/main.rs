//! Integration tests: the whole node on port 0 with its own database, driven over HTTP,
//! delivering to the project's test SMTP server.

mod helpers;

mod admin_flows;
mod attachments;
mod cluster;
mod console;
mod console_gateways;
mod console_http;
mod console_reading;
mod console_smtp;
mod console_templates;
mod console_webhooks;
mod crash;
mod delivery;
mod egress_warnings;
mod failures;
mod fairness;
mod first_start;
mod gate;
mod gateway_pinning;
mod gateway_process;
mod gateways;
mod hardening;
mod hardening_api;
mod ingress;
mod interop;
mod isolation;
mod metrics;
mod oauth_egress;
mod openapi;
mod operator_tokens;
mod plaintext_auth;
mod postfix;
mod properties;
mod receiver;
mod recovery;
mod resilience;
mod schedules;
mod security;
mod smtp_check;
mod templates;
mod tls_auth;
mod validation;
mod webhook_api;
mod webhooks;

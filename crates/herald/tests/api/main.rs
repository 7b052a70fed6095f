//! Integration tests: the whole node on port 0 with its own database, driven over HTTP,
//! delivering to the project's test SMTP server.

mod helpers;

mod admin_flows;
mod cluster;
mod console;
mod crash;
mod delivery;
mod hardening;
mod interop;
mod isolation;
mod operator_tokens;
mod properties;
mod resilience;
mod security;
mod tls_auth;
mod validation;

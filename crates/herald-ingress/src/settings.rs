//! What the operator chooses for the SMTP listener: addresses, certificate, limits and timeouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The listener's settings. `Settings::new` gives the defaults below.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where to listen for submission with STARTTLS (e.g. `0.0.0.0:587`).
    pub listen: Option<SocketAddr>,
    /// Where to listen for submission over implicit TLS (e.g. `0.0.0.0:465`);
    /// needs a certificate.
    pub smtps_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) and PEM private key; both or neither.
    /// Reloaded on SIGHUP and when either file changes.
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files' modification times are looked at (5 s by default).
    pub tls_poll: Duration,
    /// The name in the greeting, the EHLO reply and the `Received:` header.
    pub hostname: String,
    /// Largest message in octets as the client sends it (dot-unstuffed,
    /// without the `Received:` header Herald adds), advertised as `SIZE`
    /// (10 MiB by default, as the node's `--max-message-size`).
    pub max_message_size: usize,
    /// Most recipients of one transaction (100 by default, as the API's limit).
    pub max_recipients: usize,
    /// Most header fields in a message's header section (200 by default): a bound on
    /// the work and storage one message's headers cost, well above what real
    /// mail carries (a message relayed through a few hops with DKIM and ARC
    /// signatures has some 30 to 60), unlike the API's limit, which counts
    /// only custom fields.
    pub max_header_fields: usize,
    /// Most sessions at once from one client address (20 by default); more are answered
    /// `421 4.7.0` at connect.
    pub max_sessions_per_ip: usize,
    /// Most sessions at once in all (1000 by default): each holds a descriptor and up to
    /// a message in memory. More are answered `421 4.3.2` at connect.
    pub max_sessions: usize,
    /// Failed AUTH attempts from one address within `auth_failure_window`
    /// that block AUTH from it (5 by default).
    pub max_auth_failures: u32,
    /// See `max_auth_failures` (5 min by default).
    pub auth_failure_window: Duration,
    /// How long AUTH stays refused (`454 4.7.0`, and the session closes) from
    /// an address that failed too often (15 min by default).
    pub auth_block: Duration,
    /// Waiting for the next command, including the first (5 min by default, RFC
    /// 5321 §4.5.3.2.7); the session then ends with `421 4.4.2`.
    pub command_timeout: Duration,
    /// Waiting for more of the message during DATA (3 min by default, RFC 5321
    /// §4.5.3.2.5's DATA block timeout).
    pub data_timeout: Duration,
    /// Waiting for the client to take a reply, and for a TLS handshake (1 min by default).
    pub write_timeout: Duration,
    /// Whether a client on a loopback address may AUTH without TLS. True by
    /// default (a local relay or cron's mail on the same machine); tests turn
    /// it off to see how a remote client is treated, since they can only
    /// connect over loopback.
    pub loopback_is_local: bool,
}

impl Settings {
    /// The defaults, for a listener named `hostname` with no address yet:
    /// set `listen`, `smtps_listen` or both.
    pub fn new(hostname: impl Into<String>) -> Settings {
        Settings {
            listen: None,
            smtps_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_poll: Duration::from_secs(5),
            hostname: hostname.into(),
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 100,
            max_header_fields: 200,
            max_sessions_per_ip: 20,
            max_sessions: 1000,
            max_auth_failures: 5,
            auth_failure_window: Duration::from_secs(300),
            auth_block: Duration::from_secs(900),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            write_timeout: Duration::from_secs(60),
            loopback_is_local: true,
        }
    }
}

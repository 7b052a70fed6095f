//! Builder-style configuration for a [`TestSmtpServer`](crate::TestSmtpServer).

use crate::tls::TestTls;

/// The largest message the server accepts unless configured otherwise (50 MB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 50 * 1024 * 1024;

/// How the server uses its TLS certificate, if it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum TlsMode {
    /// Plaintext only.
    #[default]
    None,
    /// Plaintext first, upgraded by the STARTTLS command.
    StartTls,
    /// TLS from the first byte, like port 465.
    Implicit,
}

/// Configuration of a test server; [`Default`] is plaintext without authentication.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) tls: Option<TestTls>,
    pub(crate) tls_mode: TlsMode,
    pub(crate) require_tls: bool,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) xoauth2: Option<(String, String)>,
    pub(crate) hide_starttls: bool,
    pub(crate) extra_after_starttls: bool,
    pub(crate) max_message_size: usize,
    pub(crate) smtputf8: bool,
    pub(crate) eight_bit_mime: bool,
    pub(crate) advertise_size: bool,
    pub(crate) nagle: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            tls_mode: TlsMode::None,
            require_tls: false,
            credentials: None,
            xoauth2: None,
            hide_starttls: false,
            extra_after_starttls: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            smtputf8: true,
            eight_bit_mime: true,
            advertise_size: true,
            nagle: false,
        }
    }
}

impl ServerConfig {
    /// Creates the default configuration: plaintext, no authentication.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advertises STARTTLS and upgrades the connection with this certificate when asked.
    pub fn starttls(mut self, tls: TestTls) -> Self {
        self.tls = Some(tls);
        self.tls_mode = TlsMode::StartTls;
        self
    }

    /// Speaks TLS from the first byte with this certificate (like port 465).
    pub fn implicit_tls(mut self, tls: TestTls) -> Self {
        self.tls = Some(tls);
        self.tls_mode = TlsMode::Implicit;
        self
    }

    /// Does not offer SMTPUTF8 (RFC 6531), so non-ASCII addresses are refused
    /// with 553 5.6.7, as by a server without internationalised mail.
    pub fn without_smtputf8(mut self) -> Self {
        self.smtputf8 = false;
        self
    }

    /// Does not offer 8BITMIME (RFC 6152), as a server that takes only
    /// 7-bit messages.
    pub fn without_8bitmime(mut self) -> Self {
        self.eight_bit_mime = false;
        self
    }

    /// Refuses MAIL on a plaintext connection with
    /// "530 5.7.0 must issue a STARTTLS command first".
    pub fn require_tls(mut self) -> Self {
        self.require_tls = true;
        self
    }

    /// Advertises AUTH PLAIN LOGIN XOAUTH2, accepts these credentials for PLAIN and
    /// LOGIN, and requires authentication before MAIL
    /// ("530 5.7.0 authentication required").
    pub fn auth(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Accepts XOAUTH2 for this user with this bearer token.
    ///
    /// This also enables authentication (advertised and required before MAIL) when
    /// [`ServerConfig::auth`] was not called; PLAIN and LOGIN then always fail.
    pub fn xoauth2_token(mut self, username: &str, token: &str) -> Self {
        self.xoauth2 = Some((username.to_owned(), token.to_owned()));
        self
    }

    /// Keeps the TLS configuration (the STARTTLS command still works) but leaves
    /// STARTTLS out of the EHLO reply, to test "required but not offered".
    pub fn hide_starttls(mut self) -> Self {
        self.hide_starttls = true;
        self
    }

    /// After "220 2.0.0 ready to start TLS", also sends the bogus plaintext bytes
    /// "250 injected\r\n" in the same write before the handshake, so clients can be
    /// tested for discarding plaintext buffered across the upgrade (CVE-2011-0411).
    pub fn extra_after_starttls(mut self) -> Self {
        self.extra_after_starttls = true;
        self
    }

    /// Sets the largest accepted message in bytes (advertised as SIZE); the default is
    /// [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Leaves SIZE out of the EHLO reply (the limit is still enforced at the
    /// end of DATA), as a server without RFC 1870.
    pub fn without_size(mut self) -> Self {
        self.advertise_size = false;
        self
    }

    /// Leaves Nagle's algorithm on for its replies, as Postfix's smtpd does,
    /// so a client that does not acknowledge promptly sees the delay a real
    /// server would give it (the benchmark of the first command after TLS).
    pub fn with_nagle(mut self) -> Self {
        self.nagle = true;
        self
    }

    /// Whether AUTH is advertised and required before MAIL.
    pub(crate) fn auth_enabled(&self) -> bool {
        self.credentials.is_some() || self.xoauth2.is_some()
    }
}

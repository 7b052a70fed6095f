//! One SMTP connection: the command loop, the DATA phase, AUTH and the STARTTLS upgrade.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::TlsMode;
use crate::message::ReceivedMessage;
use crate::script::{Action, Command};
use crate::shared::Shared;
use crate::stream::Stream;

/// The name the server uses for itself in the greeting and the EHLO reply.
const HOSTNAME: &str = "herald-testsmtp";

/// The longest command or AUTH line accepted. RFC 5321 only guarantees 512 octets,
/// but XOAUTH2 bearer tokens routinely exceed that, so the limit is generous.
const MAX_LINE: usize = 64 * 1024;

/// How much of one body line is read at a time; longer lines arrive in several chunks.
const DATA_CHUNK: usize = 64 * 1024;

/// The default reply text to DATA.
const DATA_READY: &str = "end data with <CR><LF>.<CR><LF>";

/// The bogus plaintext sent after the STARTTLS reply when configured to.
const INJECTED: &[u8] = b"250 injected\r\n";

/// The JSON error a Gmail-like server sends, base64 encoded, when XOAUTH2 fails.
const XOAUTH2_ERROR: &str =
    r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;

/// Serves one accepted connection until it ends, then records how it ended.
pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let quit = serve_until_end(Arc::clone(&shared), tcp).await;
    shared.record_session_end(quit);
}

/// Serves one connection; true when it ended with the client's QUIT.
/// Errors only end this connection.
async fn serve_until_end(shared: Arc<Shared>, tcp: TcpStream) -> bool {
    // Replies are small and sent one at a time, so Nagle's algorithm would
    // only add latency, unless the test asks for a server that keeps it.
    if let Err(error) = tcp.set_nodelay(!shared.config.nagle) {
        tracing::debug!(%error, "test smtp could not disable nagle");
    }
    let mut stream = if shared.config.tls_mode == TlsMode::Implicit {
        let Some(acceptor) = shared.acceptor.clone() else {
            return false;
        };
        match acceptor.accept(tcp).await {
            Ok(tls) => Stream::Right(Box::new(tls)),
            Err(error) => {
                tracing::debug!(%error, "test smtp implicit tls handshake failed");
                return false;
            }
        }
    } else {
        Stream::Left(tcp)
    };
    let mut greet = true;
    loop {
        let mut session = Session::new(Arc::clone(&shared), stream);
        match session.run(greet).await {
            Ok(Flow::Quit) => return true,
            Ok(Flow::Continue | Flow::Close) => return false,
            Ok(Flow::StartTls) => {
                // Dropping the buffered reader discards any plaintext the client sent
                // after STARTTLS, so nothing injected before the handshake is obeyed.
                let Stream::Left(tcp) = session.reader.into_inner() else {
                    return false;
                };
                let Some(acceptor) = shared.acceptor.clone() else {
                    return false;
                };
                match acceptor.accept(tcp).await {
                    Ok(tls) => stream = Stream::Right(Box::new(tls)),
                    Err(error) => {
                        tracing::debug!(%error, "test smtp starttls handshake failed");
                        return false;
                    }
                }
                // The new session starts from scratch: the client must send EHLO again
                // and is not authenticated, and no greeting is sent after STARTTLS.
                greet = false;
            }
            Err(error) => {
                tracing::debug!(%error, "test smtp connection ended with an error");
                return false;
            }
        }
    }
}

/// What the command loop does after a command has been handled.
enum Flow {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
    /// Close the connection: the client said QUIT.
    Quit,
    /// Upgrade the connection to TLS and start a fresh session.
    StartTls,
}

/// The reply chosen for a command, after consulting the script.
enum Decision {
    /// Send this reply.
    Reply(u16, String),
    /// Close the connection without replying.
    Close,
}

/// The result of collecting AUTH credentials from the client.
enum AuthStep {
    /// The client presented credentials for `username`; `valid` says whether they are right.
    Checked { username: String, valid: bool },
    /// The exchange failed before a verdict, with this reply.
    Abort(u16, &'static str),
    /// The client closed the connection.
    Eof,
}

/// The message body read in the DATA phase.
#[derive(Default)]
struct DataBody {
    raw: Vec<u8>,
    data: Vec<u8>,
    oversized: bool,
}

/// The state of one SMTP session; a STARTTLS upgrade starts a new one.
struct Session {
    shared: Arc<Shared>,
    reader: BufReader<Stream>,
    tls: bool,
    /// Whether the client has sent EHLO or HELO in this session.
    client_greeted: bool,
    /// Set after a 554 greeting: only QUIT is served from then on.
    no_service: bool,
    authenticated_as: Option<String>,
    mail_from: Option<String>,
    /// The transaction was opened with the SMTPUTF8 parameter (RFC 6531).
    smtputf8: bool,
    /// The parameters of the transaction's MAIL FROM.
    mail_parameters: Vec<String>,
    rcpt_to: Vec<String>,
}

impl Session {
    fn new(shared: Arc<Shared>, stream: Stream) -> Session {
        let tls = matches!(stream, Stream::Right(_));
        Session {
            shared,
            reader: BufReader::new(stream),
            tls,
            client_greeted: false,
            no_service: false,
            authenticated_as: None,
            mail_from: None,
            smtputf8: false,
            mail_parameters: Vec::new(),
            rcpt_to: Vec::new(),
        }
    }

    /// Runs the command loop, optionally sending the greeting first.
    async fn run(&mut self, greet: bool) -> io::Result<Flow> {
        if greet {
            let flow = self.greet().await?;
            if !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
        }
        loop {
            // Commands are read one line at a time from the buffered reader, so several
            // pipelined commands in one segment are each answered in order.
            let Some(line) = self.read_text_line().await? else {
                return Ok(Flow::Close);
            };
            let flow = self.dispatch(&line).await?;
            if !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
        }
    }

    async fn greet(&mut self) -> io::Result<Flow> {
        let default = format!("{HOSTNAME} ESMTP ready");
        match self.decide(Command::Connect, "", 220, default).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(code, text) => {
                self.send(code, &text).await?;
                if is_positive(code) {
                    Ok(Flow::Continue)
                } else if code == 554 {
                    // RFC 5321 lets a server refusing service keep the connection open
                    // and answer 503 until the client quits.
                    self.no_service = true;
                    Ok(Flow::Continue)
                } else {
                    Ok(Flow::Close)
                }
            }
        }
    }

    async fn dispatch(&mut self, line: &str) -> io::Result<Flow> {
        let (verb, arg) = split_command(line);
        let logged = if verb == "AUTH" {
            mask_auth(line)
        } else {
            line.to_owned()
        };
        self.shared.record_command(logged);
        if self.no_service && verb != "QUIT" {
            return self.respond(503, "5.5.1 no service here").await;
        }
        match verb.as_str() {
            "EHLO" => self.ehlo(arg, true).await,
            "HELO" => self.ehlo(arg, false).await,
            "STARTTLS" => self.starttls(arg).await,
            "AUTH" => self.auth(arg).await,
            "MAIL" => self.mail(arg).await,
            "RCPT" => self.rcpt(arg).await,
            "DATA" => self.data(arg).await,
            "RSET" => self.rset(arg).await,
            "NOOP" => self.simple(Command::Noop, arg, 250, "2.0.0 ok").await,
            "VRFY" => {
                self.respond(252, "2.5.0 cannot verify user, but will accept message")
                    .await
            }
            "QUIT" => self.quit(arg).await,
            _ => self.respond(500, "5.5.2 command not recognized").await,
        }
    }

    async fn ehlo(&mut self, arg: &str, extended: bool) -> io::Result<Flow> {
        if arg.is_empty() {
            let text = if extended {
                "5.5.4 syntax: EHLO hostname"
            } else {
                "5.5.4 syntax: HELO hostname"
            };
            return self.respond(501, text).await;
        }
        let default = if extended {
            self.extensions().join("\n")
        } else {
            HOSTNAME.to_owned()
        };
        match self.decide(Command::Ehlo, arg, 250, default).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(code, text) => {
                if is_positive(code) {
                    // EHLO in the middle of a session also aborts any open transaction.
                    self.client_greeted = true;
                    self.reset_transaction();
                }
                self.respond(code, &text).await
            }
        }
    }

    /// The lines of the default EHLO reply: the hostname, then one extension per line.
    fn extensions(&self) -> Vec<String> {
        let config = &self.shared.config;
        let mut lines = vec![
            HOSTNAME.to_owned(),
            "PIPELINING".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if config.eight_bit_mime {
            lines.push("8BITMIME".to_owned());
        }
        if config.advertise_size {
            lines.push(format!("SIZE {}", config.max_message_size));
        }
        if config.smtputf8 {
            lines.push("SMTPUTF8".to_owned());
        }
        let offer_starttls = self.shared.acceptor.is_some()
            && config.tls_mode == TlsMode::StartTls
            && !self.tls
            && !config.hide_starttls;
        if offer_starttls {
            lines.push("STARTTLS".to_owned());
        }
        if config.auth_enabled() {
            lines.push("AUTH PLAIN LOGIN XOAUTH2".to_owned());
        }
        lines
    }

    async fn starttls(&mut self, arg: &str) -> io::Result<Flow> {
        if self.tls {
            return self.respond(503, "5.5.1 TLS already active").await;
        }
        if !arg.is_empty() {
            return self.respond(501, "5.5.4 STARTTLS takes no arguments").await;
        }
        // A server with a certificate accepts STARTTLS even when hiding it from EHLO.
        if self.shared.acceptor.is_none() {
            return self.respond(502, "5.5.1 STARTTLS not available").await;
        }
        let default = "2.0.0 ready to start TLS".to_owned();
        match self.decide(Command::StartTls, arg, 220, default).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(220, text) => {
                let mut out = format_reply(220, &text);
                if self.shared.config.extra_after_starttls {
                    // Sent in the same write so both arrive together, the way a
                    // man-in-the-middle injection would.
                    out.extend_from_slice(INJECTED);
                }
                self.write(&out).await?;
                Ok(Flow::StartTls)
            }
            Decision::Reply(code, text) => self.respond(code, &text).await,
        }
    }

    async fn mail(&mut self, arg: &str) -> io::Result<Flow> {
        if !self.client_greeted {
            return self.respond(503, "5.5.1 send EHLO first").await;
        }
        let config = &self.shared.config;
        if config.require_tls && !self.tls {
            return self
                .respond(530, "5.7.0 must issue a STARTTLS command first")
                .await;
        }
        if config.auth_enabled() && self.authenticated_as.is_none() {
            return self.respond(530, "5.7.0 authentication required").await;
        }
        if self.mail_from.is_some() {
            return self.respond(503, "5.5.1 sender already specified").await;
        }
        let Some((address, params)) = parse_path(arg, "FROM:") else {
            return self.respond(501, "5.5.4 syntax: MAIL FROM:<address>").await;
        };
        match declared_size(params) {
            Err(()) => return self.respond(501, "5.5.4 invalid SIZE parameter").await,
            Ok(Some(size)) if size > config.max_message_size as u64 => {
                return self
                    .respond(552, "5.3.4 message size exceeds fixed maximum message size")
                    .await;
            }
            Ok(_) => {}
        }
        let smtputf8 = params
            .split_whitespace()
            .any(|p| p.eq_ignore_ascii_case("SMTPUTF8"));
        if smtputf8 && !config.smtputf8 {
            return self.respond(555, "5.5.4 SMTPUTF8 is not supported").await;
        }
        if !smtputf8 && !address.is_ascii() {
            return self
                .respond(553, "5.6.7 a non-ASCII address needs SMTPUTF8")
                .await;
        }
        let default = "2.1.0 sender ok".to_owned();
        match self.decide(Command::Mail, arg, 250, default).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(code, text) => {
                if is_positive(code) {
                    self.mail_from = Some(address);
                    self.smtputf8 = smtputf8;
                    self.mail_parameters = params.split_whitespace().map(str::to_owned).collect();
                    self.rcpt_to.clear();
                }
                self.respond(code, &text).await
            }
        }
    }

    async fn rcpt(&mut self, arg: &str) -> io::Result<Flow> {
        if self.mail_from.is_none() {
            return self.respond(503, "5.5.1 need MAIL command first").await;
        }
        let Some((address, _params)) = parse_path(arg, "TO:") else {
            return self.respond(501, "5.5.4 syntax: RCPT TO:<address>").await;
        };
        if address.is_empty() {
            return self
                .respond(501, "5.1.3 bad recipient address syntax")
                .await;
        }
        if !self.smtputf8 && !address.is_ascii() {
            return self
                .respond(553, "5.6.7 a non-ASCII address needs SMTPUTF8")
                .await;
        }
        let default = "2.1.5 recipient ok".to_owned();
        match self.decide(Command::Rcpt, arg, 250, default).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(code, text) => {
                if is_positive(code) {
                    self.rcpt_to.push(address);
                }
                self.respond(code, &text).await
            }
        }
    }

    async fn data(&mut self, arg: &str) -> io::Result<Flow> {
        if !arg.is_empty() {
            return self.respond(501, "5.5.4 DATA takes no arguments").await;
        }
        if self.mail_from.is_none() {
            return self.respond(503, "5.5.1 need MAIL command first").await;
        }
        if self.rcpt_to.is_empty() {
            return self.respond(554, "5.5.1 no valid recipients").await;
        }
        let recipients = self.rcpt_to.join(" ");
        let action = self.shared.take_action(Command::Data, &recipients);
        if matches!(action, Some(Action::DropMidData)) {
            self.send(354, DATA_READY).await?;
            // Waiting for the first body line ensures the client is really mid-message
            // when the connection disappears.
            self.read_line(DATA_CHUNK).await?;
            return Ok(Flow::Close);
        }
        match resolve(action, 354, DATA_READY.to_owned()).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(354, text) => {
                self.send(354, &text).await?;
                self.receive_message(&recipients).await
            }
            Decision::Reply(code, text) => self.respond(code, &text).await,
        }
    }

    /// Reads the body after a 354 reply, then answers and possibly records the message.
    async fn receive_message(&mut self, recipients: &str) -> io::Result<Flow> {
        let Some(body) = self.read_data().await? else {
            return Ok(Flow::Close);
        };
        // The transaction ends with the final dot whatever the verdict.
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        if body.oversized {
            return self
                .respond(552, "5.3.4 message size exceeds fixed maximum message size")
                .await;
        }
        let message = ReceivedMessage {
            mail_from,
            rcpt_to,
            data: body.data,
            raw_data: body.raw,
            tls: self.tls,
            authenticated_as: self.authenticated_as.clone(),
            smtputf8: self.smtputf8,
            mail_parameters: std::mem::take(&mut self.mail_parameters),
        };
        match after_delay(self.shared.take_action(Command::DataEnd, recipients)).await {
            None => {
                // Recording before replying means a client that has seen the 250 can
                // rely on the message being visible to the test.
                let n = self.shared.record_message(message);
                self.respond(250, &format!("2.0.0 queued as {n}")).await
            }
            Some(action) => match resolve(Some(action), 250, String::new()).await {
                Decision::Close => Ok(Flow::Close),
                Decision::Reply(code, text) => {
                    if is_positive(code) {
                        self.shared.record_message(message);
                    }
                    self.respond(code, &text).await
                }
            },
        }
    }

    /// Reads the DATA body up to the terminating ".\r\n" line; `None` if the client
    /// closed the connection first.
    async fn read_data(&mut self) -> io::Result<Option<DataBody>> {
        let max = self.shared.config.max_message_size;
        let mut body = DataBody::default();
        let mut seen = 0usize;
        // The terminator and dot-stuffing only count at the start of a line, which
        // means right after CRLF (bare LF does not end a line here, so an
        // "\n.\r\n" sequence cannot end the message early).
        let mut at_line_start = true;
        let mut previous_ended_with_cr = false;
        loop {
            let chunk = self.read_line(DATA_CHUNK).await?;
            if chunk.is_empty() {
                return Ok(None);
            }
            if at_line_start && chunk == b".\r\n" {
                return Ok(Some(body));
            }
            seen = seen.saturating_add(chunk.len());
            if seen > max && !body.oversized {
                // The rest is still read to find the terminator, but not kept.
                body = DataBody {
                    oversized: true,
                    ..DataBody::default()
                };
            }
            if !body.oversized {
                body.raw.extend_from_slice(&chunk);
                let content = match chunk.strip_prefix(b".") {
                    Some(rest) if at_line_start => rest,
                    _ => &chunk[..],
                };
                body.data.extend_from_slice(content);
            }
            at_line_start = chunk.ends_with(b"\r\n") || (chunk == b"\n" && previous_ended_with_cr);
            previous_ended_with_cr = chunk.last() == Some(&b'\r');
        }
    }

    async fn rset(&mut self, arg: &str) -> io::Result<Flow> {
        let default = "2.0.0 ok".to_owned();
        match self.decide(Command::Rset, arg, 250, default).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(code, text) => {
                if is_positive(code) {
                    self.reset_transaction();
                }
                self.respond(code, &text).await
            }
        }
    }

    async fn quit(&mut self, arg: &str) -> io::Result<Flow> {
        let default = "2.0.0 bye".to_owned();
        if let Decision::Reply(code, text) = self.decide(Command::Quit, arg, 221, default).await {
            self.send(code, &text).await?;
            // A clean shutdown sends the TLS close_notify; failure here changes nothing.
            let _ = self.reader.get_mut().shutdown().await;
        }
        Ok(Flow::Quit)
    }

    /// Handles a command whose only effect is its reply.
    async fn simple(
        &mut self,
        command: Command,
        arg: &str,
        code: u16,
        text: &str,
    ) -> io::Result<Flow> {
        match self.decide(command, arg, code, text.to_owned()).await {
            Decision::Close => Ok(Flow::Close),
            Decision::Reply(code, text) => self.respond(code, &text).await,
        }
    }

    async fn auth(&mut self, arg: &str) -> io::Result<Flow> {
        if !self.shared.config.auth_enabled() {
            return self.respond(502, "5.5.1 authentication not enabled").await;
        }
        if !self.client_greeted {
            return self.respond(503, "5.5.1 send EHLO first").await;
        }
        if self.authenticated_as.is_some() {
            return self.respond(503, "5.5.1 already authenticated").await;
        }
        if self.mail_from.is_some() {
            return self
                .respond(503, "5.5.1 AUTH not allowed during a mail transaction")
                .await;
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((mechanism, initial)) => (mechanism.to_ascii_uppercase(), Some(initial.trim())),
            None => (arg.to_ascii_uppercase(), None),
        };
        let initial = initial.map(str::to_owned);
        let step = match mechanism.as_str() {
            "PLAIN" => self.auth_plain(initial).await?,
            "LOGIN" => self.auth_login(initial).await?,
            "XOAUTH2" => self.auth_xoauth2(initial).await?,
            "" => return self.respond(501, "5.5.4 syntax: AUTH mechanism").await,
            _ => {
                return self
                    .respond(504, "5.5.4 unrecognized authentication type")
                    .await;
            }
        };
        let (username, valid) = match step {
            AuthStep::Checked { username, valid } => (username, valid),
            AuthStep::Abort(code, text) => return self.respond(code, text).await,
            AuthStep::Eof => return Ok(Flow::Close),
        };
        let subject = format!("{mechanism} {username}");
        match after_delay(self.shared.take_action(Command::Auth, &subject)).await {
            None if valid => {
                self.authenticated_as = Some(username);
                self.respond(235, "2.7.0 authentication successful").await
            }
            None if mechanism == "XOAUTH2" => {
                // Like Gmail: a JSON error as a challenge, then the final failure once
                // the client acknowledges it (normally with an empty line).
                let challenge = BASE64.encode(XOAUTH2_ERROR);
                match self.prompt(&challenge).await? {
                    Err(AuthStep::Eof) => Ok(Flow::Close),
                    _ => {
                        self.respond(535, "5.7.8 username and password not accepted")
                            .await
                    }
                }
            }
            None => {
                self.respond(535, "5.7.8 authentication credentials invalid")
                    .await
            }
            Some(action) => match resolve(Some(action), 235, String::new()).await {
                Decision::Close => Ok(Flow::Close),
                Decision::Reply(code, text) => {
                    if is_positive(code) {
                        self.authenticated_as = Some(username);
                    }
                    self.respond(code, &text).await
                }
            },
        }
    }

    /// The client's answer, decoded: the initial response it gave with AUTH,
    /// or else its answer to `challenge`; or how the exchange ended instead.
    async fn answer(
        &mut self,
        initial: Option<String>,
        challenge: &str,
    ) -> io::Result<Result<Vec<u8>, AuthStep>> {
        let response = match initial {
            Some(response) => response,
            None => match self.prompt(challenge).await? {
                Ok(line) => line,
                Err(step) => return Ok(Err(step)),
            },
        };
        Ok(decode_base64(&response).ok_or(AuthStep::Abort(501, "5.5.2 cannot decode response")))
    }

    async fn auth_plain(&mut self, initial: Option<String>) -> io::Result<AuthStep> {
        let decoded = match self.answer(initial, "").await? {
            Ok(decoded) => decoded,
            Err(step) => return Ok(step),
        };
        // The PLAIN message is authzid NUL authcid NUL password (RFC 4616).
        let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
        let [_authzid, username, password] = parts.as_slice() else {
            return Ok(AuthStep::Abort(501, "5.5.2 malformed PLAIN response"));
        };
        let username = String::from_utf8_lossy(username).into_owned();
        let password = String::from_utf8_lossy(password).into_owned();
        let valid = self.check_password(&username, &password);
        Ok(AuthStep::Checked { username, valid })
    }

    async fn auth_login(&mut self, initial: Option<String>) -> io::Result<AuthStep> {
        // The challenges are base64 of "Username:" and "Password:".
        let username = match self.answer(initial, "VXNlcm5hbWU6").await? {
            Ok(username) => username,
            Err(step) => return Ok(step),
        };
        let password = match self.answer(None, "UGFzc3dvcmQ6").await? {
            Ok(password) => password,
            Err(step) => return Ok(step),
        };
        let username = String::from_utf8_lossy(&username).into_owned();
        let password = String::from_utf8_lossy(&password).into_owned();
        let valid = self.check_password(&username, &password);
        Ok(AuthStep::Checked { username, valid })
    }

    async fn auth_xoauth2(&mut self, initial: Option<String>) -> io::Result<AuthStep> {
        let decoded = match self.answer(initial, "").await? {
            Ok(decoded) => decoded,
            Err(step) => return Ok(step),
        };
        // The response is "user=" U ^A "auth=Bearer " T ^A ^A; anything malformed
        // is treated like a wrong token.
        let decoded = String::from_utf8_lossy(&decoded);
        let mut username = String::new();
        let mut token = None;
        for field in decoded.split('\x01') {
            if let Some(user) = field.strip_prefix("user=") {
                username = user.to_owned();
            } else if let Some(auth) = field.strip_prefix("auth=") {
                token = auth
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.to_owned());
            }
        }
        let valid = match (&self.shared.config.xoauth2, token) {
            (Some((expected_user, expected_token)), Some(token)) => {
                *expected_user == username && *expected_token == token
            }
            _ => false,
        };
        Ok(AuthStep::Checked { username, valid })
    }

    fn check_password(&self, username: &str, password: &str) -> bool {
        self.shared
            .config
            .credentials
            .as_ref()
            .is_some_and(|(u, p)| u == username && p == password)
    }

    /// Sends a 334 challenge and reads the client's answer, which is logged only as
    /// `"<auth data>"`. A "*" answer cancels the exchange (RFC 4954).
    async fn prompt(&mut self, challenge: &str) -> io::Result<Result<String, AuthStep>> {
        self.send(334, challenge).await?;
        let Some(line) = self.read_text_line().await? else {
            return Ok(Err(AuthStep::Eof));
        };
        self.shared.record_command("<auth data>".to_owned());
        if line == "*" {
            return Ok(Err(AuthStep::Abort(501, "5.0.0 authentication cancelled")));
        }
        Ok(Ok(line))
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    /// Chooses the reply to `command`: a matching scripted action, or the default.
    async fn decide(
        &mut self,
        command: Command,
        subject: &str,
        code: u16,
        text: String,
    ) -> Decision {
        resolve(self.shared.take_action(command, subject), code, text).await
    }

    /// Reads at most `limit` bytes up to and including the next LF; empty at EOF.
    async fn read_line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        (&mut self.reader)
            .take(limit as u64)
            .read_until(b'\n', &mut buf)
            .await?;
        Ok(buf)
    }

    /// Reads one command or AUTH line without its line ending; `None` when the
    /// connection should end (EOF, or a line longer than [`MAX_LINE`]).
    async fn read_text_line(&mut self) -> io::Result<Option<String>> {
        let buf = self.read_line(MAX_LINE).await?;
        let Some(line) = buf.strip_suffix(b"\n") else {
            if buf.len() >= MAX_LINE {
                self.send(500, "5.5.6 line too long").await?;
            }
            return Ok(None);
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some(String::from_utf8_lossy(line).into_owned()))
    }

    /// Sends a reply and says whether the session goes on; 421 always closes it.
    async fn respond(&mut self, code: u16, text: &str) -> io::Result<Flow> {
        self.send(code, text).await?;
        Ok(if code == 421 {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    async fn send(&mut self, code: u16, text: &str) -> io::Result<()> {
        self.write(&format_reply(code, text)).await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await
    }
}

/// Turns an optional scripted action into a decision, never returning for [`Action::Stall`].
async fn resolve(action: Option<Action>, code: u16, text: String) -> Decision {
    match action {
        None => Decision::Reply(code, text),
        Some(Action::Reply(code, text)) => Decision::Reply(code, text),
        Some(Action::Drop | Action::DropMidData) => Decision::Close,
        Some(Action::Stall) => match stall().await {},
        Some(Action::Delay(pause)) => {
            tokio::time::sleep(pause).await;
            Decision::Reply(code, text)
        }
    }
}

/// Waits out an [`Action::Delay`], after which the default behaviour applies
/// (`None`); any other action is returned as it is. For the commands whose
/// default is more than a fixed reply (recording a message, judging credentials).
async fn after_delay(action: Option<Action>) -> Option<Action> {
    match action {
        Some(Action::Delay(pause)) => {
            tokio::time::sleep(pause).await;
            None
        }
        action => action,
    }
}

/// Waits forever; the connection stays open because the session is held by the
/// waiting task until the server aborts it.
async fn stall() -> Infallible {
    std::future::pending().await
}

fn is_positive(code: u16) -> bool {
    (200..300).contains(&code)
}

/// Formats a reply; each `\n`-separated part of `text` becomes one line of a
/// multiline reply.
fn format_reply(code: u16, text: &str) -> Vec<u8> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let separator = if i + 1 == lines.len() { ' ' } else { '-' };
        // Writing into a String cannot fail.
        let _ = write!(out, "{code}{separator}{line}\r\n");
    }
    out.into_bytes()
}

/// Splits a command line into its uppercased verb and the trimmed argument.
fn split_command(line: &str) -> (String, &str) {
    match line.split_once(' ') {
        Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
        None => (line.trim().to_ascii_uppercase(), ""),
    }
}

/// Hides an AUTH initial response, keeping the verb and mechanism.
fn mask_auth(line: &str) -> String {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    match (words.next(), words.next()) {
        (Some(mechanism), Some(_)) => format!("{verb} {mechanism} <auth data>"),
        _ => line.to_owned(),
    }
}

/// Parses `FROM:<address> params` (or `TO:`), returning the address and the parameters.
fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    let params = &rest[end + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    Some((rest[..end].to_owned(), params.trim()))
}

/// Extracts the SIZE= parameter of MAIL FROM; `Err` if it is not a number.
fn declared_size(params: &str) -> Result<Option<u64>, ()> {
    for param in params.split_whitespace() {
        if let Some((key, value)) = param.split_once('=') {
            if key.eq_ignore_ascii_case("SIZE") {
                return value.parse().map(Some).map_err(|_| ());
            }
        }
    }
    Ok(None)
}

/// Decodes a base64 SASL response; "=" stands for an empty response (RFC 4954).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    BASE64.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_replies_use_dashes_except_on_the_last_line() {
        assert_eq!(format_reply(250, "a\nb\nc"), b"250-a\r\n250-b\r\n250 c\r\n");
        assert_eq!(format_reply(334, ""), b"334 \r\n");
    }

    #[test]
    fn paths_are_parsed_with_parameters() {
        assert_eq!(
            parse_path("FROM:<a@b> SIZE=10", "FROM:"),
            Some(("a@b".to_owned(), "SIZE=10"))
        );
        assert_eq!(parse_path("from: <>", "FROM:"), Some((String::new(), "")));
        assert_eq!(parse_path("TO:a@b", "TO:"), None);
        assert_eq!(parse_path("TO:<a@b>x", "TO:"), None);
        assert_eq!(declared_size("BODY=8BITMIME size=42"), Ok(Some(42)));
        assert_eq!(declared_size("SIZE=x"), Err(()));
    }

    #[test]
    fn auth_lines_are_masked() {
        assert_eq!(mask_auth("AUTH PLAIN AGFAYg=="), "AUTH PLAIN <auth data>");
        assert_eq!(mask_auth("AUTH LOGIN"), "AUTH LOGIN");
    }
}

//! Sign-in, sessions and CSRF protection.
//!
//! A session id is 32 random bytes held by the browser in an HttpOnly,
//! SameSite=Strict cookie (Secure when the request came over TLS); the store
//! keeps only its SHA-256, so any node on the same database knows the session.
//! Every form carries a CSRF token derived from the session id, and every
//! POST without the right one (in the form or the `X-CSRF-Token` header htmx
//! sends) is refused before it reaches a handler, and so is every POST a
//! browser says came from another site (`Sec-Fetch-Site`, `Origin`).
//!
//! The sign-in form is posted before there is a session: it sets a cookie of
//! its own holding a random value, and its token is an HMAC of that value
//! under a key every node derives from the master key, so a pair made up by
//! someone who can plant a cookie is refused, and a form served by one node
//! may be posted to another.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_api::{AppState, Caller};
use herald_core::TokenId;
use herald_core::timestamp::now_ms;
use herald_store::{NewSession, Principal, Session, SessionSubject};
use hmac::{Hmac, Mac};
use minijinja::context;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Console;
use crate::client::{client_ip, from_trusted_proxy, same_origin};
use crate::render::{page, status_page};

/// The session cookie.
const SESSION_COOKIE: &str = "herald_session";
/// The cookie that protects the sign-in form, which is posted before there is a session.
const SIGN_IN_COOKIE: &str = "herald_sign_in";
/// The header htmx sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in.
const SESSION_HOURS: i64 = 12;
/// The largest form the console reads.
const MAX_FORM: usize = 1024 * 1024;
/// The largest sign-in form: an address and a password. Anonymous requests
/// wait for their turn holding their body, so it is kept small.
const MAX_SIGN_IN_FORM: usize = 8 * 1024;
/// What a sign-in refused because too many are being verified asks the browser to wait.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// A signed-in visitor: the session, and the API caller it acts as.
pub struct Signed {
    pub caller: Caller,
    pub session: Session,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Signed {
    /// What every page shows of who is signed in.
    pub fn me(&self) -> minijinja::Value {
        let (name, email, tenant) = match &self.session.principal {
            Principal::Person(p) => (p.name.clone(), p.email.to_string(), Some(p.tenant_id)),
            Principal::Operator(email) => ("Operator".to_owned(), email.clone(), None),
        };
        context! {
            name, email,
            role => self.session.role().as_str(),
            operator => self.caller.is_operator(),
            admin => self.caller.is_operator()
                || self.session.role() == herald_core::Role::TenantAdmin,
            tenant_id => tenant.map(|t| t.to_string()),
        }
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Redirect::to("/sign-in").into_response());
        };
        let found = state
            .store
            .session_by_hash(&herald_core::token::hash(&id), now_ms())
            .await
            .map_err(|e| crate::render::PageError::from(herald_api::ApiError::from(e)))
            .map_err(IntoResponse::into_response)?;
        let Some(session) = found else {
            return Err(Redirect::to("/sign-in").into_response());
        };
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        Ok(Signed {
            caller: Caller::from_session(&session, remote),
            session,
            csrf: csrf_token(&id),
        })
    }
}

/// The CSRF token of a session: derived from the session id, so nothing more
/// is stored, and useless without the cookie it comes from.
fn csrf_token(session_id: &str) -> String {
    let digest = Sha256::digest(format!("herald console csrf {session_id}"));
    URL_SAFE_NO_PAD.encode(digest)
}

/// The sign-in form's CSRF token: an HMAC of its cookie's random value.
fn sign_in_token(key: &[u8; 32], cookie: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"herald console sign-in form\0");
    mac.update(cookie.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// True when reading a body failed because it was longer than allowed, not
/// because it stopped arriving.
fn over_the_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A cookie's value from the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// True when the browser reached the node over TLS (through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    header("x-forwarded-proto") == "https" || header("forwarded").contains("proto=https")
}

/// A Set-Cookie value: HttpOnly and SameSite=Strict always, Secure over TLS.
fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie values are URL-safe base64")
}

/// Compares two tokens in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The connection's peer, as the server recorded it.
fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// Refuses every POST a browser says came from another site, and every POST
/// whose CSRF token is missing or wrong, before any handler runs.
pub async fn csrf_guard(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let console = request
        .extensions()
        .get::<Arc<Console>>()
        .expect("the console's state is layered outside the guard")
        .clone();
    let trusted = from_trusted_proxy(peer(request.extensions()), &console.trusted_proxies);
    if let Err(why) = same_origin(request.headers(), trusted) {
        return status_page(
            StatusCode::FORBIDDEN,
            &format!(
                "This form was not sent from this console's own pages ({why}). \
                 Open the console directly and try again."
            ),
        );
    }
    let signing_in = request.uri().path() == "/sign-in";
    let expected = if signing_in {
        cookie(request.headers(), SIGN_IN_COOKIE).map(|c| sign_in_token(&console.form_key, &c))
    } else {
        cookie(request.headers(), SESSION_COOKIE).map(|id| csrf_token(&id))
    };
    let from_header = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = request.into_parts();
    let limit = if signing_in {
        MAX_SIGN_IN_FORM
    } else {
        MAX_FORM
    };
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(error) if over_the_limit(&error) => {
            return status_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
        }
        // The body stopped arriving (its deadline passed) or the connection broke.
        Err(_) => return status_page(StatusCode::BAD_REQUEST, "The form did not arrive in full."),
    };
    let from_form = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|fields| {
            fields
                .into_iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v)
        });
    let presented = from_header.or(from_form);
    match (expected, presented) {
        (Some(expected), Some(presented)) if same(&expected, &presented) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => status_page(
            StatusCode::FORBIDDEN,
            "This form was not sent by this console session (its CSRF token is missing or wrong). \
             Reload the page and try again.",
        ),
    }
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// The sign-in form, with a fresh value for its own CSRF cookie.
pub async fn sign_in_page(
    headers: HeaderMap,
    axum::Extension(console): axum::Extension<Arc<Console>>,
) -> Response {
    sign_in_form(&console, &headers, "", None, StatusCode::OK)
}

fn sign_in_form(
    console: &Console,
    headers: &HeaderMap,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let value = random_token();
    let mut response = page(
        "sign_in.html",
        context! {
            csrf => sign_in_token(&console.form_key, &value),
            csrf_header => CSRF_HEADER,
            email, error, me => minijinja::Value::from(()),
        },
    );
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, &value, 3600, over_tls(headers)),
    );
    response
}

/// The sign-in form again with a 429, saying why and for how long.
fn try_again_later(
    console: &Console,
    headers: &HeaderMap,
    email: &str,
    message: &str,
    wait: Duration,
) -> Response {
    let mut response = sign_in_form(
        console,
        headers,
        email,
        Some(message),
        StatusCode::TOO_MANY_REQUESTS,
    );
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// "3 seconds", "1 minute": a wait as people say it.
fn how_long(wait: Duration) -> String {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let (n, unit) = if seconds < 60 {
        (seconds, "second")
    } else {
        (seconds.div_ceil(60), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A hash no password matches, verified when an address has no password, so
/// that an unknown address takes as long to refuse as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| herald_api::password::hash(&herald_core::Secret::new(random_token())))
}

/// Signs in with e-mail and password: the first operator or person with that
/// address whose password matches.
///
/// Before any password is verified, the client's address must be within its
/// rate and the e-mail address must not be locked out; a verification then
/// waits for its turn among a bounded few, or is refused when too many wait.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    axum::Extension(console): axum::Extension<Arc<Console>>,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let email = form.email.trim().to_owned();
    let peer = connect.as_ref().map(|c| c.0.0);
    let client = client_ip(peer, &headers, &console.trusted_proxies);
    if let Err(wait) = console.rate.attempt(client, Instant::now()) {
        let message = format!(
            "Too many sign-in attempts from your network address. Try again in {}.",
            how_long(wait)
        );
        return try_again_later(&console, &headers, &email, &message, wait);
    }
    // A locked-out address is refused before its password is even looked at.
    if let Some(wait) = console.failures.locked_for(&email, Instant::now()) {
        let message = format!(
            "Too many failed sign-ins for this address. Try again in {}.",
            how_long(wait.max(Duration::from_secs(60)))
        );
        return try_again_later(&console, &headers, &email, &message, wait);
    }
    let Ok(admitted) = console.verifier.admit() else {
        let message = format!(
            "The console is busy with many sign-ins at once. Try again in {}.",
            how_long(BUSY_RETRY)
        );
        return try_again_later(&console, &headers, &email, &message, BUSY_RETRY);
    };
    let candidates = match state.store.credentials(&email).await {
        Ok(found) => found,
        Err(e) => {
            return crate::render::PageError::from(herald_api::ApiError::from(e)).into_response();
        }
    };
    let password = form.password;
    let verified = admitted
        .verify(move || {
            crate::verify::with_memory(|memory| {
                let mut verify =
                    |hash: &str| herald_api::password::verify_in(&password, hash, memory);
                if candidates.is_empty() {
                    verify(decoy_hash());
                    return None;
                }
                candidates.into_iter().find(|c| verify(&c.password_hash))
            })
        })
        .await;
    let Ok(matched) = verified else {
        let message = format!(
            "The console is busy with many sign-ins at once. Try again in {}.",
            how_long(BUSY_RETRY)
        );
        return try_again_later(&console, &headers, &email, &message, BUSY_RETRY);
    };
    let Some(credential) = matched else {
        console.failures.failed(&email, Instant::now());
        return sign_in_form(
            &console,
            &headers,
            &email,
            Some("The e-mail address or the password is not right."),
            StatusCode::UNAUTHORIZED,
        );
    };
    console.failures.succeeded(&email);
    let subject = match &credential.principal {
        Principal::Operator(email) => SessionSubject::Operator(email.clone()),
        Principal::Person(person) => SessionSubject::Person(person.id),
    };
    let id = random_token();
    let now = now_ms();
    let new = NewSession {
        hash: herald_core::token::hash(&id),
        id: TokenId::new(),
        subject,
        created_at: now,
        expires_at: now + SESSION_HOURS * 3_600_000,
    };
    if let Err(e) = state.store.create_session(new.clone()).await {
        return crate::render::PageError::from(herald_api::ApiError::from(e)).into_response();
    }
    let session = Session {
        id: new.id,
        principal: credential.principal,
        created_at: new.created_at,
        expires_at: new.expires_at,
    };
    let caller = Caller::from_session(&session, peer);
    caller
        .audit(
            &state,
            session.principal.person().map(|p| p.tenant_id),
            "console.sign_in",
            None,
            serde_json::json!({}),
        )
        .await;
    let secure = over_tls(&headers);
    let mut response = Redirect::to("/").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &id, SESSION_HOURS * 3600, secure),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, "", 0, secure),
    );
    response
}

/// Ends the session and forgets the cookie.
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if let Err(error) = state
            .store
            .delete_session(&herald_core::token::hash(&id))
            .await
        {
            tracing::error!(%error, "could not end a console session");
        }
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, over_tls(&headers)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herald_session=abc; b="),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn the_cookie_is_secure_only_behind_tls() {
        let plain = set_cookie(SESSION_COOKIE, "x", 60, false);
        assert_eq!(
            plain,
            "herald_session=x; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        let mut headers = HeaderMap::new();
        assert!(!over_tls(&headers));
        headers.insert(
            "forwarded",
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        assert!(over_tls(&headers));
        assert!(
            set_cookie(SESSION_COOKIE, "x", 60, true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[test]
    fn the_sign_in_token_is_bound_to_its_cookie_and_the_key() {
        let key = [7; 32];
        let token = sign_in_token(&key, "cookie-value");
        assert_eq!(token, sign_in_token(&key, "cookie-value"));
        assert_ne!(token, "cookie-value");
        assert_ne!(token, sign_in_token(&key, "another-value"));
        assert_ne!(token, sign_in_token(&[8; 32], "cookie-value"));
    }

    #[test]
    fn waits_read_as_people_say_them() {
        assert_eq!(how_long(Duration::from_millis(1500)), "2 seconds");
        assert_eq!(how_long(Duration::from_secs(1)), "1 second");
        assert_eq!(how_long(Duration::from_secs(60)), "1 minute");
        assert_eq!(how_long(Duration::from_secs(61)), "2 minutes");
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let (a, b) = (csrf_token("one"), csrf_token("two"));
        assert_ne!(a, b);
        assert!(same(&a, &csrf_token("one")));
        assert!(!same(&a, &b) && !same(&a, &a[1..]));
    }
}

//! Sign-in, sessions and CSRF protection.
//!
//! A session id is 32 random bytes held by the browser in an HttpOnly,
//! SameSite=Strict cookie (Secure when the request came over TLS); the store
//! keeps only its SHA-256, so any node on the same database knows the session.
//! Every form carries a CSRF token derived from the session id, and every
//! POST without the right one (in the form or the `X-CSRF-Token` header htmx
//! sends) is refused before it reaches a handler. The sign-in form, posted
//! before there is a session, is protected the same way by a cookie of its own.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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
use herald_store::{NewSession, Session, SessionSubject};
use minijinja::context;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::render::{page, status_page};
use crate::throttle::SignInThrottle;

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
        let (name, email, tenant) = match &self.session.person {
            Some(p) => (p.name.clone(), p.email.to_string(), Some(p.tenant_id)),
            None => {
                let email = self.session.operator_email.clone().unwrap_or_default();
                ("Operator".to_owned(), email, None)
            }
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

/// Refuses every POST whose CSRF token is missing or wrong, before any handler runs.
pub async fn csrf_guard(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let expected = if request.uri().path() == "/sign-in" {
        cookie(request.headers(), SIGN_IN_COOKIE)
    } else {
        cookie(request.headers(), SESSION_COOKIE).map(|id| csrf_token(&id))
    };
    let from_header = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return status_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
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

/// The sign-in form, with a fresh token for its own CSRF cookie.
pub async fn sign_in_page(headers: HeaderMap) -> Response {
    sign_in_form(&headers, "", None, StatusCode::OK)
}

fn sign_in_form(
    headers: &HeaderMap,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = random_token();
    let mut response = page(
        "sign_in.html",
        context! { csrf => token, email, error, me => minijinja::Value::from(()) },
    );
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, &token, 3600, over_tls(headers)),
    );
    response
}

/// A hash no password matches, verified when an address has no password, so
/// that an unknown address takes as long to refuse as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| herald_api::password::hash(&herald_core::Secret::new(random_token())))
}

/// Signs in with e-mail and password: the first operator or person with that
/// address whose password matches.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    axum::Extension(throttle): axum::Extension<Arc<SignInThrottle>>,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let email = form.email.trim().to_owned();
    // A locked-out address is refused before its password is even looked at.
    if let Some(wait) = throttle.locked_for(&email, Instant::now()) {
        let minutes = wait.as_secs().div_ceil(60);
        let message = format!(
            "Too many failed sign-ins for this address. Try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        return sign_in_form(
            &headers,
            &email,
            Some(&message),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let candidates = match state.store.credentials(&email).await {
        Ok(found) => found,
        Err(e) => {
            return crate::render::PageError::from(herald_api::ApiError::from(e)).into_response();
        }
    };
    let password = form.password;
    let matched = tokio::task::spawn_blocking(move || {
        if candidates.is_empty() {
            herald_api::password::verify(&password, decoy_hash());
            return None;
        }
        candidates
            .into_iter()
            .find(|c| herald_api::password::verify(&password, &c.password_hash))
    })
    .await
    .ok()
    .flatten();
    let Some(credential) = matched else {
        throttle.failed(&email, Instant::now());
        return sign_in_form(
            &headers,
            &email,
            Some("The e-mail address or the password is not right."),
            StatusCode::UNAUTHORIZED,
        );
    };
    throttle.succeeded(&email);
    let subject = match (&credential.operator_email, &credential.person) {
        (Some(email), _) => SessionSubject::Operator(email.clone()),
        (None, Some(person)) => SessionSubject::Person(person.id),
        (None, None) => unreachable!("a credential is an operator's or a person's"),
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
        operator_email: credential.operator_email,
        person: credential.person,
        created_at: new.created_at,
        expires_at: new.expires_at,
    };
    let caller = Caller::from_session(&session, connect.map(|c| c.0.0));
    caller
        .audit(
            &state,
            session.person.as_ref().map(|p| p.tenant_id),
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
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let (a, b) = (csrf_token("one"), csrf_token("two"));
        assert_ne!(a, b);
        assert!(same(&a, &csrf_token("one")));
        assert!(!same(&a, &b) && !same(&a, &a[1..]));
    }
}

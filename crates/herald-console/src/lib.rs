//! Herald's web console: pages rendered on the server (minijinja templates,
//! htmx for partial updates, both compiled into the binary), mounted by
//! `herald serve` next to the REST API.
//!
//! Every action goes through the API's own services (`herald_api::service`)
//! with a [`Caller`](herald_api::Caller) made from the console session, so
//! roles, tenant isolation, validation and the audit log are the API's.

mod client;
mod forms;
mod gate;
mod notice;
mod operator;
mod pages;
mod render;
mod session;
mod tenant;
mod throttle;
mod verify;
mod when;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use herald_api::AppState;

/// htmx, vendored from the npm package `htmx.org`: no CDN, no front-end build.
const HTMX: &str = include_str!("../assets/htmx.min.js");
const CSS: &str = include_str!("../assets/console.css");
/// The console's own small script: local times, and form niceties. Every
/// page reads and works without it.
const SCRIPT: &str = include_str!("../assets/console.js");

/// How much anonymous sign-in work a node takes on.
#[derive(Clone, Copy, Debug)]
pub struct SignInLimits {
    /// Password verifications (argon2id, about 19 MiB each) running at once.
    pub verifications: usize,
    /// Sign-ins waiting for a verification; beyond, 429 at once.
    pub waiting: usize,
    /// Sign-in attempts one client address may make at once…
    pub burst: u32,
    /// …and then one more each this often.
    pub every: Duration,
}

impl Default for SignInLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // More verifications than cores gain nothing but memory: argon2 keeps
        // a core busy for the whole verification.
        let verifications = (2 * cores).clamp(2, 16);
        SignInLimits {
            verifications,
            waiting: 4 * verifications,
            burst: 10,
            every: Duration::from_secs(6),
        }
    }
}

/// What the console needs besides the API's state. Not `Debug`: it holds a key.
#[derive(Clone)]
pub struct Options {
    /// Proxies whose `X-Forwarded-For`, `-Host` and `-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub sign_in: SignInLimits,
    /// The key the sign-in form's CSRF token is an HMAC under. Every node
    /// behind one balancer must have the same (it comes from the master key),
    /// since the form and its POST may reach different nodes.
    pub form_key: [u8; 32],
}

/// The console's own state, shared by its handlers through an extension.
pub(crate) struct Console {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub form_key: [u8; 32],
    pub failures: throttle::SignInThrottle,
    pub rate: throttle::ClientRate,
    pub verifier: verify::Verifier,
}

/// The console's routes. Every POST passes the origin and CSRF checks first.
pub fn router(state: AppState, options: Options) -> Router {
    let console = Console {
        trusted_proxies: options.trusted_proxies,
        form_key: options.form_key,
        failures: throttle::SignInThrottle::default(),
        rate: throttle::ClientRate::new(options.sign_in.burst, options.sign_in.every),
        verifier: verify::Verifier::new(options.sign_in.verifications, options.sign_in.waiting),
    };
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/static/htmx.min.js", get(htmx))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(script))
        .merge(tenant::router())
        .merge(operator::router())
        // A page asked for with a method it does not take (a GET of a form's
        // action) is a page too, not the API's JSON.
        .method_not_allowed_fallback(|| async {
            render::status_page(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "This address takes a form's submission, not a visit.",
            )
        })
        .layer(middleware::from_fn(session::csrf_guard))
        // A page whose handler panics answers the console's 500 page.
        .layer(middleware::from_fn(|request, next| async {
            herald_api::panic::catch(request, next)
                .await
                .unwrap_or_else(|e| render::PageError::from(e).into_response())
        }))
        .layer(axum::Extension(Arc::new(console)))
        .layer(middleware::map_response(protect))
        .with_state(state)
}

/// What a URL no route knows answers, for the node that serves the console
/// beside the API (set as the merged router's fallback): under the API's
/// paths the API's JSON problem, anywhere else the console's HTML 404 page
/// with a way back.
pub async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let path = uri.path();
    let api = path == "/v1" || path.starts_with("/v1/") || matches!(path, "/healthz" | "/readyz");
    if api {
        return herald_api::ApiError::NotFound("route").into_response();
    }
    protect(render::status_page(
        axum::http::StatusCode::NOT_FOUND,
        "There is no page at this address.",
    ))
    .await
}

/// Headers every console answer carries: only the console's own scripts and
/// styles run, no other site may frame it, and pages (which show a tenant's
/// configuration) are not kept in caches; the static assets set their own.
async fn protect(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers
            .entry(name)
            .or_insert(axum::http::HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}

async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        HTMX,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

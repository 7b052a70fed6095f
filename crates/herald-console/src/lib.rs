//! Herald's web console: pages rendered on the server (minijinja templates,
//! htmx for partial updates, both compiled into the binary), mounted by
//! `herald serve` next to the REST API.
//!
//! Every action goes through the API's own services (`herald_api::service`)
//! with a [`Caller`](herald_api::Caller) made from the console session, so
//! roles, tenant isolation, validation and the audit log are the API's.

mod forms;
mod operator;
mod pages;
mod render;
mod session;
mod tenant;
mod throttle;

use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use herald_api::AppState;

/// htmx, vendored from the npm package `htmx.org`: no CDN, no front-end build.
const HTMX: &str = include_str!("../assets/htmx.min.js");
const CSS: &str = include_str!("../assets/console.css");

/// The console's routes. Every POST passes the CSRF check first.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/static/htmx.min.js", get(htmx))
        .route("/static/console.css", get(css))
        .merge(tenant::router())
        .merge(operator::router())
        .layer(middleware::from_fn(session::csrf_guard))
        .layer(axum::Extension(std::sync::Arc::new(
            throttle::SignInThrottle::default(),
        )))
        .layer(middleware::map_response(protect))
        .with_state(state)
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

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

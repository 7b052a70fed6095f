//! A request handler that panics answers 500 like any internal error, with the
//! panic in the log; the connection gets its answer and the node goes on.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use crate::ApiError;

/// Runs the rest of the stack; a panic in it becomes [`ApiError::Internal`],
/// for the caller to answer in its own form (problem+json, or a console page).
pub async fn catch(request: Request, next: Next) -> Result<Response, ApiError> {
    AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
        .map_err(|panic| {
            ApiError::Internal(format!("a request handler panicked: {}", said(&*panic)).into())
        })
}

/// The API's layer: a panic answers problem+json 500.
pub async fn contain_panics(request: Request, next: Next) -> Response {
    catch(request, next).await.into_response()
}

/// What a panic said, when it said it in words.
fn said(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_router_goes_on() {
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(super::contain_panics));
        let request = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(Body::empty())
                .unwrap()
        };
        let answer = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        let body = axum::body::to_bytes(answer.into_body(), 10_000)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("a bug in a handler"), "{body}");
        let answer = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
}

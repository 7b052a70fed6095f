//! Answers the API gives before any handler runs: a body declared larger
//! than the node takes (413 at once, not after reading it), and a path
//! whose parameters are not UTF-8 (the 404 of anything malformed in a path,
//! as problem+json like every other answer).

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// Refuses a request whose `Content-Length` is over `limit` bytes before
/// its body is read, so the client learns at once rather than after
/// sending it all (or after the node's body timeout, if it sends nothing).
pub(crate) async fn refuse_early(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return ApiError::TooLarge.into_response();
    }
    let (mut parts, body) = request.into_parts();
    if let Err(RawPathParamsRejection::InvalidUtf8InPathParam(rejection)) =
        RawPathParams::from_request_parts(&mut parts, &()).await
    {
        // A parameter that is not UTF-8 names nothing that could exist.
        let what = if rejection.body_text().contains("`tenant`") {
            "tenant"
        } else {
            "object"
        };
        return ApiError::NotFound(what).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

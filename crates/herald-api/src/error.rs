//! API errors as RFC 9457 problem details (`application/problem+json`) with stable types.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::FieldError;
use herald_store::StoreError;
use serde::Serialize;

/// What caused a 5xx answer: logged with its own causes, never sent.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error answer. 5xx details are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not the JSON this endpoint takes.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is larger than any request may be.
    #[error("the request is too large")]
    TooLarge,
    /// The body is not declared as JSON (`Content-Type: application/json`).
    #[error("the body is not JSON")]
    UnsupportedMediaType,
    /// The client stopped sending the body for longer than the node waits.
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Fields broke their rules.
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    /// No valid token.
    #[error("no valid token")]
    Unauthorized,
    /// The token is valid but its role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The tenant has not been granted credential storage.
    #[error("the tenant may not store credentials")]
    NotEntitled,
    /// No such object for this caller (also for another tenant's objects).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The change conflicts with what is stored.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No node with the worker role is alive to run a job.
    #[error("no worker node is alive")]
    NoWorker,
    /// The mail would go through a gateway none of whose instances is
    /// alive: why, naming the gateway and when it was last seen.
    #[error("{0}")]
    NoGateway(String),
    /// The database is unreachable or full: the request was not stored.
    #[error("storage unavailable")]
    Unavailable(#[source] Cause),
    /// The tenant has as many recipients waiting as the node allows.
    #[error("the tenant's queue is full ({limit} recipients)")]
    QueueFull {
        /// The most recipients a tenant may have queued.
        limit: u64,
    },
    /// The tenant has as many test messages waiting as it may.
    #[error("the tenant has {limit} test messages waiting")]
    TooManyTests {
        /// The most test messages a tenant may have waiting.
        limit: u32,
    },
    /// A gateway has as many claims waiting at this node as it may.
    #[error("the gateway has {limit} claims waiting at this node")]
    TooManyWaitingClaims {
        /// The most claims of one gateway that may wait at a node.
        limit: usize,
    },
    /// Something that should not happen.
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// An error with each of its causes once, for the log: a cause whose text
/// its parent already includes is not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut written = self.0.to_string();
        f.write_str(&written)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !written.contains(&text) {
                write!(f, ": {text}")?;
                written.push_str(&text);
            }
            cause = e.source();
        }
        Ok(())
    }
}

/// Seconds a client is asked to wait after a full queue: long enough for a
/// working node to deliver a share of the backlog, short enough for alerts.
const QUEUE_FULL_RETRY_AFTER: &str = "30";

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

impl ApiError {
    /// One invalid field.
    pub fn field(error: FieldError) -> Self {
        ApiError::Invalid(vec![error])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("object"),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Invalid(field) => ApiError::field(field),
            e @ StoreError::Unavailable(_) => ApiError::Unavailable(Box::new(e)),
            StoreError::QueueFull { limit } => ApiError::QueueFull { limit },
            StoreError::TooManyTests { limit } => ApiError::TooManyTests { limit },
            e @ StoreError::Corrupt(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

impl ApiError {
    /// The problem document of this error, for answers that carry several (batch submission).
    pub fn problem(self) -> serde_json::Value {
        let (status, kind, title, detail, errors) = self.describe();
        serde_json::to_value(Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            errors,
        })
        .expect("a problem serialises")
    }

    /// Status, type, title, detail and field errors; 5xx causes are logged here, never sent.
    fn describe(
        self,
    ) -> (
        StatusCode,
        &'static str,
        &'static str,
        String,
        Vec<FieldError>,
    ) {
        match self {
            ApiError::Malformed(why) => (
                StatusCode::BAD_REQUEST,
                "urn:herald:problem:malformed-request",
                "Malformed request",
                why,
                vec![],
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:herald:problem:too-large",
                "Request too large",
                "the body is larger than this node accepts (see --max-message-size)".to_owned(),
                vec![],
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:herald:problem:unsupported-media-type",
                "Unsupported media type",
                "the body must be JSON, sent with Content-Type: application/json".to_owned(),
                vec![],
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "urn:herald:problem:body-timeout",
                "Request timeout",
                "the body did not arrive in time; nothing was stored, send the request again".to_owned(),
                vec![],
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "urn:herald:problem:method-not-allowed",
                "Method not allowed",
                "this route does not take this method".to_owned(),
                vec![],
            ),
            ApiError::Invalid(errors) => {
                let detail = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "urn:herald:problem:invalid-fields",
                    "Invalid fields",
                    detail,
                    errors,
                )
            }
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "urn:herald:problem:unauthorized",
                "Unauthorized",
                "a valid token is required: Authorization: Bearer <token>".to_owned(),
                vec![],
            ),
            ApiError::Forbidden(why) => (StatusCode::FORBIDDEN, "urn:herald:problem:forbidden", "Forbidden", why, vec![]),
            ApiError::NotEntitled => (
                StatusCode::FORBIDDEN,
                "urn:herald:problem:credential-storage-not-granted",
                "Credential storage not granted",
                "this tenant may not store passwords or tokens until the operator grants the credential storage entitlement"
                    .to_owned(),
                vec![],
            ),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "urn:herald:problem:not-found",
                "Not found",
                format!("{what} not found"),
                vec![],
            ),
            ApiError::Conflict(why) => (StatusCode::CONFLICT, "urn:herald:problem:conflict", "Conflict", why, vec![]),
            ApiError::NoWorker => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:herald:problem:no-worker-alive",
                "No worker node is alive",
                "no node with the worker role has sent a heartbeat recently, so nothing would run the test; nothing was queued"
                    .to_owned(),
                vec![],
            ),
            ApiError::NoGateway(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:herald:problem:no-gateway-alive",
                "No instance of the gateway is alive",
                format!("{why}; nothing was queued"),
                vec![],
            ),
            ApiError::Unavailable(why) => {
                tracing::error!(error = %Chain(why.as_ref()), "storage unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "urn:herald:problem:unavailable",
                    "Service unavailable",
                    "the database is unavailable; nothing was stored, try again".to_owned(),
                    vec![],
                )
            }
            ApiError::QueueFull { limit } => (
                StatusCode::TOO_MANY_REQUESTS,
                "urn:herald:problem:queue-full",
                "Too many queued recipients",
                format!(
                    "the tenant has reached its limit of {limit} queued recipients \
                     (max_queued_per_tenant); nothing was stored, try again once some are delivered"
                ),
                vec![],
            ),
            ApiError::TooManyTests { limit } => (
                StatusCode::TOO_MANY_REQUESTS,
                "urn:herald:problem:too-many-test-messages",
                "Too many test messages",
                format!(
                    "the tenant already has {limit} test messages queued or being sent, the most \
                     it may have; nothing was stored, send another once one of them has finished"
                ),
                vec![],
            ),
            ApiError::TooManyWaitingClaims { limit } => (
                StatusCode::TOO_MANY_REQUESTS,
                "urn:herald:problem:too-many-waiting-claims",
                "Too many waiting claims",
                format!(
                    "this gateway already has {limit} claims waiting at this node, the most it \
                     may have; claim again once one has answered"
                ),
                vec![],
            ),
            ApiError::Internal(why) => {
                tracing::error!(error = %Chain(why.as_ref()), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "urn:herald:problem:internal",
                    "Internal error",
                    "an internal error occurred; it has been logged".to_owned(),
                    vec![],
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title, detail, errors) = self.describe();
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(QUEUE_FULL_RETRY_AFTER),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_keeps_its_causes_and_the_log_names_each_once() {
        let io = std::io::Error::other("disk I/O error");
        let store = StoreError::Unavailable(herald_store::Cause::of("writing a message", io));
        let api = ApiError::from(store);
        let source = std::error::Error::source(&api).expect("the store's error");
        assert!(source.downcast_ref::<StoreError>().is_some());
        assert_eq!(
            Chain(&api).to_string(),
            "storage unavailable: database unavailable: writing a message: disk I/O error"
        );
        let (status, ..) = api.describe();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}

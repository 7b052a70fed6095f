//! The JSON body extractor. It only reads the bytes; the handler parses them
//! after it has checked the caller, so a token on another tenant's route learns
//! nothing from a validation answer. Malformed JSON, wrong types and unknown
//! fields become problem+json naming the field.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON request body of type `T` (declared with `deny_unknown_fields`), read but not yet parsed.
pub struct Body<T> {
    bytes: Result<Bytes, ApiError>,
    /// The request declared no body at all (no content type, no length).
    empty: bool,
    _type: PhantomData<fn() -> T>,
}

impl<S: Send + Sync, T> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        let empty = req.headers().get(header::CONTENT_TYPE).is_none()
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        let bytes = if is_json {
            Bytes::from_request(req, state).await.map_err(|rejection| {
                if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::Malformed("the body could not be read".into())
                }
            })
        } else {
            Err(ApiError::Malformed(
                "the body must be JSON, sent with Content-Type: application/json".into(),
            ))
        };
        Ok(Body {
            bytes,
            empty,
            _type: PhantomData,
        })
    }
}

impl<T: DeserializeOwned + Default> Body<T> {
    /// Parses the body, or gives the default when the request has none.
    pub fn parse_or_default(self) -> Result<T, ApiError> {
        if matches!(&self.bytes, Ok(bytes) if bytes.is_empty()) {
            return Ok(T::default());
        }
        if matches!(&self.bytes, Err(ApiError::Malformed(_))) && self.empty {
            return Ok(T::default());
        }
        self.parse()
    }
}

impl<T: DeserializeOwned> Body<T> {
    /// Parses the body, naming the field of the first error.
    pub fn parse(self) -> Result<T, ApiError> {
        let bytes = self.bytes?;
        // Serde would read a struct from an array too; the API takes objects only.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::Malformed(
                "the body is not valid for this endpoint: it must be a JSON object".into(),
            ));
        }
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || inner.is_syntax() || inner.is_eof() {
                ApiError::Malformed(format!(
                    "the body is not valid JSON for this endpoint: {inner}"
                ))
            } else {
                ApiError::Malformed(format!("field {path}: {inner}"))
            }
        })?;
        json.end()
            .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))?;
        Ok(value)
    }
}

//! The JSON body extractor. It only reads the bytes; the handler parses them
//! after it has checked the caller, so a token on another tenant's route learns
//! nothing from a validation answer. Malformed JSON, wrong types and unknown
//! fields become problem+json naming the field; a missing field is a 422
//! naming it, as every other broken rule is. No answer repeats a value of
//! the body: a secret sent in the wrong place must not come back.
//!
//! It also holds the readers of the free-form parts of bodies (`data`,
//! `headers`, a batch's messages), which refuse an object naming a key twice
//! where serde_json would silently keep the last.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use herald_core::Invalid;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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
        // A chunked body declares no length, but is a body all the same.
        let empty = req.headers().get(header::CONTENT_TYPE).is_none()
            && req.headers().get(header::TRANSFER_ENCODING).is_none()
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        let bytes = if is_json {
            Bytes::from_request(req, state).await.map_err(|rejection| {
                if timed_out(&rejection) {
                    ApiError::BodyTimeout
                } else if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::Malformed("the body could not be read".into())
                }
            })
        } else {
            Err(ApiError::UnsupportedMediaType)
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
        if matches!(&self.bytes, Err(ApiError::UnsupportedMediaType)) && self.empty {
            return Ok(T::default());
        }
        self.parse()
    }
}

impl<T: DeserializeOwned> Body<T> {
    /// Parses the body, an object only ([`AnObject`]), naming the field of
    /// the first error.
    pub fn parse(self) -> Result<T, ApiError> {
        let bytes = self.bytes?;
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        let AnObject(value) = serde_path_to_error::deserialize(&mut json).map_err(refusal)?;
        json.end()
            .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))?;
        Ok(value)
    }
}

/// True when reading the body failed because the client stopped sending
/// it for longer than the node waits (the connection's read timeout).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The answer to JSON that serde could not read as this endpoint's body:
/// a missing field is a broken rule like any other (422 naming it); the
/// rest means the body is not the JSON the endpoint takes (400 naming the
/// field). The text never repeats a value of the body.
pub(crate) fn refusal(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        // Such as a number out of range, inside a field: named.
        return ApiError::Malformed(match path.as_str() {
            "." => format!("the body is not valid JSON: {inner}"),
            field => format!("the body is not valid JSON: field {field}: {inner}"),
        });
    }
    let text = inner.to_string();
    // serde_json ends its text with where it stopped reading.
    let text = text
        .rfind(" at line ")
        .map_or(text.as_str(), |end| &text[..end]);
    let within = |name: &str| match path.as_str() {
        "." => name.to_owned(),
        parent => format!("{parent}.{name}"),
    };
    if let Some(name) = text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return ApiError::field(Invalid::new("is required").at(within(name)));
    }
    let rule = without_values(text);
    if path == "." {
        ApiError::Malformed(format!(
            "the body is not valid JSON for this endpoint: {rule}"
        ))
    } else {
        ApiError::Malformed(format!("field {path}: {rule}"))
    }
}

/// serde's text of a data error with the offending value left out:
/// "invalid type: integer \`123\`, expected a string" becomes "invalid
/// type: integer, expected a string".
fn without_values(text: &str) -> String {
    let kind_of = |unexpected: &str| {
        let end = [" `", " \""]
            .iter()
            .filter_map(|quote| unexpected.find(quote))
            .min()
            .unwrap_or(unexpected.len());
        unexpected[..end].to_owned()
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix)
            && let Some(split) = rest.rfind(", expected ")
        {
            let (unexpected, expected) = rest.split_at(split);
            return format!("{prefix}{}{expected}", kind_of(unexpected));
        }
    }
    if let Some(rest) = text.strip_prefix("unknown variant `")
        && let Some(split) = rest.rfind(", expected ")
    {
        return format!("unknown variant{}", &rest[split..]);
    }
    text.to_owned()
}

/// Any JSON value, as serde_json reads one but for an object that names a
/// key twice, which is refused (serde_json would keep the last).
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("the key `{key}` is given twice")));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Reads an optional free-form JSON part (`data`) with [`UniqueKeys`]; use
/// with `#[serde(default, deserialize_with = "…")]`.
pub(crate) fn unique_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<UniqueKeys>::deserialize(d)?.map(|UniqueKeys(v)| v))
}

/// Reads a list of free-form JSON values (a batch's messages, each parsed
/// on its own later) with [`UniqueKeys`].
pub(crate) fn each_with_unique_keys<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Value>, D::Error> {
    Ok(Vec::<UniqueKeys>::deserialize(d)?
        .into_iter()
        .map(|UniqueKeys(v)| v)
        .collect())
}

/// A `T` read from a JSON object only. serde would also read a struct from
/// an array of its fields in order, which would let a nested part of a body
/// escape the rule that a body is an object of named fields.
pub(crate) struct AnObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for AnObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(PhantomData)).map(AnObject)
    }
}

/// Reads an optional nested part of a body from an object only (see
/// [`AnObject`]); use with `#[serde(default, deserialize_with = "…")]`.
pub(crate) fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<AnObject<T>>::deserialize(d)?.map(|AnObject(t)| t))
}

/// Reads a list of nested parts of a body, each from an object only (see
/// [`AnObject`]).
pub(crate) fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<AnObject<T>>::deserialize(d)?
        .into_iter()
        .map(|AnObject(t)| t)
        .collect())
}

/// Reads a JSON object of strings as its pairs, in the order given and
/// with any name given twice kept twice, so that the caller's rules see
/// (and refuse) a repeated name rather than serde_json dropping one.
pub(crate) fn string_pairs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    d.deserialize_map(Pairs)
}

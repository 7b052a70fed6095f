//! Secrets: a string type that never prints itself, and the AEAD that seals secrets at rest.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A password, client secret or token. Its `Debug` and `Display` print `[redacted]`,
/// so it cannot leak through a log line, an error or a panic message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a sealed secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The sealed value is not in Herald's format.
    #[error("sealed secret is malformed")]
    Malformed,
    /// The value was sealed under a key this node does not have.
    #[error("sealed secret names key {0}, which this node does not hold")]
    UnknownKey(String),
    /// Authentication of the ciphertext failed: wrong key, or tampering.
    #[error("sealed secret failed authentication")]
    Tampered,
}

/// Seals and opens secrets with XChaCha20-Poly1305 under a master key kept outside the database.
///
/// A sealed value reads `hk1.<key id>.<base64 nonce and ciphertext>`; the key id
/// says which key of the keyring opens it, which is what lets a key rotation
/// re-seal everything under a new key while the old one still opens what is
/// not done yet. The associated data binds a value to the row it belongs to,
/// so a ciphertext copied into another row does not open.
pub struct Sealer {
    /// The primary key first: it seals; every key opens what it sealed.
    keys: Vec<(String, XChaCha20Poly1305)>,
}

fn key_id(key: &[u8; Sealer::KEY_LEN]) -> String {
    Sha256::digest(key)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sealer {
    /// Length of a master key in bytes.
    pub const KEY_LEN: usize = 32;

    /// A sealer for a 32-byte master key.
    pub fn new(key: &[u8; Self::KEY_LEN]) -> Self {
        Self::with_keys(key, &[])
    }

    /// A sealer that seals with `primary` and also opens what `older` keys sealed.
    pub fn with_keys(primary: &[u8; Self::KEY_LEN], older: &[[u8; Self::KEY_LEN]]) -> Self {
        let keys = std::iter::once(primary)
            .chain(older)
            .map(|key| (key_id(key), XChaCha20Poly1305::new(key.into())))
            .collect();
        Sealer { keys }
    }

    /// A fresh random master key.
    pub fn generate_key() -> [u8; Self::KEY_LEN] {
        let mut key = [0u8; Self::KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        key
    }

    /// The short id of the primary key, which seals.
    pub fn key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The id of the key a sealed value names, if it is in Herald's format.
    pub fn sealed_key_id(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, '.');
        (parts.next() == Some("hk1"))
            .then(|| parts.next())
            .flatten()
    }

    /// Seals a secret for the row named by `context`.
    pub fn seal(&self, secret: &Secret, context: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: context.as_bytes(),
        };
        let (key_id, cipher) = &self.keys[0];
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!("hk1.{key_id}.{}", B64.encode(blob))
    }

    /// Opens a value sealed for the row named by `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("hk1"), Some(key_id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        let Some((_, cipher)) = self.keys.iter().find(|(id, _)| id == key_id) else {
            return Err(SealError::UnknownKey(key_id.to_owned()));
        };
        let blob = B64.decode(data).map_err(|_| SealError::Malformed)?;
        if blob.len() < 24 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(24);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Tampered)?;
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| SealError::Malformed)
    }
}

/// What stands for a secret in a URL that is shown.
const REDACTED: &str = "***";

/// A URL as it may be shown in logs, errors and command output: the password
/// of its user information, and the value of every query parameter whose name
/// says it holds a secret (PostgreSQL's `password=`, `sslpassword=`, any
/// `…token…`, `…secret…`), are replaced by `***`; the fragment is dropped.
///
/// A value that does not parse as a URL is shown only up to its `://` and
/// after the last `@` of its authority, without query or fragment, since where
/// a secret sits in it cannot be known.
pub fn redact_url(input: &str) -> String {
    let Ok(mut url) = url::Url::parse(input) else {
        return redact_unparsed(input);
    };
    if url.password().is_some() {
        // Only a URL that cannot have a password refuses one, and this one has one.
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let lower = key.to_ascii_lowercase();
                let secret = ["pass", "secret", "token", "key"]
                    .iter()
                    .any(|word| lower.contains(word));
                let value = if secret {
                    REDACTED.into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.set_fragment(None);
    url.to_string()
}

/// [`redact_url`] for a value the URL parser refused (PostgreSQL's list of
/// hosts, `postgres://u:pw@a:5432,b:5432/db`, is one).
fn redact_unparsed(input: &str) -> String {
    let (scheme, rest) = input.split_once("://").unwrap_or(("", input));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_owned(),
    };
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn seal_round_trip_bound_to_context() {
        let sealer = Sealer::new(&Sealer::generate_key());
        let sealed = sealer.seal(&Secret::new("hunter2"), "account-1");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            sealer.open(&sealed, "account-1").unwrap().expose(),
            "hunter2"
        );
        assert!(matches!(
            sealer.open(&sealed, "account-2"),
            Err(SealError::Tampered)
        ));
        let other = Sealer::new(&Sealer::generate_key());
        assert!(matches!(
            other.open(&sealed, "account-1"),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let cases = [
            (
                "postgres://herald:hunter2@db.example:5432/herald",
                "postgres://herald:***@db.example:5432/herald",
            ),
            // A password holding `@`: the userinfo ends at the last one.
            (
                "postgres://herald:pa@ss@db.example/herald",
                "postgres://herald:***@db.example/herald",
            ),
            (
                "postgresql://herald@db.example/herald?password=hunter2&application_name=x",
                "postgresql://herald@db.example/herald?password=***&application_name=x",
            ),
            (
                "postgres://db.example/herald?user=herald&PassWord=hunter2&sslpassword=hunter3",
                "postgres://db.example/herald?user=herald&PassWord=***&sslpassword=***",
            ),
            (
                "https://login.example/token?client_secret=hunter2#frag",
                "https://login.example/token?client_secret=***",
            ),
            (
                "postgres://herald:hunter2@a:5432,b:5433/herald?password=hunter2",
                "postgres://***@a:5432,b:5433/herald",
            ),
            (
                "sqlite://herald-data/herald.db",
                "sqlite://herald-data/herald.db",
            ),
        ];
        for (input, shown) in cases {
            let redacted = redact_url(input);
            assert_eq!(redacted, shown, "{input}");
            assert!(
                !redacted.contains("hunter") && !redacted.contains("ss@"),
                "{redacted}"
            );
        }
    }
}

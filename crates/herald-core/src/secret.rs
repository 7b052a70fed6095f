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
/// lets a later key rotation find what each value was sealed with. The
/// associated data binds a value to the row it belongs to, so a ciphertext
/// copied into another row does not open.
pub struct Sealer {
    key_id: String,
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// Length of a master key in bytes.
    pub const KEY_LEN: usize = 32;

    /// A sealer for a 32-byte master key.
    pub fn new(key: &[u8; Self::KEY_LEN]) -> Self {
        let digest = Sha256::digest(key);
        let key_id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Sealer {
            key_id,
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A fresh random master key.
    pub fn generate_key() -> [u8; Self::KEY_LEN] {
        let mut key = [0u8; Self::KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        key
    }

    /// The short id of this sealer's key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals a secret for the row named by `context`.
    pub fn seal(&self, secret: &Secret, context: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: context.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!("hk1.{}.{}", self.key_id, B64.encode(blob))
    }

    /// Opens a value sealed for the row named by `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("hk1"), Some(key_id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Malformed);
        };
        if key_id != self.key_id {
            return Err(SealError::UnknownKey(key_id.to_owned()));
        }
        let blob = B64.decode(data).map_err(|_| SealError::Malformed)?;
        if blob.len() < 24 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(24);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Tampered)?;
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| SealError::Malformed)
    }
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
}

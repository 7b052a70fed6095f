//! API tokens: random, shown once, stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix that makes a Herald token recognisable in a leaked-secret scan.
pub const PREFIX: &str = "hrld_";

/// A new random token (256 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", B64URL.encode(bytes))
}

/// The prefix of an SMTP credential's password, which a leaked-secret scan can tell from a token.
pub const SMTP_PASSWORD_PREFIX: &str = "hrlds_";

/// A new random password for an SMTP credential (256 bits), shown once.
pub fn smtp_password() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SMTP_PASSWORD_PREFIX}{}", B64URL.encode(bytes))
}

/// The prefix of a gateway's token, which a leaked-secret scan can tell from
/// an API token or an SMTP password.
pub const GATEWAY_TOKEN_PREFIX: &str = "hrldg_";

/// A new random token for a gateway (256 bits), shown once and stored as its [`hash`].
pub fn gateway_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{GATEWAY_TOKEN_PREFIX}{}", B64URL.encode(bytes))
}

/// True when two hashes are equal, in time that does not depend on where they differ.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The hash under which a token is stored and looked up: SHA-256 in
/// lowercase hex. Every request hashes its token, so the digits are
/// written straight into one string.
pub fn hash(token: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (super::generate(), super::generate());
        assert_ne!(a, b);
        assert!(a.starts_with(super::PREFIX));
        assert_eq!(super::hash(&a), super::hash(&a));
        assert_eq!(super::hash(&a).len(), 64);
        // Stored hashes stay valid: SHA-256 in lowercase hex (FIPS 180-2's "abc").
        assert_eq!(
            super::hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn smtp_passwords_are_random_and_hashes_compare_whole() {
        let (a, b) = (super::smtp_password(), super::smtp_password());
        assert_ne!(a, b);
        assert!(a.starts_with(super::SMTP_PASSWORD_PREFIX));
        assert!(super::hashes_match(&super::hash(&a), &super::hash(&a)));
        assert!(!super::hashes_match(&super::hash(&a), &super::hash(&b)));
        assert!(!super::hashes_match("ab", "abc"));
    }

    #[test]
    fn gateway_tokens_are_random_and_recognisable() {
        let (a, b) = (super::gateway_token(), super::gateway_token());
        assert_ne!(a, b);
        assert!(a.starts_with(super::GATEWAY_TOKEN_PREFIX));
        assert!(!a.starts_with(super::PREFIX));
        assert_eq!(super::hash(&a).len(), 64);
    }
}

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

/// The hash under which a token is stored and looked up.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    }
}

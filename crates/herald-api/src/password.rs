//! Console passwords: the rule a new one must meet, and argon2id hashing and
//! verification. Only the hash (a PHC string with its own salt) is ever stored.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use herald_core::{Invalid, Secret};

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 12;

/// Checks a new password against the rule, giving it back as a [`Secret`].
pub fn parse(input: &str) -> Result<Secret, Invalid> {
    let length = input.chars().count();
    if !(MIN_LENGTH..=1024).contains(&length) || input.chars().any(char::is_control) {
        return Err(Invalid::new(format!(
            "must be {MIN_LENGTH} to 1024 characters without control characters"
        )));
    }
    Ok(Secret::new(input))
}

/// Hashes a password with argon2id and a fresh random salt.
pub fn hash(password: &Secret) -> String {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// True when `password` matches the stored `hash`; a malformed hash matches nothing.
pub fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash(&parse("correct horse battery").unwrap());
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &hash));
        assert!(!verify("correct horse batterz", &hash));
        assert!(!verify("correct horse battery", "not a hash"));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(parse("short").is_err());
        assert!(parse("line\nbreak in it").is_err());
    }
}

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

/// Like [`verify`], but hashes in `memory`, which the caller keeps for the
/// next verification (grown to the size the hash asks for).
///
/// argon2 allocates its working memory (19 MiB with the default parameters)
/// on every call, and the allocator kept each of those buffers rather than
/// reusing or returning it: a thread that verifies many passwords, as the
/// console's verifiers do, would keep 19 MiB more after each one.
pub fn verify_in(password: &str, hash: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm);
    let version = argon2::Version::try_from(parsed.version.unwrap_or(0x13));
    let params = argon2::Params::try_from(&parsed);
    let (Ok(algorithm), Ok(version), Ok(params), Some(salt), Some(expected)) =
        (algorithm, version, params, parsed.salt, parsed.hash)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut output = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut output,
        &mut memory[..blocks],
    );
    // `Output` compares in constant time.
    hashed.is_ok()
        && argon2::password_hash::Output::new(&output).is_ok_and(|output| output == expected)
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
        let mut memory = Vec::new();
        assert!(verify_in("correct horse battery", &hash, &mut memory));
        assert!(!verify_in("correct horse batterz", &hash, &mut memory));
        assert!(!verify_in(
            "correct horse battery",
            "not a hash",
            &mut memory
        ));
        assert_eq!(memory.len(), argon2::Params::DEFAULT_M_COST as usize);
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(parse("short").is_err());
        assert!(parse("line\nbreak in it").is_err());
    }
}

//! Standard Webhooks signatures: `v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` under each key, space-separated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;

/// A webhook's signing key, prepared once for HMAC-SHA256 (the hash
/// states after the key's inner and outer pads), so that signing an event
/// hashes only the event.
pub type SigningKey = hmac::Key;

/// `secret` (the bytes of a `whsec_` secret) as a signing key.
pub fn signing_key(secret: &[u8]) -> SigningKey {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// The `webhook-signature` header's value: one `v1,` signature per key, the
/// current key first (during a rotation the previous one follows).
pub fn signature(keys: &[SigningKey], id: &str, timestamp: i64, body: &str) -> String {
    let timestamp = timestamp.to_string();
    let mut header = String::with_capacity(48 * keys.len());
    for key in keys {
        let mut mac = hmac::Context::with_key(key);
        for part in [id, ".", &timestamp, ".", body] {
            mac.update(part.as_bytes());
        }
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        B64.encode_string(mac.sign().as_ref(), &mut header);
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::webhook::secret_key;

    /// The test vector of the Standard Webhooks specification.
    #[test]
    fn signs_the_specifications_test_vector() {
        let key = signing_key(&secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        assert_eq!(
            signature(
                &[key],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_sends_both_signatures() {
        let (a, b) = (signing_key(&[1u8; 32]), signing_key(&[2u8; 32]));
        let both = signature(&[a.clone(), b.clone()], "evt_1", 5, "{}");
        let (first, second) = both.split_once(' ').unwrap();
        assert_eq!(first, signature(&[a], "evt_1", 5, "{}"));
        assert_eq!(second, signature(&[b], "evt_1", 5, "{}"));
    }
}

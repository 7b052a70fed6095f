//! Standard Webhooks signatures: `v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` under each key, space-separated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `webhook-signature` header's value: one `v1,` signature per key, the
/// current key first (during a rotation the previous one follows).
pub fn signature(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    keys.iter()
        .map(|key| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::webhook::secret_key;

    /// The test vector of the Standard Webhooks specification.
    #[test]
    fn signs_the_specifications_test_vector() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
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
        let (a, b) = (vec![1u8; 32], vec![2u8; 32]);
        let both = signature(&[a.clone(), b.clone()], "evt_1", 5, "{}");
        let (first, second) = both.split_once(' ').unwrap();
        assert_eq!(first, signature(&[a], "evt_1", 5, "{}"));
        assert_eq!(second, signature(&[b], "evt_1", 5, "{}"));
    }
}

//! The messages the benchmark sends: a text body of the chosen size, the JSON
//! submission the API receives, and the RFC 5322 message the ceiling sends.

use serde_json::{Value, json};

/// The recipient of every benchmark message; the sink takes any address.
pub const RECIPIENT: &str = "bench@sink.example";
/// The sender of the ceiling's messages (Herald uses the provider's From).
pub const SENDER: &str = "alerts@bench.example";

/// A plain ASCII text of exactly `size` bytes in lines of 76 characters, like a
/// typical notification; no line starts with a dot, so nothing is stuffed.
pub fn body_text(size: usize) -> String {
    const LINE: &str =
        "The quick brown fox jumps over the lazy dog while Herald delivers its mail. ";
    let mut text = String::with_capacity(size);
    while text.len() < size {
        let room = size - text.len();
        if room > LINE.len() {
            text.push_str(&LINE[..LINE.len() - 1]);
            text.push('\n');
        } else {
            text.push_str(&LINE[..room]);
        }
    }
    text
}

/// One message as the API takes it.
pub fn submission(size: usize) -> Value {
    submission_to(size, RECIPIENT)
}

/// One message to `to` as the API takes it: the fairness phase gives each of
/// its timed messages a recipient of its own, to find it at the sink.
pub fn submission_to(size: usize, to: &str) -> Value {
    json!({
        "to": [to],
        "subject": "Herald benchmark notification",
        "text": body_text(size),
    })
}

/// The JSON bytes of one submission, ready to post again and again.
pub fn submission_bytes(size: usize) -> Vec<u8> {
    serde_json::to_vec(&submission(size)).expect("JSON serialises")
}

/// The JSON bytes of a batch of `n` submissions.
pub fn batch_bytes(size: usize, n: usize) -> Vec<u8> {
    let one = submission(size);
    let messages: Vec<Value> = std::iter::repeat_n(one, n).collect();
    serde_json::to_vec(&json!({ "messages": messages })).expect("JSON serialises")
}

/// An RFC 5322 message with headers like the ones Herald writes and a body of
/// `size` bytes, for the ceiling: what a node would put on the wire.
pub fn rfc5322(size: usize) -> Vec<u8> {
    let mut message = format!(
        "From: \"Acme Alerts\" <{SENDER}>\r\n\
         To: <{RECIPIENT}>\r\n\
         Subject: Herald benchmark notification\r\n\
         Message-ID: <0190c2f4-8d1e-7a11-9b3a-5f0e6c1d2a3b@bench.example>\r\n\
         Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=\"utf-8\"\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    .into_bytes();
    message.extend_from_slice(body_text(size).as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_size_asked_for() {
        for size in [0, 1, 75, 76, 77, 2048, 10_000] {
            let text = body_text(size);
            assert_eq!(text.len(), size);
            assert!(text.lines().all(|l| l.len() <= 76 && !l.starts_with('.')));
        }
    }
}

//! The SASL PLAIN (RFC 4616) and LOGIN exchanges' decoding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why an AUTH exchange line could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// The client sent `*` (RFC 4954 §4).
    Cancelled,
    /// Not base64, not UTF-8, or not the mechanism's form.
    Malformed,
}

/// Decodes one client line of the exchange (`=` is the empty response).
pub(crate) fn decode(line: &str) -> Result<String, SaslError> {
    let line = line.trim_end_matches(['\r', '\n']).trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(String::new());
    }
    let bytes = STANDARD.decode(line).map_err(|_| SaslError::Malformed)?;
    String::from_utf8(bytes).map_err(|_| SaslError::Malformed)
}

/// Splits a PLAIN response `authzid NUL authcid NUL password` into the user
/// name and password. An authorisation identity other than the user's own is
/// refused: Herald does not let one credential act as another.
pub(crate) fn plain(response: &str) -> Result<(String, String), SaslError> {
    let mut parts = response.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return Err(SaslError::Malformed);
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// The LOGIN mechanism's prompts, `Username:` and `Password:` in base64.
pub(crate) const LOGIN_USERNAME: &str = "VXNlcm5hbWU6";
/// See [`LOGIN_USERNAME`].
pub(crate) const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_responses() {
        let line = STANDARD.encode("\0user\0pa ss");
        assert_eq!(
            plain(&decode(&line).unwrap()),
            Ok(("user".into(), "pa ss".into()))
        );
        assert_eq!(plain("user\0user\0pw"), Ok(("user".into(), "pw".into())));
        assert_eq!(plain("other\0user\0pw"), Err(SaslError::Malformed));
        assert_eq!(plain("user\0pw"), Err(SaslError::Malformed));
        assert_eq!(decode("*\r\n"), Err(SaslError::Cancelled));
        assert_eq!(decode("=\r\n"), Ok(String::new()));
        assert_eq!(decode("!!"), Err(SaslError::Malformed));
        assert_eq!(decode(LOGIN_USERNAME).unwrap(), "Username:");
        assert_eq!(decode(LOGIN_PASSWORD).unwrap(), "Password:");
    }
}

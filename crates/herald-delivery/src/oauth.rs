//! OAuth2 client credentials for XOAUTH2: obtain an access token, cache it until
//! shortly before it expires, and renew it when the server rejects it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::{AccountId, Secret};
use herald_smtp::Egress;
use herald_store::OAuth2Client;
use reqwest::Method;
use serde::Deserialize;

use crate::guarded_http::GuardedHttp;

/// Tokens are renewed this long before the endpoint says they expire.
const EARLY_RENEWAL: Duration = Duration::from_secs(60);

/// A token is kept at most this long, whatever the endpoint says: its
/// `expires_in` is the tenant's endpoint's word, and a huge one must neither
/// overflow the clock nor keep a token for ever.
const LONGEST_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Until when a token obtained at `now` is used, from the endpoint's
/// `expires_in` (seconds; an hour when absent).
fn valid_until(now: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(3600)).min(LONGEST_LIFETIME);
    now + lifetime.saturating_sub(EARLY_RENEWAL)
}

/// A token endpoint's answer is read up to this length.
const MAX_ANSWER: usize = 64 * 1024;

/// The error codes of RFC 6749 §5.2: the only words of a refusal that are
/// shown. Anything else the endpoint says (`error_description`, the body) is
/// free text from wherever the URL points, and never reaches an attempt.
const OAUTH_ERRORS: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
}

/// A cache of access tokens by account, fetched through the egress guard.
pub struct TokenCache {
    http: GuardedHttp,
    tokens: Mutex<HashMap<AccountId, (Secret, Instant)>>,
}

impl TokenCache {
    /// A cache whose token requests go only where `egress` permits.
    pub fn new(egress: Arc<Egress>) -> Self {
        TokenCache {
            http: GuardedHttp::new(egress),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The account's access token: the cached one while it is fresh (unless
    /// `renew`), otherwise a new one from the token endpoint.
    pub async fn token(
        &self,
        account: AccountId,
        client: &OAuth2Client,
        client_secret: &Secret,
        renew: bool,
    ) -> Result<Secret, String> {
        if !renew {
            let tokens = self.tokens.lock().expect("token cache lock");
            if let Some((token, until)) = tokens.get(&account) {
                if Instant::now() < *until {
                    return Ok(token.clone());
                }
            }
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(scope) = &client.scope {
            form.push(("scope", scope.as_str()));
        }
        // No error includes the request, which holds the client secret.
        let unusable = |e| format!("the OAuth2 token endpoint cannot be used: {e}");
        let request = self
            .http
            .request(Method::POST, &client.token_url)
            .map_err(unusable)?
            .form(&form);
        let answer = self
            .http
            .send(request, MAX_ANSWER)
            .await
            .map_err(unusable)?;
        if !answer.status.is_success() {
            let code = serde_json::from_slice::<TokenError>(&answer.body)
                .ok()
                .filter(|e| OAUTH_ERRORS.contains(&e.error.as_str()));
            return Err(match code {
                Some(e) => format!(
                    "the OAuth2 token endpoint refused: HTTP {}, {}",
                    answer.status, e.error
                ),
                None => format!("the OAuth2 token endpoint refused: HTTP {}", answer.status),
            });
        }
        let answer: TokenResponse = serde_json::from_slice(&answer.body)
            .map_err(|_| "the OAuth2 token endpoint's answer has no access_token".to_string())?;
        let token = Secret::new(answer.access_token);
        let until = valid_until(Instant::now(), answer.expires_in);
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(account, (token.clone(), until));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_expires_in_gives_a_bounded_lifetime() {
        let now = Instant::now();
        // A huge expires_in used to overflow the clock and panic the delivery.
        assert_eq!(
            valid_until(now, Some(u64::MAX)),
            now + LONGEST_LIFETIME - EARLY_RENEWAL
        );
        assert_eq!(
            valid_until(now, None),
            now + Duration::from_secs(3600) - EARLY_RENEWAL
        );
        assert_eq!(valid_until(now, Some(0)), now);
        assert_eq!(valid_until(now, Some(30)), now);
    }
}

//! OAuth2 client credentials for XOAUTH2: obtain an access token, cache it until
//! shortly before it expires, and renew it when the server rejects it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_core::{AccountId, Secret};
use herald_store::OAuth2Client;
use serde::Deserialize;

/// Tokens are renewed this long before the endpoint says they expire.
const EARLY_RENEWAL: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    error_description: Option<String>,
}

/// A cache of access tokens by account.
pub struct TokenCache {
    http: reqwest::Client,
    tokens: Mutex<HashMap<AccountId, (Secret, Instant)>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client with default TLS settings builds"),
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenCache {
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
        // The error never includes the request, which holds the client secret.
        let response = self
            .http
            .post(&client.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the OAuth2 token endpoint could not be reached: {}",
                    e.without_url()
                )
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            format!(
                "the OAuth2 token endpoint's answer could not be read: {}",
                e.without_url()
            )
        })?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<TokenError>(&body)
                .map(|e| match e.error_description {
                    Some(d) => format!("{}: {d}", e.error),
                    None => e.error,
                })
                .unwrap_or_else(|_| "no OAuth2 error in the answer".into());
            return Err(format!(
                "the OAuth2 token endpoint refused: HTTP {status}, {reason}"
            ));
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| "the OAuth2 token endpoint's answer has no access_token".to_string())?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let token = Secret::new(answer.access_token);
        let until = Instant::now() + lifetime.saturating_sub(EARLY_RENEWAL);
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(account, (token.clone(), until));
        Ok(token)
    }
}

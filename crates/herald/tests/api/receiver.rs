//! A webhook receiver for tests: an HTTP server on 127.0.0.1, port 0, that
//! records every request and answers as scripted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::eventually;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// Never answers: the sender's timeout ends the request.
    Hang,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: String,
}

impl Received {
    /// The body's `type`.
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The signatures the `webhook-signature` header lists, in order.
    pub fn signatures(&self) -> Vec<String> {
        self.signature.split(' ').map(str::to_owned).collect()
    }

    /// The `v1` signature of this request's id, timestamp and body under
    /// `secret` (`whsec_…`), computed here from the specification.
    pub fn expected_signature(&self, secret: &str) -> String {
        let key = B64
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64 after whsec_");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// True when one of the request's signatures is `secret`'s.
    pub fn signed_by(&self, secret: &str) -> bool {
        self.signatures().contains(&self.expected_signature(secret))
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    otherwise: Mutex<Option<Reply>>,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// A receiver answering 200 unless scripted otherwise.
    pub async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, shared }
    }

    /// The next requests' answers, in order; after them, the standing answer.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// The answer to requests no script line covers (200 unless set).
    pub fn answer(&self, reply: Reply) {
        *self.shared.otherwise.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The latest request.
    pub fn last(&self) -> Received {
        self.received().pop().expect("the receiver took a request")
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} webhook requests"), || async {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    shared.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body,
    });
    let scripted = shared.script.lock().unwrap().pop_front();
    let reply = scripted
        .or(*shared.otherwise.lock().unwrap())
        .unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::Hang => std::future::pending().await,
    }
}

//! Herald's own test SMTP server: a real listener on 127.0.0.1 that records what it
//! receives and can be scripted to misbehave, for use by integration tests.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testsmtp::{Action, Command, Rule, TestSmtpServer};
//!
//! let server = TestSmtpServer::start().await;
//! server.script(Rule::new(Command::Rcpt, Action::Reply(550, "5.1.1 no such user".into())).matching("bad@"));
//! // ... point the client under test at server.addr() ...
//! let messages = server.wait_for_messages(1, std::time::Duration::from_secs(5)).await;
//! assert_eq!(messages[0].rcpt_to, ["good@example.com"]);
//! # }
//! ```

mod config;
mod message;
mod script;
mod server;
mod session;
mod shared;
mod stream;
mod tls;

pub use config::{DEFAULT_MAX_MESSAGE_SIZE, ServerConfig};
pub use message::ReceivedMessage;
pub use script::{Action, Command, Rule};
pub use server::TestSmtpServer;
pub use shared::SessionEnd;
pub use tls::TestTls;

//! Herald's test kit, shared by the tests of every crate: a PostgreSQL database of
//! its own for each test ([`TestDatabase`]), one rule for a test whose
//! dependency (PostgreSQL, Chromium, Postfix, …) is missing ([`require()`], [`skip`]),
//! waiting for a condition with a deadline ([`eventually`]), and a private
//! Postfix instance's configuration ([`postfix`]).
//!
//! The rule: on a developer's machine such a test says so in one line on its
//! stderr (seen under `cargo test`; under nextest with `--no-capture` or
//! `--success-output immediate`) and passes without running; when the run
//! requires the dependency (`HERALD_REQUIRE` names it, e.g.
//! `HERALD_REQUIRE=postgres,chromium,postfix`, or `CI` is set, which requires
//! everything) the test fails instead.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testkit::{Dependency, TestDatabase, require};
//!
//! let Some(database) = TestDatabase::create().await else {
//!     return; // no server, and PostgreSQL is not required: skipped
//! };
//! let sink = std::path::Path::new("/usr/sbin/smtp-sink");
//! let found = if sink.exists() { Ok(sink) } else { Err("smtp-sink is not installed") };
//! let Some(sink) = require(Dependency::Postfix, found) else {
//!     return;
//! };
//! // ... connect to database.url(), start sink ...
//! # let _ = (database, sink);
//! # }
//! ```

pub mod postfix;
mod postgres;
mod require;
mod wait;

pub use postgres::{DEFAULT_POSTGRES_URL, TestDatabase, connect, server_url};
pub use require::{Dependency, require, skip};
pub use wait::eventually;

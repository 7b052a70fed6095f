//! The state the server handle, its accept loop and every connection share:
//! the configuration, the script, and what was received.

use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::message::ReceivedMessage;
use crate::script::{self, Action, Command, Rule};

/// Locks a mutex, ignoring poisoning: a panicking test thread must not hide the
/// recorded state from the assertions that follow.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connection tasks, and whether the server has been dropped.
#[derive(Default)]
pub(crate) struct Tasks {
    pub(crate) closed: bool,
    pub(crate) handles: Vec<AbortHandle>,
}

/// State shared between the server handle, the accept loop and every connection.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) acceptor: Option<TlsAcceptor>,
    pub(crate) script: Mutex<Vec<Rule>>,
    pub(crate) messages: Mutex<Vec<ReceivedMessage>>,
    pub(crate) commands: Mutex<Vec<String>>,
    pub(crate) connections: AtomicUsize,
    pub(crate) message_count: watch::Sender<usize>,
    pub(crate) sessions: Mutex<Vec<SessionEnd>>,
    pub(crate) session_count: watch::Sender<usize>,
    pub(crate) tasks: Mutex<Tasks>,
}

/// How one connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEnd {
    /// True when the client said QUIT; false when it closed the connection
    /// without it (or the session broke).
    pub quit: bool,
}

impl Shared {
    /// Returns the scripted action for this command, using up one match of its rule.
    pub(crate) fn take_action(&self, command: Command, subject: &str) -> Option<Action> {
        script::take_action(&mut lock(&self.script), command, subject)
    }

    /// Appends a command line to the log.
    pub(crate) fn record_command(&self, line: String) {
        lock(&self.commands).push(line);
    }

    /// Records how a connection ended.
    pub(crate) fn record_session_end(&self, quit: bool) {
        let count = {
            let mut sessions = lock(&self.sessions);
            sessions.push(SessionEnd { quit });
            sessions.len()
        };
        self.session_count.send_replace(count);
    }

    /// Records a message and returns its 1-based sequence number.
    pub(crate) fn record_message(&self, message: ReceivedMessage) -> usize {
        let count = {
            let mut messages = lock(&self.messages);
            messages.push(message);
            messages.len()
        };
        self.message_count.send_replace(count);
        count
    }
}

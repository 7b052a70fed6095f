//! The listener and the public server handle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::message::ReceivedMessage;
use crate::script::Rule;
use crate::session;
use crate::shared::{SessionEnd, Shared, Tasks, lock};

/// Waits until `count`, the length of `list`, reaches `n`, then returns the
/// list; panics if `timeout` passes first, saying what it waited for and how
/// many there are (`waiting`: what is counted, and what the counted did).
async fn wait_for<T: Clone>(
    count: &watch::Sender<usize>,
    list: &Mutex<Vec<T>>,
    n: usize,
    timeout: Duration,
    (what, did): (&str, &str),
) -> Vec<T> {
    let mut count = count.subscribe();
    let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
    // The sender lives in the server's shared state, so the inner result
    // cannot be a closed channel.
    if !matches!(reached, Ok(Ok(_))) {
        let so_far = lock(list).len();
        panic!(
            "timed out after {timeout:?} waiting for {n} {what} on the test SMTP server; {so_far} {did}"
        );
    }
    lock(list).clone()
}

/// A real SMTP server on 127.0.0.1 with an ephemeral port, for integration tests.
///
/// It records every message and command it receives and can be scripted with
/// [`Rule`]s to misbehave. Dropping it stops the listener and aborts every connection.
pub struct TestSmtpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl TestSmtpServer {
    /// Plaintext server on 127.0.0.1:0 advertising PIPELINING, 8BITMIME,
    /// ENHANCEDSTATUSCODES, SIZE and SMTPUTF8.
    ///
    /// # Panics
    ///
    /// Panics if no port on 127.0.0.1 can be bound, or outside a tokio runtime.
    pub async fn start() -> TestSmtpServer {
        Self::start_with(ServerConfig::default()).await
    }

    /// Starts a server with the given configuration on 127.0.0.1:0.
    ///
    /// # Panics
    ///
    /// Panics if no port on 127.0.0.1 can be bound, or outside a tokio runtime.
    pub async fn start_with(config: ServerConfig) -> TestSmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding the test SMTP listener on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let acceptor = config
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.server_config()));
        let (message_count, _) = watch::channel(0);
        let (session_count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            acceptor,
            script: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            message_count,
            sessions: Mutex::new(Vec::new()),
            session_count,
            tasks: Mutex::new(Tasks::default()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        TestSmtpServer {
            shared,
            addr,
            accept_task,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Adds a scripted rule; rules are matched in the order added; a rule with `times`
    /// left decrements and stops matching at 0.
    pub fn script(&self, rule: Rule) {
        lock(&self.shared.script).push(rule);
    }

    /// Removes every scripted rule, restoring the default behaviour.
    pub fn clear_script(&self) {
        lock(&self.shared.script).clear();
    }

    /// Messages fully received and answered 2xx at the end of DATA, in order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.shared.messages).clone()
    }

    /// Waits until at least `n` messages are recorded, then returns all of them.
    ///
    /// # Panics
    ///
    /// Panics, saying how many messages arrived, if `timeout` passes first.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let shared = &self.shared;
        let waiting = ("message(s)", "arrived");
        wait_for(&shared.message_count, &shared.messages, n, timeout, waiting).await
    }

    /// How each connection that has ended ended, in the order they ended.
    pub fn ended_sessions(&self) -> Vec<SessionEnd> {
        lock(&self.shared.sessions).clone()
    }

    /// Waits until at least `n` connections have ended, then returns how each ended.
    ///
    /// # Panics
    ///
    /// Panics, saying how many ended, if `timeout` passes first.
    pub async fn wait_for_ended_sessions(&self, n: usize, timeout: Duration) -> Vec<SessionEnd> {
        let shared = &self.shared;
        let waiting = ("session(s) to end", "ended");
        wait_for(&shared.session_count, &shared.sessions, n, timeout, waiting).await
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every command line received (without CRLF), across connections, in order; AUTH
    /// payloads are recorded as `"<auth data>"`, never in clear.
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.commands).clone()
    }
}

impl Drop for TestSmtpServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Marking the set closed under the lock means a connection accepted concurrently
        // on another worker thread is aborted by the accept loop itself.
        let handles = {
            let mut tasks = lock(&self.shared.tasks);
            tasks.closed = true;
            std::mem::take(&mut tasks.handles)
        };
        for handle in handles {
            handle.abort();
        }
    }
}

/// Accepts connections until the server is dropped, serving each in its own task.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _peer)) => tcp,
            Err(error) => {
                // Errors such as running out of file descriptors are usually transient;
                // pausing briefly avoids spinning on them.
                tracing::debug!(%error, "test smtp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(session::serve(Arc::clone(&shared), tcp));
        let mut tasks = lock(&shared.tasks);
        if tasks.closed {
            task.abort();
            return;
        }
        tasks.handles.retain(|h| !h.is_finished());
        tasks.handles.push(task.abort_handle());
    }
}

//! What the worker's integration tests share: a worker over a real store
//! whose system default relay is the test SMTP server, and a message to
//! give it. Each test binary takes it with `mod common;`.

use std::sync::Arc;
use std::time::Duration;

use herald_core::timestamp::now_ms;
use herald_core::{EmailAddress, Port, Sealer, Security, SmtpHost, Subject, TenantId};
use herald_delivery::{DefaultProvider, ProviderCache, Worker, WorkerConfig};
use herald_smtp::Target;
use herald_store::{DeliveryStore, NewMessage};
use herald_testsmtp::TestSmtpServer;

/// How long a test waits for a condition before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A worker over `store` whose system default relay is `smtp` (no TLS),
/// sending From `herald@example.com` with `from_name` under the fixed
/// policy, looking for mail every 50 ms; the rest of its settings `config`'s.
pub fn worker(
    store: Arc<dyn DeliveryStore>,
    smtp: &TestSmtpServer,
    from_name: Option<&str>,
    config: WorkerConfig,
) -> Worker {
    let target = Target::new(
        SmtpHost::parse("127.0.0.1").unwrap(),
        Port::new(smtp.port().into()).unwrap(),
        Security::None,
        "herald.test",
    );
    let default = DefaultProvider {
        transport: DefaultProvider::relay(target, None),
        from: EmailAddress::parse("herald@example.com").unwrap(),
        from_name: from_name.map(str::to_owned),
        fallback: None,
    };
    Worker::new(
        store,
        Arc::new(Sealer::new(&Sealer::generate_key())),
        Arc::new(default),
        Arc::new(ProviderCache::new(Duration::from_secs(1))),
        WorkerConfig {
            poll: Duration::from_millis(50),
            ..config
        },
    )
}

/// A message of the tenant to one address, as the API stores it: a text
/// body, sent at once.
pub fn message(tenant: TenantId, to: &str, subject: &str) -> NewMessage {
    NewMessage::plain(
        tenant,
        vec![EmailAddress::parse(to).unwrap().into()],
        Subject::parse(subject).unwrap(),
        "body",
        now_ms(),
    )
}

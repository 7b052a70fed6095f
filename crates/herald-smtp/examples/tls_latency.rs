//! Per-connection latency of STARTTLS sessions against the test server with
//! Nagle's algorithm on (as Postfix's smtpd has it): connect, EHLO, STARTTLS,
//! EHLO, one message, QUIT, one connection after another. The figure that
//! matters is the first command after the handshake, which a client that is
//! slow to acknowledge the server's TLS 1.3 session tickets waits 40 ms for.
//!
//! `cargo run --example tls_latency -p herald-smtp -- [connections] [host:port]`
//!
//! With `host:port`, the sessions go to that STARTTLS server instead (an
//! OpenSSL one, see BENCHMARKS.md), with certificate verification off.

use std::time::{Duration, Instant};

use herald_core::{EmailAddress, Port, Security, SmtpHost};
use herald_smtp::{Connection, Envelope, Step, Target, TlsSettings, Tracer, wire};
use herald_testsmtp::{ServerConfig, TestSmtpServer, TestTls};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connections: usize = std::env::args().nth(1).map_or(Ok(200), |n| n.parse())?;
    let tls = TestTls::generate(&["localhost", "127.0.0.1"]);
    let server =
        TestSmtpServer::start_with(ServerConfig::new().starttls(tls.clone()).with_nagle()).await;
    let external: Option<std::net::SocketAddr> =
        std::env::args().nth(2).map(|a| a.parse()).transpose()?;
    let (address, tls) = match external {
        Some(address) => (
            address,
            TlsSettings {
                verify: false,
                ..TlsSettings::default()
            },
        ),
        None => (
            server.addr(),
            TlsSettings {
                ca_pem: Some(tls.ca_pem()),
                ..TlsSettings::default()
            },
        ),
    };
    let target = Target {
        tls,
        ..Target::new(
            SmtpHost::parse(&address.ip().to_string()).map_err(anyhow::Error::msg)?,
            Port::new(address.port().into()).map_err(anyhow::Error::msg)?,
            Security::StartTls,
            "bench.example",
        )
    };
    let envelope = Envelope {
        from: EmailAddress::parse("bench@acme.example").map_err(anyhow::Error::msg)?,
        to: vec![EmailAddress::parse("sink@acme.example").map_err(anyhow::Error::msg)?],
    };
    let data = wire::dot_stuffed(b"Subject: tls latency\r\n\r\nbody\r\n");
    let mut sessions = Vec::with_capacity(connections);
    let mut first_after_tls = Vec::with_capacity(connections);
    let started = Instant::now();
    for _ in 0..connections {
        let tracer = Tracer::default();
        let begun = Instant::now();
        let mut conn = Connection::open_traced(&target, None, &tracer).await?;
        conn.send(&envelope, &data).await?;
        conn.quit().await;
        sessions.push(begun.elapsed());
        let steps = tracer.steps();
        if std::env::var_os("TRACE").is_some() {
            for s in &steps {
                eprintln!("{:>8} {:>4} ms", s.step.as_str(), s.elapsed_ms);
            }
        }
        let tls_at = steps.iter().position(|s| s.step == Step::Tls);
        if let Some(ehlo) = tls_at.and_then(|i| steps.get(i + 1)) {
            first_after_tls.push(Duration::from_millis(ehlo.elapsed_ms));
        }
    }
    let total = started.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    sessions.sort();
    first_after_tls.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    println!(
        "{connections} STARTTLS sessions: {:.0} sessions/s; session p50 {:.1} ms, p99 {:.1} ms; first EHLO after TLS p50 {:.0} ms, p99 {:.0} ms",
        connections as f64 / total.as_secs_f64(),
        ms(pct(&sessions, 0.5)),
        ms(pct(&sessions, 0.99)),
        ms(pct(&first_after_tls, 0.5)),
        ms(pct(&first_after_tls, 0.99)),
    );
    Ok(())
}

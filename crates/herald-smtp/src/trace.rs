//! A step-by-step record of an SMTP session, in the server's own words, for
//! test messages and `herald smtp-check`. It never holds a secret: AUTH is
//! recorded by mechanism and user name, and the server's answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{SmtpError, Step};

/// One step of a session.
#[derive(Clone, Debug)]
pub struct TraceStep {
    pub step: Step,
    pub ok: bool,
    /// What happened: the server's reply, the addresses, the certificate.
    pub detail: String,
    /// Time since the previous step.
    pub elapsed_ms: u64,
}

/// A shared record of a session's steps; clones share it.
#[derive(Clone, Debug)]
pub struct Tracer {
    steps: Arc<Mutex<Vec<TraceStep>>>,
    last: Arc<Mutex<Instant>>,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer {
            steps: Arc::default(),
            last: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl Tracer {
    /// Records a step, timed from the previous one.
    pub fn note(&self, step: Step, ok: bool, detail: impl Into<String>) {
        let elapsed_ms = {
            let mut last = self.last.lock().expect("trace lock");
            let elapsed = last.elapsed().as_millis() as u64;
            *last = Instant::now();
            elapsed
        };
        self.steps.lock().expect("trace lock").push(TraceStep {
            step,
            ok,
            detail: detail.into(),
            elapsed_ms,
        });
    }

    /// Records the error that ended the session.
    pub fn fail(&self, error: &SmtpError) {
        self.note(error.step, false, error.to_string());
    }

    /// Every step so far.
    pub fn steps(&self) -> Vec<TraceStep> {
        self.steps.lock().expect("trace lock").clone()
    }
}

/// Subject, issuer and expiry of a DER certificate, for the TLS step.
pub(crate) fn describe_certificate(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => format!(
            "certificate subject {}; issuer {}; valid until {}",
            cert.subject(),
            cert.issuer(),
            cert.validity().not_after
        ),
        Err(_) => "certificate could not be parsed".into(),
    }
}

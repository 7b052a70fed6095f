//! A step-by-step record of an SMTP session, in the server's own words, for
//! test messages and `herald smtp-check`. It never holds a secret: AUTH is
//! recorded by mechanism and user name, and the server's answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::{SmtpError, Step};

/// One step of a session.
#[derive(Clone, Debug)]
pub struct TraceStep {
    /// The command or phase.
    pub step: Step,
    /// True when the step went as it should: the positive reply to its command.
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

    /// Records the error that ended the session, once: when the last step
    /// is already the refused reply the error is about, that step becomes the
    /// error (with its hint) instead of a second line for the same reply.
    pub fn fail(&self, error: &SmtpError) {
        let message = error.to_string();
        {
            let mut steps = self.steps.lock().expect("trace lock");
            if let Some(last) = steps.last_mut() {
                let same_reply = error.reply().is_some_and(|r| r.text == last.detail);
                if last.step == error.step && !last.ok && (same_reply || last.detail == message) {
                    last.detail = message;
                    return;
                }
            }
        }
        self.note(error.step, false, message);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, Reply};

    fn refused(text: &str) -> SmtpError {
        let reply = Reply {
            code: 535,
            enhanced_code: Some("5.7.8".into()),
            text: text.into(),
        };
        SmtpError::new(Step::Auth, ErrorKind::Rejected(reply))
    }

    #[test]
    fn a_refused_reply_already_traced_becomes_the_failure_not_a_second_line() {
        let tracer = Tracer::default();
        tracer.note(Step::Ehlo, true, "250 ok");
        tracer.note(Step::Auth, false, "535 5.7.8 no");
        let error = refused("535 5.7.8 no");
        tracer.fail(&error);
        tracer.fail(&error);
        let steps = tracer.steps();
        assert_eq!(steps.len(), 2, "{steps:#?}");
        assert!(!steps[1].ok);
        assert_eq!(steps[1].detail, error.to_string());
    }

    #[test]
    fn a_failure_without_a_traced_reply_gets_its_own_line() {
        let tracer = Tracer::default();
        tracer.note(Step::Ehlo, true, "250 ok");
        tracer.fail(&SmtpError::new(Step::Greeting, ErrorKind::Timeout));
        let steps = tracer.steps();
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[1].step, steps[1].ok), (Step::Greeting, false));
    }
}

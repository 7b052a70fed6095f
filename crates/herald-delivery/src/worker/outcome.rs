//! The outcome policy: what one attempt makes of a recipient (sent, failed, or
//! deferred until when) and what the attempt records, as plain functions of
//! the answer, the attempt number, the message, the retry policy and "now".

use herald_core::RecipientStatus;
use herald_smtp::Reply;
use herald_store::{AttemptRecord, MessageContent, NextState};
use rand::Rng;

use crate::RetryPolicy;

/// What an attempt got for one recipient.
#[derive(Clone, Copy, Debug)]
pub enum Answer<'a> {
    /// The reply that decided the recipient in a completed transaction. A
    /// recipient Herald did not offer to the server (`RecipientOutcome::local`:
    /// an internationalised address, and no SMTPUTF8) has a 5xx reply Herald
    /// made itself, and fails like one from the server: retrying does not mend it.
    Reply(&'a Reply),
    /// The session failed before per-recipient replies: a network or TLS
    /// failure, a timeout, a refused login, no OAuth2 token, or a refusal of
    /// the whole transaction. `permanent` as [`herald_smtp::SmtpError::is_permanent`]
    /// says: a 5xx to MAIL, RCPT or DATA, a message too big, no SMTPUTF8.
    Session { permanent: bool },
    /// No route could be resolved: the provider cannot be used now, which
    /// an administrator may mend.
    NoRoute,
}

/// What the policy needs to know of the message.
#[derive(Clone, Copy, Debug)]
pub struct Message {
    /// When it was due to go (Unix ms; its submission, or its `send_at`):
    /// its age ends its retries.
    pub created_at: i64,
    /// True for a test message, which makes exactly one attempt.
    pub test: bool,
}

impl Message {
    /// What the policy needs of a claimed message.
    pub fn of(contents: &MessageContent) -> Message {
        Message {
            created_at: contents.due_from(),
            test: contents.test_provider.is_some(),
        }
    }
}

/// Why a failure that might have been temporary is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Final {
    /// A test message makes one attempt.
    TestMessage,
    /// The next attempt would come after the maximum age.
    Expired { max_age_secs: u64 },
}

/// The policy's decision on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Where the recipient goes next.
    pub next: NextState,
    /// Set when a failure that could pass was made final: the attempt's
    /// response then says why before the server's words.
    pub why_final: Option<Final>,
}

impl Verdict {
    /// Writes the verdict into the attempt (its outcome, and why a failure
    /// is final) and returns the recipient's next state.
    pub fn record(self, attempt: &mut AttemptRecord) -> NextState {
        attempt.outcome = match self.next {
            NextState::Sent => RecipientStatus::Sent,
            NextState::Deferred { .. } => RecipientStatus::Deferred,
            NextState::Failed => RecipientStatus::Failed,
        };
        match self.why_final {
            Some(Final::TestMessage) => {
                attempt.response = format!(
                    "not retried: a test message makes one attempt; {}",
                    attempt.response
                );
            }
            Some(Final::Expired { max_age_secs }) => {
                attempt.response = format!(
                    "expired: not delivered within the maximum age of {max_age_secs}s; the last attempt: {}",
                    attempt.response
                );
            }
            None => {}
        }
        self.next
    }
}

/// Decides attempt number `attempt` (this one included) of `message`, made
/// at `now` (Unix ms): sent on a 2xx reply, failed on a 5xx reply or a
/// permanent session failure, otherwise as [`retry_later`] decides for the
/// attempt after the backoff. `rng` spreads the backoff (see
/// [`RetryPolicy::delay_with`]).
pub fn decide(
    answer: Answer<'_>,
    attempt: u32,
    message: Message,
    policy: &RetryPolicy,
    now: i64,
    rng: &mut impl Rng,
) -> Verdict {
    let next = match answer {
        Answer::Reply(reply) if reply.is_positive() => NextState::Sent,
        Answer::Reply(reply) if reply.is_permanent() => NextState::Failed,
        Answer::Session { permanent: true } => NextState::Failed,
        Answer::Reply(_) | Answer::Session { permanent: false } | Answer::NoRoute => {
            let next_attempt = now + policy.delay_with(attempt, rng).as_millis() as i64;
            return retry_later(message, next_attempt, policy);
        }
    };
    Verdict {
        next,
        why_final: None,
    }
}

/// An attempt that may succeed later (a 4xx, a network or TLS failure, a
/// refused login, a provider that cannot be used): deferred until
/// `next_attempt` (Unix ms); failed if that comes after the maximum age;
/// failed at once for a test message, which makes exactly one attempt.
fn retry_later(message: Message, next_attempt: i64, policy: &RetryPolicy) -> Verdict {
    let (next, why_final) = if message.test {
        // A test message reports on its provider. Trying again would only
        // repeat the diagnosis, and with a wrong password log in again and
        // again until the server's ban (fail2ban, Postfix's anvil) locks the
        // node's address out for every tenant.
        (NextState::Failed, Some(Final::TestMessage))
    } else if next_attempt - message.created_at > policy.max_age.as_millis() as i64 {
        (
            NextState::Failed,
            Some(Final::Expired {
                max_age_secs: policy.max_age.as_secs(),
            }),
        )
    } else {
        (
            NextState::Deferred {
                until: next_attempt,
            },
            None,
        )
    };
    Verdict { next, why_final }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    /// Now, in Unix ms: any fixed instant will do.
    const NOW: i64 = 1_800_000_000_000;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(60),
        max: Duration::from_secs(3600),
        max_age: Duration::from_secs(2 * 24 * 3600),
    };

    /// Ordinary mail submitted a minute ago.
    const MAIL: Message = Message {
        created_at: NOW - 60_000,
        test: false,
    };

    const TEST: Message = Message {
        created_at: NOW - 60_000,
        test: true,
    };

    /// Seeds used for every range assertion: the spread is random, so each
    /// bound is checked for several draws.
    const SEEDS: std::ops::Range<u64> = 0..64;

    fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply {
            code,
            enhanced_code: Some(enhanced.into()),
            text: format!("{code} {enhanced} {text}"),
        }
    }

    fn decide_with(answer: Answer<'_>, attempt: u32, message: Message, seed: u64) -> Verdict {
        decide(
            answer,
            attempt,
            message,
            &POLICY,
            NOW,
            &mut StdRng::seed_from_u64(seed),
        )
    }

    /// The delay of a deferral, in seconds; panics when the verdict is not one.
    fn deferred_for(verdict: Verdict) -> f64 {
        match verdict {
            Verdict {
                next: NextState::Deferred { until },
                why_final: None,
            } => (until - NOW) as f64 / 1000.0,
            other => panic!("not deferred: {other:?}"),
        }
    }

    fn attempt_record(response: &str) -> AttemptRecord {
        AttemptRecord {
            step: Some("rcpt".into()),
            ..AttemptRecord::new(
                NOW,
                "node",
                "smtp.example:587",
                RecipientStatus::Deferred,
                response,
            )
        }
    }

    /// Records `verdict` on an attempt that got `reply`, checks the outcome
    /// (`status`) and the response (`response`) it gives the attempt, and
    /// returns the recipient's next state.
    fn recorded(
        verdict: Verdict,
        reply: &str,
        status: RecipientStatus,
        response: &str,
    ) -> NextState {
        let mut attempt = attempt_record(reply);
        let next = verdict.record(&mut attempt);
        assert_eq!(attempt.outcome, status);
        assert_eq!(attempt.response, response);
        next
    }

    #[test]
    fn a_2xx_reply_is_sent() {
        for message in [MAIL, TEST] {
            let ok = reply(250, "2.0.0", "ok");
            let verdict = decide_with(Answer::Reply(&ok), 1, message, 0);
            assert_eq!(
                verdict,
                Verdict {
                    next: NextState::Sent,
                    why_final: None
                }
            );
            let words = "250 2.0.0 ok";
            // The reply as it came.
            let next = recorded(verdict, words, RecipientStatus::Sent, words);
            assert_eq!(next, NextState::Sent);
        }
    }

    #[test]
    fn a_5xx_reply_is_failed_at_any_attempt() {
        let refused = reply(550, "5.1.1", "no such user");
        for attempt in [1, 2, 30] {
            let verdict = decide_with(Answer::Reply(&refused), attempt, MAIL, 0);
            assert_eq!(
                verdict,
                Verdict {
                    next: NextState::Failed,
                    why_final: None
                }
            );
            let refusal = "550 5.1.1 no such user";
            recorded(verdict, refusal, RecipientStatus::Failed, refusal);
        }
    }

    #[test]
    fn a_recipient_refused_locally_is_failed_even_at_its_first_attempt() {
        // What herald-smtp answers for an internationalised address when
        // the server does not offer SMTPUTF8.
        let local = reply(553, "5.6.7", "not offered to the server");
        for message in [MAIL, TEST] {
            let verdict = decide_with(Answer::Reply(&local), 1, message, 0);
            assert_eq!(verdict.next, NextState::Failed);
            assert_eq!(verdict.why_final, None);
        }
    }

    #[test]
    fn a_4xx_reply_is_deferred_with_exponential_backoff_within_the_jitter() {
        let busy = reply(451, "4.3.0", "try again later");
        // Nominal delays: the base, doubled for each attempt after the first.
        for (attempt, nominal) in [(1, 60.0), (2, 120.0), (5, 960.0)] {
            for seed in SEEDS {
                let verdict = decide_with(Answer::Reply(&busy), attempt, MAIL, seed);
                let delay = deferred_for(verdict);
                assert!(
                    (nominal * 0.8..=nominal * 1.2).contains(&delay),
                    "attempt {attempt}: deferred for {delay}s"
                );
                let later = "451 4.3.0 try again later";
                recorded(verdict, later, RecipientStatus::Deferred, later);
            }
        }
    }

    #[test]
    fn the_backoff_stops_growing_at_the_policy_maximum() {
        let busy = reply(421, "4.7.0", "too many connections");
        let max = POLICY.max.as_secs_f64();
        for attempt in [7, 8, 20, 1000, u32::MAX] {
            for seed in SEEDS {
                let delay = deferred_for(decide_with(Answer::Reply(&busy), attempt, MAIL, seed));
                assert!(
                    (max * 0.8..=max * 1.2).contains(&delay),
                    "attempt {attempt}: deferred for {delay}s"
                );
            }
        }
    }

    #[test]
    fn a_3xx_reply_where_none_was_due_is_deferred() {
        let odd = reply(354, "3.0.0", "go ahead");
        deferred_for(decide_with(Answer::Reply(&odd), 1, MAIL, 0));
    }

    #[test]
    fn a_deferral_past_the_maximum_age_fails_the_recipient() {
        let busy = reply(451, "4.3.0", "try again later");
        // Even the shortest spread (0.8 of the 60 s base) lands past the
        // maximum age for a message this old.
        let old = Message {
            created_at: NOW - POLICY.max_age.as_millis() as i64 + 30_000,
            test: false,
        };
        for seed in SEEDS {
            let verdict = decide_with(Answer::Reply(&busy), 1, old, seed);
            assert_eq!(
                verdict,
                Verdict {
                    next: NextState::Failed,
                    why_final: Some(Final::Expired {
                        max_age_secs: 172_800
                    })
                }
            );
            recorded(
                verdict,
                "451 4.3.0 try again later",
                RecipientStatus::Failed,
                "expired: not delivered within the maximum age of 172800s; the last attempt: 451 4.3.0 try again later",
            );
        }
        // While even the longest spread (1.2 of the base) lands within it,
        // the same message a little younger is deferred.
        let younger = Message {
            created_at: NOW - POLICY.max_age.as_millis() as i64 + 73_000,
            test: false,
        };
        for seed in SEEDS {
            deferred_for(decide_with(Answer::Reply(&busy), 1, younger, seed));
        }
    }

    #[test]
    fn a_test_message_makes_exactly_one_attempt() {
        let busy = reply(451, "4.3.0", "try again later");
        for answer in [
            Answer::Reply(&busy),
            Answer::Session { permanent: false },
            Answer::NoRoute,
        ] {
            let verdict = decide_with(answer, 1, TEST, 0);
            assert_eq!(
                verdict,
                Verdict {
                    next: NextState::Failed,
                    why_final: Some(Final::TestMessage)
                },
                "{answer:?}"
            );
            recorded(
                verdict,
                "connection refused",
                RecipientStatus::Failed,
                "not retried: a test message makes one attempt; connection refused",
            );
        }
    }

    #[test]
    fn a_session_failure_of_ordinary_mail_is_deferred() {
        for answer in [Answer::Session { permanent: false }, Answer::NoRoute] {
            for seed in SEEDS {
                let delay = deferred_for(decide_with(answer, 1, MAIL, seed));
                assert!((48.0..=72.0).contains(&delay), "{answer:?}: {delay}s");
            }
        }
    }

    #[test]
    fn a_permanent_session_failure_is_failed_without_a_reason_added() {
        for message in [MAIL, TEST] {
            let verdict = decide_with(Answer::Session { permanent: true }, 1, message, 0);
            assert_eq!(
                verdict,
                Verdict {
                    next: NextState::Failed,
                    why_final: None
                }
            );
        }
    }
}

//! Scripted misbehaviour: rules that replace the server's default reply to a command.

use std::time::Duration;

/// The point in the SMTP dialogue a [`Rule`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The greeting sent when a connection opens.
    Connect,
    /// The reply to EHLO, and also to HELO.
    Ehlo,
    /// The reply to STARTTLS; a scripted reply other than 220 leaves the connection in plaintext.
    StartTls,
    /// The final reply of an AUTH exchange (after the credentials have been read).
    Auth,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO; a scripted non-2xx reply means the recipient is not accepted.
    Rcpt,
    /// The reply to the DATA command; a scripted reply other than 354 skips the data phase.
    Data,
    /// The reply after the final dot; a scripted non-2xx reply means the message is not recorded.
    DataEnd,
    /// The reply to RSET.
    Rset,
    /// The reply to NOOP.
    Noop,
    /// The reply to QUIT; the connection is closed afterwards whatever the reply.
    Quit,
}

/// What the server does instead of its default reply when a [`Rule`] matches.
#[derive(Clone, Debug)]
pub enum Action {
    /// Sends this reply, e.g. `Reply(451, "4.3.0 try again later".into())` is sent as
    /// "451 4.3.0 try again later". A text containing `\n` is sent as a multiline reply,
    /// one line per part. A 421 reply also closes the connection, as RFC 5321 requires.
    Reply(u16, String),
    /// Closes the connection at once instead of replying.
    Drop,
    /// Stops reading and replying on this connection, keeping it open until the server is dropped.
    Stall,
    /// Only meaningful for [`Command::Data`]: answers 354, reads the first chunk of the
    /// body (one line), then closes the connection without a reply. For any other
    /// command it behaves like [`Action::Drop`].
    DropMidData,
    /// Waits this long, then does what the server does without a rule (its default
    /// reply, recording the message for [`Command::DataEnd`]): a slow server, such as
    /// one that scans every message before accepting it. Other connections are
    /// served meanwhile.
    Delay(Duration),
}

/// One scripted override: which command it applies to, what to do, and how often.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) command: Command,
    pub(crate) action: Action,
    /// Lowercased needle that the command's subject must contain.
    pub(crate) needle: Option<String>,
    /// Matches left, or `None` for unlimited.
    pub(crate) remaining: Option<usize>,
}

impl Rule {
    /// Creates a rule that matches every occurrence of `command`.
    pub fn new(command: Command, action: Action) -> Rule {
        Rule {
            command,
            action,
            needle: None,
            remaining: None,
        }
    }

    /// Restricts the rule to commands whose argument contains `needle`, case-insensitively.
    ///
    /// The argument is the text after the verb, e.g. `TO:<a@example.com>` for RCPT and
    /// the client name for EHLO. For [`Command::Data`] and [`Command::DataEnd`] the
    /// accepted recipients of the transaction (space separated) are matched instead,
    /// and for [`Command::Auth`] the mechanism followed by the username the client
    /// presented (e.g. `PLAIN alice`). The greeting has an empty argument.
    pub fn matching(mut self, needle: &str) -> Rule {
        self.needle = Some(needle.to_lowercase());
        self
    }

    /// Limits the rule to its first `n` matches; afterwards it never matches again.
    pub fn times(mut self, n: usize) -> Rule {
        self.remaining = Some(n);
        self
    }

    /// Whether this rule applies to `command` with `subject`, ignoring the count.
    fn applies(&self, command: Command, subject: &str) -> bool {
        if self.command != command || self.remaining == Some(0) {
            return false;
        }
        match &self.needle {
            None => true,
            Some(needle) => subject.to_lowercase().contains(needle.as_str()),
        }
    }
}

/// Finds the first rule in `rules` that applies, uses up one of its matches and
/// returns its action.
pub(crate) fn take_action(rules: &mut [Rule], command: Command, subject: &str) -> Option<Action> {
    let rule = rules.iter_mut().find(|r| r.applies(command, subject))?;
    if let Some(left) = rule.remaining.as_mut() {
        *left -= 1;
    }
    Some(rule.action.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_in_order_and_count_down() {
        let mut rules = vec![
            Rule::new(Command::Rcpt, Action::Reply(550, "no".into()))
                .matching("BAD@")
                .times(1),
            Rule::new(Command::Rcpt, Action::Reply(451, "later".into())).times(2),
        ];
        let code = |a: Option<Action>| match a {
            Some(Action::Reply(code, _)) => Some(code),
            _ => None,
        };
        assert_eq!(
            code(take_action(&mut rules, Command::Rcpt, "TO:<bad@x>")),
            Some(550)
        );
        assert_eq!(
            code(take_action(&mut rules, Command::Rcpt, "TO:<bad@x>")),
            Some(451)
        );
        assert_eq!(
            code(take_action(&mut rules, Command::Rcpt, "TO:<ok@x>")),
            Some(451)
        );
        assert_eq!(
            code(take_action(&mut rules, Command::Rcpt, "TO:<ok@x>")),
            None
        );
        assert_eq!(code(take_action(&mut rules, Command::Mail, "")), None);
    }
}

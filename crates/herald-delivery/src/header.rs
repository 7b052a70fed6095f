//! Header fields written by hand: display names as atoms, quoted strings or
//! RFC 2047 encoded words, unstructured text with encoded words only where it
//! needs them, and every field folded at whitespace per RFC 5322 2.2.3.
//!
//! mail-builder 0.4 put encoded words inside quoted strings and wrote them
//! longer than RFC 2047 allows; its 2.x releases fix that but still split long
//! ASCII names into encoded words and leave text that looks like an encoded
//! word unencoded. So Herald writes the header section itself and leaves only
//! the MIME body to mail-builder.

use herald_core::{EmailAddress, Mailbox};

/// RFC 5322 2.1.1: a line should be at most 78 characters.
const LINE: usize = 78;
/// RFC 2047 2: a line holding an encoded word is at most 76 characters.
const ENCODED_LINE: usize = 76;
/// RFC 2047 2: an encoded word is at most 75 characters.
const MAX_WORD: usize = 75;
/// `=?utf-8?q?` and `?=`.
const WORD_OVERHEAD: usize = 12;
/// A UTF-8 character takes at most 12 characters in Q encoding (4 × `=XX`).
const MAX_CHAR: usize = 12;
/// The shortest encoded word worth starting at the end of a line rather than
/// on a fresh one.
const MIN_WORD_HERE: usize = 48;

/// A display name that is one mailbox's name, and the address beside it.
#[derive(Clone, Copy)]
pub(crate) struct NamedAddress<'a> {
    pub name: Option<&'a str>,
    pub address: &'a EmailAddress,
}

impl<'a> From<&'a Mailbox> for NamedAddress<'a> {
    fn from(mailbox: &'a Mailbox) -> Self {
        NamedAddress {
            name: mailbox.name.as_ref().map(AsRef::as_ref),
            address: &mailbox.address,
        }
    }
}

/// One header field being written: tokens that never break, and a single
/// space before each where the line may fold instead.
struct Field {
    out: String,
    /// Characters on the current line so far.
    column: usize,
    /// Whether the current line holds an encoded word (and so may only reach 76).
    line_has_word: bool,
    /// Whether a token follows the field name yet.
    has_token: bool,
}

impl Field {
    fn new(name: &str) -> Self {
        Field {
            out: format!("{name}:"),
            column: name.len() + 1,
            line_has_word: false,
            has_token: false,
        }
    }

    /// Appends ` token`, or folds before it when the line would grow too long.
    fn push(&mut self, token: &str, encoded: bool) {
        let limit = if encoded || self.line_has_word {
            ENCODED_LINE
        } else {
            LINE
        };
        let fits_here = self.column + 1 + token.len() <= limit;
        // The first token stays beside the field name: a value that starts
        // on a continuation line begins with a space for some parsers.
        if !fits_here && self.has_token {
            self.out.push_str("\r\n ");
            self.column = 1;
            self.line_has_word = false;
        } else {
            self.out.push(' ');
            self.column += 1;
        }
        self.out.push_str(token);
        self.column += token.len();
        self.line_has_word |= encoded;
        self.has_token = true;
    }

    /// Room for an encoded word after a space on the current line.
    fn room(&self) -> usize {
        ENCODED_LINE.saturating_sub(self.column + 1).min(MAX_WORD)
    }

    fn finish(mut self) -> String {
        self.out.push_str("\r\n");
        self.out
    }
}

/// An address field (From, To, Cc, Reply-To, Sender): each mailbox as
/// `name <address>`, separated by commas.
pub(crate) fn address_field<'a>(
    name: &str,
    mailboxes: impl IntoIterator<Item = NamedAddress<'a>>,
) -> String {
    let mut field = Field::new(name);
    let mut mailboxes = mailboxes.into_iter().peekable();
    while let Some(mailbox) = mailboxes.next() {
        if let Some(display) = mailbox.name.filter(|n| !n.is_empty()) {
            write_phrase(&mut field, display);
        }
        let comma = if mailboxes.peek().is_some() { "," } else { "" };
        field.push(&format!("<{}>{comma}", mailbox.address), false);
    }
    field.finish()
}

/// An unstructured field (Subject, a custom header): the text as it is,
/// folded at its spaces, with encoded words for the parts that are not
/// printable ASCII, look like encoded words, or are too long for a line
/// (RFC 2047 5(1)).
pub(crate) fn text_field(name: &str, text: &str) -> String {
    let mut field = Field::new(name);
    let pieces = pieces(text);
    let last = pieces.len().saturating_sub(1);
    let first_room = LINE.saturating_sub(name.len() + 2);
    write_mixed(&mut field, &pieces, |i, piece| {
        // Leading and trailing spaces would be taken for folding whitespace
        // and lost, so the pieces that carry them are encoded.
        let plain = !piece.is_empty()
            && piece.len() < LINE - 1
            && (i > 0 || piece.len() <= first_room)
            && !piece.contains("=?")
            && piece.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
            && !(i == 0 && piece.starts_with(' '))
            && !(i == last && piece.ends_with(' '));
        plain.then(|| piece.to_owned())
    });
    field.finish()
}

/// A display name (RFC 5322 phrase): atoms when it is plain ASCII words, one
/// quoted string when it is ASCII that needs quoting, and otherwise its
/// plain words as atoms and the rest as encoded words (RFC 2047 5(3)).
fn write_phrase(field: &mut Field, name: &str) {
    let pieces = pieces(name);
    let atom =
        |piece: &str| !piece.is_empty() && !piece.contains("=?") && piece.bytes().all(is_atext);
    if pieces.iter().all(|p| atom(p)) {
        for piece in pieces {
            field.push(piece, false);
        }
        return;
    }
    let printable = name.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if printable && !name.contains("=?") {
        // A quoted string may fold at its spaces (RFC 5322 3.2.4: FWS).
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let open = if i == 0 { "\"" } else { "" };
            let close = if i == last { "\"" } else { "" };
            let escaped = piece.replace('\\', "\\\\").replace('"', "\\\"");
            field.push(&format!("{open}{escaped}{close}"), false);
        }
        return;
    }
    write_mixed(field, &pieces, |_, piece| {
        atom(piece).then(|| piece.to_owned())
    });
}

/// Writes `pieces` (which joined by single spaces give the text): each piece
/// `plain` accepts as it is, each run of the others as encoded words with the
/// spaces between them inside, since RFC 2047 6.2 drops whitespace between
/// adjacent encoded words.
fn write_mixed(field: &mut Field, pieces: &[&str], plain: impl Fn(usize, &str) -> Option<String>) {
    let mut run: Option<String> = None;
    for (i, piece) in pieces.iter().enumerate() {
        match plain(i, piece) {
            Some(token) => {
                if let Some(text) = run.take() {
                    write_encoded(field, &text);
                }
                field.push(&token, false);
            }
            None => match &mut run {
                Some(text) => {
                    text.push(' ');
                    text.push_str(piece);
                }
                None => run = Some((*piece).to_owned()),
            },
        }
    }
    if let Some(text) = run {
        write_encoded(field, &text);
    }
}

/// Splits text at single spaces between non-space characters, so that the
/// pieces joined by one space give the text back; runs of spaces, and spaces
/// at either end, stay inside a piece.
fn pieces(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    for i in 1..bytes.len().saturating_sub(1) {
        if bytes[i] == b' ' && bytes[i - 1] != b' ' && bytes[i + 1] != b' ' {
            pieces.push(&text[start..i]);
            start = i + 1;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// RFC 5322 atext: what an atom may hold.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// The characters RFC 2047 5(3) lets Q encoding leave as they are; they are
/// safe in every place an encoded word may appear.
fn q_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!*+-/".contains(&b)
}

fn q_len(c: char) -> usize {
    match c {
        ' ' => 1,
        c if c.is_ascii() && q_literal(c as u8) => 1,
        c => 3 * c.len_utf8(),
    }
}

fn b_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// Writes `text` as encoded words of at most 75 characters, each on a line of
/// at most 76, never splitting a character; Q or B, whichever is shorter.
fn write_encoded(field: &mut Field, text: &str) {
    let q_total: usize = text.chars().map(q_len).sum();
    let use_q = q_total <= b_len(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        // Stay on the current line when the rest fits there, or when a good
        // part of a word does; else start a fresh line, where a short rest
        // then needs only one word.
        let whole = WORD_OVERHEAD
            + if use_q {
                rest.chars().map(q_len).sum()
            } else {
                b_len(rest.len())
            };
        let here = field.room();
        let room = if !field.has_token || whole <= here || here >= MIN_WORD_HERE {
            // After a very long field name the first word stays on its line
            // however short the room.
            here.max(WORD_OVERHEAD + MAX_CHAR)
        } else {
            MAX_WORD.min(ENCODED_LINE - 1)
        };
        let budget = room - WORD_OVERHEAD;
        let mut end = 0;
        let mut q = 0;
        let mut after_space = None;
        for (i, c) in rest.char_indices() {
            let next = i + c.len_utf8();
            let fits = if use_q {
                q + q_len(c) <= budget
            } else {
                b_len(next) <= budget
            };
            if !fits {
                break;
            }
            q += q_len(c);
            end = next;
            if c == ' ' {
                after_space = Some(next);
            }
        }
        // Prefer ending a word after a space: decoders that keep the
        // whitespace between encoded words then only double a space.
        if end < rest.len() {
            if let Some(cut) = after_space.filter(|&cut| cut * 2 > end) {
                end = cut;
            }
        }
        let (chunk, tail) = rest.split_at(end);
        field.push(&encode_word(chunk, use_q), true);
        rest = tail;
    }
}

fn encode_word(chunk: &str, use_q: bool) -> String {
    use base64::Engine;
    if !use_q {
        let payload = base64::engine::general_purpose::STANDARD.encode(chunk);
        return format!("=?utf-8?b?{payload}?=");
    }
    let mut word = String::from("=?utf-8?q?");
    for b in chunk.bytes() {
        match b {
            b' ' => word.push('_'),
            b if q_literal(b) => word.push(b as char),
            b => word.push_str(&format!("={b:02X}")),
        }
    }
    word.push_str("?=");
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn from(name: &str) -> String {
        let a = addr("alerts@acme.example");
        address_field(
            "From",
            [NamedAddress {
                name: Some(name),
                address: &a,
            }],
        )
    }

    fn lines(field: &str) -> Vec<&str> {
        field.trim_end_matches("\r\n").split("\r\n").collect()
    }

    #[test]
    fn plain_names_are_atoms_and_others_are_quoted() {
        assert_eq!(
            from("Acme Alerts"),
            "From: Acme Alerts <alerts@acme.example>\r\n"
        );
        assert_eq!(
            from("Lovelace, \"Ada\" \\ x"),
            "From: \"Lovelace, \\\"Ada\\\" \\\\ x\" <alerts@acme.example>\r\n"
        );
        assert_eq!(
            from("ops@acme"),
            "From: \"ops@acme\" <alerts@acme.example>\r\n"
        );
    }

    #[test]
    fn non_ascii_names_are_encoded_words_outside_quotes() {
        assert_eq!(
            from("Acme Überwachung – Alerts"),
            "From: Acme =?utf-8?b?w5xiZXJ3YWNodW5nIOKAkw==?= Alerts <alerts@acme.example>\r\n"
        );
        // Text that looks like an encoded word is encoded, never left for a
        // decoder to misread.
        assert!(from("=?utf-8?q?x?=").starts_with("From: =?utf-8?"));
        // A comma in an encoded phrase is encoded (RFC 2047 5(3)).
        assert!(!from("Müller, Jürgen").contains(','));
    }

    #[test]
    fn long_names_fold_and_keep_encoded_words_short() {
        let ascii = ["Operations"; 30].join(" ");
        for line in lines(&from(&ascii)) {
            assert!(line.len() <= 78, "{line}");
            assert!(!line.contains("=?"), "{line}");
        }
        let utf8 = "Ü".repeat(100);
        for line in lines(&from(&utf8)) {
            assert!(line.len() <= 76, "{line}");
            for word in line.split(' ').filter(|w| w.starts_with("=?")) {
                assert!(word.len() <= 75, "{word}");
                // Each word decodes on its own: no character is split.
                let payload = &word[10..word.len() - 2];
                let bytes =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
                        .unwrap();
                assert!(String::from_utf8(bytes).is_ok(), "{word}");
            }
        }
    }

    #[test]
    fn the_shorter_encoding_is_chosen() {
        assert!(from("Jürgen").contains("?q?"));
        assert!(from("山田太郎").contains("?b?"));
    }

    #[test]
    fn text_folds_at_spaces_and_encodes_only_what_needs_it() {
        assert_eq!(text_field("Subject", "Disk full"), "Subject: Disk full\r\n");
        let long = ["disk"; 40].join(" ");
        let field = text_field("Subject", &long);
        assert!(!field.contains("=?"));
        assert!(lines(&field).iter().all(|l| l.len() <= 78));
        assert_eq!(field.replace("\r\n ", " "), format!("Subject: {long}\r\n"));
        assert_eq!(
            text_field("Subject", "Störung voll"),
            "Subject: =?utf-8?q?St=C3=B6rung?= voll\r\n"
        );
        assert!(text_field("X-Token", &"x".repeat(200)).starts_with("X-Token: =?utf-8?q?xxx"));
        assert_eq!(
            text_field("Subject", " padded "),
            "Subject: =?utf-8?q?_padded_?=\r\n"
        );
    }

    #[test]
    fn pieces_join_back_to_the_text() {
        for text in ["a b", "a  b", " a", "a ", "  ", "", "a b  c d"] {
            assert_eq!(pieces(text).join(" "), text, "{text:?}");
        }
    }

    #[test]
    fn international_addresses_are_written_as_they_are() {
        let a = addr("jürgen@müller.example");
        let field = address_field(
            "To",
            [NamedAddress {
                name: Some("Jürgen"),
                address: &a,
            }],
        );
        assert_eq!(
            field,
            "To: =?utf-8?q?J=C3=BCrgen?= <jürgen@müller.example>\r\n"
        );
    }
}

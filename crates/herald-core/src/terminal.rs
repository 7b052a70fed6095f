//! Text from a remote server made safe to print: control characters and
//! bidirectional overrides escaped, so a reply cannot clear, recolour or
//! rewrite the terminal (or the log) it is shown on.

use std::borrow::Cow;
use std::fmt::Write;

/// True for the characters a terminal acts on instead of showing: C0 controls
/// (ESC among them), DEL, C1 controls, and the Unicode bidirectional
/// embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), which
/// reorder what follows them on the line.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as a visible escape: `\x1b`
/// for a control character, `\u{202e}` for a bidirectional override. Line
/// breaks are escaped too; split multi-line text into lines first to keep them.
pub fn escape_unprintable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_unsafe(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_overrides_and_keeps_the_rest() {
        assert_eq!(
            escape_unprintable("535 \u{1b}[2J\u{1b}]0;pwned\u{7}bad\u{7f}\u{9b}"),
            "535 \\x1b[2J\\x1b]0;pwned\\x07bad\\x7f\\x9b"
        );
        assert_eq!(
            escape_unprintable("a\u{202e}b\u{2066}c\u{2069}\r\n\t"),
            "a\\u{202e}b\\u{2066}c\\u{2069}\\x0d\\x0a\\x09"
        );
        assert!(matches!(
            escape_unprintable("250 mx.example ÜTF-8 ✓"),
            Cow::Borrowed("250 mx.example ÜTF-8 ✓")
        ));
    }
}

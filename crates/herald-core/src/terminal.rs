//! Text from a remote server made safe to print: control characters and
//! bidirectional overrides escaped, so a reply cannot clear, recolour or
//! rewrite the terminal (or the log) it is shown on.

use std::borrow::Cow;
use std::fmt::Write;

/// True for the characters that act instead of showing, or show as nothing:
/// C0 controls (ESC among them), DEL, C1 controls, the Unicode bidirectional
/// embeddings, overrides, isolates and marks (U+061C, U+200E/F,
/// U+202A–U+202E, U+2066–U+2069), the line and paragraph separators and the
/// zero-width characters (U+200B–U+200D, U+2060–U+2064, U+FEFF). Text from a
/// remote server holding one could reorder, hide or rewrite what is shown
/// after it; the terminal and the console both escape by this one rule.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `text` with every unsafe character written as a visible escape: `\x1b`
/// for a control character, `\u{202e}` for a bidirectional override. Line
/// breaks are escaped too; split multi-line text into lines first to keep them.
pub fn escape_unprintable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_invisible) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_invisible(c) => out.push(c),
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
        assert_eq!(
            escape_unprintable("a\u{200f}b\u{200b}c\u{2028}d\u{feff}e\u{61c}"),
            "a\\u{200f}b\\u{200b}c\\u{2028}d\\u{feff}e\\u{61c}"
        );
        assert!(matches!(
            escape_unprintable("250 mx.example ÜTF-8 ✓"),
            Cow::Borrowed("250 mx.example ÜTF-8 ✓")
        ));
    }
}

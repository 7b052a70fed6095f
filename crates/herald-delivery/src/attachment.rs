//! The MIME part of one attachment: its header fields written here (file
//! names per RFC 2231, never as RFC 2047 encoded words, which RFC 2047 5
//! forbids in parameters) and its content in base64, so every byte arrives
//! as it was given.

use base64::Engine;
use herald_store::Attachment;
use mail_builder::mime::MimePart;

/// RFC 5322 2.1.1: a line should be at most 78 characters.
const LINE: usize = 78;
/// The longest parameter value segment, so that a segment with its name
/// and quotes stays well inside a line.
const SEGMENT: usize = 60;
/// RFC 2045 6.8: encoded lines are at most 76 characters.
const BASE64_LINE: usize = 76;

/// The part for `attachment`: `Content-Disposition: inline` with its
/// Content-ID when it has a content id, `attachment` otherwise; both carry
/// the file name.
pub(crate) fn part(attachment: &Attachment) -> MimePart<'static> {
    let mut head = String::new();
    head.push_str(&parameterised(
        "Content-Type",
        media_type(&attachment.content_type),
        "name",
        &attachment.filename,
    ));
    let content_id = attachment
        .content_id
        .as_deref()
        .filter(|id| is_content_id(id));
    let disposition = if content_id.is_some() {
        "inline"
    } else {
        "attachment"
    };
    head.push_str(&parameterised(
        "Content-Disposition",
        disposition,
        "filename",
        &attachment.filename,
    ));
    if let Some(id) = content_id {
        head.push_str(&format!("Content-ID: <{id}>\r\n"));
    }
    head.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let mut bytes = head.into_bytes();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&attachment.content);
    // The part ends without a line break: the boundary line that follows
    // begins with one (RFC 2046 5.1.1).
    for (i, line) in encoded.as_bytes().chunks(BASE64_LINE).enumerate() {
        if i > 0 {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(line);
    }
    MimePart::raw(bytes)
}

/// RFC 2045 5.1 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// The media type as given when it is `type/subtype` (the API lets no other
/// form in); anything else stored is sent as `application/octet-stream`
/// rather than written into a header.
fn media_type(given: &str) -> &str {
    match given.split_once('/') {
        Some((kind, subtype)) if is_token(kind) && is_token(subtype) => given,
        _ => "application/octet-stream",
    }
}

/// A content id Herald writes inside `<>`: printable ASCII without `<`, `>`.
fn is_content_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// RFC 2231 7 attribute-char: what a percent-encoded value leaves as it is.
fn is_attribute_char(b: u8) -> bool {
    is_token(std::str::from_utf8(&[b]).unwrap_or("")) && !b"*'%".contains(&b)
}

/// `Field: value; name=…`, folded before the parameter when the line would
/// grow too long. A printable ASCII value that fits is one quoted string;
/// a longer one is split into RFC 2231 continuations (`name*0="…"`), and a
/// value with other characters is percent-encoded UTF-8 (`name*0*=utf-8''…`).
fn parameterised(field: &str, value: &str, name: &str, parameter: &str) -> String {
    let mut out = format!("{field}: {value}");
    let mut column = out.len();
    let printable = parameter.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let segments: Vec<String> = if printable {
        let whole = quoted(parameter);
        if whole.len() <= SEGMENT {
            vec![format!("{name}={whole}")]
        } else {
            chunks(parameter, SEGMENT - 2, |c| quoted(&c.to_string()).len() - 2)
                .iter()
                .enumerate()
                .map(|(i, chunk)| format!("{name}*{i}={}", quoted(chunk)))
                .collect()
        }
    } else {
        let encoded = |c: char| {
            let mut buf = [0; 4];
            c.encode_utf8(&mut buf)
                .bytes()
                .map(|b| {
                    if is_attribute_char(b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let pieces = chunks(parameter, SEGMENT, |c| encoded(c).len());
        if pieces.len() == 1 {
            let text: String = parameter.chars().map(encoded).collect();
            vec![format!("{name}*=utf-8''{text}")]
        } else {
            pieces
                .iter()
                .enumerate()
                .map(|(i, chunk)| {
                    let text: String = chunk.chars().map(encoded).collect();
                    let charset = if i == 0 { "utf-8''" } else { "" };
                    format!("{name}*{i}*={charset}{text}")
                })
                .collect()
        }
    };
    for segment in segments {
        out.push(';');
        column += 1;
        if column + 1 + segment.len() > LINE {
            out.push_str("\r\n ");
            column = 1;
        } else {
            out.push(' ');
            column += 1;
        }
        out.push_str(&segment);
        column += segment.len();
    }
    out.push_str("\r\n");
    out
}

/// Splits `text` into pieces whose written length (`cost` per character)
/// stays within `budget`, never inside a character.
fn chunks(text: &str, budget: usize, cost: impl Fn(char) -> usize) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut used = 0;
    for c in text.chars() {
        let n = cost(c);
        if used + n > budget && used > 0 {
            pieces.push(String::new());
            used = 0;
        }
        pieces.last_mut().expect("never empty").push(c);
        used += n;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ascii_names_are_quoted_strings() {
        assert_eq!(
            parameterised(
                "Content-Disposition",
                "attachment",
                "filename",
                "a \"b\".pdf"
            ),
            "Content-Disposition: attachment; filename=\"a \\\"b\\\".pdf\"\r\n"
        );
    }

    #[test]
    fn long_and_non_ascii_names_are_rfc_2231_continuations() {
        let long = format!("{}.pdf", "report-".repeat(20));
        let field = parameterised("Content-Disposition", "attachment", "filename", &long);
        assert!(field.contains("filename*0=\"report-"), "{field}");
        assert!(field.contains("filename*2="), "{field}");
        for line in field.trim_end().split("\r\n") {
            assert!(line.len() <= LINE, "{line}");
        }
        let field = parameterised(
            "Content-Disposition",
            "attachment",
            "filename",
            "Bericht für Jürgen.pdf",
        );
        assert_eq!(
            field,
            "Content-Disposition: attachment;\r\n filename*=utf-8''Bericht%20f%C3%BCr%20J%C3%BCrgen.pdf\r\n"
        );
        let field = parameterised("Content-Type", "image/png", "name", &"山".repeat(30));
        assert!(field.contains("name*0*=utf-8''%E5%B1%B1"), "{field}");
        assert!(field.contains("name*1*=%E5%B1%B1"), "{field}");
        for line in field.trim_end().split("\r\n") {
            assert!(line.len() <= LINE, "{line}");
        }
    }

    #[test]
    fn a_media_type_that_is_not_type_slash_subtype_is_never_written() {
        assert_eq!(media_type("image/png"), "image/png");
        assert_eq!(
            media_type("text/plain\r\nBcc: x"),
            "application/octet-stream"
        );
        assert_eq!(media_type("text"), "application/octet-stream");
    }
}

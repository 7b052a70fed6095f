//! How the console shows a moment: a `<time>` element whose text reads without
//! a script (UTC, and how long ago), whose `datetime` and tooltip hold the
//! exact RFC 3339 value, and which `console.js` rewrites in the reader's zone.

use herald_core::timestamp::{now_ms, rfc3339};
use minijinja::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// The `when` filter: a timestamp (RFC 3339 text, as the API's types
/// serialise, or milliseconds since the epoch) as a `<time>` element; nothing
/// for none, and text that is no timestamp as it is.
pub fn filter(value: Value) -> Value {
    let ms = if let Some(text) = value.as_str() {
        match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) => (at.unix_timestamp_nanos() / 1_000_000) as i64,
            Err(_) => return value,
        }
    } else if let Ok(ms) = i64::try_from(value.clone()) {
        ms
    } else {
        return Value::from("");
    };
    Value::from_safe_string(element(ms, now_ms()))
}

/// The element for the moment `ms`, seen at `now` (both milliseconds).
fn element(ms: i64, now: i64) -> String {
    let iso = rfc3339(ms);
    let shown = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| iso.clone());
    // Only digits, letters and `-:.` reach the markup, so nothing needs escaping.
    format!(
        "<time datetime=\"{iso}\" title=\"{iso}\">{shown} ({})</time>",
        relative(now - ms)
    )
}

/// How long ago (or, for a negative age, how soon), roughly: "3 min ago".
fn relative(age_ms: i64) -> String {
    let seconds = age_ms.abs() / 1000;
    let amount = match seconds {
        0..=44 => return "just now".to_owned(),
        45..=5_399 => format!("{} min", (seconds + 30) / 60),
        5_400..=129_599 => format!("{} h", (seconds + 1_800) / 3_600),
        // From a day and a half on, so always "days".
        _ => format!("{} days", (seconds + 43_200) / 86_400),
    };
    if age_ms >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_reads_in_utc_with_its_age_and_keeps_the_exact_value() {
        let at = 1_700_000_000_123;
        assert_eq!(
            element(at, at + 3 * 60_000),
            "<time datetime=\"2023-11-14T22:13:20.123Z\" title=\"2023-11-14T22:13:20.123Z\">2023-11-14 22:13 UTC (3 min ago)</time>"
        );
        assert!(element(at, at - 2 * 3_600_000).ends_with("(in 2 h)</time>"));
        assert!(element(at, at + 1_000).ends_with("(just now)</time>"));
        assert!(element(at, at + 86_400_000).ends_with("(24 h ago)</time>"));
        assert!(element(at, at + 9 * 86_400_000).ends_with("(9 days ago)</time>"));
    }

    #[test]
    fn the_filter_takes_rfc3339_or_milliseconds_and_leaves_other_text() {
        let from_text = filter(Value::from("2023-11-14T22:13:20.123Z"));
        let from_ms = filter(Value::from(1_700_000_000_123_i64));
        assert!(from_text.is_safe() && from_ms.is_safe());
        assert!(
            from_text
                .as_str()
                .unwrap()
                .starts_with("<time datetime=\"2023-11-14T22:13:20.123Z\"")
        );
        assert_eq!(
            from_text.as_str().unwrap().split('>').nth(1),
            from_ms.as_str().unwrap().split('>').nth(1)
        );
        assert!(!filter(Value::from("<b>soon</b>")).is_safe());
        assert_eq!(filter(Value::from(())).as_str(), Some(""));
    }
}

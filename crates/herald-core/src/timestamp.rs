//! Timestamps: stored as milliseconds since the Unix epoch, shown as RFC 3339.

use serde::Serializer;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Formats milliseconds since the epoch as RFC 3339 in UTC, with the
/// fraction of a second only as long as it needs
/// (`2023-11-14T22:13:20.12Z`); empty outside the years 0 to 9999.
///
/// Written out digit by digit: webhook events are built with it in the
/// store's writer, where `time`'s general formatter cost a third of an
/// event's body.
pub fn rfc3339(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    let Ok(year) = u32::try_from(t.year()) else {
        return String::new();
    };
    if year > 9999 {
        return String::new();
    }
    let (hour, minute, second, milli) = t.to_hms_milli();
    let mut out = String::with_capacity(24);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, u32::from(u8::from(t.month())), 2);
    out.push('-');
    push_digits(&mut out, u32::from(t.day()), 2);
    out.push('T');
    push_digits(&mut out, u32::from(hour), 2);
    out.push(':');
    push_digits(&mut out, u32::from(minute), 2);
    out.push(':');
    push_digits(&mut out, u32::from(second), 2);
    if milli > 0 {
        out.push('.');
        let (mut fraction, mut width) = (u32::from(milli), 3);
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        push_digits(&mut out, fraction, width);
    }
    out.push('Z');
    out
}

/// Writes the last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10u32.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-30T18:00:00Z`, any offset) into
/// milliseconds since the epoch.
pub fn parse_rfc3339(input: &str) -> Result<i64, crate::Invalid> {
    OffsetDateTime::parse(input.trim(), &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| {
            crate::Invalid::new("must be an RFC 3339 timestamp, such as 2026-11-30T18:00:00Z")
        })
}

/// Serialises a millisecond timestamp as RFC 3339 (for `#[serde(serialize_with)]`).
pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

/// Serialises an optional millisecond timestamp as RFC 3339 or null.
pub fn serialize_opt<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn formats_utc() {
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(super::rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(super::rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(super::rfc3339(i64::MAX), "");
    }

    /// The digit-by-digit formatter writes what `time`'s RFC 3339 formatter
    /// writes, over the years it can write and just past them.
    #[test]
    fn formats_as_the_time_crate_does() {
        let by_time = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default()
        };
        let first = -62_167_219_200_000_i64; // 0000-01-01
        let last = 253_402_300_799_999_i64; // 9999-12-31T23:59:59.999
        let mut ms = first - 1;
        // Steps that are prime to every unit of time, so that every digit moves.
        while ms <= last + 1 {
            assert_eq!(super::rfc3339(ms), by_time(ms), "{ms}");
            ms += 7_919_993_477;
        }
        for ms in [
            first,
            last,
            0,
            1,
            10,
            100,
            999,
            1_000,
            86_399_999,
            951_782_400_000,
        ] {
            assert_eq!(super::rfc3339(ms), by_time(ms), "{ms}");
        }
    }
}

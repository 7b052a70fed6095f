//! When a recurring schedule fires: a cron expression read in an IANA time
//! zone, the next firing after a moment, and the catch-up after downtime.
//!
//! Pure computation (no I/O, no clock): the caller passes every moment as
//! Unix milliseconds. [`croner`] walks the calendar; this module adds the
//! time-zone rules a tenant can rely on, whatever croner does by default:
//!
//! - **Spring forward (a local time that does not exist is skipped).** In
//!   `Europe/Berlin` on 2026-03-29 the clocks go from 02:00 to 03:00, so a
//!   daily `30 2 * * *` does not fire that day. Croner would move a
//!   fixed-time job to just after the gap; every occurrence is therefore
//!   checked against the pattern on the local clock, and one that does not
//!   match (it was moved) is skipped.
//! - **Fall back (a repeated local time fires once, unless the hour is a
//!   wildcard).** On 2026-10-25 the clocks go from 03:00 back to 02:00, so
//!   02:00–02:59 happens twice. A job whose hour field is fixed
//!   (`30 2 * * *`, `0 2,14 * * *`, `* 2 * * *`) fires at each local wall time
//!   once, on the first pass. A job whose hour field starts with `*` (`*` or
//!   `*/n`, such as `*/15 * * * *`) keeps firing by elapsed time through both
//!   passes, as Vixie cron does for wildcard jobs: an every-15-minutes job
//!   stays every 15 minutes.
//!
//! Expressions have five fields (minute, hour, day of month, month, day of
//! week) or six (seconds first); nicknames such as `@daily` and a year field
//! are refused. Occurrences are whole seconds.

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use herald_core::{FieldError, Invalid};

/// At most this many missed occurrences are counted exactly by [`Recurrence::catch_up`];
/// past it the count stays at this value, so the work after a long outage is bounded.
pub const MISSED_CAP: u32 = 100_000;

/// How many occurrences croner may hand back that the rules above skip, in one
/// search, before the search gives up. Each skip passes one clock change, and
/// a zone changes its clocks at most a few times a year.
const MAX_SKIPS: usize = 64;

/// A parsed cron expression and the time zone it is read in.
#[derive(Clone, Debug)]
pub struct Recurrence {
    cron: Cron,
    tz: Tz,
    /// The hour field starts with `*`: the job fires on both passes of a repeated hour.
    wildcard_hour: bool,
}

/// What to do when a schedule is found due (see [`Recurrence::catch_up`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// The occurrence to fire now, Unix ms: the latest at or before `now`.
    pub fire_at: i64,
    /// Occurrences at or after the stored `next_run_at` and strictly before
    /// `fire_at`, folded into this firing; at most [`MISSED_CAP`].
    pub missed: u32,
    /// The first occurrence strictly after `now`, or `None` if there is none.
    pub next: Option<i64>,
}

/// An IANA time zone by name; an error names the field `timezone`.
pub fn time_zone(name: &str) -> Result<Tz, FieldError> {
    name.parse().map_err(|_| {
        Invalid::new("must be an IANA time zone name, such as Europe/Berlin or UTC").at("timezone")
    })
}

impl Recurrence {
    /// Reads a cron expression and an IANA time zone name.
    ///
    /// Errors name the field: `cron` or `timezone`.
    pub fn parse(cron: &str, timezone: &str) -> Result<Recurrence, FieldError> {
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let (seconds, hour) = match fields.len() {
            5 => (Seconds::Disallowed, fields[1]),
            6 => (Seconds::Required, fields[2]),
            _ => {
                return Err(Invalid::new(
                    "must have five fields (minute hour day-of-month month day-of-week) \
                     or six (seconds first), separated by spaces",
                )
                .at("cron"));
            }
        };
        let parsed = CronParser::builder()
            .seconds(seconds)
            .year(Year::Disallowed)
            .build()
            .parse(&fields.join(" "))
            .map_err(|e| {
                Invalid::new(format!("is not a valid cron expression: {}", plain(&e))).at("cron")
            })?;
        let tz = time_zone(timezone)?;
        Ok(Recurrence {
            cron: parsed,
            tz,
            wildcard_hour: hour.starts_with('*'),
        })
    }

    /// The first occurrence strictly after `after_ms` (Unix ms), or `None` if
    /// it never fires again.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Occurrences are whole seconds: strictly after 12:00:00.5 is strictly after 12:00:00.
        let mut at = self.local(after_ms.div_euclid(1000) * 1000)?;
        for _ in 0..MAX_SKIPS {
            let found = self.cron.find_next_occurrence(&at, false).ok()?;
            if self.fires(&found) {
                return Some(found.timestamp_millis());
            }
            at = found;
        }
        None
    }

    /// The latest occurrence at or before `at_ms`, or `None` if there is none.
    fn latest_at_or_before(&self, at_ms: i64) -> Option<i64> {
        let mut at = self.local(at_ms.div_euclid(1000) * 1000)?;
        let mut inclusive = true;
        for _ in 0..MAX_SKIPS {
            let found = self.cron.find_previous_occurrence(&at, inclusive).ok()?;
            if self.fires(&found) {
                return Some(found.timestamp_millis());
            }
            at = found;
            inclusive = false;
        }
        None
    }

    /// After downtime: given the schedule's stored `next_run_at` (at or before
    /// `now`), the occurrence to fire now, how many earlier ones it folds in,
    /// and the next one after `now`.
    ///
    /// `missed` counts the occurrences at or after `next_run_at` and strictly
    /// before `fire_at`: 0 when nothing was missed. It is exact up to
    /// [`MISSED_CAP`] and stays there beyond, so a per-second schedule after a
    /// month down costs at most that many steps. If no occurrence lies between
    /// `next_run_at` and `now` (the expression changed since `next_run_at` was
    /// stored, say), the schedule still fires once, at `next_run_at`.
    pub fn catch_up(&self, next_run_at: i64, now: i64) -> CatchUp {
        let mut fire_at = None;
        let mut missed = 0u32;
        let mut saturated = false;
        // Walk forward rather than search backward from `now`: the forward
        // walk is what `next_after` produces, so the count agrees with it.
        let mut cursor = self.next_after(next_run_at.saturating_sub(1));
        while let Some(at) = cursor {
            if at > now {
                break;
            }
            if fire_at.is_some() {
                missed += 1;
                if missed == MISSED_CAP {
                    saturated = true;
                    break;
                }
            }
            fire_at = Some(at);
            cursor = self.next_after(at);
        }
        if saturated {
            // Too many to walk: find the latest one directly.
            fire_at = self.latest_at_or_before(now).max(fire_at);
        }
        let fire_at = fire_at.unwrap_or(next_run_at);
        CatchUp {
            fire_at,
            missed,
            next: self.next_after(now.max(fire_at)),
        }
    }

    /// Unix ms as a moment in this recurrence's time zone.
    fn local(&self, ms: i64) -> Option<DateTime<Tz>> {
        DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.with_timezone(&self.tz))
    }

    /// Whether an occurrence croner found obeys the rules in the module doc.
    fn fires(&self, at: &DateTime<Tz>) -> bool {
        // Croner moves a fixed-time job out of a spring-forward gap; the
        // moved time no longer matches the pattern on the local clock.
        if !matches!(self.cron.is_time_matching(at), Ok(true)) {
            return false;
        }
        // On the second pass of a repeated hour only wildcard-hour jobs fire.
        if !self.wildcard_hour
            && let LocalResult::Ambiguous(first, _) = self.tz.from_local_datetime(&at.naive_local())
        {
            return first == *at;
        }
        true
    }
}

/// Croner's error text, as it reads after "is not a valid cron expression: ".
fn plain(e: &croner::errors::CronError) -> String {
    let text = e.to_string();
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC moment as Unix ms.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    fn rec(cron: &str, tz: &str) -> Recurrence {
        Recurrence::parse(cron, tz).unwrap()
    }

    /// The next `n` occurrences after `from`.
    fn next_n(r: &Recurrence, from: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = from;
        for _ in 0..n {
            at = r.next_after(at).unwrap();
            out.push(at);
        }
        out
    }

    /// Asserts the occurrences of `cron` in `tz` that follow `from`, in order.
    fn assert_next(cron: &str, tz: &str, from: i64, want: &[i64]) {
        assert_eq!(
            next_n(&rec(cron, tz), from, want.len()),
            want,
            "{cron} in {tz}"
        );
    }

    const MIN: i64 = 60_000;

    const BERLIN: &str = "Europe/Berlin";

    #[test]
    fn five_and_six_fields_are_accepted() {
        rec("*/15 * * * *", "UTC");
        rec("*/10 * * * * *", "UTC");
        rec("0 9 * * MON-FRI", "Europe/Berlin");
    }

    #[test]
    fn other_field_counts_are_refused_at_cron() {
        for bad in ["", "* * * *", "0 0 0 1 1 * 2030", "@daily"] {
            let err = Recurrence::parse(bad, "UTC").unwrap_err();
            assert_eq!(err.field, "cron", "{bad:?}");
            assert!(err.rule.contains("five fields"), "{bad:?}: {}", err.rule);
        }
    }

    #[test]
    fn an_invalid_field_is_refused_at_cron_with_croner_words() {
        let err = Recurrence::parse("61 * * * *", "UTC").unwrap_err();
        assert_eq!(err.field, "cron");
        assert!(
            err.rule.starts_with("is not a valid cron expression: "),
            "{}",
            err.rule
        );
        assert!(!err.rule.ends_with('.'), "{}", err.rule);
    }

    #[test]
    fn an_unknown_time_zone_is_refused_at_timezone() {
        let err = Recurrence::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(err.field, "timezone");
        assert!(err.rule.contains("IANA"), "{}", err.rule);
        assert_eq!(rec("* * * * *", "UTC").tz, Tz::UTC);
    }

    #[test]
    fn next_after_is_strictly_after() {
        let r = rec("0 * * * *", "UTC");
        let noon = utc(2026, 1, 5, 12, 0, 0);
        assert_eq!(r.next_after(noon), Some(utc(2026, 1, 5, 13, 0, 0)));
        assert_eq!(r.next_after(noon - 1), Some(noon));
        assert_eq!(r.next_after(noon + 500), Some(utc(2026, 1, 5, 13, 0, 0)));
    }

    #[test]
    fn weekdays_at_nine_berlin_follow_summer_time() {
        let r = rec("0 9 * * 1-5", "Europe/Berlin");
        // Saturday 3 January 2026: the next is Monday 5 January, 09:00 CET.
        assert_eq!(
            r.next_after(utc(2026, 1, 3, 12, 0, 0)),
            Some(utc(2026, 1, 5, 8, 0, 0))
        );
        // Saturday 4 July 2026: the next is Monday 6 July, 09:00 CEST.
        assert_eq!(
            r.next_after(utc(2026, 7, 4, 12, 0, 0)),
            Some(utc(2026, 7, 6, 7, 0, 0))
        );
    }

    #[test]
    fn six_fields_step_ten_seconds() {
        let base = utc(2026, 1, 5, 12, 0, 10);
        let want = [base, base + 10_000, base + 20_000, base + 30_000];
        assert_next("*/10 * * * * *", "UTC", utc(2026, 1, 5, 12, 0, 3), &want);
    }

    #[test]
    fn spring_forward_skips_a_fixed_time_that_does_not_exist() {
        let want = [
            utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
            utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST; none on the 29th
            utc(2026, 3, 31, 0, 30, 0),
        ];
        assert_next("30 2 * * *", BERLIN, utc(2026, 3, 27, 12, 0, 0), &want);
    }

    #[test]
    fn spring_forward_skips_wildcard_hour_times_in_the_gap() {
        // 01:30 CET is 00:30 UTC; 02:00 and 02:30 do not exist; 03:00 CEST is 01:00 UTC.
        let want = [
            utc(2026, 3, 29, 0, 30, 0),
            utc(2026, 3, 29, 1, 0, 0),
            utc(2026, 3, 29, 1, 30, 0),
        ];
        assert_next("*/30 * * * *", BERLIN, utc(2026, 3, 29, 0, 0, 0), &want);
    }

    #[test]
    fn fall_back_fires_a_fixed_time_once() {
        let want = [
            utc(2026, 10, 25, 0, 30, 0), // the first 02:30, CEST
            utc(2026, 10, 26, 1, 30, 0), // the next day, CET
        ];
        assert_next("30 2 * * *", BERLIN, utc(2026, 10, 24, 12, 0, 0), &want);
        // Starting inside the repeated hour, after the first 02:30, does not find the second.
        assert_next("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 0, 0), &want[1..]);
    }

    #[test]
    fn fall_back_fires_a_fixed_hour_list_once() {
        let want = [
            utc(2026, 10, 25, 0, 0, 0),
            utc(2026, 10, 25, 0, 30, 0),
            utc(2026, 10, 26, 1, 0, 0),
        ];
        assert_next("0,30 2 * * *", BERLIN, utc(2026, 10, 24, 23, 0, 0), &want);
    }

    #[test]
    fn fall_back_keeps_a_wildcard_hour_job_on_elapsed_time() {
        // 23:45 UTC on the 24th is 01:45 CEST; run through both passes of 02:00–02:59.
        let start = utc(2026, 10, 24, 23, 45, 0);
        let want: Vec<i64> = (1..=12).map(|i| start + i * 15 * MIN).collect();
        assert_next("*/15 * * * *", BERLIN, start, &want);
    }

    /// A catch-up that fires at `fire_at`, folds in `missed`, and fires next at `next`.
    fn caught_up(fire_at: i64, missed: u32, next: i64) -> CatchUp {
        CatchUp {
            fire_at,
            missed,
            next: Some(next),
        }
    }

    #[test]
    fn catch_up_per_minute_after_three_hours() {
        let r = rec("* * * * *", "UTC");
        let c = r.catch_up(utc(2026, 1, 5, 9, 0, 0), utc(2026, 1, 5, 12, 0, 30));
        // 09:00 through 12:00 are 181 occurrences: fire the last, fold in 180.
        let want = caught_up(utc(2026, 1, 5, 12, 0, 0), 180, utc(2026, 1, 5, 12, 1, 0));
        assert_eq!(c, want);
    }

    #[test]
    fn catch_up_on_time_misses_nothing() {
        let r = rec("* * * * *", "UTC");
        let at = utc(2026, 1, 5, 9, 0, 0);
        assert_eq!(r.catch_up(at, at), caught_up(at, 0, at + MIN));
        assert_eq!(r.catch_up(at, at + 59_999).missed, 0);
        assert_eq!(r.catch_up(at, at + MIN).missed, 1);
    }

    #[test]
    fn catch_up_agrees_with_next_after_over_a_clock_change() {
        let r = rec("30 2 * * *", BERLIN);
        let c = r.catch_up(utc(2026, 3, 27, 1, 30, 0), utc(2026, 3, 31, 12, 0, 0));
        // 27th, 28th, (29th skipped), 30th, 31st.
        let want = caught_up(utc(2026, 3, 31, 0, 30, 0), 3, utc(2026, 4, 1, 0, 30, 0));
        assert_eq!(c, want);
    }

    #[test]
    fn catch_up_with_no_occurrence_in_between_fires_at_next_run_at() {
        let r = rec("0 9 * * *", "UTC");
        let stored = utc(2026, 1, 5, 10, 0, 0);
        let c = r.catch_up(stored, utc(2026, 1, 5, 11, 0, 0));
        assert_eq!(c, caught_up(stored, 0, utc(2026, 1, 6, 9, 0, 0)));
    }

    #[test]
    fn catch_up_per_second_after_forty_days_saturates() {
        let r = rec("* * * * * *", BERLIN);
        let now = utc(2026, 2, 10, 0, 0, 0) + 250;
        // Bounded work shows as the cap, not the true 3,456,000.
        let c = r.catch_up(utc(2026, 1, 1, 0, 0, 0), now);
        let want = caught_up(
            utc(2026, 2, 10, 0, 0, 0),
            MISSED_CAP,
            utc(2026, 2, 10, 0, 0, 1),
        );
        assert_eq!(c, want);
    }

    #[test]
    fn a_pattern_that_never_matches_has_no_next() {
        let r = rec("0 0 30 2 *", "UTC");
        assert_eq!(r.next_after(utc(2026, 1, 1, 0, 0, 0)), None);
    }
}

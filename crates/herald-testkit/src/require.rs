//! Skipping a test whose dependency is missing, or failing it when the run
//! requires that dependency (`HERALD_REQUIRE`, or `CI`).

use std::fmt::Display;
use std::io::Write;

/// Something a test needs from the machine, by the name `HERALD_REQUIRE` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// `postgres`: a PostgreSQL server at `HERALD_TEST_POSTGRES_URL`.
    Postgres,
    /// `chromium`: Chromium and chromedriver, for the console's browser test.
    Chromium,
    /// `postfix`: Postfix, its `smtp-sink` and Dovecot, and root to start them.
    Postfix,
    /// `python`: `python3`, whose email package parses rendered messages strictly,
    /// with the `openapi-spec-validator` package for the OpenAPI document.
    Python,
    /// `swaks`: the Swiss Army Knife for SMTP, as a client of the SMTP listener.
    Swaks,
    /// `promtool`: Prometheus's checker, which reads the metrics as a scraper would.
    Promtool,
}

impl Dependency {
    /// Every dependency, as `CI` requires them.
    pub const ALL: [Dependency; 6] = [
        Dependency::Postgres,
        Dependency::Chromium,
        Dependency::Postfix,
        Dependency::Python,
        Dependency::Swaks,
        Dependency::Promtool,
    ];

    /// Its name in `HERALD_REQUIRE`.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Chromium => "chromium",
            Dependency::Postfix => "postfix",
            Dependency::Python => "python",
            Dependency::Swaks => "swaks",
            Dependency::Promtool => "promtool",
        }
    }

    /// Whether a test that misses it fails rather than skips: `HERALD_REQUIRE`
    /// names it, or `CI` is set (CI installs everything, so there a missing
    /// dependency is a broken setup, not a reason to test less).
    pub fn is_required(self) -> bool {
        let named = std::env::var_os("HERALD_REQUIRE");
        required(
            self,
            std::env::var_os("CI").is_some(),
            named
                .as_ref()
                .map(|named| named.to_string_lossy())
                .as_deref(),
        )
    }
}

/// Whether `dependency` is required, `CI` being set or not and `HERALD_REQUIRE`
/// being `named` (comma-separated). A name it does not know fails the test: a
/// misspelt requirement must not silently vanish.
fn required(dependency: Dependency, ci: bool, named: Option<&str>) -> bool {
    let mut required = ci;
    for name in named.unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let Some(named) = Dependency::ALL.into_iter().find(|d| d.name() == name) else {
            let known: Vec<&str> = Dependency::ALL.iter().map(|d| d.name()).collect();
            panic!(
                "HERALD_REQUIRE names {name:?}, which is not a dependency the tests know ({})",
                known.join(", ")
            );
        };
        required |= named == dependency;
    }
    required
}

/// What `found` holds, or `None` once the test is skipped for want of
/// `dependency` (the error says what is missing); the caller then returns.
/// When the dependency is required, the test fails here instead.
pub fn require<T, E: Display>(dependency: Dependency, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(why) => {
            skip(dependency, why);
            None
        }
    }
}

/// Says in one line on the terminal that the current test does not run for
/// want of `dependency` (`why`: what is missing); the caller then returns.
/// When the dependency is required, the test fails here instead.
pub fn skip(dependency: Dependency, why: impl Display) {
    let name = dependency.name();
    assert!(
        !dependency.is_required(),
        "{why}: this run requires {name} (HERALD_REQUIRE or CI); .ci/run installs or starts it"
    );
    let test = current_test()
        .map(|test| format!(" {test}"))
        .unwrap_or_default();
    report(&format!(
        "skipped{test}: {why} (HERALD_REQUIRE={name} makes this a failure)"
    ));
}

/// The name of the running test: the test harness names the thread it runs
/// each test on after the test (`tokio::test` polls the test's body there too).
pub(crate) fn current_test() -> Option<String> {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .map(str::to_owned)
}

/// Writes `line` to the process's stderr itself: `cargo test` captures
/// `eprintln!` (shown only for failing tests) but not the stream, so the line
/// reaches the terminal. nextest captures the stream too: there the line shows
/// with `--no-capture` or `--success-output immediate`, and in JUnit reports.
/// (Writing to `/dev/tty` instead was tried: nextest's progress bar, redrawn
/// over the lines below its top, erases such lines.)
pub(crate) fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::{Dependency, required};

    #[test]
    fn herald_require_names_what_must_not_be_skipped() {
        let named = Some("postgres, chromium");
        assert!(required(Dependency::Postgres, false, named));
        assert!(required(Dependency::Chromium, false, named));
        assert!(!required(Dependency::Postfix, false, named));
        assert!(!required(Dependency::Postgres, false, None));
        assert!(!required(Dependency::Postgres, false, Some("")));
    }

    #[test]
    fn ci_requires_everything() {
        for dependency in Dependency::ALL {
            assert!(required(dependency, true, None));
            assert!(required(dependency, true, Some("postfix")));
        }
    }

    #[test]
    #[should_panic(expected = "not a dependency the tests know")]
    fn a_misspelt_requirement_fails() {
        required(Dependency::Postgres, false, Some("postgresql"));
    }
}

//! The web console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver) walks a new tenant administrator's whole setup,
//! then checks tenant isolation, CSRF refusal and that no secret reaches a page.
//!
//! Without chromium and chromedriver the test is skipped with one line, except
//! when `HERALD_REQUIRE` names `chromium` or `CI` is set, where it fails. With
//! `HERALD_CONSOLE_SCREENSHOTS=<dir>` it saves the screenshots shown in the README.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use herald_testkit::Dependency;
use herald_testsmtp::{ServerConfig, TestSmtpServer};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::console_http::{
    HttpSession, Page, csrf_field, give_password, no_redirects, set_cookie, sign_in_attempt,
};
use crate::console_smtp::{over_smtp, stored_message};
use crate::helpers::{DEADLINE, OPERATOR, TestApp, TestTenant, eventually, spawn_app};
use crate::receiver::Receiver;

const SMTP_USER: &str = "herald@acme.example";
const SMTP_PASSWORD: &str = "smtp-secret-Pw-4711";
pub(crate) const ADA_PASSWORD: &str = "ada-console-password";

/// The browser programs, or `None` (after saying so) when they are missing outside CI.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|candidate| candidate.is_file())
            })
        })
    };
    let chromium = find(&["chromium", "chromium-browser"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ => {
            herald_testkit::skip(
                Dependency::Chromium,
                "chromium and chromedriver are not installed",
            );
            None
        }
    }
}

/// A headless Chromium session, and the chromedriver it runs under.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    /// The HTML of every page seen, checked at the end for secrets.
    pages: Vec<String>,
    screenshots: Option<PathBuf>,
    /// The pages (path and query) axe has checked.
    checked: BTreeSet<String>,
    /// axe's serious and critical findings, one line each.
    violations: Vec<String>,
}

/// axe-core 4.14.1 (Deque Systems, MPL-2.0, `assets/axe-core.LICENSE`),
/// vendored from the npm package `axe-core`: the accessibility rules every
/// console page the browser sees is checked against.
const AXE: &str = include_str!("assets/axe.min.js");

impl Browser {
    async fn start() -> Option<Browser> {
        let (chromium, driver) = browser_programs()?;
        // Port 0: chromedriver binds a free port itself and says which. A
        // port probed here and handed to it could be taken by another test's
        // listener before chromedriver binds it.
        let mut driver = tokio::process::Command::new(driver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // A group of its own, so that dropping the browser also ends the
            // Chromium processes chromedriver started, even after a panic.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut said = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = said.next_line().await.unwrap() {
                if let Some(port) = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                {
                    return port;
                }
            }
            panic!("chromedriver ended without saying its port");
        })
        .await
        .expect("chromedriver says its port in time");
        // What it says later is read and dropped: a closed pipe could end it.
        tokio::spawn(async move { while let Ok(Some(_)) = said.next_line().await {} });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually("chromedriver to accept a session", || {
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        let screenshots = std::env::var_os("HERALD_CONSOLE_SCREENSHOTS").map(PathBuf::from);
        Some(Browser {
            client,
            _driver: driver,
            pages: Vec::new(),
            screenshots,
            checked: BTreeSet::new(),
            violations: Vec::new(),
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A page, for a failure message: its title, and the text around `needle`
/// when it holds it. Never the whole page, which a cut log would lose with
/// everything after it.
fn page_about(html: &str, needle: &str) -> String {
    let title = html
        .split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map_or("", |(title, _)| title);
    let Some(at) = html.find(needle) else {
        return format!("{title:?}, without it");
    };
    let (mut start, mut end) = (
        at.saturating_sub(200),
        (at + needle.len() + 200).min(html.len()),
    );
    while !html.is_char_boundary(start) {
        start -= 1;
    }
    while !html.is_char_boundary(end) {
        end += 1;
    }
    format!("{title:?}, with it in: {:?}", &html[start..end])
}

/// Whether a click failed before it was done, so that finding the element
/// again and clicking once more cannot act twice: the element was swapped
/// out of the page, or something covered it, or it could not be clicked yet.
fn click_not_done(error: &fantoccini::error::CmdError) -> bool {
    error.is_stale_element_reference()
        || error.is_no_such_element()
        || error.is_element_not_interactable()
        || matches!(
            error,
            fantoccini::error::CmdError::Standard(e)
                if e.error == fantoccini::error::ErrorStatus::ElementClickIntercepted
        )
}

impl Browser {
    /// Asserts that of every page seen so far only page `shown_on` held
    /// `secret`, which a failure calls `what` ("token", "secret").
    fn assert_only_on_page(&self, shown_on: usize, secret: &str, what: &str) {
        for (i, html) in self.pages.iter().enumerate() {
            assert_eq!(
                html.contains(secret),
                i == shown_on,
                "page {i} (the {what} on {shown_on}): {}",
                page_about(html, secret)
            );
        }
    }

    /// Remembers the page's HTML for the secret check, and checks a page
    /// not seen before for accessibility.
    async fn keep(&mut self) {
        let html = self
            .client
            .source()
            .await
            .unwrap_or_else(|e| panic!("the page's source to keep: {e}"));
        self.pages.push(html);
        self.accessible().await;
    }

    /// Runs axe on the page (once per path and query) and records every
    /// violation of serious or critical impact with its rule and elements.
    async fn accessible(&mut self) {
        // A POST's answer has the address of the form it came from: the
        // title tells the two apart.
        let url = self
            .client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("the page's address for axe: {e}"));
        let title = self
            .client
            .title()
            .await
            .unwrap_or_else(|e| panic!("the title of {url} for axe: {e}"));
        let page = match url.query() {
            Some(query) => format!("{}?{query} ({title})", url.path()),
            None => format!("{} ({title})", url.path()),
        };
        if !self.checked.insert(page.clone()) {
            return;
        }
        let loaded = self
            .client
            .execute("return typeof window.axe === 'object';", vec![])
            .await
            .unwrap_or_else(|e| panic!("looking for axe on {page}: {e}"));
        if loaded != json!(true) {
            self.client
                .execute(&format!("{AXE}\nreturn true;"), vec![])
                .await
                .unwrap_or_else(|e| panic!("loading axe into {page}: {e}"));
        }
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then(r => done(r.violations.map(v => ({
                       id: v.id, impact: v.impact, help: v.help,
                       targets: v.nodes.map(n => n.target.join(' ')) }))))
                   .catch(e => done({ error: String(e) }));",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("running axe on {page}: {e}"));
        let violations = found
            .as_array()
            .unwrap_or_else(|| panic!("axe ran on {page}: {found}"));
        for v in violations {
            if matches!(v["impact"].as_str(), Some("serious" | "critical")) {
                let line = format!(
                    "{page}: {} ({}): {}; at {}",
                    v["id"].as_str().unwrap_or_default(),
                    v["impact"].as_str().unwrap_or_default(),
                    v["help"].as_str().unwrap_or_default(),
                    v["targets"]
                );
                eprintln!("accessibility: {line}");
                self.violations.push(line);
            }
        }
    }

    /// Marks the document the browser shows, so that [`Browser::left`] can
    /// tell the next one from it: a new document has a new `window`.
    async fn mark(&self, why: &str) {
        self.client
            .execute("window.heraldMarked = true;", vec![])
            .await
            .unwrap_or_else(|e| panic!("marking the page for {why}: {e}"));
    }

    /// Whether the document marked last is still the one shown.
    async fn still_marked(&self) -> bool {
        let marked = self
            .client
            .execute("return window.heraldMarked === true;", vec![])
            .await
            .unwrap_or_else(|e| panic!("reading the page's mark: {e}"));
        marked == json!(true)
    }

    /// Whether the browser shows a document other than the marked one, loaded
    /// with its scripts. While it navigates, a script may fail: not yet.
    async fn left(&self) -> bool {
        let left = self
            .client
            .execute(
                "return window.heraldMarked === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await;
        matches!(left, Ok(value) if value == json!(true))
    }

    /// Clicks the link or button `locator` finds and waits until the page it
    /// leads to has loaded. Waiting for the old page to go first is what keeps
    /// the next step from finding what it looks for on the page still shown,
    /// and from reading a page the browser is leaving. The element is found
    /// again when the click did not happen: something swapped it out.
    async fn follow(&self, what: &str, locator: Locator<'_>) {
        self.mark(what).await;
        self.until(&format!("{what} to take a click"), || async {
            let element = self.client.find(locator).await.ok()?;
            match element.click().await {
                Ok(()) => Some(()),
                Err(e) if click_not_done(&e) => None,
                Err(e) => panic!("clicking {what}: {e}"),
            }
        })
        .await;
        self.until(&format!("the page {what} leads to"), || async {
            self.left().await.then_some(())
        })
        .await;
    }

    /// Clicks the element `locator` finds and waits for the page it leads to.
    async fn click(&self, locator: Locator<'_>) {
        self.follow(&format!("{locator:?}"), locator).await;
    }

    /// Types each value into its field, in order.
    async fn fill_in(&self, fields: &[(&str, &str)]) {
        for (field, value) in fields {
            self.fill(field, value).await;
        }
    }

    /// Clicks the link with this text and waits for the page it leads to,
    /// whose heading says `heading`.
    async fn click_link(&mut self, text: &str, heading: &str) {
        self.click(Locator::LinkText(text)).await;
        self.wait_for_text("h1", heading).await;
    }

    /// Ticks a checkbox (on the page as it is: no page follows).
    async fn tick(&self, css: &str) {
        self.until(&format!("{css} to be ticked"), || async {
            let checkbox = self.client.find(Locator::Css(css)).await.ok()?;
            if checkbox.is_selected().await.ok()? {
                return Some(());
            }
            // Clicked at most once per look: the next look sees whether it took.
            checkbox.click().await.ok();
            None
        })
        .await;
    }

    /// Follows the main navigation's link with this text.
    async fn nav(&mut self, label: &str) {
        let xpath = format!("//nav[@aria-label='Main']//a[normalize-space()=\"{label}\"]");
        let what = format!("the link {label:?} in the navigation");
        let href = self.href(&what, Locator::XPath(&xpath)).await;
        self.follow(&what, Locator::XPath(&xpath)).await;
        self.arrive(&format!("the page of {label:?}"), &href).await;
    }

    /// The address of the link `xpath` finds, once it is there.
    async fn href(&self, what: &str, locator: Locator<'_>) -> String {
        self.until(&format!("{what} and its address"), || async {
            let link = self.client.find(locator).await.ok()?;
            link.attr("href").await.ok()?
        })
        .await
    }

    /// Waits until the page shown (a new one: see [`Browser::follow`]) is at
    /// `path` and has a heading, and keeps it.
    async fn arrive(&mut self, what: &str, path: &str) {
        self.until(what, || async {
            let url = self.client.current_url().await.ok()?;
            (url.path() == path && self.client.find(Locator::Css("h1")).await.is_ok()).then_some(())
        })
        .await;
        self.keep().await;
    }

    /// The dashboard, through the navigation.
    async fn dashboard(&mut self) {
        self.nav("Dashboard").await;
        self.wait_for("#checklist").await;
    }

    /// Follows the checklist's first step not yet done; its address.
    async fn next_step(&mut self) -> String {
        let link = Locator::Css("#checklist li.todo a");
        let href = self.href("the checklist's next step", link).await;
        self.follow(&format!("the checklist's step {href}"), link)
            .await;
        let path = href.split(['?', '#']).next().unwrap();
        self.arrive(&format!("the step's page {href}"), path).await;
        href
    }

    /// The text of the table row whose first cell says `first`.
    async fn wait_for_row(&mut self, first: &str) -> String {
        let xpath = format!("//tr[td[1][normalize-space()=\"{first}\"]]");
        let row = self
            .until(&format!("a row {first:?}"), || async {
                let row = self.client.find(Locator::XPath(&xpath)).await.ok()?;
                row.text().await.ok()
            })
            .await;
        self.keep().await;
        row
    }

    async fn goto(&mut self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("going to {url}: {e}"));
        self.keep().await;
    }

    /// Waits for an element, failing after the deadline.
    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no {css} on {}: {e}", self.whereabouts().await),
        }
    }

    /// The text of an element, once it is there. Found again when htmx
    /// swapped it out between finding and reading.
    async fn text_of(&self, css: &str) -> String {
        self.until(&format!("the text of {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
        .await
    }

    /// The value of a form field, once it is there.
    async fn value_of(&self, css: &str) -> Option<String> {
        self.until(&format!("the value of {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.prop("value").await.ok()
        })
        .await
    }

    /// An attribute of an element, once it is there.
    async fn attr_of(&self, css: &str, name: &str) -> Option<String> {
        self.until(&format!("the attribute {name} of {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.attr(name).await.ok()
        })
        .await
    }

    /// Types into the element `locator` finds, after emptying it.
    async fn type_in(&self, locator: Locator<'_>, text: &str) {
        self.until(&format!("{locator:?} to take {text:?}"), || async {
            let input = self.client.find(locator).await.ok()?;
            input.clear().await.ok()?;
            input.send_keys(text).await.ok()
        })
        .await;
    }

    /// Waits until an element's text contains `text`. When it does not in
    /// time, the failure says what the element said last, and where.
    async fn wait_for_text(&mut self, css: &str, text: &str) {
        self.wait_for_text_or(css, text, || async { String::new() })
            .await;
    }

    /// As [`Browser::wait_for_text`]; a failure also shows what `explain`
    /// finds then (the node's own view of what the page waits for).
    async fn wait_for_text_or<F, Fut>(&mut self, css: &str, text: &str, explain: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = String>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let said = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if said.as_ref().is_ok_and(|said| said.contains(text)) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{css} did not say {text:?} in time on {}; last: {said:?}{}",
                    self.whereabouts().await,
                    explain().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.keep().await;
    }

    /// Polls `probe` until it returns `Some`, failing after [`DEADLINE`]
    /// with `what` and the page the browser shows.
    async fn until<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; the browser shows {}",
                    self.whereabouts().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address and title of the page shown, for a failure message.
    async fn whereabouts(&self) -> String {
        let url = self.client.current_url().await;
        let title = self.client.title().await;
        match (url, title) {
            (Ok(url), Ok(title)) => format!("{} ({title})", url.path()),
            (url, title) => format!("{url:?} ({title:?})"),
        }
    }

    /// Types into a field. The element is found again when an action on it
    /// fails: htmx may have swapped the part of the page it was in.
    async fn fill(&self, field: &str, value: &str) {
        self.type_in(Locator::Css(&format!("#f-{field}")), value)
            .await;
    }

    async fn choose(&self, field: &str, label: &str) {
        let css = format!("#f-{field}");
        self.until(&format!("{css} to offer {label:?}"), || async {
            let select = self.client.find(Locator::Css(&css)).await.ok()?;
            select.select_by_label(label).await.ok()
        })
        .await;
    }

    /// Presses the button with this text and waits for the page it leads to.
    async fn submit(&self, button: &str) {
        let xpath = format!("//button[normalize-space()=\"{button}\"]");
        self.follow(&format!("the button {button:?}"), Locator::XPath(&xpath))
            .await;
    }

    /// Presses the button with this text and waits for `then` on the next page.
    async fn press(&mut self, button: &str, then: &str) {
        self.submit(button).await;
        self.wait_for(then).await;
        self.keep().await;
    }

    async fn heading(&self) -> String {
        self.text_of("h1").await
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.screenshots {
            std::fs::create_dir_all(dir).unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(name), png).unwrap();
        }
    }
}

#[tokio::test]
async fn a_tenant_administrator_sets_up_delivery_in_the_console() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let smtp = TestSmtpServer::start_with(ServerConfig::new().auth(SMTP_USER, SMTP_PASSWORD)).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    app.grant_credential_storage("acme").await;
    give_password(&app, "acme", "admin@acme.example", ADA_PASSWORD).await;
    let base = &app.base;

    // Sign in: a wrong password is refused, the right one opens the tenant's dashboard.
    browser.goto(&format!("{base}/sign-in")).await;
    browser.fill("email", "admin@acme.example").await;
    browser.fill("password", "not-the-password").await;
    browser.press("Sign in", "[role=alert]").await;
    browser.fill("password", ADA_PASSWORD).await;
    browser.press("Sign in", ".tiles").await;
    assert_eq!(browser.heading().await, "acme");

    // The checklist leads the way from an empty tenant: every step below is
    // reached from its link on the dashboard, never from a typed address.
    assert!(
        browser.attr_of("#checklist", "open").await.is_some(),
        "open while steps remain"
    );
    browser
        .wait_for_text("#checklist summary", "0 of 4 steps done")
        .await;

    // 1. An SMTP server from a preset, pointed at the test SMTP server.
    let step = browser.next_step().await;
    assert!(step.ends_with("/t/acme/servers/new"), "{step}");
    browser.wait_for(".presets").await;
    browser
        .click(Locator::LinkText("On-premises Exchange, direct account"))
        .await;
    browser.wait_for(".presets .note").await;
    browser.keep().await;
    assert_eq!(browser.value_of("#f-port").await.as_deref(), Some("587"));
    browser.fill("name", "exchange").await;
    browser.fill("host", "127.0.0.1").await;
    browser.fill("port", &smtp.port().to_string()).await;
    browser.choose("security", "None (plaintext)").await;
    // The test SMTP server has no TLS: AUTH in clear must be allowed, and is warned about.
    browser.tick("#f-allow_plaintext_auth").await;
    browser.screenshot("console-smtp-server.png").await;
    browser.press("Add the SMTP server", "#accounts").await;
    // The confirmation names the next step: the server requires authentication.
    browser
        .wait_for_text("#notice", "SMTP server exchange added.")
        .await;
    browser.wait_for_text("#notice", "add an account").await;
    browser
        .wait_for_text(".alert.warn", "the password travels unencrypted")
        .await;

    // Invalid input: the field's message beside the field, what was typed kept.
    browser.fill("port", "seventy").await;
    browser.press("Save changes", ".field.invalid").await;
    let error = browser.text_of("#e-port").await;
    assert!(error.contains("must be a whole number"), "{error}");
    let kept = browser.value_of("#f-port").await;
    assert_eq!(kept.as_deref(), Some("seventy"));
    browser.fill("port", &smtp.port().to_string()).await;
    browser.press("Save changes", "#notice").await;
    browser
        .wait_for_text("#notice", "Changes to exchange saved.")
        .await;

    // 2. The account, since the server requires authentication: the password
    // is write-only, shown as set.
    browser.dashboard().await;
    browser
        .wait_for_text("#checklist summary", "1 of 5 steps done")
        .await;
    browser.screenshot("console-checklist.png").await;
    let step = browser.next_step().await;
    assert!(step.ends_with("#add-account"), "{step}");
    browser.fill("username", SMTP_USER).await;
    browser.choose("mechanism", "LOGIN").await;
    browser.fill("password", SMTP_PASSWORD).await;
    browser.press("Add the account", "#accounts table").await;
    browser.wait_for_text("#notice", "Account added.").await;
    let accounts = browser.text_of("#accounts table").await;
    assert!(
        accounts.contains(SMTP_USER) && accounts.contains("set"),
        "{accounts}"
    );

    // 3. A provider through that server, its account chosen already.
    browser.dashboard().await;
    let step = browser.next_step().await;
    assert!(step.contains("/t/acme/providers/new?server="), "{step}");
    assert_ne!(
        browser.value_of("#f-account_id").await.as_deref(),
        Some(""),
        "the server's account is chosen"
    );
    browser
        .fill_in(&[
            ("name", "corporate"),
            ("from_address", "alerts@acme.example"),
            ("from_name", "Acme Alerts"),
            ("fallback_recipient", "ops@acme.example"),
        ])
        .await;
    browser.press("Add the provider", "#notice").await;
    browser
        .wait_for_text("#notice", "Provider corporate added.")
        .await;

    // 4. Make it the tenant's provider, from its own page; then make the
    // change effective at once on the properties page.
    browser.dashboard().await;
    let step = browser.next_step().await;
    assert!(step.ends_with("#use"), "{step}");
    browser
        .press("Make it the tenant's provider", "#notice")
        .await;
    browser
        .wait_for_text("#notice", "corporate is the tenant's provider now")
        .await;
    browser.nav("Tenant properties").await;
    browser.wait_for_text("#pending", "corporate").await;
    browser.press("Refresh now", "#notice").await;
    browser.wait_for_text("#notice", "Refreshed").await;
    browser.wait_for_text("#effective", "corporate").await;

    // 5. A test message: the steps appear as the worker completes it, then `sent`.
    browser.dashboard().await;
    let step = browser.next_step().await;
    assert!(step.ends_with("#test"), "{step}");
    browser.press("Send a test message", "#test-steps").await;
    // Should the page not say `sent` in time, the API's view of the message
    // (its status and attempts) tells whether the worker or the page lagged.
    let test_page = browser
        .client
        .current_url()
        .await
        .expect("the page's address");
    let message_id = test_page
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    browser
        .wait_for_text_or("#test-status", "sent", || async {
            let path = format!("/v1/tenants/acme/messages/{message_id}");
            let (status, message) = app.get(&path, &acme.admin).await;
            format!("; the API says ({status}): {message}")
        })
        .await;
    let steps = browser.text_of(".steps").await;
    for step in ["connect", "ehlo", "auth", "data"] {
        assert!(
            steps.contains(step),
            "the test shows the {step} step: {steps}"
        );
    }
    browser.screenshot("console-test-message.png").await;
    assert_eq!(smtp.wait_for_messages(1, DEADLINE).await.len(), 1);

    // Every step is done: the checklist folds itself away.
    browser.dashboard().await;
    browser
        .wait_for_text("#checklist summary", "Setup complete")
        .await;
    assert_eq!(browser.attr_of("#checklist", "open").await, None, "folded");
    assert!(
        browser
            .client
            .find_all(Locator::Css("#checklist li.todo"))
            .await
            .unwrap()
            .is_empty()
    );

    // A sender token for the application, made on the Tokens page and shown once.
    browser.nav("API tokens").await;
    browser.fill("name", "monitoring").await;
    browser
        .choose("role", "sender: submits messages and reads their status")
        .await;
    browser.press("Create the token", "#token-value").await;
    let token = browser
        .value_of("#token-value")
        .await
        .expect("the token is on the page");
    let shown_on = browser.pages.len() - 1;
    // The application submits with it; the message is delivered through the provider.
    let (status, submitted) = app
        .post(
            "/v1/tenants/acme/messages",
            &token,
            json!({"to": ["dev@acme.example"], "subject": "Disk full", "text": "/var is at 97 %"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let delivered = smtp.wait_for_messages(2, DEADLINE).await;
    assert!(
        String::from_utf8_lossy(&delivered[1].data).contains("Disk full"),
        "delivered through the tenant's provider"
    );
    // Listed without its value, with its last use.
    browser.nav("API tokens").await;
    let row = browser.wait_for_row("monitoring").await;
    assert!(!row.contains("never"), "the last use is shown: {row}");

    // The message, found from the messages page, with its attempts.
    browser.nav("Messages").await;
    browser.click(Locator::LinkText("Disk full")).await;
    browser.wait_for("#message-status").await;
    // The page is read again until the attempt is recorded.
    let message_url = browser.client.current_url().await.unwrap().to_string();
    let client = browser.client.clone();
    eventually("the message page to show the attempt", || {
        let client = client.clone();
        let url = message_url.clone();
        async move {
            client.goto(&url).await.ok()?;
            let text = client
                .find(Locator::Css("main"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains("250") && text.contains("sent")).then_some(())
        }
    })
    .await;
    browser.keep().await;
    assert!(message_url.ends_with(submitted["id"].as_str().unwrap()));

    // A test message still in flight: the page shows it unfinished, and htmx
    // swaps in the steps when the attempt is recorded, without a reload. The
    // test server stalls at RCPT once, so the attempt ends in a timeout.
    smtp.script(
        herald_testsmtp::Rule::new(
            herald_testsmtp::Command::Rcpt,
            herald_testsmtp::Action::Stall,
        )
        .matching("stall@acme.example")
        .times(1),
    );
    browser.nav("Providers").await;
    browser.screenshot("console-providers.png").await;
    browser
        .type_in(Locator::Css("input[name=to]"), "stall@acme.example")
        .await;
    // The status is read as soon as the page has loaded, before axe runs on
    // it: the attempt lasts until Herald's SMTP timeout gives up on the
    // stalled server, and axe on a loaded machine can take about as long.
    browser.submit("Send a test message").await;
    let first = browser.text_of("#test-status").await;
    assert!(
        first == "queued" || first == "sending",
        "the test message is unfinished at first: {first}"
    );
    browser.mark("the check that htmx fills it in").await;
    browser.keep().await;
    let htmx = browser
        .client
        .execute("return typeof htmx === 'object' && htmx.version", vec![])
        .await
        .unwrap();
    assert!(
        htmx.is_string(),
        "htmx runs under the console's CSP: {htmx}"
    );
    // The attempt times out; a test message makes one attempt, so it has failed.
    let client = browser.client.clone();
    let last = eventually("the test result to be filled in", || {
        let client = client.clone();
        async move {
            let status = client
                .find(Locator::Css("#test-status"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (status == "failed").then_some(status)
        }
    })
    .await;
    browser.wait_for(".steps li").await;
    assert!(
        browser.still_marked().await,
        "htmx filled in the result without a reload"
    );
    browser.keep().await;
    assert_eq!(
        browser.attr_of("#test-steps", "hx-get").await,
        None,
        "polling stops at {last}"
    );

    // A failed test after a delivered one does not undo the setup.
    browser.dashboard().await;
    browser
        .wait_for_text("#checklist summary", "Setup complete")
        .await;
    browser.screenshot("console-dashboard.png").await;
    browser.nav("Audit log").await;

    // A person added in the console gets a password there; a short one is refused beside it.
    browser.nav("Persons").await;
    browser.fill("name", "Bob Member").await;
    browser.fill("email", "bob@acme.example").await;
    browser.press("Add the person", "td").await;
    browser.wait_for_text("table", "bob@acme.example").await;
    let bob_row = "//tr[td[normalize-space()='bob@acme.example']]";
    let bobs_password = format!("{bob_row}//input[@type='password']");
    let bobs_button = format!("{bob_row}//button");
    browser
        .type_in(Locator::XPath(&bobs_password), "short")
        .await;
    browser.click(Locator::XPath(&bobs_button)).await;
    browser.wait_for_text("p.error", "Password must be").await;
    browser
        .type_in(Locator::XPath(&bobs_password), "bob-console-password")
        .await;
    browser.click(Locator::XPath(&bobs_button)).await;
    browser.wait_for("table").await;
    browser.keep().await;
    let (_, audit) = app.get("/v1/tenants/acme/audit", &acme.admin).await;
    assert!(audit.to_string().contains("person.set_password"), "{audit}");
    browser.nav("SMTP servers").await;

    // Revoking the token asks first; then requests that carry it are refused.
    browser.nav("API tokens").await;
    browser
        .click(Locator::Css("a[aria-label='Revoke the token monitoring']"))
        .await;
    browser
        .wait_for_text("h1", "Revoke the token monitoring?")
        .await;
    browser.press("Revoke the token", "#notice").await;
    browser.wait_for_text("#notice", "Token revoked").await;
    let (status, _) = app.get("/v1/tenants/acme/messages", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The token was on the one page that answered its creation, and on no other.
    browser.assert_only_on_page(shown_on, &token, "token");

    // SMTP submission: a credential for an application that can
    // authenticate, its password shown once with how to use it.
    browser.nav("SMTP submission").await;
    browser.fill("credential_name", "grafana").await;
    browser
        .press("Create the credential", "#smtp-password")
        .await;
    let smtp_password = browser
        .value_of("#smtp-password")
        .await
        .expect("the password is on the page");
    let smtp_shown_on = browser.pages.len() - 1;
    let username = browser.value_of("#smtp-username").await.unwrap();
    browser
        .click(Locator::LinkText("Back to SMTP submission"))
        .await;
    let row = browser.wait_for_row("grafana").await;
    assert!(row.contains(&username) && row.contains("never"), "{row}");
    // A connector for devices that cannot: a network with host bits set is
    // named beside the field, then the right one is taken.
    browser.fill("connector_name", "office printers").await;
    browser.fill("cidrs", "192.0.2.0/24, 10.0.0.1/8").await;
    browser.press("Add the connector", ".field.invalid").await;
    let error = browser.text_of("#e-cidrs").await;
    assert!(
        error.contains("Network 2 (10.0.0.1/8) has host bits set"),
        "{error}"
    );
    browser
        .client
        .execute(
            "document.getElementById('connectors').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    browser.screenshot("console-smtp-submission.png").await;
    browser.fill("cidrs", "192.0.2.0/24, 10.0.0.0/8").await;
    browser.press("Add the connector", "#notice").await;
    browser.wait_for_text("#notice", "Connector added").await;
    let row = browser.wait_for_row("office printers").await;
    assert!(row.contains("10.0.0.0/8"), "{row}");

    // Webhooks: one to a receiver on loopback, its secret shown once, a
    // test event delivered, and its deletion asked about (and cancelled).
    let receiver = Receiver::start().await;
    browser.nav("Webhooks").await;
    browser.fill("url", &receiver.url).await;
    browser.tick("#f-events-1").await;
    browser.press("Add the webhook", "#webhook-secret").await;
    let webhook_secret = browser
        .value_of("#webhook-secret")
        .await
        .expect("the secret is on the page");
    assert!(webhook_secret.starts_with("whsec_"), "{webhook_secret}");
    let webhook_shown_on = browser.pages.len() - 1;
    browser
        .click_link("Go to the webhook", "Webhook http")
        .await;
    browser.press("Send a test event", "#test-result").await;
    browser
        .wait_for_text("#test-result", "Test event delivered")
        .await;
    assert_eq!(receiver.wait_for(1).await[0].event_type(), "webhook.test");
    browser.click_link("Delete", "Delete the webhook").await;
    browser.click_link("Cancel", "Webhooks").await;
    browser.assert_only_on_page(webhook_shown_on, &webhook_secret, "secret");

    // A template written in its editor and previewed, then a schedule that
    // sends it, run once; each deletion asked about (and cancelled).
    browser.nav("Templates").await;
    browser.click_link("New template", "New template").await;
    browser
        .fill_in(&[
            ("name", "welcome"),
            ("subject", "Welcome, {{ user.name }}"),
            ("text", "Hello {{ user.name }}"),
            ("html", "<p>Hello <b>{{ user.name }}</b></p>"),
        ])
        .await;
    browser.press("Add the template", "#notice").await;
    browser.wait_for_text("#notice", "Template added").await;
    browser
        .fill("data", "{\"user\": {\"name\": \"Ada\"}}")
        .await;
    browser.press("Preview", "#preview-html").await;
    browser
        .wait_for_text("#preview-html", "<p>Hello <b>Ada</b></p>")
        .await;
    browser.click_link("Delete", "Delete the template").await;
    browser.click_link("Cancel", "Template welcome").await;
    browser.nav("Schedules").await;
    browser.click_link("New schedule", "New schedule").await;
    browser
        .fill_in(&[
            ("name", "weekday"),
            ("cron", "0 9 * * 1-5"),
            ("timezone", "Europe/Berlin"),
        ])
        .await;
    browser.choose("template", "welcome").await;
    browser
        .fill("data", "{\"user\": {\"name\": \"Ada\"}}")
        .await;
    browser.fill("to", "ops@acme.example").await;
    browser.press("Add the schedule", "#notice").await;
    browser.wait_for_text("#notice", "Schedule added").await;
    browser.wait_for_text("#next-runs-table", "09:00").await;
    browser.press("Run now", "#notice").await;
    browser.wait_for_text("#notice", "Schedule run").await;
    browser.wait_for_text("#history-table", "manual").await;
    browser
        .click_link("Edit", "Edit the schedule weekday")
        .await;
    browser.click_link("Cancel", "Schedule weekday").await;
    browser.click_link("Delete", "Delete the schedule").await;
    browser.click_link("Cancel", "Schedule weekday").await;

    // A gateway: its token and command shown once, a new token and its
    // deletion asked about (and cancelled).
    browser.nav("Gateways").await;
    browser.fill("name", "berlin").await;
    browser.press("Add the gateway", "#gateway-token").await;
    let gateway_token = browser
        .value_of("#gateway-token")
        .await
        .expect("the token is on the page");
    assert!(gateway_token.starts_with("hrldg_"), "{gateway_token}");
    let gateway_shown_on = browser.pages.len() - 1;
    browser.click_link("Back to gateways", "Gateways").await;
    browser
        .click(Locator::Css(
            "a[aria-label='New token for the gateway berlin']",
        ))
        .await;
    browser
        .wait_for_text("h1", "Give the gateway berlin a new token?")
        .await;
    browser.click(Locator::LinkText("Cancel")).await;
    browser
        .click(Locator::Css("a[aria-label='Delete the gateway berlin']"))
        .await;
    browser
        .wait_for_text("h1", "Delete the gateway berlin?")
        .await;
    browser.click_link("Cancel", "Gateways").await;
    browser.assert_only_on_page(gateway_shown_on, &gateway_token, "secret");

    // Mail received over SMTP with that credential, and API mail with
    // attachments, as the messages pages show them.
    let (_, credentials) = app
        .get("/v1/tenants/acme/smtp-credentials", &acme.admin)
        .await;
    let grafana = credentials[0]["id"].as_str().unwrap().to_owned();
    stored_message(
        &app,
        "acme",
        "Grafana: disk almost full",
        over_smtp(Some(&grafana), None, "192.0.2.10"),
        Vec::new(),
    )
    .await;
    stored_message(
        &app,
        "acme",
        "Monthly invoice",
        herald_store::Origin::Api,
        vec![herald_store::Attachment {
            filename: "invoice.pdf".into(),
            content_type: "application/pdf".into(),
            content_id: None,
            content: vec![b'%'; 2048],
        }],
    )
    .await;
    browser.nav("Messages").await;
    browser
        .wait_for_text("table", "Grafana: disk almost full")
        .await;
    browser
        .click(Locator::LinkText("Grafana: disk almost full"))
        .await;
    browser
        .wait_for_text("#message-source", "authenticated as credential grafana")
        .await;
    browser.nav("Messages").await;
    browser.click(Locator::LinkText("Monthly invoice")).await;
    browser
        .wait_for_text("#attachments + table", "invoice.pdf")
        .await;

    // Revoking the credential and deleting the connector ask first.
    browser.nav("SMTP submission").await;
    browser
        .click(Locator::Css(
            "a[aria-label='Revoke the credential grafana']",
        ))
        .await;
    browser
        .wait_for_text("h1", "Revoke the credential grafana?")
        .await;
    browser.press("Revoke the credential", "#notice").await;
    browser.wait_for_text("#notice", "Credential revoked").await;
    browser
        .click(Locator::Css(
            "a[aria-label='Delete the connector office printers']",
        ))
        .await;
    browser
        .wait_for_text("h1", "Delete the connector office printers?")
        .await;
    browser.press("Delete the connector", "#notice").await;
    browser.wait_for_text("#notice", "Connector deleted").await;
    let (_, credentials) = app
        .get("/v1/tenants/acme/smtp-credentials", &acme.admin)
        .await;
    let (_, connectors) = app
        .get("/v1/tenants/acme/smtp-connectors", &acme.admin)
        .await;
    assert_eq!((credentials, connectors), (json!([]), json!([])));
    // The password was on the one page that answered the credential's creation.
    browser.assert_only_on_page(smtp_shown_on, &smtp_password, "secret");

    // Another tenant's pages answer as if they did not exist.
    let (status, other_server) = app
        .post(
            "/v1/tenants/globex/smtp-servers",
            &globex.admin,
            json!({"name": "globex relay", "host": "relay.globex.example", "port": 25}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other_server}");
    let other_id = other_server["id"].as_str().unwrap();
    for path in [
        "/t/globex".to_owned(),
        "/t/globex/servers".to_owned(),
        "/t/globex/messages".to_owned(),
        format!("/t/globex/servers/{other_id}"),
        format!("/t/acme/servers/{other_id}"),
        "/operator/tenants".to_owned(),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        let heading = browser.heading().await;
        assert!(
            heading == "Not found" || (path.starts_with("/operator") && heading == "Not allowed"),
            "{path} shows {heading:?}"
        );
        assert!(!browser.pages.last().unwrap().contains("globex relay"));
    }

    // The same with the session's own cookie outside the browser: the status codes.
    let session = browser
        .client
        .get_named_cookie("herald_session")
        .await
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    let cookie = format!("herald_session={}", session.value());
    let http = no_redirects();
    let status = http
        .get(format!("{base}/t/globex/servers/{other_id}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A form posted without its CSRF token is refused and changes nothing.
    let status = http
        .post(format!("{base}/t/acme/servers"))
        .header("cookie", &cookie)
        .form(&[("name", "forged"), ("host", "evil.example"), ("port", "25")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::FORBIDDEN);
    // In the browser too: a form whose token was taken out.
    browser.goto(&format!("{base}/t/acme")).await;
    browser.nav("Tenant properties").await;
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove());",
            vec![],
        )
        .await
        .unwrap();
    browser.press("Refresh now", "h1").await;
    browser.wait_for_text("h1", "Not allowed").await;
    let (_, servers) = app.get("/v1/tenants/acme/smtp-servers", &acme.admin).await;
    assert_eq!(servers.as_array().unwrap().len(), 1, "{servers}");

    // No page ever held a secret: not the SMTP password, not a token, not the session id.
    // LOGIN sends the password base64-encoded: not that either.
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(SMTP_PASSWORD);
    let secrets = [
        SMTP_PASSWORD,
        encoded.as_str(),
        ADA_PASSWORD,
        "bob-console-password",
        acme.admin.as_str(),
        acme.sender.as_str(),
        OPERATOR,
        session.value(),
    ];
    assert!(
        browser.pages.len() > 15,
        "the test saw {} pages",
        browser.pages.len()
    );
    for html in &browser.pages {
        for secret in secrets {
            assert!(
                !html.contains(secret),
                "a page holds a secret: {}",
                page_about(html, secret)
            );
        }
    }

    // Sign-out ends the session: the cookie no longer opens a page.
    browser.goto(&format!("{base}/t/acme")).await;
    browser.press("Sign out", "#f-email").await;
    let status = http
        .get(format!("{base}/t/acme"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a signed-out session is sent to sign in"
    );

    // The operator's pages, signed in as the operator, for the accessibility check.
    let output = set_operator_password(&app, "root@herald.example", OPERATOR_PASSWORD).await;
    assert!(output.status.success(), "{output:?}");
    browser.fill("email", "root@herald.example").await;
    browser.fill("password", OPERATOR_PASSWORD).await;
    browser.press("Sign in", "h1").await;
    browser.wait_for_text("h1", "Tenants").await;
    browser.nav("Nodes").await;
    browser.wait_for_text("h1", "Nodes").await;

    assert!(
        browser.violations.is_empty(),
        "accessibility violations (serious or critical):\n{}",
        browser.violations.join("\n")
    );
    eprintln!(
        "axe checked {} pages: {:?}",
        browser.checked.len(),
        browser.checked
    );
    // Every page of the console's source was among them: each GET route
    // (but the steps fragment the result page fetches into itself) matches a
    // checked address, a `{…}` segment standing for any one segment.
    let unchecked: Vec<String> = console_pages_in_source()
        .into_iter()
        .filter(|route| !route.ends_with("/steps"))
        .filter(|route| {
            !browser
                .checked
                .iter()
                .any(|page| route_matches(route, page))
        })
        .collect();
    assert!(
        unchecked.is_empty(),
        "pages axe never checked: {unchecked:?}; checked: {:?}",
        browser.checked
    );
    tokio::time::timeout(Duration::from_secs(10), browser.client.clone().close())
        .await
        .ok();
}

/// Runs `herald operator set-password` on the app's data directory, the
/// password given through the environment.
pub async fn set_operator_password(
    app: &TestApp,
    email: &str,
    password: &str,
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["operator", "set-password", "--email", email])
        .arg("--data-dir")
        .arg(app.dir.path())
        .env("HERALD_OPERATOR_PASSWORD", password)
        .output()
        .await
        .unwrap()
}

/// Over plain HTTP, without a browser: the operator's password comes from
/// `herald operator set-password`, the sign-in form has its own CSRF cookie,
/// the session cookie is Secure behind a TLS proxy, and the operator's pages
/// create a tenant and grant it credential storage through the API's services.
#[tokio::test]
async fn the_operator_signs_in_with_the_password_set_on_the_command_line() {
    let app = spawn_app().await;
    let output = set_operator_password(&app, "Root@Herald.example", "operator password 1").await;
    assert!(output.status.success(), "{output:?}");
    let short = set_operator_password(&app, "root@herald.example", "short").await;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("the password must be"));

    let http = no_redirects();
    let base = &app.base;
    // Signed out, every page leads to the sign-in form.
    let answer = http.get(format!("{base}/t/acme")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()["location"], "/sign-in");

    let form = http
        .get(format!("{base}/sign-in"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let (sign_in_cookie, attributes) = set_cookie(&form, "herald_sign_in").unwrap();
    assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"));
    assert!(attributes.contains("Secure"), "{attributes}");
    let token = csrf_field(&form.text().await.unwrap());
    let sign_in = |cookie: Option<String>, fields: Vec<(&'static str, String)>| {
        let mut request = http
            .post(format!("{base}/sign-in"))
            .header("x-forwarded-proto", "https")
            .form(&fields);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let fields = |password: &str| {
        vec![
            ("csrf", token.clone()),
            ("email", "root@herald.example".to_owned()),
            ("password", password.to_owned()),
        ]
    };
    // Without the sign-in cookie the token proves nothing: refused.
    let refused = sign_in(None, fields("operator password 1")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let wrong = sign_in(Some(sign_in_cookie.clone()), fields("operator password 2"))
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let signed = sign_in(Some(sign_in_cookie), fields("operator password 1"))
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let (session, attributes) = set_cookie(&signed, "herald_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(
            attributes.contains(attribute),
            "{attribute} in {attributes}"
        );
    }

    let page = |path: String| {
        http.get(format!("{base}{path}"))
            .header("cookie", &session)
            .send()
    };
    let home = page("/".into()).await.unwrap();
    let csp = home.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(home.headers()["cache-control"], "no-store");
    assert_eq!(home.headers()["location"], "/operator/tenants");
    let tenants = page("/operator/tenants".into()).await.unwrap();
    assert_eq!(tenants.status(), StatusCode::OK);
    let html = tenants.text().await.unwrap();
    assert!(html.contains("No tenant yet"), "an empty state says so");
    let csrf = csrf_field(&html);
    // Posts a form with the page's CSRF token.
    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        http.post(format!("{base}{path}"))
            .header("cookie", &session)
            .form(&form)
            .send()
    };

    // Invalid input: the page again, the field's message beside it, what was typed kept.
    let invalid = post(
        "/operator/tenants",
        &[("slug", "Not A Slug"), ("name", "Initech")],
    )
    .await
    .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = invalid.text().await.unwrap();
    assert!(html.contains("id=\"e-slug\""), "{html}");
    assert!(html.contains("value=\"Not A Slug\"") && html.contains("value=\"Initech\""));

    let created = post(
        "/operator/tenants",
        &[("slug", "initech"), ("name", "Initech")],
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let granted = post(
        "/operator/tenants/initech/entitlements",
        &[("credential_storage", "on")],
    )
    .await
    .unwrap();
    assert_eq!(granted.status(), StatusCode::SEE_OTHER);
    let (_, tenant) = app.get("/v1/tenants/initech", OPERATOR).await;
    assert_eq!(tenant["credential_storage"], true, "{tenant}");
    let (_, audit) = app.get("/v1/tenants/initech/audit", OPERATOR).await;
    assert!(
        audit
            .to_string()
            .contains("console session of root@herald.example"),
        "{audit}"
    );

    let nodes = page("/operator/nodes".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        nodes.contains("test-node") && nodes.contains("alive"),
        "{nodes}"
    );
    // The operator reaches any tenant's pages.
    let dashboard = page("/t/initech".into()).await.unwrap();
    assert_eq!(dashboard.status(), StatusCode::OK);
    let missing = page("/t/no-such-tenant".into()).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn repeated_failed_sign_ins_lock_the_address_out() {
    let app = spawn_app().await;
    let output = set_operator_password(&app, "root@herald.example", "operator password 1").await;
    assert!(output.status.success(), "{output:?}");
    let http = no_redirects();
    let base = &app.base;
    let attempt = |email: &'static str, password: &'static str| {
        let http = &http;
        async move {
            let answer = sign_in_attempt(http, base, email, password).await;
            (answer.status(), answer.text().await.unwrap())
        }
    };
    for _ in 0..5 {
        let (status, _) = attempt("root@herald.example", "a wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Locked out: even the right password is refused, and the page says why.
    let (status, html) = attempt("Root@Herald.example", "operator password 1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        html.contains("Too many failed sign-ins for this address"),
        "{html}"
    );
    // Another address is not affected.
    let (status, _) = attempt("ops@herald.example", "a wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

pub(crate) const MEMBER_PASSWORD: &str = "member-console-password";
pub(crate) const GLOBEX_PASSWORD: &str = "globex-console-password";
const OPERATOR_PASSWORD: &str = "operator console password";

/// A node with two tenants. Acme has a server (with an account), an active
/// provider, a message and a test message, an administrator and a member,
/// an SMTP credential and an IP connector; globex has its administrator.
/// Everyone has a console password.
pub(crate) struct Console {
    pub app: TestApp,
    pub acme: TestTenant,
    _smtp: TestSmtpServer,
    server_id: String,
    server_name: String,
    provider_id: String,
    provider_name: String,
    pub message_id: String,
    test_id: String,
    /// The sender token's id (a service token named `sender`).
    token_id: String,
    /// The SMTP credential's id (named `monitoring`).
    pub smtp_credential_id: String,
    /// The IP connector's id (named `office printers`, for [`ACME_PRINTERS`]).
    pub smtp_connector_id: String,
}

/// The network of acme's IP connector.
pub(crate) const ACME_PRINTERS: &str = "198.51.100.0/24";

pub(crate) async fn console_with_two_tenants() -> Console {
    let app = spawn_app().await;
    let smtp = TestSmtpServer::start().await;
    let acme = app.tenant("acme").await;
    app.tenant("globex").await;
    app.grant_credential_storage("acme").await;
    let provider_id = app.use_smtp_server(&acme, smtp.port()).await;
    let (_, provider) = app
        .get(
            &format!("/v1/tenants/acme/providers/{provider_id}"),
            &acme.admin,
        )
        .await;
    let server_id = provider["smtp_server_id"].as_str().unwrap().to_owned();
    let (status, account) = app
        .post(
            &format!("/v1/tenants/acme/smtp-servers/{server_id}/accounts"),
            &acme.admin,
            json!({"username": SMTP_USER, "password": SMTP_PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let message_id = app
        .submit(
            &acme,
            json!({"to": ["ops@acme.example"], "subject": "Quarterly report", "text": "Hello"}),
        )
        .await;
    let (status, test) = app
        .post(
            &format!("/v1/tenants/acme/providers/{provider_id}/test"),
            &acme.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    let (status, member) = app
        .post(
            "/v1/tenants/acme/persons",
            OPERATOR,
            json!({"name": "Mel", "email": "mel@acme.example", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    give_password(&app, "acme", "admin@acme.example", ADA_PASSWORD).await;
    give_password(&app, "acme", "mel@acme.example", MEMBER_PASSWORD).await;
    give_password(&app, "globex", "admin@globex.example", GLOBEX_PASSWORD).await;
    let output = set_operator_password(&app, "root@herald.example", OPERATOR_PASSWORD).await;
    assert!(output.status.success(), "{output:?}");
    let (status, tokens) = app.get("/v1/tenants/acme/tokens", OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let token_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "sender")
        .expect("the sender token")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, credential) = app
        .post(
            "/v1/tenants/acme/smtp-credentials",
            &acme.admin,
            json!({"name": "monitoring"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{credential}");
    let (status, connector) = app
        .post(
            "/v1/tenants/acme/smtp-connectors",
            &acme.admin,
            json!({"name": "office printers", "cidrs": [ACME_PRINTERS]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connector}");
    let port = smtp.port();
    Console {
        token_id,
        smtp_credential_id: credential["id"].as_str().unwrap().to_owned(),
        smtp_connector_id: connector["id"].as_str().unwrap().to_owned(),
        app,
        acme,
        _smtp: smtp,
        server_id,
        server_name: format!("test-{port}"),
        provider_id,
        provider_name: format!("corporate-{port}"),
        message_id,
        test_id: test["message_id"].as_str().unwrap().to_owned(),
    }
}

/// Every page of the console's tenant and operator modules (their GET
/// routes): the matrix below visits each, and a guard checks this list
/// against the routers' source, so a new page cannot be left out.
const CONSOLE_PAGES: &[&str] = &[
    "/t/{tenant}",
    "/t/{tenant}/servers",
    "/t/{tenant}/servers/new",
    "/t/{tenant}/servers/{id}",
    "/t/{tenant}/providers",
    "/t/{tenant}/providers/new",
    "/t/{tenant}/providers/{id}",
    "/t/{tenant}/tests/{id}",
    "/t/{tenant}/tests/{id}/steps",
    "/t/{tenant}/properties",
    "/t/{tenant}/messages",
    "/t/{tenant}/messages/{id}",
    "/t/{tenant}/audit",
    "/t/{tenant}/persons",
    "/t/{tenant}/tokens",
    "/t/{tenant}/tokens/{id}/revoke",
    "/t/{tenant}/smtp",
    "/t/{tenant}/smtp/credentials/{id}/revoke",
    "/t/{tenant}/smtp/connectors/{id}/delete",
    "/t/{tenant}/webhooks",
    "/t/{tenant}/webhooks/{id}",
    "/t/{tenant}/webhooks/{id}/delete",
    "/t/{tenant}/templates",
    "/t/{tenant}/templates/new",
    "/t/{tenant}/templates/{id}",
    "/t/{tenant}/templates/{id}/delete",
    "/t/{tenant}/schedules",
    "/t/{tenant}/schedules/new",
    "/t/{tenant}/schedules/{id}",
    "/t/{tenant}/schedules/{id}/edit",
    "/t/{tenant}/schedules/{id}/delete",
    "/t/{tenant}/gateways",
    "/t/{tenant}/gateways/{id}/token",
    "/t/{tenant}/gateways/{id}/delete",
    "/operator/tenants",
    "/operator/nodes",
];

/// The paths of the GET routes declared in the console's tenant pages
/// (`src/tenant/`) and operator pages (`src/operator.rs`).
/// Whether `page` (a path, perhaps with a query, then the page's title in
/// parentheses) is an address of `route`, whose `{…}` segments stand for any one segment.
fn route_matches(route: &str, page: &str) -> bool {
    let path = page.split([' ', '?']).next().unwrap_or(page);
    let (route, path): (Vec<&str>, Vec<&str>) =
        (route.split('/').collect(), path.split('/').collect());
    route.len() == path.len()
        && route
            .iter()
            .zip(&path)
            .all(|(r, p)| (r.starts_with('{') && !p.is_empty()) || r == p)
}

fn console_pages_in_source() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../herald-console/src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(src.join("tenant"))
        .expect("the console's tenant pages")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.push(src.join("operator.rs"));
    let mut found = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for other in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !source.contains(other),
                "{} uses {other}; teach this guard to read it",
                file.display()
            );
        }
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            let after = &rest[at + ".route(".len()..];
            // The arguments run to the parenthesis that closes `.route(`
            // (a console path holds no parenthesis).
            let mut depth = 1;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(after.len(), |(i, _)| i);
            let args = &after[..end];
            let path = args.split('"').nth(1).expect("a route path literal");
            let handlers = &args[args.find(',').expect("a handler")..];
            let is_get = handlers.match_indices("get(").any(|(i, _)| {
                handlers[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            });
            if is_get {
                found.insert(path.to_owned());
            }
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn the_console_page_list_covers_every_page_in_the_source() {
    let in_source = console_pages_in_source();
    let listed: BTreeSet<String> = CONSOLE_PAGES.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        in_source, listed,
        "the console's pages and CONSOLE_PAGES disagree: add a new page to the list and to the matrix"
    );
}

/// A page's HTML with the escapes minijinja writes in attributes and text
/// (`/` and `'`) undone, so that links can be looked for as written.
pub(crate) fn unescaped(html: &str) -> String {
    html.replace("&#x2f;", "/").replace("&#x27;", "'")
}

/// The first `<h1>` of a page, as shown.
pub(crate) fn heading(html: &str) -> Option<&str> {
    let start = html.find("<h1>")? + 4;
    let end = start + html[start..].find("</h1>")?;
    Some(&html[start..end])
}

/// Signs acme's member in and finds every one of an administrator's `pages`
/// and `forms` refused (403, the "Not allowed" page), and no link to any of
/// `links` on acme's home page. Returns the member's session and the
/// refusals of the forms, for what else they must not show.
pub(crate) async fn member_is_refused(
    app: &TestApp,
    pages: &[String],
    forms: &[(String, Vec<(&str, &str)>)],
    links: &[&str],
) -> (HttpSession, Vec<String>) {
    let member = HttpSession::sign_in(app, "mel@acme.example", MEMBER_PASSWORD, "/t/acme").await;
    for path in pages {
        let Page { status, .. } = member.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the member on {path}");
    }
    let mut refusals = Vec::new();
    for (path, fields) in forms {
        let Page { status, html, .. } = member.post(path, fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the member on {path}");
        assert_eq!(heading(&html), Some("Not allowed"), "{html}");
        refusals.push(html);
    }
    let home = unescaped(&member.get("/t/acme").await.html);
    for link in links {
        assert!(!home.contains(&format!("href=\"{link}\"")), "{home}");
    }
    (member, refusals)
}

/// The isolation matrix of the console over plain HTTP: every page, GET as
/// each kind of person. Acme's administrator and the operator see every acme
/// page (200, with its heading); acme's member only the dashboard and the
/// messages (403 elsewhere); globex's administrator none of them (404, as for
/// a tenant that does not exist); the operator's pages are the operator's.
#[tokio::test]
async fn every_console_page_renders_for_its_people_and_no_one_else() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let t = "/t/acme";
    // A webhook, for its pages (created, never called).
    let (status, webhook) = app
        .post(
            "/v1/tenants/acme/webhooks",
            OPERATOR,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["message.sent"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    // A template and a schedule using it, for their pages (never fired).
    let (status, template) = app
        .post(
            "/v1/tenants/acme/templates",
            OPERATOR,
            json!({"name": "welcome", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let template_id = template["id"].as_str().unwrap().to_owned();
    let (status, schedule) = app
        .post(
            "/v1/tenants/acme/schedules",
            OPERATOR,
            json!({"name": "daily", "cron": "0 9 * * *", "template": "welcome", "data": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();
    // A gateway, for its pages (no instance ever runs).
    let (status, gateway) = app
        .post(
            "/v1/tenants/acme/gateways",
            OPERATOR,
            json!({"name": "berlin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gateway}");
    let gateway_id = gateway["id"].as_str().unwrap().to_owned();
    // (route, path, what the page shows, whether a member may see it)
    let page = |route: &'static str, path: String, shows: &str, members: bool| {
        (route, path, shows.to_owned(), members)
    };
    let pages = vec![
        page("/t/{tenant}", t.into(), "<h1>acme</h1>", true),
        page(
            "/t/{tenant}/servers",
            format!("{t}/servers"),
            "<h1>SMTP servers</h1>",
            false,
        ),
        page(
            "/t/{tenant}/servers/new",
            format!("{t}/servers/new"),
            "<h1>New SMTP server</h1>",
            false,
        ),
        page(
            "/t/{tenant}/servers/new",
            format!("{t}/servers/new?preset=gateway-relay"),
            "<h1>New SMTP server</h1>",
            false,
        ),
        page(
            "/t/{tenant}/servers/{id}",
            format!("{t}/servers/{}", c.server_id),
            &format!("<h1>SMTP server {}</h1>", c.server_name),
            false,
        ),
        page(
            "/t/{tenant}/providers",
            format!("{t}/providers"),
            "<h1>Notification providers</h1>",
            false,
        ),
        page(
            "/t/{tenant}/providers/new",
            format!("{t}/providers/new"),
            "<h1>New notification provider</h1>",
            false,
        ),
        page(
            "/t/{tenant}/providers/{id}",
            format!("{t}/providers/{}", c.provider_id),
            &format!("<h1>Provider {}</h1>", c.provider_name),
            false,
        ),
        page(
            "/t/{tenant}/tests/{id}",
            format!("{t}/tests/{}", c.test_id),
            "<h1>Test message</h1>",
            false,
        ),
        // The fragment htmx polls: no heading of its own.
        page(
            "/t/{tenant}/tests/{id}/steps",
            format!("{t}/tests/{}/steps", c.test_id),
            "id=\"test-steps\"",
            false,
        ),
        page(
            "/t/{tenant}/properties",
            format!("{t}/properties"),
            "<h1>Tenant properties</h1>",
            false,
        ),
        page(
            "/t/{tenant}/messages",
            format!("{t}/messages"),
            "<h1>Messages</h1>",
            true,
        ),
        page(
            "/t/{tenant}/messages",
            format!("{t}/messages?status=queued&recipient=ops%40acme.example&from=2020-01-01"),
            "<h1>Messages</h1>",
            true,
        ),
        page(
            "/t/{tenant}/messages/{id}",
            format!("{t}/messages/{}", c.message_id),
            "<h1>Quarterly report</h1>",
            true,
        ),
        page(
            "/t/{tenant}/audit",
            format!("{t}/audit"),
            "<h1>Audit log</h1>",
            false,
        ),
        page(
            "/t/{tenant}/persons",
            format!("{t}/persons"),
            "<h1>Persons</h1>",
            false,
        ),
        page(
            "/t/{tenant}/tokens",
            format!("{t}/tokens"),
            "<h1>API tokens</h1>",
            false,
        ),
        page(
            "/t/{tenant}/tokens/{id}/revoke",
            format!("{t}/tokens/{}/revoke", c.token_id),
            "<h1>Revoke the token ",
            false,
        ),
        page(
            "/t/{tenant}/smtp",
            format!("{t}/smtp"),
            "<h1>SMTP submission</h1>",
            false,
        ),
        page(
            "/t/{tenant}/smtp/credentials/{id}/revoke",
            format!("{t}/smtp/credentials/{}/revoke", c.smtp_credential_id),
            "<h1>Revoke the credential monitoring?</h1>",
            false,
        ),
        page(
            "/t/{tenant}/smtp/connectors/{id}/delete",
            format!("{t}/smtp/connectors/{}/delete", c.smtp_connector_id),
            "<h1>Delete the connector office printers?</h1>",
            false,
        ),
        page(
            "/t/{tenant}/webhooks",
            format!("{t}/webhooks"),
            "<h1>Webhooks</h1>",
            false,
        ),
        page(
            "/t/{tenant}/webhooks/{id}",
            format!("{t}/webhooks/{webhook_id}"),
            "<h1>Webhook http:",
            false,
        ),
        page(
            "/t/{tenant}/webhooks/{id}/delete",
            format!("{t}/webhooks/{webhook_id}/delete"),
            "<h1>Delete the webhook http:",
            false,
        ),
        page(
            "/t/{tenant}/templates",
            format!("{t}/templates"),
            "<h1>Templates</h1>",
            false,
        ),
        page(
            "/t/{tenant}/templates/new",
            format!("{t}/templates/new"),
            "<h1>New template</h1>",
            false,
        ),
        page(
            "/t/{tenant}/templates/{id}",
            format!("{t}/templates/{template_id}"),
            "<h1>Template welcome</h1>",
            false,
        ),
        page(
            "/t/{tenant}/templates/{id}/delete",
            format!("{t}/templates/{template_id}/delete"),
            "<h1>Delete the template welcome?</h1>",
            false,
        ),
        page(
            "/t/{tenant}/schedules",
            format!("{t}/schedules"),
            "<h1>Schedules</h1>",
            false,
        ),
        page(
            "/t/{tenant}/schedules/new",
            format!("{t}/schedules/new"),
            "<h1>New schedule</h1>",
            false,
        ),
        page(
            "/t/{tenant}/schedules/{id}",
            format!("{t}/schedules/{schedule_id}"),
            "<h1>Schedule daily</h1>",
            false,
        ),
        page(
            "/t/{tenant}/schedules/{id}/edit",
            format!("{t}/schedules/{schedule_id}/edit"),
            "<h1>Edit the schedule daily</h1>",
            false,
        ),
        page(
            "/t/{tenant}/schedules/{id}/delete",
            format!("{t}/schedules/{schedule_id}/delete"),
            "<h1>Delete the schedule daily?</h1>",
            false,
        ),
        page(
            "/t/{tenant}/gateways",
            format!("{t}/gateways"),
            "<h1>Gateways</h1>",
            false,
        ),
        page(
            "/t/{tenant}/gateways/{id}/token",
            format!("{t}/gateways/{gateway_id}/token"),
            "<h1>Give the gateway berlin a new token?</h1>",
            false,
        ),
        page(
            "/t/{tenant}/gateways/{id}/delete",
            format!("{t}/gateways/{gateway_id}/delete"),
            "<h1>Delete the gateway berlin?</h1>",
            false,
        ),
    ];
    let operator_pages = [
        ("/operator/tenants", "<h1>Tenants</h1>"),
        ("/operator/nodes", "<h1>Nodes</h1>"),
    ];
    // Every page the console serves is visited below.
    let visited: BTreeSet<&str> = pages
        .iter()
        .map(|p| p.0)
        .chain(operator_pages.iter().map(|p| p.0))
        .collect();
    assert_eq!(visited, CONSOLE_PAGES.iter().copied().collect());

    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, t).await;
    let member = HttpSession::sign_in(app, "mel@acme.example", MEMBER_PASSWORD, t).await;
    let stranger =
        HttpSession::sign_in(app, "admin@globex.example", GLOBEX_PASSWORD, "/t/globex").await;
    let operator = HttpSession::sign_in(
        app,
        "root@herald.example",
        OPERATOR_PASSWORD,
        "/operator/tenants",
    )
    .await;

    for (_, path, shows, members_see) in &pages {
        for (who, session) in [("the administrator", &admin), ("the operator", &operator)] {
            let Page { status, html, .. } = session.get(path).await;
            assert_eq!(status, StatusCode::OK, "{who} on {path}: {html}");
            assert!(html.contains(shows.as_str()), "{who} on {path}: {html}");
        }
        let Page { status, html, .. } = member.get(path).await;
        if *members_see {
            assert_eq!(status, StatusCode::OK, "the member on {path}: {html}");
            assert!(
                html.contains(shows.as_str()),
                "the member on {path}: {html}"
            );
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "the member on {path}");
            assert_eq!(heading(&html), Some("Not allowed"), "{html}");
        }
        // Another tenant's person learns nothing, not even that the page exists.
        let Page { status, html, .. } = stranger.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
        assert_eq!(heading(&html), Some("Not found"), "{html}");
        assert!(!html.contains("Quarterly report") && !html.contains(&c.server_name));
    }
    for (path, shows) in operator_pages {
        let Page { status, html, .. } = operator.get(path).await;
        assert_eq!(status, StatusCode::OK, "the operator on {path}: {html}");
        assert!(html.contains(shows), "the operator on {path}: {html}");
        for (who, session) in [("acme's admin", &admin), ("acme's member", &member)] {
            let Page { status, .. } = session.get(path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who} on {path}");
        }
    }
    // The setup checklist is for those who can take its steps.
    let Page { html, .. } = admin.get(t).await;
    assert!(html.contains("id=\"checklist\""), "{html}");
    let Page { html, .. } = member.get(t).await;
    assert!(!html.contains("id=\"checklist\""), "{html}");
    // Ids that name nothing, or another kind of thing, are 404 too.
    for path in [
        format!("{t}/servers/not-an-id"),
        format!("{t}/providers/{}", c.server_id),
        format!("{t}/messages/{}", c.server_id),
        // A message that is not a test message has no test page.
        format!("{t}/tests/{}", c.message_id),
        format!("{t}/tokens/not-an-id/revoke"),
        format!("{t}/tokens/{}/revoke", c.server_id),
        format!("{t}/smtp/credentials/not-an-id/revoke"),
        format!("{t}/smtp/credentials/{}/revoke", c.smtp_connector_id),
        format!("{t}/smtp/connectors/{}/delete", c.smtp_credential_id),
        format!("{t}/smtp/connectors/{}/delete", c.token_id),
        format!("{t}/gateways/not-an-id/token"),
        format!("{t}/gateways/{}/delete", c.server_id),
    ] {
        let Page { status, .. } = admin.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // Each person's own home page, and the stranger's own tenant.
    let Page { status, .. } = stranger.get("/t/globex").await;
    assert_eq!(status, StatusCode::OK);
    let home = admin
        .http
        .get(format!("{}/", app.base))
        .header("cookie", &admin.cookie);
    let home = home.send().await.unwrap();
    assert_eq!(home.headers()["location"], t);
    // Signed out, every page leads to the sign-in form.
    for (_, path, _, _) in &pages {
        let answer = admin
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(answer.headers()["location"], "/sign-in", "{path}");
    }
}

/// Every tenant form over plain HTTP: a mistake shows the form again with the
/// API's status (422 for field errors), the error beside its field and what
/// was typed (never a secret); a conflict is shown above the form; a correct
/// submission redirects (303) to the next page. Another tenant's person gets
/// 404 and changes nothing; a POST without the session's token is refused.
#[tokio::test]
async fn every_console_form_shows_its_errors_in_place_or_redirects() {
    let c = console_with_two_tenants().await;
    let app = &c.app;
    let t = "/t/acme";
    let admin = HttpSession::sign_in(app, "admin@acme.example", ADA_PASSWORD, t).await;
    let invalid = |html: &str, field: &str| html.contains(&format!("id=\"e-{field}\""));

    // SMTP servers: a port that is not a number is the console's own check,
    // shown like the API's; an empty name is the API's.
    let servers = format!("{t}/servers");
    let server = |name: &'static str, port: &'static str| {
        vec![
            ("name", name),
            ("host", "relay.acme.example"),
            ("port", port),
            ("security", "none"),
            ("tls_verify", "on"),
        ]
    };
    let html = admin
        .post_answered(
            &servers,
            &server("Typed relay", "twenty-five"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        invalid(&html, "port") && html.contains("must be a whole number"),
        "{html}"
    );
    assert!(html.contains("value=\"Typed relay\"") && html.contains("value=\"twenty-five\""));
    assert_eq!(heading(&html), Some("New SMTP server"));
    let html = admin
        .post_answered(
            &servers,
            &server("", "25"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "name"), "{html}");
    let Page {
        status, location, ..
    } = admin.post(&servers, &server("Second relay", "25")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let second = location
        .strip_prefix("/t/acme/servers/")
        .and_then(|rest| rest.strip_suffix("?done=server-added"))
        .expect("to the new server's page, saying it was added")
        .to_owned();
    // The page it leads to says so, with the next step: a provider that uses it.
    let Page { html, .. } = admin.get(&location).await;
    let html = unescaped(&html);
    assert!(html.contains("SMTP server Second relay added."), "{html}");
    assert!(
        html.contains(&format!("href=\"/t/acme/providers/new?server={second}\"")),
        "{html}"
    );
    let edit = format!("{t}/servers/{second}");
    let html = admin
        .post_answered(
            &edit,
            &server("Renamed relay", "0x19"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "port") && html.contains("value=\"Renamed relay\""));
    assert_eq!(
        heading(&html),
        Some("SMTP server Second relay"),
        "the stored name"
    );
    let Page {
        status, location, ..
    } = admin.post(&edit, &server("Renamed relay", "2525")).await;
    assert_eq!(
        (status, location),
        (StatusCode::SEE_OTHER, format!("{edit}?done=server-saved"))
    );

    // Accounts, on their server's page: the account's fields as typed, not its secret.
    let accounts = format!("{t}/servers/{}/accounts", c.server_id);
    let html = admin
        .post_answered(
            &accounts,
            &[
                ("username", ""),
                ("mechanism", "plain"),
                ("password", "typed-secret-4711"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "username"), "{html}");
    assert!(!html.contains("typed-secret-4711"));
    assert_eq!(
        heading(&html),
        Some(format!("SMTP server {}", c.server_name).as_str())
    );
    let Page {
        status, location, ..
    } = admin
        .post(
            &accounts,
            &[
                ("username", "second@acme.example"),
                ("mechanism", "plain"),
                ("password", "typed-secret-4711"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location,
        format!("{t}/servers/{}?done=account-added#accounts", c.server_id)
    );
    let Page { html, .. } = admin.get(&location).await;
    assert!(html.contains("Account added."), "{html}");

    // Providers.
    let provider = |name: &'static str, from: &'static str| {
        vec![
            ("name", name),
            ("smtp_server_id", c.server_id.as_str()),
            ("from_address", from),
            ("sender_policy", "fixed"),
        ]
    };
    let providers = format!("{t}/providers");
    let html = admin
        .post_answered(
            &providers,
            &provider("Typed provider", ""),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "from_address") && html.contains("value=\"Typed provider\""));
    assert_eq!(heading(&html), Some("New notification provider"));
    let Page {
        status, location, ..
    } = admin
        .post(&providers, &provider("Second provider", "ops@acme.example"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        location.starts_with(&format!("{providers}/"))
            && location.ends_with("?done=provider-added"),
        "{location}"
    );
    // The new provider's page: what to do next is to make it the tenant's.
    let Page { html, .. } = admin.get(&location).await;
    assert!(html.contains("Provider Second provider added."), "{html}");
    assert!(
        unescaped(&html).contains("<a href=\"#use\">Make it the tenant's provider</a>"),
        "{html}"
    );
    let second_provider = location
        .strip_prefix(&format!("{providers}/"))
        .and_then(|rest| rest.strip_suffix("?done=provider-added"))
        .unwrap()
        .to_owned();
    let Page {
        status, location, ..
    } = admin
        .post(&format!("{providers}/{second_provider}/activate"), &[])
        .await;
    assert_eq!(
        (status, location),
        (
            StatusCode::SEE_OTHER,
            format!("{providers}/{second_provider}?done=provider-chosen")
        )
    );
    let (_, tenant) = app.get("/v1/tenants/acme", OPERATOR).await;
    assert_eq!(tenant["notification_provider_id"], second_provider.as_str());
    let edit = format!("{t}/providers/{}", c.provider_id);
    let html = admin
        .post_answered(
            &edit,
            &provider("Typed name", "not an address"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "from_address") && html.contains("value=\"not an address\""));
    assert_eq!(heading(&html), Some("Provider Typed name"));
    let Page {
        status, location, ..
    } = admin
        .post(&edit, &provider("Renamed provider", "alerts@acme.example"))
        .await;
    assert_eq!(
        (status, location),
        (StatusCode::SEE_OTHER, format!("{edit}?done=provider-saved"))
    );

    // Properties: an id that is no provider of the tenant.
    let properties = format!("{t}/properties");
    let html = admin
        .post_answered(
            &properties,
            &[("notification_provider_id", c.server_id.as_str())],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        html.contains("must name a notification provider of this tenant"),
        "{html}"
    );
    assert_eq!(heading(&html), Some("Tenant properties"));
    let Page { html, .. } = admin
        .post_redirected(
            &properties,
            &[("notification_provider_id", c.provider_id.as_str())],
            &format!("{properties}?done=provider-chosen"),
        )
        .await;
    assert!(
        unescaped(&html).contains(&format!(
            "href=\"/t/acme/providers/{}#test\">Send a test message</a>",
            c.provider_id
        )),
        "{html}"
    );

    // Persons: a field error, then a conflict (shown above the form), then a new person.
    let persons = format!("{t}/persons");
    let person = |email: &'static str| {
        vec![
            ("name", "Typed Person"),
            ("email", email),
            ("role", "member"),
        ]
    };
    let html = admin
        .post_answered(
            &persons,
            &person("not-an-email"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "email") && html.contains("value=\"Typed Person\""));
    let html = admin
        .post_answered(&persons, &person("mel@acme.example"), StatusCode::CONFLICT)
        .await;
    assert!(html.contains("role=\"alert\""), "{html}");
    let Page {
        status, location, ..
    } = admin.post(&persons, &person("new@acme.example")).await;
    assert_eq!(
        (status, location),
        (
            StatusCode::SEE_OTHER,
            format!("{persons}?done=person-added")
        )
    );
    let (_, listed) = app.get("/v1/tenants/acme/persons", OPERATOR).await;
    let mel = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == "mel@acme.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let password = format!("{t}/persons/{mel}/password");
    let html = admin
        .post_answered(
            &password,
            &[("password", "short")],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        html.contains(&format!("id=\"pe-{mel}\"")),
        "beside Mel: {html}"
    );
    let Page {
        status, location, ..
    } = admin
        .post(&password, &[("password", "a new member password")])
        .await;
    assert_eq!(
        (status, location),
        (
            StatusCode::SEE_OTHER,
            format!("{persons}?done=password-set")
        )
    );

    // Tokens: a field error beside its field, an administrator token without
    // a person refused as the API refuses it, then a sender token shown once,
    // which works, is listed without its value, and is revoked.
    let tokens = format!("{t}/tokens");
    let html = admin
        .post_answered(
            &tokens,
            &[("name", ""), ("role", "sender"), ("person_id", "")],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "name"), "{html}");
    let html = admin
        .post_answered(
            &tokens,
            &[
                ("name", "Typed token"),
                ("role", "tenant_admin"),
                ("person_id", ""),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(invalid(&html, "role") && html.contains("administrator tokens are personal"));
    assert!(html.contains("value=\"Typed token\""), "{html}");
    let html = admin
        .post_answered(
            &tokens,
            &[("name", "billing"), ("role", "sender"), ("person_id", "")],
            StatusCode::OK,
        )
        .await;
    assert_eq!(heading(&html), Some("Token billing created"));
    let start = html.find("id=\"token-value\"").expect("the token");
    let value_at = start + html[start..].find("value=\"").unwrap() + 7;
    let secret = html[value_at..].split('"').next().unwrap().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    let (status, submitted) = app
        .post(
            "/v1/tenants/acme/messages",
            &secret,
            json!({"to": ["ops@acme.example"], "subject": "Token works", "text": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let Page { html, .. } = admin.get(&tokens).await;
    assert!(
        html.contains("<td>billing</td>") && !html.contains(&secret),
        "{html}"
    );
    let (_, listed) = app.get("/v1/tenants/acme/tokens", OPERATOR).await;
    let billing = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "billing")
        .unwrap();
    assert!(billing["last_used_at"].is_string(), "{billing}");
    let billing = billing["id"].as_str().unwrap().to_owned();
    let Page {
        status, location, ..
    } = admin.post(&format!("{tokens}/{billing}/revoke"), &[]).await;
    assert_eq!(
        (status, location),
        (
            StatusCode::SEE_OTHER,
            format!("{tokens}?done=token-revoked")
        )
    );
    let (status, _) = app.get("/v1/tenants/acme/messages", &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, audit) = app.get("/v1/tenants/acme/audit", OPERATOR).await;
    assert!(
        audit.to_string().contains("token.create") && audit.to_string().contains("token.revoke"),
        "{audit}"
    );

    // Another tenant's administrator: 404, and nothing is created.
    let stranger =
        HttpSession::sign_in(app, "admin@globex.example", GLOBEX_PASSWORD, "/t/globex").await;
    let Page { status, .. } = stranger.post(&servers, &server("Intruder", "25")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = app
        .get("/v1/tenants/acme/smtp-servers", &c.acme.admin)
        .await;
    assert!(!listed.to_string().contains("Intruder"), "{listed}");
    // Nor a token, a revocation or a change of provider in acme.
    let (_, before) = app.get("/v1/tenants/acme/properties", OPERATOR).await;
    for (path, fields) in [
        (
            tokens.clone(),
            vec![("name", "Intruder token"), ("role", "sender")],
        ),
        (format!("{tokens}/{}/revoke", c.token_id), vec![]),
        (format!("{providers}/{second_provider}/activate"), vec![]),
    ] {
        let Page { status, .. } = stranger.post(&path, &fields).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "globex's admin on {path}");
    }
    let (_, listed) = app.get("/v1/tenants/acme/tokens", OPERATOR).await;
    assert!(!listed.to_string().contains("Intruder"), "{listed}");
    assert!(listed.to_string().contains(&c.token_id), "{listed}");
    let (_, after) = app.get("/v1/tenants/acme/properties", OPERATOR).await;
    assert_eq!(before, after);
    // A form without this session's token is refused before any handler runs.
    let forged = HttpSession {
        csrf: stranger.csrf.clone(),
        ..admin
    };
    let Page { status, .. } = forged.post(&servers, &server("Forged", "25")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

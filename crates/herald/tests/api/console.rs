//! The web console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver) walks a new tenant administrator's whole setup,
//! then checks tenant isolation, CSRF refusal and that no secret reaches a page.
//!
//! Without chromium and chromedriver the test is skipped with one line, except
//! when `HERALD_REQUIRE` names `chromium` or `CI` is set, where it fails. With
//! `HERALD_CONSOLE_SCREENSHOTS=<dir>` it saves the screenshots shown in the README.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use herald_testkit::Dependency;
use herald_testsmtp::{ServerConfig, TestSmtpServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{DEADLINE, OPERATOR, TestApp, eventually, spawn_app};

const SMTP_USER: &str = "herald@acme.example";
const SMTP_PASSWORD: &str = "smtp-secret-Pw-4711";
const ADA_PASSWORD: &str = "ada-console-password";

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
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (chromium, driver) = browser_programs()?;
        // chromedriver takes a port number only: ask the system for a free one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // A group of its own, so that dropping the browser also ends the
            // Chromium processes chromedriver started, even after a panic.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
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

impl Browser {
    /// Remembers the page's HTML for the secret check.
    async fn keep(&mut self) {
        let html = self.client.source().await.unwrap();
        self.pages.push(html);
    }

    async fn goto(&mut self, url: &str) {
        self.client.goto(url).await.unwrap();
        self.keep().await;
    }

    /// Waits for an element, failing after the deadline.
    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// Waits until an element's text contains `text`.
    async fn wait_for_text(&mut self, css: &str, text: &str) {
        let client = self.client.clone();
        eventually(&format!("{css} to say {text:?}"), || {
            let client = client.clone();
            async move {
                let element = client.find(Locator::Css(css)).await.ok()?;
                element.text().await.ok().filter(|t| t.contains(text))
            }
        })
        .await;
        self.keep().await;
    }

    /// Types into a field. The element is found again when an action on it
    /// fails: htmx may have swapped the part of the page it was in.
    async fn fill(&self, field: &str, value: &str) {
        let css = format!("#f-{field}");
        eventually(&format!("{css} to take {value:?}"), || async {
            let input = self.client.find(Locator::Css(&css)).await.ok()?;
            input.clear().await.ok()?;
            input.send_keys(value).await.ok()
        })
        .await;
    }

    async fn choose(&self, field: &str, label: &str) {
        let css = format!("#f-{field}");
        eventually(&format!("{css} to offer {label:?}"), || async {
            let select = self.client.find(Locator::Css(&css)).await.ok()?;
            select.select_by_label(label).await.ok()
        })
        .await;
    }

    /// Presses the button with this text and waits for `then` on the next page.
    async fn press(&mut self, button: &str, then: &str) {
        let xpath = format!("//button[normalize-space()=\"{button}\"]");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {button:?}: {e}"))
            .click()
            .await
            .unwrap();
        self.wait_for(then).await;
        self.keep().await;
    }

    async fn heading(&self) -> String {
        self.wait_for("h1").await.text().await.unwrap()
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.screenshots {
            std::fs::create_dir_all(dir).unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(name), png).unwrap();
        }
    }
}

/// Sets a person's console password through the API, as their administrator would.
async fn give_password(app: &TestApp, slug: &str, email: &str, password: &str) {
    let (status, persons) = app
        .get(&format!("/v1/tenants/{slug}/persons"), OPERATOR)
        .await;
    assert_eq!(status, StatusCode::OK, "{persons}");
    let person = persons
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == email)
        .expect("the person exists");
    let (status, body) = app
        .call(
            Method::PUT,
            &format!(
                "/v1/tenants/{slug}/persons/{}/password",
                person["id"].as_str().unwrap()
            ),
            Some(OPERATOR),
            Some(json!({"password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
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

    // An SMTP server from a preset, pointed at the test SMTP server.
    browser
        .client
        .find(Locator::Css("a.add[href$='/servers/new']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for(".presets").await;
    browser
        .client
        .find(Locator::LinkText("On-premises Exchange, direct account"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for(".presets .note").await;
    let port_field = browser.wait_for("#f-port").await;
    assert_eq!(
        port_field.prop("value").await.unwrap().as_deref(),
        Some("587")
    );
    browser.fill("name", "exchange").await;
    browser.fill("host", "127.0.0.1").await;
    browser.fill("port", &smtp.port().to_string()).await;
    browser.choose("security", "None (plaintext)").await;
    // The test SMTP server has no TLS: AUTH in clear must be allowed, and is warned about.
    browser
        .wait_for("#f-allow_plaintext_auth")
        .await
        .click()
        .await
        .unwrap();
    browser.screenshot("console-smtp-server.png").await;
    browser.press("Add the SMTP server", "#accounts").await;
    browser
        .wait_for_text(".alert.warn", "the password travels unencrypted")
        .await;

    // Invalid input: the field's message beside the field, what was typed kept.
    browser.fill("port", "seventy").await;
    browser.press("Save changes", ".field.invalid").await;
    let error = browser.wait_for("#e-port").await.text().await.unwrap();
    assert!(error.contains("must be a whole number"), "{error}");
    let kept = browser
        .wait_for("#f-port")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("seventy"));
    browser.fill("port", &smtp.port().to_string()).await;
    browser.press("Save changes", "#accounts").await;

    // The account tool: the password is write-only, shown as set.
    browser.fill("username", SMTP_USER).await;
    browser.choose("mechanism", "LOGIN").await;
    browser.fill("password", SMTP_PASSWORD).await;
    browser.press("Add the account", "#accounts table").await;
    let accounts = browser
        .wait_for("#accounts table")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        accounts.contains(SMTP_USER) && accounts.contains("set"),
        "{accounts}"
    );

    // A provider through that server and account.
    browser.goto(&format!("{base}/t/acme/providers/new")).await;
    browser.fill("name", "corporate").await;
    browser
        .choose("account_id", &format!("{SMTP_USER} on exchange"))
        .await;
    browser.fill("from_address", "alerts@acme.example").await;
    browser.fill("from_name", "Acme Alerts").await;
    browser.fill("fallback_recipient", "ops@acme.example").await;
    browser.press("Add the provider", "table").await;
    browser.screenshot("console-providers.png").await;

    // Make it the tenant's provider: pending until the refresh, then effective.
    browser.goto(&format!("{base}/t/acme/properties")).await;
    browser.choose("provider", "corporate").await;
    browser
        .press("Make it the tenant's provider", "#pending")
        .await;
    browser.wait_for_text("#pending", "corporate").await;
    browser.press("Refresh now", "#effective").await;
    browser.wait_for_text("#effective", "corporate").await;

    // A test message: the steps appear as the worker completes it, then `sent`.
    browser.goto(&format!("{base}/t/acme/providers")).await;
    browser.press("Send a test message", "#test-steps").await;
    browser.wait_for_text("#test-status", "sent").await;
    let steps = browser.wait_for(".steps").await.text().await.unwrap();
    for step in ["connect", "ehlo", "auth", "data"] {
        assert!(
            steps.contains(step),
            "the test shows the {step} step: {steps}"
        );
    }
    browser.screenshot("console-test-message.png").await;
    assert_eq!(smtp.wait_for_messages(1, DEADLINE).await.len(), 1);

    // A message submitted by API, found in the messages page with its attempts.
    let (status, submitted) = app
        .post(
            "/v1/tenants/acme/messages",
            &acme.sender,
            json!({"to": ["dev@acme.example"], "subject": "Disk full", "text": "/var is at 97 %"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    smtp.wait_for_messages(2, DEADLINE).await;
    browser
        .goto(&format!(
            "{base}/t/acme/messages?recipient=dev%40acme.example"
        ))
        .await;
    browser
        .client
        .find(Locator::LinkText("Disk full"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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
    browser.goto(&format!("{base}/t/acme/providers")).await;
    browser
        .client
        .find(Locator::Css("input[name=to]"))
        .await
        .unwrap()
        .send_keys("stall@acme.example")
        .await
        .unwrap();
    browser.press("Send a test message", "#test-steps").await;
    let htmx = browser
        .client
        .execute("return typeof htmx === 'object' && htmx.version", vec![])
        .await
        .unwrap();
    assert!(
        htmx.is_string(),
        "htmx runs under the console's CSP: {htmx}"
    );
    let first = browser.wait_for("#test-status").await.text().await.unwrap();
    assert!(first == "queued" || first == "sending", "{first}");
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
    browser.keep().await;
    let polled = browser.wait_for("#test-steps").await;
    assert_eq!(
        polled.attr("hx-get").await.unwrap(),
        None,
        "polling stops at {last}"
    );

    browser.goto(&format!("{base}/t/acme")).await;
    browser.screenshot("console-dashboard.png").await;
    browser.goto(&format!("{base}/t/acme/audit")).await;

    // A person added in the console gets a password there; a short one is refused beside it.
    browser.goto(&format!("{base}/t/acme/persons")).await;
    browser.fill("name", "Bob Member").await;
    browser.fill("email", "bob@acme.example").await;
    browser.press("Add the person", "td").await;
    browser.wait_for_text("table", "bob@acme.example").await;
    let bob_row = "//tr[td[normalize-space()='bob@acme.example']]";
    let password = browser
        .client
        .find(Locator::XPath(&format!(
            "{bob_row}//input[@type='password']"
        )))
        .await
        .unwrap();
    password.send_keys("short").await.unwrap();
    browser
        .client
        .find(Locator::XPath(&format!("{bob_row}//button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("p.error", "Password must be").await;
    let password = browser
        .client
        .find(Locator::XPath(&format!(
            "{bob_row}//input[@type='password']"
        )))
        .await
        .unwrap();
    password.send_keys("bob-console-password").await.unwrap();
    browser
        .client
        .find(Locator::XPath(&format!("{bob_row}//button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("table").await;
    browser.keep().await;
    let (_, audit) = app.get("/v1/tenants/acme/audit", &acme.admin).await;
    assert!(audit.to_string().contains("person.set_password"), "{audit}");
    browser.goto(&format!("{base}/t/acme/servers")).await;

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
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
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
    browser.goto(&format!("{base}/t/acme/properties")).await;
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
            assert!(!html.contains(secret), "a page holds a secret: {html}");
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

/// A `Set-Cookie` answer's cookie as `name=value`, with its attributes.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let (pair, attributes) = v.split_once(';').unwrap_or((v, ""));
            (pair.to_owned(), attributes.to_owned())
        })
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_field(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..].split('"').next().unwrap().to_owned()
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

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
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
    let post = |path: &str, fields: Vec<(&'static str, String)>| {
        http.post(format!("{base}{path}"))
            .header("cookie", &session)
            .form(&fields)
            .send()
    };

    // Invalid input: the page again, the field's message beside it, what was typed kept.
    let invalid = post(
        "/operator/tenants",
        vec![
            ("csrf", csrf.clone()),
            ("slug", "Not A Slug".into()),
            ("name", "Initech".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = invalid.text().await.unwrap();
    assert!(html.contains("id=\"e-slug\""), "{html}");
    assert!(html.contains("value=\"Not A Slug\"") && html.contains("value=\"Initech\""));

    let created = post(
        "/operator/tenants",
        vec![
            ("csrf", csrf.clone()),
            ("slug", "initech".into()),
            ("name", "Initech".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let granted = post(
        "/operator/tenants/initech/entitlements",
        vec![("csrf", csrf.clone()), ("credential_storage", "on".into())],
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
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = &app.base;
    let attempt = |email: &'static str, password: &'static str| {
        let http = &http;
        async move {
            let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
            let (cookie, _) = set_cookie(&form, "herald_sign_in").unwrap();
            let token = csrf_field(&form.text().await.unwrap());
            let answer = http
                .post(format!("{base}/sign-in"))
                .header("cookie", cookie)
                .form(&[
                    ("csrf", token.as_str()),
                    ("email", email),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap();
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

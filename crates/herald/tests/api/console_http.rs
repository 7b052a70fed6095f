//! Console test helpers over plain HTTP, without a browser: reading cookies and
//! CSRF fields, signing in through the sign-in form, a signed-in session that
//! gets pages and posts forms, and console passwords set through the API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{OPERATOR, TestApp};

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

/// `html` with the escapes of printed values undone (minijinja writes `/`
/// as `&#x2f;`), as a browser shows it.
pub fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x2b;", "+")
        .replace("&#x3d;", "=")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the read-only field with this id on a page, as a browser
/// shows it (a secret's base64 holds `/` and `+`, which the page escapes).
pub fn shown_value(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}: {html}"));
    let value_at = start + html[start..].find("value=\"").unwrap() + 7;
    unescape(html[value_at..].split('"').next().unwrap())
}

/// Acme's records of one kind (`gateways`, `smtp-credentials`, …) as the
/// API lists them to the operator.
pub async fn listed(app: &TestApp, what: &str) -> Vec<Value> {
    let (status, listed) = app.get(&format!("/v1/tenants/acme/{what}"), OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    listed.as_array().unwrap().clone()
}

/// A client that does not follow redirects, so that tests see where a form leads.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One sign-in as a browser makes it: the form (its cookie and token), then the
/// post of `email` and `password`; the answer to the post.
pub async fn sign_in_attempt(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let (sign_in_cookie, _) = set_cookie(&form, "herald_sign_in").unwrap();
    let token = csrf_field(&form.text().await.unwrap());
    http.post(format!("{base}/sign-in"))
        .header("cookie", sign_in_cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// Sets a person's console password through the API, as their administrator
/// would; returns the person's id.
pub async fn give_password(app: &TestApp, slug: &str, email: &str, password: &str) -> String {
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
    let id = person["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/{slug}/persons/{id}/password"),
            Some(OPERATOR),
            Some(json!({"password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    id
}

/// An answer as a person sees it: the status, its content type, the
/// redirect's target (empty without one) and the page.
pub struct Page {
    pub status: StatusCode,
    pub content_type: String,
    pub location: String,
    pub html: String,
}

impl Page {
    /// The page with the escapes of printed values undone (minijinja writes
    /// `/` as `&#x2f;`), for comparing with what a browser shows.
    pub fn text(&self) -> String {
        unescape(&self.html)
    }

    pub async fn from(answer: reqwest::Response) -> Page {
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        Page {
            status: answer.status(),
            content_type: header("content-type"),
            location: header("location"),
            html: answer.text().await.unwrap(),
        }
    }
}

/// Someone signed in to the console over plain HTTP, as a browser would be
/// but without one: the session cookie, and the CSRF token its pages carry.
pub struct HttpSession {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

impl HttpSession {
    /// Signs in through the sign-in form (its cookie and token first), then
    /// reads the CSRF token from `landing`, a page this person may see.
    pub async fn sign_in(app: &TestApp, email: &str, password: &str, landing: &str) -> HttpSession {
        let http = no_redirects();
        let signed = sign_in_attempt(&http, &app.base, email, password).await;
        assert_eq!(signed.status(), StatusCode::SEE_OTHER, "{email} signs in");
        let (cookie, _) = set_cookie(&signed, "herald_session").unwrap();
        let mut session = HttpSession {
            http,
            base: app.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let page = session.get(landing).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{email} on {landing}: {}",
            page.html
        );
        session.csrf = csrf_field(&page.html);
        session
    }

    pub async fn get(&self, path: &str) -> Page {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        Page::from(answer).await
    }

    /// GETs a page that must answer 200 OK; its HTML.
    pub async fn get_html(&self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
        page.html
    }

    /// Posts a form with the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        Page::from(answer).await
    }

    /// Posts a form that must answer `status` with a page of its own (a
    /// form shown again with what is wrong, a conflict); the page's HTML.
    pub async fn post_answered(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        status: StatusCode,
    ) -> String {
        let page = self.post(path, fields).await;
        assert_eq!(page.status, status, "{path}: {}", page.html);
        page.html
    }

    /// Posts a form that must answer 303 See Other to `to`, and follows it:
    /// the page the browser shows next.
    pub async fn post_redirected(&self, path: &str, fields: &[(&str, &str)], to: &str) -> Page {
        let Page {
            status,
            location,
            html,
            ..
        } = self.post(path, fields).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, to),
            "{path}: {html}"
        );
        self.get(&location).await
    }
}

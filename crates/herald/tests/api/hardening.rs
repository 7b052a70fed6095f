//! The findings of the adversarial review that concern the node's edge:
//! anonymous sign-ins are bounded (per client address, and in the password
//! verifications running at once), slow clients are cut off and cannot take
//! every connection, the sign-in form's CSRF token is bound to its cookie,
//! browsers' cross-site POSTs are refused, and the data directory is private.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::Secret;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::console::set_operator_password;
use crate::console_http::{csrf_field, no_redirects, set_cookie};
use crate::helpers::*;

/// A sign-in form's cookie (`name=value`) and the token on the page.
async fn sign_in_form(http: &reqwest::Client, base: &str) -> (String, String) {
    let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let (cookie, _) = set_cookie(&form, "herald_sign_in").unwrap();
    (cookie, csrf_field(&form.text().await.unwrap()))
}

/// The operator these tests sign in as: email and password.
const ROOT: (&str, &str) = ("root@herald.example", "operator password 1");

/// Someone who is not signed up, with a wrong password.
const NOBODY: (&str, &str) = ("nobody@herald.example", "a wrong password");

/// Posts the sign-in form with the form's cookie and token, an email and
/// password, and extra headers.
async fn post_sign_in(
    http: &reqwest::Client,
    base: &str,
    (cookie, token): (&str, &str),
    (email, password): (&str, &str),
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http
        .post(format!("{base}/sign-in"))
        .header("cookie", cookie)
        .form(&[("csrf", token), ("email", email), ("password", password)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Login CSRF: a cookie and token the attacker made up together
/// (`herald_sign_in=x`, `csrf=x`) no longer sign anyone in. A form served by
/// one node is accepted by another with the same master key, and refused by
/// a node with another key.
#[tokio::test]
async fn the_sign_in_token_is_bound_to_its_cookie_under_the_shared_key() {
    let master = |key: &'static str| {
        move |s: &mut herald::config::Settings| {
            s.master_key = Some(Secret::new(key));
        }
    };
    let one = spawn_app_with(master("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")).await;
    let output = set_operator_password(&one, "root@herald.example", "operator password 1").await;
    assert!(output.status.success(), "{output:?}");
    let http = no_redirects();

    let forged = post_sign_in(&http, &one.base, ("herald_sign_in=x", "x"), ROOT, &[]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "herald_session").is_none());
    // A real cookie with a token of another form: refused too.
    let (cookie, _) = sign_in_form(&http, &one.base).await;
    let (_, other_token) = sign_in_form(&http, &one.base).await;
    let mixed = post_sign_in(&http, &one.base, (&cookie, &other_token), ROOT, &[]).await;
    assert_eq!(mixed.status(), StatusCode::FORBIDDEN);

    // Another node with the same master key accepts the first node's form.
    let same_key = spawn_app_with(master("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")).await;
    let (cookie, token) = sign_in_form(&http, &one.base).await;
    let elsewhere = post_sign_in(&http, &same_key.base, (&cookie, &token), NOBODY, &[]).await;
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    let other_key = spawn_app_with(master("HxwdHh8AAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRo=")).await;
    let refused = post_sign_in(&http, &other_key.base, (&cookie, &token), NOBODY, &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The genuine pair signs in.
    let signed = post_sign_in(&http, &one.base, (&cookie, &token), ROOT, &[]).await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
}

/// Every console POST a browser says came from another site is refused
/// before any handler runs, even with a valid token; from the console's own
/// pages, or from a client that is not a browser, the token decides.
#[tokio::test]
async fn cross_site_posts_are_refused_before_any_handler() {
    let app = spawn_app().await;
    let output = set_operator_password(&app, "root@herald.example", "operator password 1").await;
    assert!(output.status.success(), "{output:?}");
    let http = no_redirects();
    let base = &app.base;
    let host = base.trim_start_matches("http://");
    let own_origin = base.clone();
    let (cookie, token) = sign_in_form(&http, base).await;
    let attempt = |headers: Vec<(&'static str, String)>| {
        let (http, cookie, token) = (&http, &cookie, &token);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            post_sign_in(http, base, (cookie, token), ROOT, &headers)
                .await
                .status()
        }
    };
    for refused in [
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
        vec![("origin", "http://evil.example".to_owned())],
        vec![("origin", "null".to_owned())],
        vec![(
            "origin",
            format!("http://{}", host.replace("127.0.0.1", "localhost")),
        )],
    ] {
        assert_eq!(
            attempt(refused.clone()).await,
            StatusCode::FORBIDDEN,
            "{refused:?}"
        );
    }
    let signed = post_sign_in(
        &http,
        base,
        (&cookie, &token),
        ROOT,
        &[("sec-fetch-site", "same-origin"), ("origin", &own_origin)],
    )
    .await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let (session, _) = set_cookie(&signed, "herald_session").unwrap();

    // A signed-in operator's form, posted from another site: refused, nothing created.
    let page = http
        .get(format!("{base}/operator/tenants"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let csrf = csrf_field(&page.text().await.unwrap());
    let create = |site: &'static str| {
        http.post(format!("{base}/operator/tenants"))
            .header("cookie", &session)
            .header("sec-fetch-site", site)
            .form(&[
                ("csrf", csrf.as_str()),
                ("slug", "initech"),
                ("name", "Initech"),
            ])
            .send()
    };
    let refused = create("cross-site").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("not sent from this console")
    );
    let (status, _) = app.get("/v1/tenants/initech", OPERATOR).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was created");
    assert_eq!(
        create("same-origin").await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
}

/// Sign-in attempts per client address: beyond the burst, 429 with
/// Retry-After and a page that says so. `X-Forwarded-For` counts only from a
/// trusted proxy.
#[tokio::test]
async fn sign_ins_are_limited_per_client_address() {
    let http = no_redirects();
    let attempts = |app: &TestApp, forwarded_for: &'static str, n: usize| {
        let (http, base) = (&http, app.base.clone());
        async move {
            let mut answers = Vec::new();
            for i in 0..n {
                let (cookie, token) = sign_in_form(http, &base).await;
                let answer = post_sign_in(
                    http,
                    &base,
                    (&cookie, &token),
                    (&format!("person{i}@herald.example"), "a wrong password"),
                    &[("x-forwarded-for", forwarded_for)],
                )
                .await;
                let retry_after = answer
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                answers.push((answer.status(), retry_after, answer.text().await.unwrap()));
            }
            answers
        }
    };
    let limited = |s: &mut herald::config::Settings| {
        s.sign_in.burst = 2;
        s.sign_in.every = Duration::from_secs(600);
    };

    // No trusted proxy: the header is the client's own claim, and ignored.
    let direct = spawn_app_with(limited).await;
    let mut answers = attempts(&direct, "203.0.113.1", 2).await;
    answers.extend(attempts(&direct, "203.0.113.2", 1).await);
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    assert_eq!(answers[1].0, StatusCode::UNAUTHORIZED);
    let (status, retry_after, html) = &answers[2];
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after = retry_after.expect("a Retry-After header");
    assert!(retry_after > 0 && retry_after <= 600, "{retry_after}");
    assert!(
        html.contains("Too many sign-in attempts from your network address"),
        "{html}"
    );
    assert!(html.contains("name=\"csrf\""), "the form is shown again");

    // Behind a trusted proxy each forwarded client has its own allowance.
    let proxied = spawn_app_with(|s| {
        limited(s);
        s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let first = attempts(&proxied, "203.0.113.1", 3).await;
    let statuses: Vec<_> = first.iter().map(|a| a.0).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let other = attempts(&proxied, "198.51.100.4, 203.0.113.2", 1).await;
    assert_eq!(other[0].0, StatusCode::UNAUTHORIZED, "another client");
}

/// With every connection held by `holders` (tasks that log "… closed" in
/// `events` once the server closes theirs), a third connection's `/healthz` is
/// answered, and only after one holder was closed; every holder is closed in
/// the end (`why` says why it should be).
async fn healthz_waits_for_a_closed_slot(
    addr: impl tokio::net::ToSocketAddrs,
    events: Arc<Mutex<Vec<String>>>,
    holders: Vec<tokio::task::JoinHandle<()>>,
    why: &str,
) {
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    fresh
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answered = {
        let events = events.clone();
        tokio::spawn(async move {
            let mut answer = String::new();
            fresh.read_to_string(&mut answer).await.unwrap();
            events.lock().unwrap().push("healthz answered".to_owned());
            answer
        })
    };
    let answer = tokio::time::timeout(DEADLINE, answered)
        .await
        .expect("healthz is answered once a slot frees")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for holder in holders {
        tokio::time::timeout(DEADLINE, holder)
            .await
            .expect(why)
            .unwrap();
    }
    let events = events.lock().unwrap().clone();
    let answered_at = events.iter().position(|e| e == "healthz answered").unwrap();
    assert!(
        events[..answered_at].iter().any(|e| e.ends_with("closed")),
        "the third connection waited for a slot: {events:?}"
    );
}

/// Slowloris: with two connections allowed, two half-sent requests hold
/// both; a third connection's `/healthz` is answered only once the server has
/// closed one of them (its header timeout), not before. Checked by the order
/// of events, not by how long anything took.
#[tokio::test]
async fn half_sent_requests_are_cut_off_and_cannot_hold_every_connection() {
    let app = spawn_app_with(|s| {
        s.http_limits.max_connections = 2;
        s.http_limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for name in ["first", "second"] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Slow: ")
            .await
            .unwrap();
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let mut rest = Vec::new();
            // Ends when the server closes the connection.
            let _ = stream.read_to_end(&mut rest).await;
            events.lock().unwrap().push(format!("{name} closed"));
        }));
    }
    healthz_waits_for_a_closed_slot(&addr, events, tasks, "the server closes half-sent requests")
        .await;
}

/// A client that pipelines requests for a large answer and never reads: with
/// two connections allowed, two such clients hold both while the server's
/// writes are stuck on their full windows; a third connection's `/healthz` is
/// answered only once the server has given up writing to one of them (its
/// write timeout) and closed it. The clients keep sending requests until a
/// write fails, which is how they see the server close without reading.
/// Checked by the order of events, not by how long anything took.
#[tokio::test]
async fn clients_that_never_read_are_cut_off_and_cannot_hold_every_connection() {
    let app = spawn_app_with(|s| {
        s.http_limits.max_connections = 2;
        s.http_limits.write_timeout = Duration::from_millis(300);
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for name in ["first", "second"] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let request = b"GET /static/htmx.min.js HTTP/1.1\r\nHost: herald\r\n\r\n".repeat(100);
            // Ends when the server resets or closes the connection.
            while stream.write_all(&request).await.is_ok() {}
            events.lock().unwrap().push(format!("{name} closed"));
        }));
    }
    let why = "the server closes connections that do not read";
    healthz_waits_for_a_closed_slot(addr, events, tasks, why).await;
}

/// A request body that stops arriving is cut off: the server answers (or
/// closes) instead of waiting for the rest for ever.
#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off() {
    let app = spawn_app_with(|s| {
        s.http_limits.body_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/tenants HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {OPERATOR}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"slug\": "
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = answer_until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("urn:herald:problem:body-timeout"),
        "a body that stopped arriving is a 408, not taken: {answer}"
    );
    let (status, _) = app.get("/v1/tenants", OPERATOR).await;
    assert_eq!(status, StatusCode::OK, "the node still answers");

    // The console's sign-in form says the same, not that the form was too large.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /sign-in HTTP/1.1\r\nHost: herald\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=",
        )
        .await
        .unwrap();
    let answer = answer_until_closed(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a body that stopped arriving is a 400: {answer}"
    );
}

/// The data directory a node creates is 0700, and every file in it
/// (database, -wal, -shm, key file) 0600, whatever the caller's umask.
#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let mut node = start_process(&data, &[], &[]).await;
    let app = node.app();
    // Writes, so that the write-ahead log has something in it.
    app.tenant("acme").await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["herald.db", "herald.db-wal", "herald.db-shm", "master.key"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    // A database an earlier version left readable by others is made private.
    // The node is killed and waited for: until it is gone, it holds the
    // directory's lock and a restart would be refused.
    node.child.kill().await.unwrap();
    drop(node);
    let database = data.join("herald.db");
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _restarted = start_process(&data, &[], &[]).await;
    assert_eq!(mode(&database), 0o600, "an existing database");
}

/// Peak memory under 500 concurrent anonymous sign-ins, each from its own
/// address (through a trusted proxy, so the per-address limit does not stop
/// them), stays under 200 MB: only a few argon2 verifications run at once,
/// a few more wait, and the rest are refused at once with 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_sign_ins_stay_under_200_mb() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_process(dir.path(), &["--trusted-proxies", "127.0.0.1/32"], &[]).await;
    let pid = node.child.id().unwrap();
    let http = no_redirects();
    let base = node.base.clone();
    let (cookie, token) = sign_in_form(&http, &base).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(500));
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let (http, base, cookie, token, barrier) = (
            http.clone(),
            base.clone(),
            cookie.clone(),
            token.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256);
            barrier.wait().await;
            let answer = post_sign_in(
                &http,
                &base,
                (&cookie, &token),
                (&format!("person{i}@herald.example"), "a wrong password"),
                &[("x-forwarded-for", &client)],
            )
            .await;
            let retry_after = answer.headers().contains_key("retry-after");
            (answer.status(), retry_after)
        }));
    }
    let mut refused = 0;
    let mut verified = 0;
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::UNAUTHORIZED, _) => verified += 1,
            (StatusCode::TOO_MANY_REQUESTS, true) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(verified > 0, "some were verified");
    assert!(refused > 0, "beyond the queue, 429 at once");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    eprintln!(
        "peak RSS after 500 concurrent sign-ins: {peak_kb} kB ({verified} verified, {refused} refused)"
    );
    assert!(peak_kb < 200 * 1024, "peak RSS {peak_kb} kB");
}

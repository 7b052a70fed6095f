//! Templates rendered in the node's renderer processes: templates that ask
//! for gigabytes or for seconds of work answer 422 naming the limit, through
//! a preview, a message and a schedule's firing, while the node goes on
//! answering; a renderer that died is replaced; and a missing variable used
//! as an argument or reached by subscript is named; a renderer whose node
//! was killed outright dies with it.

use std::sync::{Arc, Mutex};

use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Joins fifty copies of a 100 MB string: 5 GB.
const JOIN_BOMB: &str = r#"{% set a = "x" * 100000000 %}{{ ([a] * 50)|join|length }}"#;
/// Three copies of a 100 MB string, concatenated: about 900 MB at its peak.
const CONCAT_BOMB: &str = r#"{% set a = "x" * 100000000 %}{{ (a ~ a ~ a)|length }}"#;
/// Forty concatenations of 100 MB strings, within fuel.
const STALL: &str =
    r#"{% set a = "x"*100000000 %}{% for i in range(40) %}{% set b = a ~ a %}{% endfor %}"#;
/// Thousands of copies of a 50 MB string, each dropped at once: little
/// memory, much time.
const SPIN: &str =
    r#"{% set a = "x"*50000000 %}{% for i in range(5000) %}{% set b = a ~ "y" %}{% endfor %}"#;

const TOO_MUCH_MEMORY: &str = "text: the template needs more than 768 MiB to render";
const TOO_SLOW: &str = "text: the template took longer than 2 s to render";

/// Creates a template whose text is `text`; returns its id.
async fn template(app: &TestApp, tenant: &TestTenant, name: &str, text: &str) -> String {
    let created = app
        .create_as_admin(
            tenant,
            "templates",
            json!({"name": name, "subject": "Hello", "text": text}),
        )
        .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn preview(app: &TestApp, tenant: &TestTenant, id: &str, data: Value) -> Answer {
    app.post_as_sender(
        tenant,
        &format!("templates/{id}/preview"),
        json!({"data": data}),
    )
    .await
}

/// The one field error of a 422.
fn refusal(status: StatusCode, answer: &Value) -> (String, String) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let mut errors = field_errors(answer);
    assert_eq!(errors.len(), 1, "{answer}");
    errors.remove(0)
}

/// The renderer processes this node (this test process) runs now, but for
/// those already dead and not yet reaped.
fn renderers() -> Vec<i32> {
    // This thread's children only: the test's node runs on this thread (a
    // current-thread runtime) and spawns its renderers here, while other
    // tests, which `cargo test` runs as threads of this same process, have
    // nodes and renderers of their own.
    let children = std::fs::read_to_string("/proc/thread-self/children").unwrap_or_default();
    let mut pids = Vec::new();
    for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        let alive = state.is_some_and(|s| !s.starts_with('Z') && !s.starts_with('X'));
        if alive && String::from_utf8_lossy(&cmdline).contains("render-worker") {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn templates_that_ask_for_too_much_memory_or_time_answer_422_naming_the_limit() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let good = template(&app, &acme, "good", "Hi {{ name }}").await;
    // The bombs run into the memory limit after a second or so of copying
    // in a debug build, so on a busy machine (a load of 12 on 2 cores was
    // seen) the time limit may come first; the spin meets only the time limit.
    for (name, text, rules) in [
        ("join-bomb", JOIN_BOMB, &[TOO_MUCH_MEMORY, TOO_SLOW][..]),
        ("concat-bomb", CONCAT_BOMB, &[TOO_MUCH_MEMORY, TOO_SLOW][..]),
        ("stall", STALL, &[TOO_MUCH_MEMORY, TOO_SLOW][..]),
        ("spin", SPIN, &[TOO_SLOW][..]),
    ] {
        let id = template(&app, &acme, name, text).await;
        let (status, answer) = preview(&app, &acme, &id, json!({})).await;
        let (field, rule) = refusal(status, &answer);
        assert_eq!(field, "template", "{name}");
        assert!(rules.contains(&rule.as_str()), "{name}: {rule}");
        // Through a message too, and nothing is stored.
        let (status, answer) = app
            .post_as_sender(
                &acme,
                "messages",
                json!({"to": ["ops@acme.example"], "template": name, "data": {}}),
            )
            .await;
        let (field, rule) = refusal(status, &answer);
        assert_eq!(field, "template", "{name}");
        assert!(rules.contains(&rule.as_str()), "{name}: {rule}");
        // The renderer that died is replaced: the next render works.
        let (status, rendered) = preview(&app, &acme, &good, json!({"name": "Ada"})).await;
        assert_eq!(status, StatusCode::OK, "{rendered}");
        assert_eq!(rendered["text"], "Hi Ada");
    }
    assert_eq!(app.message_count(&acme).await, 0, "nothing was stored");
    assert!(renderers().len() <= 2, "at most two renderers");
}

#[tokio::test]
async fn the_node_answers_other_requests_and_tenants_while_a_tenant_renders_slowly() {
    let app = Arc::new(spawn_app().await);
    let acme = Arc::new(app.tenant("acme").await);
    let globex = app.tenant("globex").await;
    let spin = template(&app, &acme, "spin", SPIN).await;
    let good = template(&app, &globex, "good", "Hi {{ name }}").await;
    assert!(
        renderers().is_empty(),
        "renderers start with the first render"
    );

    // acme keeps two slow renders going: the second waits for the first,
    // since a tenant renders in one renderer at a time.
    let done = Arc::new(Mutex::new(Vec::new()));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (app, acme, done, spin) = (app.clone(), acme.clone(), done.clone(), spin.clone());
            tokio::spawn(async move {
                let answer = preview(&app, &acme, &spin, json!({})).await;
                done.lock().unwrap().push("spin");
                answer
            })
        })
        .collect();
    // The renderer is started for a spinning render, which it then runs.
    eventually("a renderer", || async {
        (!renderers().is_empty()).then_some(())
    })
    .await;

    let health = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    done.lock().unwrap().push("healthz");
    // globex's render finds the other renderer, however many acme queues.
    let (status, rendered) = preview(&app, &globex, &good, json!({"name": "Ada"})).await;
    assert_eq!(status, StatusCode::OK, "{rendered}");
    done.lock().unwrap().push("good preview");

    for slow in slow {
        let (status, answer) = slow.await.unwrap();
        assert_eq!(
            refusal(status, &answer),
            ("template".into(), TOO_SLOW.into())
        );
    }
    assert_eq!(
        *done.lock().unwrap(),
        ["healthz", "good preview", "spin", "spin"],
        "the node answered, and rendered for globex, while acme's templates rendered"
    );
}

#[tokio::test]
async fn a_schedule_whose_template_became_a_bomb_records_failed_firings() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    let id = template(&app, &acme, "tick", "Tick {{ site }}").await;
    let schedule = app
        .create_as_admin(
            &acme,
            "schedules",
            json!({"name": "every-second", "cron": "* * * * * *", "template": "tick", "data": {"site": "x"}}),
        )
        .await;
    let schedule = schedule["id"].as_str().unwrap().to_owned();
    let (status, changed) = app
        .patch_as_admin(
            &acme,
            &format!("templates/{id}"),
            json!({"text": JOIN_BOMB}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");

    let failed = eventually("a failed firing", || async {
        let (_, runs) = app
            .get_as_admin(&acme, &format!("schedules/{schedule}/runs"))
            .await;
        runs.as_array()
            .unwrap()
            .iter()
            .find(|run| run["error"].as_str().is_some_and(|e| e.contains("MiB")))
            .cloned()
    })
    .await;
    assert_eq!(
        failed["error"],
        format!("template tick (version 2): {TOO_MUCH_MEMORY}")
    );
    assert!(failed["message_id"].is_null(), "{failed}");
    // The node keeps running, and renders.
    let health = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let good = template(&app, &acme, "good", "Hi {{ name }}").await;
    let (status, rendered) = preview(&app, &acme, &good, json!({"name": "Ada"})).await;
    assert_eq!(status, StatusCode::OK, "{rendered}");
    // The schedule fires every second, so it may have made a message from
    // the harmless version 1 before the change; none from version 2.
    let (status, listed) = app.get_as_sender(&acme, "messages?limit=500").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    for summary in listed["messages"].as_array().unwrap() {
        let message = app.message(&acme, summary["id"].as_str().unwrap()).await;
        assert_eq!(message["template"]["version"], 1, "{message}");
    }
}

#[tokio::test]
async fn a_renderer_killed_while_idle_is_replaced() {
    let (app, acme) = app_with_acme().await;
    let good = template(&app, &acme, "good", "Hi {{ name }}").await;
    let (status, _) = preview(&app, &acme, &good, json!({"name": "Ada"})).await;
    assert_eq!(status, StatusCode::OK);
    let before = renderers();
    assert_eq!(before.len(), 1, "one render, one renderer");
    let pid = rustix::process::Pid::from_raw(before[0]).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    eventually("the renderer gone", || async {
        renderers().is_empty().then_some(())
    })
    .await;

    let (status, rendered) = preview(&app, &acme, &good, json!({"name": "Bea"})).await;
    assert_eq!(status, StatusCode::OK, "{rendered}");
    assert_eq!(rendered["text"], "Hi Bea");
    let after = renderers();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new renderer");
}

/// Whether process `pid` still runs (an exited one not yet reaped does not).
fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    state.is_some_and(|s| !s.starts_with('Z') && !s.starts_with('X'))
}

#[tokio::test]
async fn a_renderer_dies_with_the_node_that_started_it() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    // A shell stands for the node: it starts a renderer, as a node does,
    // with its own process id in the environment and this test's pipe as
    // the renderer's input, which stays open, so the renderer would wait
    // for jobs for ever. The shell says the renderer's process id. (A
    // command run with `&` gets /dev/null as its input before its own
    // redirections, hence the copy of the input as descriptor 3.)
    let script =
        r#"exec 3<&0; HERALD_RENDER_PARENT=$$ "$0" render-worker <&3 3<&- & echo $!; wait"#;
    let mut node = Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_herald")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let renderer: i32 = line.trim().parse().unwrap();
    assert!(running(renderer), "the renderer runs");
    node.kill().unwrap();
    node.wait().unwrap();
    eventually("the renderer gone with its node", || async {
        (!running(renderer)).then_some(())
    })
    .await;
    drop(node.stdin.take());
}

#[tokio::test]
async fn a_renderer_whose_node_has_gone_stops_at_once() {
    use std::process::{Command, Stdio};
    // Started with a parent process id that is not its parent's, as when
    // the node died before the renderer asked to die with it: it stops,
    // though its input stays open.
    let mut renderer = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("render-worker")
        .env("HERALD_RENDER_PARENT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually("the renderer stopped", || {
        let exited = renderer.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(!status.success(), "{status}");
    let mut said = String::new();
    std::io::Read::read_to_string(renderer.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert!(said.contains("has exited"), "{said}");
}

#[tokio::test]
async fn a_missing_variable_as_an_argument_or_by_subscript_is_named() {
    let (app, acme) = app_with_acme().await;
    let data = json!({"a": 1, "items": [1, 2], "user": {"email": "a@b"}});
    for (i, (text, name)) in [
        ("{{ '%s-%s'|format(a, b) }}", "b"),
        ("{{ items|join(sep) }}", "sep"),
        ("{{ dict(a=missing) }}", "missing"),
        ("{{ user['name'] }}", "user['name']"),
        ("{{ items[3] }}", "items[3]"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = template(&app, &acme, &format!("t{i}"), text).await;
        let (status, answer) = preview(&app, &acme, &id, data.clone()).await;
        assert_eq!(
            refusal(status, &answer),
            (
                "data".into(),
                format!("text: undefined variable {name} (the data has no such key)")
            ),
            "{text}"
        );
    }
}

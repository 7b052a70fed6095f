//! Recurring schedules over the API: checked when saved, fired once per
//! occurrence into one message each, run on demand, listed with their
//! firings; and on two PostgreSQL nodes, once per occurrence across nodes
//! and restarts, with one catch-up firing after downtime.

use std::collections::BTreeSet;
use std::time::Duration;

use herald_core::timestamp::now_ms;
use herald_testkit::TestDatabase;
use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::node;
use crate::helpers::*;

/// A template `tick` that needs the variable `site`.
async fn tick_template(app: &TestApp, tenant: &TestTenant) -> Value {
    app.create_as_admin(
        tenant,
        "templates",
        json!({"name": "tick", "subject": "Tick from {{ site }}", "text": "tick {{ site }}"}),
    )
    .await
}

async fn runs(app: &TestApp, tenant: &TestTenant, schedule: &str) -> Vec<Value> {
    let (status, runs) = app
        .get_as_admin(tenant, &format!("schedules/{schedule}/runs?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    runs.as_array().unwrap().clone()
}

/// Every scheduled firing of a per-second schedule, oldest first, checked
/// to account for each occurrence exactly once: no two for one second,
/// and each gap between two firings made up by the later one's `missed`.
fn check_once_per_occurrence(runs: &[Value]) -> Vec<Value> {
    let mut fired: Vec<Value> = runs
        .iter()
        .filter(|r| r["trigger"] == "schedule")
        .cloned()
        .collect();
    fired.sort_by_key(|r| ms(&r["fire_at"]));
    let seconds: BTreeSet<i64> = fired.iter().map(|r| ms(&r["fire_at"])).collect();
    assert_eq!(
        seconds.len(),
        fired.len(),
        "an occurrence fired twice: {fired:#?}"
    );
    for pair in fired.windows(2) {
        let gap = (ms(&pair[1]["fire_at"]) - ms(&pair[0]["fire_at"])) / 1000;
        assert_eq!(
            gap - 1,
            pair[1]["missed"].as_i64().unwrap(),
            "occurrences between two firings are missing: {pair:#?}"
        );
        assert_eq!(pair[1]["caught_up"], pair[1]["missed"].as_i64() > Some(0));
    }
    for run in &fired {
        assert!(
            run["message_id"].is_string(),
            "a firing without its message: {run}"
        );
    }
    fired
}

#[tokio::test]
async fn a_schedule_is_checked_when_saved() {
    let (app, acme) = app_with_acme().await;
    tick_template(&app, &acme).await;
    for (body, field) in [
        (
            json!({"name": "s", "cron": "every minute", "template": "tick", "data": {"site": "x"}}),
            "cron",
        ),
        (
            json!({"name": "s", "cron": "* * *", "template": "tick", "data": {"site": "x"}}),
            "cron",
        ),
        (
            json!({"name": "s", "cron": "0 9 * * *", "timezone": "Mars/Olympus", "template": "tick", "data": {"site": "x"}}),
            "timezone",
        ),
        (
            json!({"name": "s", "cron": "0 9 * * *", "template": "nope", "data": {"site": "x"}}),
            "template",
        ),
        (
            json!({"name": "s", "cron": "0 9 * * *", "template": "tick", "data": {}}),
            "data",
        ),
        (
            json!({"name": "s", "cron": "0 9 * * *", "template": "tick", "data": [1]}),
            "data",
        ),
        (
            json!({"name": "s", "cron": "0 9 * * *", "template": "tick", "data": {"site": "x"}, "to": ["not an address"]}),
            "to[0]",
        ),
    ] {
        let (status, answer) = app.post_as_admin(&acme, "schedules", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        let fields = error_fields(&answer);
        assert_eq!(fields, [field], "{body}: {answer}");
    }
    // Both wrong: both named.
    let (status, answer) = app
        .post_as_admin(
            &acme,
            "schedules",
            json!({"name": "s", "cron": "* * *", "timezone": "Mars/Olympus", "template": "tick", "data": {"site": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let fields = error_fields(&answer);
    assert_eq!(fields, ["cron", "timezone"], "{answer}");
    let (_, list) = app.get_as_admin(&acme, "schedules").await;
    assert_eq!(list, json!([]), "nothing was stored");

    // A good one: the next run is the expression's next time in its zone
    // (09:00 in Berlin is 07:00 or 08:00 UTC).
    let schedule = app
        .create_as_admin(
            &acme,
            "schedules",
            json!({"name": "morning", "cron": "0 9 * * *", "timezone": "Europe/Berlin", "template": "tick", "data": {"site": "x"}}),
        )
        .await;
    let next = ms(&schedule["next_run_at"]);
    assert!(
        next > now_ms() && next <= now_ms() + 24 * 3600 * 1000,
        "{schedule}"
    );
    let hour_utc = (next / 3_600_000) % 24;
    assert!(hour_utc == 7 || hour_utc == 8, "{schedule}");
    assert_eq!(next % 3_600_000, 0);
    // The template it uses cannot be deleted; a name is taken once.
    let template_id = schedule["template_id"].as_str().unwrap();
    let (status, answer) = app
        .delete_as_admin(&acme, &format!("templates/{template_id}"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, _) = app
        .post_as_admin(
            &acme,
            "schedules",
            json!({"name": "morning", "cron": "0 9 * * *", "template": "tick", "data": {"site": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Disabled, it has no next run; enabled again, it has one.
    let id = schedule["id"].as_str().unwrap();
    let (_, disabled) = app
        .patch_as_admin(&acme, &format!("schedules/{id}"), json!({"enabled": false}))
        .await;
    assert!(disabled["next_run_at"].is_null(), "{disabled}");
    let (_, enabled) = app
        .patch_as_admin(&acme, &format!("schedules/{id}"), json!({"enabled": true}))
        .await;
    assert_eq!(ms(&enabled["next_run_at"]), next);
    let (_, audit) = app.get_as_admin(&acme, "audit").await;
    let audit = audit.to_string();
    for action in ["schedule.create", "schedule.update", "template.create"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[tokio::test]
async fn a_schedule_fires_once_a_second_and_runs_on_demand() {
    let smtp = TestSmtpServer::start().await;
    let (app, acme) = app_sending_to(&smtp).await;
    tick_template(&app, &acme).await;
    // No recipients: the provider's fallback recipient gets it.
    let schedule = app
        .create_as_admin(
            &acme,
            "schedules",
            json!({"name": "every-second", "cron": "* * * * * *", "template": "tick", "data": {"site": "berlin"}}),
        )
        .await;
    let id = schedule["id"].as_str().unwrap().to_owned();
    let fired = eventually("three firings", || async {
        let runs = runs(&app, &acme, &id).await;
        (runs.len() >= 3).then_some(runs)
    })
    .await;
    let (_, stopped) = app
        .patch_as_admin(&acme, &format!("schedules/{id}"), json!({"enabled": false}))
        .await;
    assert!(stopped["next_run_at"].is_null());
    let all = runs(&app, &acme, &id).await;
    assert!(all.len() >= fired.len());
    let fired = check_once_per_occurrence(&all);
    // Each firing's message goes out, to the fallback recipient.
    let received = smtp.wait_for_messages(fired.len(), DEADLINE).await;
    assert!(received.iter().all(|m| m.rcpt_to == ["ops@acme.example"]));
    assert_eq!(
        received[0].header("Subject").as_deref(),
        Some("Tick from berlin")
    );
    for run in &fired {
        let message = app
            .wait_for_status(&acme, run["message_id"].as_str().unwrap(), "sent")
            .await;
        assert_eq!(message["source"], "schedule");
        assert_eq!(message["template"]["version"], 1);
    }

    // Run now: a manual firing, whatever the schedule's state.
    let run = app
        .create_as_admin(&acme, &format!("schedules/{id}/run"), json!({}))
        .await;
    assert_eq!(run["trigger"], "manual");
    app.wait_for_status(&acme, run["message_id"].as_str().unwrap(), "sent")
        .await;
    let latest = runs(&app, &acme, &id).await;
    assert_eq!(latest[0]["id"], run["id"], "newest first");
    assert_eq!(latest[0]["status"], "sent");
    assert_eq!(latest.len(), all.len() + 1);

    // Another tenant sees none of it.
    let other = app.tenant("other").await;
    let (status, _) = app
        .get_as_admin(&other, &format!("schedules/{id}/runs"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post_as_admin(&other, &format!("schedules/{id}/run"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_fire_each_occurrence_once_and_catch_up_once_after_downtime() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let smtp = TestSmtpServer::start().await;
    let mut nodes = vec![node(&db, "n1", &[]).await, node(&db, "n2", &[]).await];
    let app = nodes[0].app();
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    tick_template(&app, &acme).await;
    let schedule = app
        .create_as_admin(
            &acme,
            "schedules",
            json!({"name": "every-second", "cron": "* * * * * *", "template": "tick",
                   "data": {"site": "pg"}, "to": ["ops@acme.example"]}),
        )
        .await;
    let id = schedule["id"].as_str().unwrap().to_owned();

    // Both nodes run schedulers; several occurrences pass.
    let before = eventually("six firings on two nodes", || async {
        let runs = runs(&app, &acme, &id).await;
        (runs.len() >= 6).then_some(runs)
    })
    .await;
    check_once_per_occurrence(&before);

    // Every node stops; occurrences pass while none runs.
    for node in &mut nodes {
        node.child.kill().await.unwrap();
    }
    let stopped_at = now_ms();
    let down = Duration::from_millis(3_500);
    tokio::time::sleep(down).await; // the downtime itself, not a synchronisation
    assert!(now_ms() >= stopped_at + down.as_millis() as i64);

    // One node comes back: one firing folds in what was missed, then it goes on.
    let node = node(&db, "n1", &[]).await;
    let app = node.app();
    let after = eventually("a catch-up firing and one after it", || async {
        let runs = runs(&app, &acme, &id).await;
        let caught = runs.iter().position(|r| r["caught_up"] == true)?;
        // Newest first: something fired after the catch-up.
        (caught > 0).then_some(runs)
    })
    .await;
    let (_, _) = app
        .patch_as_admin(&acme, &format!("schedules/{id}"), json!({"enabled": false}))
        .await;
    let all = runs(&app, &acme, &id).await;
    assert!(all.len() >= after.len());
    let fired = check_once_per_occurrence(&all);
    let catch_ups: Vec<&Value> = fired.iter().filter(|r| r["caught_up"] == true).collect();
    assert_eq!(catch_ups.len(), 1, "one catch-up firing: {fired:#?}");
    assert!(
        catch_ups[0]["missed"].as_i64().unwrap() >= 2,
        "{:?}",
        catch_ups[0]
    );
    // One message per firing, each delivered once.
    let messages: BTreeSet<&str> = fired
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), fired.len());
    let received = smtp.wait_for_messages(fired.len(), DEADLINE).await;
    assert!(received.len() >= fired.len());
    let client = db.client().await;
    let stored = count(
        &client,
        "SELECT count(*) FROM messages WHERE source = 'schedule'",
    )
    .await;
    assert_eq!(stored as usize, fired.len(), "a message without its firing");
}

//! Security: the egress guard, secrets that never leak (responses, debug logs,
//! the database file), key rotation, the entitlement, the audit log, and
//! personal and service tokens.

use herald_smtp::Egress;
use herald_testsmtp::TestSmtpServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const REFUSED: &str =
    "connect: the destination is not allowed by this installation's egress policy: ";

#[tokio::test]
async fn egress_refuses_this_machine_metadata_and_denied_ranges_naming_the_rule() {
    let app = spawn_app_with(|s| {
        s.egress = Egress::new(vec![], Egress::parse_list("10.0.0.0/8").unwrap())
    })
    .await;
    let loopback =
        "loopback addresses are refused; the operator may allow them with --egress-allow";
    let hosts = [
        ("127.0.0.1", loopback),
        ("::1", loopback),
        ("::ffff:127.0.0.1", loopback),
        ("0.0.0.0", "unspecified addresses"),
        ("169.254.169.254", "link-local addresses are refused"),
        ("fe80::1", "link-local addresses are refused"),
        ("localhost", loopback),
        ("10.1.2.3", "--egress-deny"),
    ];
    for (i, (host, rule)) in hosts.iter().enumerate() {
        let tenant = app.tenant(&format!("t{i}")).await;
        app.configure(
            &tenant,
            json!({"name": "mx", "host": host, "port": 25, "security": "none"}),
            None,
        )
        .await;
        let id = app.submit_to(&tenant, "a@acme.example", "x").await;
        let message = app.wait_for_attempts(&tenant, &id, 1).await;
        let attempt = first_attempt_of(&message);
        assert_eq!(attempt["outcome"], "deferred", "{host}: {attempt}");
        let response = attempt["response"].as_str().unwrap();
        assert!(
            response.starts_with(REFUSED) && response.contains(rule),
            "{host}: {response}"
        );
        assert!(
            attempt["remote_addr"].is_null(),
            "{host}: nothing was connected to"
        );
    }
}

#[tokio::test]
async fn egress_allows_an_allowed_range() {
    let smtp = TestSmtpServer::start().await;
    let app = spawn_app_with(|s| {
        s.egress = Egress::new(Egress::parse_list("127.0.0.1/32").unwrap(), vec![])
    })
    .await;
    let acme = app.tenant_sending_to("acme", smtp.port()).await;
    let id = app.submit_to(&acme, "a@acme.example", "x").await;
    app.wait_for_status(&acme, &id, "sent").await;
}

/// Every response a tenant administrator can read about its configuration and mail.
async fn everything_readable(
    app: &TestApp,
    tenant: &TestTenant,
    server_id: &str,
    message_id: &str,
) -> String {
    let slug = &tenant.slug;
    let mut all = String::new();
    for path in [
        format!("/v1/tenants/{slug}"),
        format!("/v1/tenants/{slug}/smtp-servers"),
        format!("/v1/tenants/{slug}/smtp-servers/{server_id}"),
        format!("/v1/tenants/{slug}/smtp-servers/{server_id}/accounts"),
        format!("/v1/tenants/{slug}/providers"),
        format!("/v1/tenants/{slug}/properties"),
        format!("/v1/tenants/{slug}/messages"),
        format!("/v1/tenants/{slug}/messages/{message_id}"),
        format!("/v1/tenants/{slug}/audit"),
        format!("/v1/tenants/{slug}/tokens"),
    ] {
        let (status, body) = app.get(&path, &tenant.admin).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        all.push_str(&body.to_string());
    }
    all
}

fn read_database(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for file in ["herald.db", "herald.db-wal"] {
        bytes.extend(std::fs::read(dir.join(file)).unwrap_or_default());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_canary_secret_never_leaks_and_survives_key_rotation() {
    const CANARY: &str = "canary-7f3a9d2e-secret";
    let smtp = clear_auth_server(CANARY).await;
    let dir = tempfile::tempdir().unwrap();
    let node = start_process(dir.path(), &[], &[("HERALD_LOG", "debug")]).await;
    let app = node.app();

    // One tenant logs in with the wrong user name: delivery fails with an authentication error.
    let entry = clear_auth_entry(smtp.port(), true);
    let broken = app.tenant("broken").await;
    let broken_server = app
        .configure(
            &broken,
            entry.clone(),
            Some(json!({"username": "nobody@acme.example", "password": CANARY})),
        )
        .await;
    let failing = app.submit_to(&broken, "a@acme.example", "auth").await;
    let message = app.wait_for_attempts(&broken, &failing, 1).await;
    assert_eq!(
        message["recipients"][0]["attempts"][0]["step"], "auth",
        "{message}"
    );
    assert_eq!(message["recipients"][0]["attempts"][0]["code"], 535);

    // Another logs in correctly with the same secret.
    let acme = app
        .configured_tenant("acme", entry, Some(account_with(CANARY)))
        .await;
    let sent = app.submit_to(&acme, "a@acme.example", "auth").await;
    app.wait_for_status(&acme, &sent, "sent").await;

    let responses = everything_readable(
        &app,
        &broken,
        broken_server["id"].as_str().unwrap(),
        &failing,
    )
    .await;
    assert!(
        responses.contains("smtp_account.create"),
        "the audit log was read"
    );
    assert!(
        !responses.contains(CANARY),
        "a response contains the secret"
    );
    assert!(
        !contains(&read_database(dir.path()), CANARY),
        "the database file holds the secret in plaintext"
    );

    // A graceful stop, so the node's whole output has been collected.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &node.child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let mut node = node;
    node.child.wait().await.unwrap();
    let logs = eventually("the node's last log line", || async {
        let logs = node.output.lock().unwrap().clone();
        logs.contains("stopped").then_some(logs)
    })
    .await;
    assert!(logs.contains("DEBUG"), "the node logged at debug level");
    assert!(!logs.contains(CANARY), "the logs contain the secret");

    // Rotation: every secret re-sealed under a new key, and mail still goes out.
    let key_file = dir.path().join("master.key");
    let old_id = key_id(&std::fs::read_to_string(&key_file).unwrap());
    assert_eq!(
        sealed_key_ids(&read_database(dir.path())),
        vec![old_id.clone()]
    );
    let rotate = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(dir.path())
        .env("HERALD_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotate.stdout).into_owned();
    assert!(
        rotate.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    let new_id = key_id(&std::fs::read_to_string(&key_file).unwrap());
    assert_ne!(new_id, old_id);
    assert_eq!(
        said.trim(),
        format!("re-sealed 2 secrets under key {new_id}")
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().lines().count(),
        1,
        "the old key is gone"
    );
    assert_eq!(sealed_key_ids(&read_database(dir.path())), vec![new_id]);

    let node = start_process(dir.path(), &[], &[]).await;
    let app = node.app();
    let again = app
        .submit_to(&acme, "b@acme.example", "after rotation")
        .await;
    app.wait_for_status(&acme, &again, "sent").await;
    assert_eq!(smtp.messages().len(), 2);
}

/// The id of the primary key of a keyring file.
fn key_id(ring: &str) -> String {
    use base64::Engine;
    let first = ring.lines().next().unwrap();
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(first.trim())
        .unwrap()
        .try_into()
        .unwrap();
    herald_core::Sealer::new(&key).key_id().to_owned()
}

/// The distinct key ids named by sealed values in the database file.
fn sealed_key_ids(db: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = db
        .windows(13)
        .filter(|w| w.starts_with(b"hk1.") && w[12] == b'.')
        .filter_map(|w| std::str::from_utf8(&w[4..12]).ok().map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Creates an SMTP server from `entry` for the tenant; returns the path of
/// its accounts under the tenant's.
async fn accounts_of_a_new_server(app: &TestApp, tenant: &TestTenant, entry: Value) -> String {
    let (_, server) = app.post_as_admin(tenant, "smtp-servers", entry).await;
    format!("smtp-servers/{}/accounts", server["id"].as_str().unwrap())
}

#[tokio::test]
async fn the_entitlement_gates_secrets_and_the_audit_log_shows_who_did_what() {
    let (app, acme) = app_with_acme().await;
    let accounts = accounts_of_a_new_server(
        &app,
        &acme,
        json!({"name": "mx", "host": "mail.acme.example", "port": 587, "requires_auth": true}),
    )
    .await;
    let with_password = json!({"username": "u@acme.example", "password": "pw-1"});
    let (status, body) = app
        .post_as_admin(&acme, &accounts, with_password.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["type"],
        "urn:herald:problem:credential-storage-not-granted"
    );
    // An account without a secret (a relay trusting the sender's IP) always works.
    app.create_as_admin(&acme, &accounts, json!({"username": "relay@acme.example"}))
        .await;

    app.grant_credential_storage("acme").await;
    let account = app.create_as_admin(&acme, &accounts, with_password).await;

    let (status, audit) = app.get_as_admin(&acme, "audit").await;
    assert_eq!(status, StatusCode::OK);
    let entries = audit["entries"].as_array().unwrap();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action}: {audit}"))
    };
    let grant = find("entitlements.update");
    assert_eq!(grant["details"]["credential_storage"]["after"], true);
    assert!(
        grant["actor"]
            .as_str()
            .unwrap()
            .starts_with("operator token"),
        "{grant}"
    );
    assert!(
        grant["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{grant}"
    );
    let created = entries
        .iter()
        .find(|e| e["action"] == "smtp_account.create" && e["object_id"] == account["id"])
        .unwrap_or_else(|| panic!("no account creation: {audit}"));
    assert_eq!(created["details"]["secret_set"], true);
    assert!(
        created["actor"]
            .as_str()
            .unwrap()
            .contains("tenant_admin token"),
        "{created}"
    );
    assert!(!audit.to_string().contains("pw-1"));
    // The sender may not read the audit log; the operator may.
    assert_eq!(
        app.get_as_sender(&acme, "audit").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/v1/tenants/acme/audit", OPERATOR).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_are_personal_or_service_and_can_be_listed_and_revoked() {
    let (app, acme) = app_with_acme().await;
    let member = app
        .create_as_admin(
            &acme,
            "persons",
            json!({"name": "Mia", "email": "mia@acme.example"}),
        )
        .await;
    assert_eq!(member["role"], "member");

    // A member's personal token can only send.
    let token = app
        .create_as_admin(
            &acme,
            "tokens",
            json!({"name": "mia", "person_id": member["id"]}),
        )
        .await;
    assert_eq!(token["role"], "sender");
    let (status, body) = app
        .post_as_admin(
            &acme,
            "tokens",
            json!({"name": "mia-admin", "person_id": member["id"], "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Administrator tokens are personal.
    let (status, body) = app
        .post_as_admin(
            &acme,
            "tokens",
            json!({"name": "svc", "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "role");

    let mia = token["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v1/tenants/acme/messages", &mia).await.0,
        StatusCode::OK
    );
    let (_, list) = app.get_as_admin(&acme, "tokens").await;
    let listed: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "mia")
        .collect();
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["last_used_at"].is_string(), "{list}");
    assert!(
        !list.to_string().contains(&mia),
        "a listed token shows itself"
    );

    let (status, _) = app
        .delete_as_admin(&acme, &format!("tokens/{}", token["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/tenants/acme/messages", &mia).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_account_belongs_to_the_creating_person_unless_another_is_named() {
    let (app, acme) = app_with_acme().await;
    let accounts = accounts_of_a_new_server(
        &app,
        &acme,
        json!({"name": "mx", "host": "relay.acme.example", "port": 25}),
    )
    .await;
    let (_, persons) = app.get_as_admin(&acme, "persons").await;
    let admin_person = persons[0]["id"].clone();
    let own = app
        .create_as_admin(&acme, &accounts, json!({"username": "a@acme.example"}))
        .await;
    assert_eq!(own["person_id"], admin_person);

    let mia = app
        .create_as_admin(
            &acme,
            "persons",
            json!({"name": "Mia", "email": "mia@acme.example"}),
        )
        .await;
    let hers = app
        .create_as_admin(
            &acme,
            &accounts,
            json!({"username": "mia@acme.example", "person_id": mia["id"]}),
        )
        .await;
    assert_eq!(hers["person_id"], mia["id"]);

    // The operator acts for no person, so it must name one.
    let (status, body) = app
        .post(
            &tenant_path(&acme, &accounts),
            OPERATOR,
            json!({"username": "x@acme.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "person_id");

    // A person with an account cannot be deleted out from under it.
    let (status, _) = app
        .delete_as_admin(&acme, &format!("persons/{}", mia["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

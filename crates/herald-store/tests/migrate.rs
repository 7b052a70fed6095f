//! `herald_store::migrate`: an embedded installation copied into PostgreSQL reads
//! back the same through the `Store` trait, and goes on working there.
//!
//! PostgreSQL is reached at `HERALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates a database `herald_test_<random>`
//! there (`herald_testkit::TestDatabase`) and drops it afterwards. Without a server
//! the tests are skipped with one line each, except when `HERALD_REQUIRE` names
//! `postgres` or `CI` is set, where they fail.

use herald_store::prelude::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use herald_core::webhook::{EventSet, EventType};
use herald_core::{
    AccountId, DisplayName, EmailAddress, HeaderName, HeaderValue, Mailbox, Mechanism, MessageId,
    NodeRole, PersonId, PersonRole, Port, RecipientStatus, Role, Sealer, Secret, Security,
    SenderPolicy, ServerId, SmtpHost, TenantId, TenantSlug, TokenId, WebhookId,
};
use herald_store::migrate::{CopyReport, copy_sqlite_to_postgres};
use herald_store::{
    AttemptRecord, AuditEntry, Claimed, NewAccount, NewCapture, NewMessage, NewToken, NextState,
    NodeRecord, OAuth2Client, OnBehalf, Outcome, Person, PgStore, ProviderSettings, ServerSettings,
    SqliteStore, Store, StoreError,
};
use herald_store::{
    AttemptResult, NewWebhook, WebhookAttempt, WebhookChange, WebhookClaim, WebhookNext,
    WebhookOutcome, WebhookTestRecord,
};
use herald_testkit::TestDatabase;

mod builders;
use builders::*;
use serde_json::{Value, json};

/// The token hashes looked up by hash in the snapshots.
const LOOKED_UP: &[&str] = &["hash-operator", "hash-acme-sender", "hash-ada"];

/// An attempt at `at` as the migrated installation's node recorded it.
fn attempt_at(outcome: RecipientStatus, at: i64) -> AttemptRecord {
    AttemptRecord {
        at,
        node: "n1".into(),
        server: "mail.acme.example:465".into(),
        duration_ms: 7,
        ..attempt(outcome)
    }
}

/// A person with this role, created at `at`.
fn person_as(name: &str, email: &str, role: PersonRole, at: i64) -> Person {
    Person {
        role,
        created_at: at,
        ..person(name, email)
    }
}

/// A token with this role.
fn token_as(
    tenant: Option<TenantId>,
    person: Option<PersonId>,
    role: Role,
    hash: &str,
) -> NewToken {
    NewToken {
        role,
        ..token(tenant, person, hash)
    }
}

fn outcome(claimed: &[Claimed], to: &str, next: NextState, attempt: AttemptRecord) -> Outcome {
    let c = claimed
        .iter()
        .find(|c| c.address.as_ref() == to)
        .unwrap_or_else(|| panic!("{to} was not claimed"));
    Outcome {
        recipient: c.recipient,
        lease_token: c.lease_token,
        next,
        attempt,
    }
}

fn audit(tenant: Option<TenantId>, at: i64, action: &str, details: Value) -> AuditEntry {
    AuditEntry {
        tenant_id: tenant,
        at,
        actor: "ada (token ada)".into(),
        token_id: Some(TokenId::new()),
        remote_addr: Some("192.0.2.1".into()),
        action: action.into(),
        object_id: Some(format!("object-{at}")),
        details,
    }
}

/// What the test keeps of the installation it builds.
struct Installation {
    acme: TenantId,
    relay: ServerId,
    mailer: AccountId,
    sealer: Sealer,
}

/// A webhook of the tenant for every event, with a sealed secret.
fn webhook(tenant: TenantId, url: &str, at: i64) -> NewWebhook {
    NewWebhook {
        id: WebhookId::new(),
        tenant_id: tenant,
        url: url.into(),
        events: EventSet::all(),
        enabled: true,
        sealed_secret: format!("sealed-for-{url}"),
        created_at: at,
    }
}

fn webhook_result(at: i64, next: WebhookNext) -> AttemptResult {
    AttemptResult {
        at,
        response_status: (next == WebhookNext::Delivered).then_some(204),
        error: (next != WebhookNext::Delivered).then(|| "connection refused".into()),
        duration_ms: 40,
        next,
    }
}

/// Webhook events in every state: `hook` (of `acme`) delivers its first event and has
/// the rest waiting, a test event among them, a rotated secret, and then
/// subscribes only to deferrals (so that the outcomes recorded after the
/// copy write nothing); `flaky` gave up and was disabled for failing.
async fn attempt_webhook_events(s: &dyn Store, acme: TenantId, hook: WebhookId, flaky: WebhookId) {
    let claimed = s
        .claim_webhook_events(WebhookClaim {
            node: "node-a".into(),
            incarnation: "first".into(),
            now: 11_000,
            lease_until: 71_000,
            limit: 100,
            exclude: vec![],
        })
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for webhook in [hook, flaky] {
        let mut events = claimed.iter().filter(|e| e.webhook == webhook);
        let first = events.next().expect("the webhook has events");
        let next = if webhook == hook {
            WebhookNext::Delivered
        } else {
            WebhookNext::GiveUp
        };
        attempts.push(WebhookAttempt {
            seq: first.seq,
            lease_token: first.lease_token,
            webhook,
            outcome: WebhookOutcome::Attempted(webhook_result(11_100, next)),
        });
        attempts.extend(events.map(|e| WebhookAttempt {
            seq: e.seq,
            lease_token: e.lease_token,
            webhook,
            outcome: WebhookOutcome::GivenBack { due_at: 30_000 },
        }));
    }
    let disabled = s.finish_webhook_events(attempts, i64::MAX).await.unwrap();
    assert_eq!(disabled.len(), 1);
    s.record_webhook_test(WebhookTestRecord {
        tenant_id: acme,
        webhook: hook,
        event_id: "evt_test_before".into(),
        event_type: "webhook.test".into(),
        payload: "{\"type\":\"webhook.test\"}".into(),
        result: webhook_result(11_500, WebhookNext::Retry { at: 12_000 }),
    })
    .await
    .unwrap();
    s.rotate_webhook_secret(acme, hook, "sealed-rotated".into(), 90_000, 11_600)
        .await
        .unwrap();
    s.update_webhook(
        acme,
        hook,
        WebhookChange {
            events: Some(EventSet::of([EventType::RecipientDeferred]).unwrap()),
            ..WebhookChange::default()
        },
        11_700,
    )
    .await
    .unwrap();
}

/// Fills a store with a realistic installation: two tenants with persons,
/// tokens, servers, accounts (one with a sealed secret) and providers; mail in
/// every state with attempts, a diagnosis and a capture; webhooks and their
/// events (see [`attempt_webhook_events`]); audit entries; a node.
async fn fill(s: &dyn Store) -> Installation {
    let acme = s
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme Corp".into())
        .await
        .unwrap()
        .id;
    let other = s
        .create_tenant(TenantSlug::parse("other").unwrap(), "Other".into())
        .await
        .unwrap()
        .id;
    s.set_entitlements(acme, true).await.unwrap();

    let ada = s
        .create_person(
            acme,
            person_as("Ada", "ada@acme.example", PersonRole::TenantAdmin, 1_000),
        )
        .await
        .unwrap()
        .id;
    let bob = s
        .create_person(
            acme,
            person_as("Bob", "bob@acme.example", PersonRole::Member, 1_000),
        )
        .await
        .unwrap()
        .id;
    s.create_person(
        other,
        person_as("Cy", "cy@other.example", PersonRole::Member, 900),
    )
    .await
    .unwrap();

    // Console sign-in: an operator's and a person's password, and a session (not copied).
    s.set_operator_password(
        EmailAddress::parse("root@herald.example").unwrap(),
        "$argon2id$operator".into(),
    )
    .await
    .unwrap();
    s.set_person_password(acme, ada, "$argon2id$ada".into())
        .await
        .unwrap();
    s.create_session(herald_store::NewSession {
        hash: "session-hash".into(),
        id: TokenId::new(),
        subject: herald_store::SessionSubject::Person(ada),
        created_at: 1_000,
        expires_at: i64::MAX,
    })
    .await
    .unwrap();

    s.create_token(token_as(None, None, Role::Operator, "hash-operator"))
        .await
        .unwrap();
    s.create_token(token_as(Some(acme), None, Role::Sender, "hash-acme-sender"))
        .await
        .unwrap();
    s.create_token(token_as(
        Some(acme),
        Some(ada),
        Role::TenantAdmin,
        "hash-ada",
    ))
    .await
    .unwrap();
    // Never used: its last use stays empty.
    s.create_token(token_as(Some(other), None, Role::Sender, "hash-other"))
        .await
        .unwrap();
    // A bootstrap token replaced by another: the replaced one stays revoked.
    for hash in ["hash-bootstrap-old", "hash-bootstrap"] {
        s.set_bootstrap_token(token_as(None, None, Role::Operator, hash))
            .await
            .unwrap();
    }
    for hash in LOOKED_UP {
        assert!(s.token_by_hash(hash).await.unwrap().is_some());
    }

    // A gateway with an instance that counted outcomes, which the relay names.
    let gateway = s
        .create_gateway(herald_store::NewGateway {
            id: herald_core::GatewayId::new(),
            tenant_id: acme,
            name: "office".into(),
            token_hash: "hash-gateway".into(),
            created_at: 1_500,
        })
        .await
        .unwrap()
        .id;
    s.gateway_seen(herald_store::GatewaySeen {
        gateway_id: gateway,
        name: "gw-1".into(),
        version: "1.0.0".into(),
        address: "192.0.2.7".into(),
        at: 1_600,
        incarnation: "first".into(),
    })
    .await
    .unwrap();
    s.count_gateway_outcomes(gateway, "gw-1", 3, 1, 1_700)
        .await
        .unwrap();

    let relay = s
        .create_server(
            acme,
            ServerSettings {
                port: Port::new(465).unwrap(),
                security: Security::Tls,
                // Not the default, so the copy shows it carried the value.
                allow_plaintext_auth: true,
                tls_verify: false,
                tls_ca_pem: Some(
                    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
                ),
                tls_server_name: Some(SmtpHost::parse("relay.acme.example").unwrap()),
                helo_name: Some(SmtpHost::parse("herald.acme.example").unwrap()),
                max_connections: 2,
                max_messages_per_connection: 50,
                idle_timeout_secs: 10,
                rate_limit_per_minute: Some(600),
                command_timeout_secs: Some(20),
                gateway_id: Some(gateway),
                ..server_settings("relay", true)
            },
        )
        .await
        .unwrap()
        .id;
    let open = s
        .create_server(acme, server_settings("open", false))
        .await
        .unwrap()
        .id;
    let other_server = s
        .create_server(other, server_settings("relay", false))
        .await
        .unwrap()
        .id;

    let sealer = Sealer::new(&Sealer::generate_key());
    let mailer = AccountId::new();
    s.create_account(
        acme,
        NewAccount {
            id: mailer,
            server_id: relay,
            username: "mailer".into(),
            mechanism: Mechanism::Plain,
            sealed_secret: Some(sealer.seal(&Secret::new("hunter2"), &mailer.to_string())),
            oauth2: None,
            person_id: None,
        },
    )
    .await
    .unwrap();
    let oauth = AccountId::new();
    s.create_account(
        acme,
        NewAccount {
            id: oauth,
            server_id: relay,
            username: "bob@acme.example".into(),
            mechanism: Mechanism::Xoauth2,
            sealed_secret: Some(sealer.seal(&Secret::new("client-secret"), &oauth.to_string())),
            oauth2: Some(OAuth2Client {
                token_url: "https://login.acme.example/token".into(),
                client_id: "herald".into(),
                scope: Some("https://outlook.office.com/.default".into()),
            }),
            person_id: Some(bob),
        },
    )
    .await
    .unwrap();

    let main = s
        .create_provider(
            acme,
            ProviderSettings {
                from_name: Some(DisplayName::parse("Acme Alerts").unwrap()),
                reply_to: Some(Mailbox::parse("Acme Support <support@acme.example>").unwrap()),
                fallback_recipient: Some(address("ops@acme.example")),
                sender_policy: SenderPolicy::OnBehalf,
                ..provider_settings("main", relay, Some(mailer))
            },
        )
        .await
        .unwrap()
        .id;
    let backup = s
        .create_provider(acme, provider_settings("backup", open, None))
        .await
        .unwrap()
        .id;
    let other_provider = s
        .create_provider(other, provider_settings("default", other_server, None))
        .await
        .unwrap()
        .id;
    // Two changes, so that the tenant remembers the previous provider too.
    s.set_active_provider(acme, Some(backup), 5_000)
        .await
        .unwrap();
    s.set_active_provider(acme, Some(main), 6_000)
        .await
        .unwrap();
    s.set_active_provider(other, Some(other_provider), i64::MAX / 2)
        .await
        .unwrap();
    s.refresh_properties(other, 7_000).await.unwrap();

    let detailed = NewMessage {
        idempotency_key: Some("order-17".into()),
        html: Some("<p>body ✓</p>".into()),
        reply_to: Some(Mailbox::parse("\"Replies, Acme\" <reply@acme.example>").unwrap()),
        headers: vec![
            (
                HeaderName::parse("X-Tag").unwrap(),
                HeaderValue::parse("one").unwrap(),
            ),
            (
                HeaderName::parse("X-Another").unwrap(),
                HeaderValue::parse("two ✓").unwrap(),
            ),
        ],
        cc: vec![address("c@acme.example").into()],
        bcc: vec![address("d@acme.example")],
        used_fallback: true,
        on_behalf_of: Some(OnBehalf {
            name: "Ada".into(),
            email: address("ada@acme.example"),
        }),
        test_provider: Some(main),
        priority: 1,
        max_queued: None,
        max_pending_tests: None,
        ..message(acme, &["a@acme.example", "b@acme.example"], None, 1_000)
    };
    s.submit(detailed).await.unwrap();
    let captured = message(acme, &["x@acme.example", "y@acme.example"], None, 1_100);
    let captured_id = captured.id;
    s.submit(captured).await.unwrap();
    s.submit(message(other, &["z@other.example"], None, 1_200))
        .await
        .unwrap();

    // Webhooks whose events the outcomes below write.
    let hook = s
        .create_webhook(webhook(acme, "https://hooks.acme.example/herald", 1_900))
        .await
        .unwrap()
        .id;
    let flaky = s
        .create_webhook(webhook(other, "https://hooks.other.example/x", 1_950))
        .await
        .unwrap()
        .id;

    let claimed = s.claim(claim("n1", 2_000, 60_000)).await.unwrap();
    assert_eq!(claimed.len(), 7);
    let diagnosis = json!({"steps": [{"step": "ehlo", "reply": "250 hello", "ms": 3}], "ok": true});
    let outcomes = vec![
        outcome(
            &claimed,
            "a@acme.example",
            NextState::Sent,
            AttemptRecord {
                code: Some(250),
                enhanced_code: Some("2.0.0".into()),
                remote_addr: Some("192.0.2.7:465".into()),
                tls_version: Some("TLSv1.3".into()),
                tls_cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
                provider_id: Some(main),
                config_version: Some(1_234),
                sender_policy: Some("on_behalf".into()),
                diagnosis: Some(diagnosis),
                ..attempt_at(RecipientStatus::Sent, 2_100)
            },
        ),
        outcome(
            &claimed,
            "b@acme.example",
            NextState::Deferred { until: 9_000 },
            AttemptRecord {
                code: Some(451),
                // A remote server's reply may hold any byte.
                response: "451 try\0later".into(),
                ..attempt_at(RecipientStatus::Deferred, 2_200)
            },
        ),
        outcome(
            &claimed,
            "c@acme.example",
            NextState::Failed,
            AttemptRecord {
                step: Some("rcpt".into()),
                code: Some(550),
                enhanced_code: Some("5.1.1".into()),
                response: "550 5.1.1 no such user".into(),
                ..attempt_at(RecipientStatus::Failed, 2_300)
            },
        ),
        outcome(
            &claimed,
            "x@acme.example",
            NextState::Sent,
            AttemptRecord {
                server: "capture".into(),
                ..attempt_at(RecipientStatus::Sent, 2_400)
            },
        ),
        outcome(
            &claimed,
            "z@other.example",
            NextState::Deferred { until: 3_000 },
            attempt_at(RecipientStatus::Deferred, 2_500),
        ),
    ];
    let capture = NewCapture {
        message: captured_id,
        tenant: acme,
        envelope_from: "alerts@acme.example".into(),
        recipients: vec!["x@acme.example".into()],
        content: b"Subject: subject\r\n\r\nbody \xe2\x9c\x93\r\n".to_vec(),
        at: 2_400,
    };
    assert_eq!(
        s.complete(outcomes, vec![capture]).await.unwrap().accepted,
        vec![true; 5]
    );
    // y is given back without an attempt; d stays leased until 62 000.
    let y = claimed
        .iter()
        .find(|c| c.address.as_ref() == "y@acme.example")
        .unwrap();
    s.release(vec![(y.recipient, y.lease_token)]).await.unwrap();

    // b and z are due again; b is sent on its second attempt, z deferred once more.
    let again = s.claim(claim("n1", 10_000, 60_000)).await.unwrap();
    assert_eq!(again.len(), 2);
    s.complete(
        vec![
            outcome(
                &again,
                "b@acme.example",
                NextState::Sent,
                attempt_at(RecipientStatus::Sent, 10_100),
            ),
            outcome(
                &again,
                "z@other.example",
                NextState::Deferred { until: 20_000 },
                attempt_at(RecipientStatus::Deferred, 10_200),
            ),
        ],
        vec![],
    )
    .await
    .unwrap();
    s.submit(message(acme, &["q@acme.example"], None, 1_300))
        .await
        .unwrap();
    attempt_webhook_events(s, acme, hook, flaky).await;

    // SMTP ingress: a credential, a connector, a message received over SMTP
    // (raw bytes, not all UTF-8) and an API message with an attachment.
    let credential = s
        .create_smtp_credential(herald_store::NewSmtpCredential {
            id: herald_core::SmtpCredentialId::new(),
            tenant_id: acme,
            name: "grafana".into(),
            username: "acme.grafana".into(),
            password_hash: "hash-smtp".into(),
            rate_limit_per_minute: Some(600),
        })
        .await
        .unwrap();
    let (found, _) = s.smtp_login("acme.grafana").await.unwrap().unwrap();
    s.smtp_credential_used(found.id, 1_450).await.unwrap();
    s.create_smtp_connector(
        other,
        "office".into(),
        vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/48".parse().unwrap(),
        ],
        None,
    )
    .await
    .unwrap();
    s.submit(NewMessage {
        origin: herald_store::Origin::Smtp(herald_store::SmtpOrigin {
            credential_id: Some(credential.id),
            connector_id: None,
            client_addr: "192.0.2.9".into(),
        }),
        raw: Some(b"Received: from x\r\nSubject: raw\r\n\r\n\xff\xfe bytes\r\n".to_vec()),
        ..message(acme, &["r@acme.example"], None, 1_400)
    })
    .await
    .unwrap();
    s.submit(NewMessage {
        attachments: vec![herald_store::Attachment {
            filename: "report ✓.pdf".into(),
            content_type: "application/pdf".into(),
            content_id: None,
            content: vec![0, 1, 2, 255],
        }],
        ..message(other, &["s@other.example"], None, 1_500)
    })
    .await
    .unwrap();

    s.audit(audit(
        Some(acme),
        1_000,
        "smtp_server.create",
        json!({"name": "relay"}),
    ))
    .await
    .unwrap();
    s.audit(audit(
        Some(acme),
        1_000,
        "provider.activate",
        json!({"provider": main.to_string(), "n": 1.5}),
    ))
    .await
    .unwrap();
    s.audit(audit(Some(other), 1_100, "person.create", json!({})))
        .await
        .unwrap();
    s.audit(AuditEntry {
        token_id: None,
        remote_addr: None,
        object_id: None,
        ..audit(None, 1_200, "tenant.create", json!({"slug": "other"}))
    })
    .await
    .unwrap();

    // A template at its second version, a schedule of it, and its firings:
    // one scheduled with a message to send later, one manual without.
    let report = s
        .create_template(new_template(acme, "report", 1_500))
        .await
        .unwrap();
    let report = s
        .update_template(acme, report.id, template_fields("report", "Weekly"), 1_600)
        .await
        .unwrap();
    let weekly = s
        .create_schedule(new_schedule(acme, "weekly", report.id, Some(2_000), 1_700))
        .await
        .unwrap();
    s.fire_schedule(
        firing(acme, weekly.id, 2_000, Some(9_000)),
        Some(NewMessage {
            // Far ahead, so that the message reads as scheduled whenever the test runs.
            send_at: Some(4_102_444_800_000),
            template: Some(herald_store::TemplateUse {
                id: report.id,
                version: report.version,
            }),
            gateway_id: None,
            ..message(acme, &["weekly@acme.example"], None, 2_005)
        }),
    )
    .await
    .unwrap()
    .expect("the occurrence is recorded");
    s.fire_schedule(
        herald_store::Firing {
            error: Some("the template did not render".into()),
            ..manual_firing(acme, weekly.id, 2_100)
        },
        None,
    )
    .await
    .unwrap()
    .expect("the manual run is recorded");

    s.heartbeat(NodeRecord {
        name: "embedded".into(),
        roles: vec![NodeRole::Api, NodeRole::Worker],
        version: "0.1.0".into(),
        started_at: 500,
        heartbeat_at: 3_000,
        incarnation: Some("n1-first".into()),
    })
    .await
    .unwrap();

    Installation {
        acme,
        relay,
        mailer,
        sealer,
    }
}

/// Everything the trait can read of an installation, as JSON; sealed secrets
/// included, which serialisation otherwise leaves out.
async fn snapshot(s: &dyn Store) -> Value {
    let tenants = s.list_tenants().await.unwrap();
    let mut out = json!({
        "tenants": tenants,
        "operator_token_exists": s.operator_token_exists().await.unwrap(),
        "next_due": s.next_due(&[]).await.unwrap(),
        "next_webhook_due": s.next_webhook_due().await.unwrap(),
        "nodes": s.list_nodes().await.unwrap(),
        "next_schedule_due": s.next_schedule_due().await.unwrap(),
        "due_schedules": s.due_schedules(i64::MAX, 100).await.unwrap(),
    });
    let mut by_hash = Vec::new();
    for hash in LOOKED_UP {
        by_hash.push(
            s.token_by_hash(hash)
                .await
                .unwrap()
                .expect("the token exists"),
        );
    }
    out["tokens_by_hash"] = json!(by_hash);
    out["gateway_by_token"] = json!(s.gateway_by_token("hash-gateway").await.unwrap());
    let operator_tokens: Vec<Value> = s
        .list_operator_tokens()
        .await
        .unwrap()
        .iter()
        .map(|t| json!([t, t.bootstrap]))
        .collect();
    out["operator_tokens"] = json!(operator_tokens);
    let mut credentials = Vec::new();
    for email in ["root@herald.example", "ada@acme.example"] {
        for c in s.credentials(email).await.unwrap() {
            credentials.push(json!([
                c.principal.operator_email(),
                c.principal.person(),
                c.password_hash
            ]));
        }
    }
    out["credentials"] = json!(credentials);
    for tenant in &tenants {
        let t = tenant.id;
        let mut servers = Vec::new();
        for server in s.list_servers(t).await.unwrap() {
            let mut accounts = Vec::new();
            for account in s.list_accounts(t, server.id).await.unwrap() {
                let one = s.account(t, server.id, account.id).await.unwrap();
                accounts.push(json!({
                    "listed": account,
                    "sealed_secret": account.sealed_secret,
                    "one": one,
                    "one_sealed_secret": one.sealed_secret,
                }));
            }
            servers.push(json!({
                "listed": server,
                "one": s.server(t, server.id).await.unwrap(),
                "accounts": accounts,
            }));
        }
        let mut providers = Vec::new();
        for provider in s.list_providers(t).await.unwrap() {
            providers.push(json!({
                "listed": provider,
                "one": s.provider(t, provider.id).await.unwrap(),
            }));
        }
        let active = s.active_provider(t).await.unwrap().map(|config| {
            json!({
                "provider": config.provider,
                "server": config.server,
                "account": config.account.as_ref(),
                "sealed_secret": config.account.and_then(|a| a.sealed_secret),
            })
        });
        let summaries = s.list_messages(t, 100).await.unwrap();
        let ids: Vec<MessageId> = summaries.iter().map(|m| m.id).collect();
        let mut views = Vec::new();
        for id in &ids {
            views.push(s.message(t, *id).await.unwrap());
        }
        // MessageContent is not serialisable; its debug form shows every field.
        let contents: Vec<String> = s
            .message_contents(&ids)
            .await
            .unwrap()
            .iter()
            .map(|c| format!("{c:?}"))
            .collect();
        let mut webhooks = Vec::new();
        for w in s.list_webhooks(t).await.unwrap() {
            webhooks.push(json!({
                "listed": w,
                "one": s.webhook(t, w.id).await.unwrap(),
                "deliveries": s.webhook_deliveries(t, w.id, 100).await.unwrap(),
            }));
        }
        let mut templates = Vec::new();
        for template in s.list_templates(t).await.unwrap() {
            templates.push(json!({
                "listed": template,
                "one": s.template(t, template.id).await.unwrap(),
                "named": s.template_named(t, &template.name).await.unwrap(),
            }));
        }
        let mut schedules = Vec::new();
        for schedule in s.list_schedules(t).await.unwrap() {
            schedules.push(json!({
                "listed": schedule,
                "one": s.schedule(t, schedule.id).await.unwrap(),
                "runs": s.schedule_runs(t, schedule.id, 100).await.unwrap(),
            }));
        }
        let mut persons = Vec::new();
        for p in s.list_persons(t).await.unwrap() {
            persons.push(json!({"listed": p, "one": s.person(t, p.id).await.unwrap()}));
        }
        out[tenant.slug.as_ref()] = json!({
            "tenant": s.tenant_by_slug(tenant.slug.as_ref()).await.unwrap(),
            "persons": persons,
            "tokens": s.list_tokens(t).await.unwrap(),
            "servers": servers,
            "providers": providers,
            "active_provider": active,
            "messages": summaries,
            "views": views,
            "contents": contents,
            "captured": s.list_captured(t, 100).await.unwrap(),
            "audit": s.list_audit(t, 100).await.unwrap(),
            "webhooks": webhooks,
            "templates": templates,
            "schedules": schedules,
            "gateways": s.list_gateways(t).await.unwrap(),
        });
    }
    out
}

/// PostgreSQL cannot store NUL in text and keeps a replacement character; the
/// SQLite snapshot is compared with that in mind.
fn without_nul(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace('\0', "\u{fffd}")),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{fffd}"), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Compares two snapshots part by part, so that a failure names the part.
fn assert_same(sqlite: Value, postgres: &Value) {
    let sqlite = without_nul(sqlite);
    let (Value::Object(expected), Value::Object(found)) = (&sqlite, postgres) else {
        panic!("snapshots are objects");
    };
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        found.keys().collect::<Vec<_>>()
    );
    for (key, value) in expected {
        assert_eq!(value, &found[key], "{key} differs");
    }
}

/// Table name to column names, of every table but each database's own
/// bookkeeping (`sqlite_sequence`, `access_changes`, `herald_migrations`,
/// `tenant_queue_shards`).
type Columns = BTreeMap<String, BTreeSet<String>>;

fn sqlite_columns(path: &Path) -> Columns {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
             AND m.name <> 'access_changes'",
        )
        .unwrap();
    let mut columns = Columns::new();
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (table, column) = row.unwrap();
        columns.entry(table).or_default().insert(column);
    }
    columns
}

async fn postgres_columns(client: &tokio_postgres::Client) -> Columns {
    let mut columns = Columns::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() \
             AND table_name NOT IN ('herald_migrations', 'tenant_queue_shards')",
            &[],
        )
        .await
        .unwrap()
    {
        columns
            .entry(row.get::<_, String>(0))
            .or_default()
            .insert(row.get(1));
    }
    columns
}

fn sqlite_count(path: &Path, table: &str) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The highest id of a table whose ids the database hands out.
async fn postgres_max_id(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT max(id) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn sqlite_max_id(path: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn sorted(mut claimed: Vec<Claimed>) -> Vec<String> {
    claimed.sort_by_key(|c| c.recipient);
    claimed
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {} token={} until={} attempt={}",
                c.recipient,
                c.message,
                c.tenant,
                c.address.as_ref(),
                c.lease_token,
                c.lease_until,
                c.attempt
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_installation_moves_to_postgres_whole() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let sqlite = SqliteStore::open(&path).unwrap();
    let installation = fill(&sqlite).await;
    let before = snapshot(&sqlite).await;

    let report: CopyReport = copy_sqlite_to_postgres(&path, database.url())
        .await
        .unwrap();

    // Every table but nodes, with every row.
    let tables = sqlite_columns(&path);
    for table in tables.keys() {
        if table == "nodes" || table == "sessions" {
            assert_eq!(report.rows(table), None, "{table} are per-run state");
        } else {
            let rows = sqlite_count(&path, table);
            assert!(rows > 0, "the installation leaves {table} empty");
            assert_eq!(report.rows(table), Some(rows), "rows of {table}");
        }
    }
    assert_eq!(report.tables.len(), tables.len() - 2);
    assert_eq!(report.nul_replaced, 1, "one reply held a NUL");

    // Both schemas have the same tables with the same columns.
    let admin = database.client().await;
    assert_eq!(tables, postgres_columns(&admin).await);

    // Each tenant's count of queued recipients arrives with it, and agrees
    // with its recipients.
    let sqlite_queued: BTreeMap<String, i64> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT t.id, (SELECT count(*) FROM recipients r WHERE r.tenant_id = t.id \
                 AND r.status IN ('queued', 'deferred', 'sending')) FROM tenants t",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(
        sqlite_queued.values().any(|&n| n > 0),
        "some mail is queued"
    );
    let postgres_queued: BTreeMap<String, i64> = admin
        .query("SELECT id, queued_recipients FROM tenants", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(postgres_queued, sqlite_queued);

    let postgres = PgStore::connect(database.url()).await.unwrap();
    let after = snapshot(&postgres).await;
    assert!(
        after["nodes"].as_array().unwrap().is_empty(),
        "nodes are not copied"
    );
    let mut before_without_nodes = before.clone();
    before_without_nodes["nodes"] = json!([]);
    assert_same(before_without_nodes, &after);

    // The sealed secret arrived as it was, and opens with the same key.
    let account = postgres
        .account(installation.acme, installation.relay, installation.mailer)
        .await
        .unwrap();
    let sealed = account.sealed_secret.expect("the secret was copied");
    let opened = installation
        .sealer
        .open(&sealed, &installation.mailer.to_string())
        .unwrap();
    assert_eq!(opened.expose(), "hunter2");

    // The lease d still holds names the process that took it: the same
    // process gives nothing back, a later one would.
    assert_eq!(
        postgres
            .release_earlier_incarnations("n1", "n1-first", 70_000)
            .await
            .unwrap(),
        0,
        "the lease's incarnation was copied"
    );

    // Claims go on where SQLite left off: the queued, deferred and expired
    // recipients are due, the sent and failed ones are not, and lease tokens
    // and attempt counts continue.
    let later = claim("n1", i64::MAX / 4, 60_000);
    let on_postgres = postgres.claim(later.clone()).await.unwrap();
    let mut addresses: Vec<&str> = on_postgres.iter().map(|c| c.address.as_ref()).collect();
    addresses.sort();
    assert_eq!(
        addresses,
        vec![
            "d@acme.example",
            "q@acme.example",
            "r@acme.example",
            "s@other.example",
            // The schedule's message, due at its send_at (before this claim's time).
            "weekly@acme.example",
            "y@acme.example",
            "z@other.example"
        ]
    );
    let on_sqlite = sqlite.claim(later).await.unwrap();
    assert_eq!(sorted(on_postgres.clone()), sorted(on_sqlite.clone()));
    assert!(
        postgres
            .claim(claim("n1", i64::MAX / 4, 60_000))
            .await
            .unwrap()
            .is_empty(),
        "nothing is claimed twice"
    );

    // New attempts, captures and audit entries get ids after the copied ones.
    let finish = |claimed: &[Claimed]| {
        let mut outcomes = Vec::new();
        for to in ["d@acme.example", "q@acme.example", "z@other.example"] {
            outcomes.push(outcome(
                claimed,
                to,
                NextState::Sent,
                attempt_at(RecipientStatus::Sent, 20_000),
            ));
        }
        outcomes.push(outcome(
            claimed,
            "y@acme.example",
            NextState::Failed,
            attempt_at(RecipientStatus::Failed, 20_000),
        ));
        outcomes
    };
    let y = on_postgres
        .iter()
        .find(|c| c.address.as_ref() == "y@acme.example")
        .unwrap();
    let capture = NewCapture {
        message: y.message,
        tenant: installation.acme,
        envelope_from: "alerts@acme.example".into(),
        recipients: vec!["y@acme.example".into()],
        content: b"Subject: later\r\n\r\nbody\r\n".to_vec(),
        at: 20_000,
    };
    let entry = audit(Some(installation.acme), 20_000, "tenant.refresh", json!({}));
    for (store, claimed) in [
        (&postgres as &dyn Store, &on_postgres),
        (&sqlite as &dyn Store, &on_sqlite),
    ] {
        assert_eq!(
            store
                .complete(finish(claimed), vec![capture.clone()])
                .await
                .unwrap()
                .accepted,
            vec![true; 4]
        );
        store.audit(entry.clone()).await.unwrap();
        let hook = store.list_webhooks(installation.acme).await.unwrap()[0].id;
        store
            .record_webhook_test(WebhookTestRecord {
                tenant_id: installation.acme,
                webhook: hook,
                event_id: "evt_test_after".into(),
                event_type: "webhook.test".into(),
                payload: "{}".into(),
                result: webhook_result(20_000, WebhookNext::Delivered),
            })
            .await
            .unwrap();
    }
    let mut sqlite_now = snapshot(&sqlite).await;
    sqlite_now["nodes"] = json!([]);
    assert_same(sqlite_now, &snapshot(&postgres).await);
    for table in ["attempts", "captured", "audit"] {
        assert_eq!(
            postgres_max_id(&admin, table).await,
            sqlite_max_id(&path, table),
            "ids of {table} continue at max(id) + 1"
        );
    }
    let outbox_seq: i64 = admin
        .query_one("SELECT max(seq) FROM webhook_outbox", &[])
        .await
        .unwrap()
        .get(0);
    let sqlite_outbox_seq: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT max(seq) FROM webhook_outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(outbox_seq, sqlite_outbox_seq, "events' seq continues");

    // The waiting events are claimed alike, with the webhooks' sealed secrets.
    let webhook_claim = WebhookClaim {
        node: "node-a".into(),
        incarnation: "first".into(),
        now: 40_000,
        lease_until: 100_000,
        limit: 100,
        exclude: vec![],
    };
    let on_postgres = postgres
        .claim_webhook_events(webhook_claim.clone())
        .await
        .unwrap();
    assert!(!on_postgres.is_empty());
    assert_eq!(
        on_postgres[0].previous_sealed_secret.as_deref(),
        Some("sealed-for-https://hooks.acme.example/herald")
    );
    assert_eq!(
        format!("{on_postgres:?}"),
        format!(
            "{:?}",
            sqlite.claim_webhook_events(webhook_claim).await.unwrap()
        )
    );

    // A second copy into the same target is refused and changes nothing.
    let refused = copy_sqlite_to_postgres(&path, database.url()).await;
    match refused {
        Err(StoreError::Conflict(message)) => {
            assert!(message.contains("already holds Herald data"), "{message}");
            assert!(message.contains("2 in tenants"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(postgres.list_tenants().await.unwrap().len(), 2);

    // The replaced bootstrap token arrived revoked and stays so. Asked for
    // last, because going back to it revokes the bootstrap token in force.
    assert_eq!(
        postgres
            .set_bootstrap_token(token_as(None, None, Role::Operator, "hash-bootstrap-old"))
            .await
            .unwrap(),
        herald_store::BootstrapOutcome::Revoked { replaced: 1 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_leaves_nothing_behind() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // A mistyped path is refused, and no empty database is left there.
    let missing = dir.path().join("missing.db");
    let error = copy_sqlite_to_postgres(&missing, database.url())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no database file"), "{error}");
    assert!(!missing.exists());

    // Another program's database gets no Herald tables added to it.
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    let error = copy_sqlite_to_postgres(&foreign, database.url())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not a Herald database"),
        "{error}"
    );
    assert_eq!(sqlite_columns(&foreign).len(), 1);

    // A value that cannot be converted, in the last table that holds rows,
    // fails the whole copy: the tables copied before it are rolled back.
    let path = dir.path().join("herald.db");
    let sqlite = SqliteStore::open(&path).unwrap();
    let acme = sqlite
        .create_tenant(TenantSlug::parse("acme").unwrap(), "Acme".into())
        .await
        .unwrap()
        .id;
    sqlite
        .submit(message(acme, &["a@acme.example"], None, 1_000))
        .await
        .unwrap();
    let corrupt = rusqlite::Connection::open(&path).unwrap();
    corrupt
        .execute("UPDATE messages SET headers = '[[\"X-Tag\"'", [])
        .unwrap();
    let error = copy_sqlite_to_postgres(&path, database.url())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt(m) if m.contains("messages.headers")),
        "{error}"
    );
    let postgres = PgStore::connect(database.url()).await.unwrap();
    assert!(postgres.list_tenants().await.unwrap().is_empty());

    // Once the value is repaired, the same target takes the copy.
    corrupt
        .execute("UPDATE messages SET headers = '[]'", [])
        .unwrap();
    let report = copy_sqlite_to_postgres(&path, database.url())
        .await
        .unwrap();
    assert_eq!(report.rows("tenants"), Some(1));
    assert_eq!(report.rows("recipients"), Some(1));
    assert_eq!(report.total(), 3);
    assert_eq!(postgres.list_tenants().await.unwrap()[0].id, acme);
}

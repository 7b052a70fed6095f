//! `herald operator token create|list|revoke`: the operator's API tokens,
//! managed on the node's database like `herald operator set-password`.

use anyhow::Context;
use herald_core::timestamp::{now_ms, rfc3339};
use herald_core::{Role, TokenId, token};
use herald_store::{AuditEntry, NewToken, Store, StoreError};
use serde_json::json;

use crate::config::{OperatorTokenCommand, StoreArgs};

/// Who the audit log names for changes made here.
const ACTOR: &str = "herald operator token (command line)";

/// Runs one `herald operator token` command.
pub async fn run(command: OperatorTokenCommand) -> anyhow::Result<()> {
    match command {
        OperatorTokenCommand::Create(args) => {
            let name =
                herald_api::service::name(&args.name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            let store = open(args.store).await?;
            let secret = token::generate();
            let record = store
                .create_token(NewToken {
                    id: TokenId::new(),
                    tenant_id: None,
                    name,
                    role: Role::Operator,
                    person_id: None,
                    hash: token::hash(&secret),
                })
                .await
                .context("storing the token")?;
            audit(
                &*store,
                "operator_token.create",
                record.id,
                json!({"name": record.name}),
            )
            .await;
            eprintln!(
                "operator token {} ({:?}), shown once, stored only as a hash:",
                record.id, record.name
            );
            println!("{secret}");
            Ok(())
        }
        OperatorTokenCommand::List(args) => {
            let store = open(*args).await?;
            let tokens = store
                .list_operator_tokens()
                .await
                .context("reading the tokens")?;
            println!(
                "{:<36}  {:<20}  {:<20}  {:<9}  name",
                "id", "created", "last used", "bootstrap"
            );
            for t in tokens {
                let last_used = t.last_used_at.map_or_else(|| "never".to_owned(), seconds);
                println!(
                    "{:<36}  {:<20}  {:<20}  {:<9}  {}",
                    t.id,
                    seconds(t.created_at),
                    last_used,
                    if t.bootstrap { "yes" } else { "no" },
                    t.name.escape_debug()
                );
            }
            Ok(())
        }
        OperatorTokenCommand::Revoke(args) => {
            let id: TokenId = args
                .id
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{:?} is not a token id", args.id))?;
            let store = open(args.store).await?;
            let known = store
                .list_operator_tokens()
                .await
                .context("reading the tokens")?;
            let name = known.iter().find(|t| t.id == id).map(|t| t.name.clone());
            match store.revoke_operator_token(id).await {
                Err(StoreError::NotFound) => {
                    anyhow::bail!("no operator token in force has the id {id}")
                }
                other => other.context("revoking the token")?,
            }
            audit(&*store, "operator_token.revoke", id, json!({"name": name})).await;
            println!("operator token {id} is revoked");
            Ok(())
        }
    }
}

/// Opens the node's store as `herald serve` would with the same settings.
async fn open(args: StoreArgs) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let settings = args.resolve().context("invalid configuration")?;
    if let crate::config::Database::Sqlite(path) = &settings.database {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    settings.database.open().await
}

/// A time to the second, which is all a listing needs.
fn seconds(ms: i64) -> String {
    let mut at = rfc3339(ms);
    if let Some(dot) = at.find('.') {
        at.replace_range(dot.., "Z");
    }
    at
}

/// Records a change in the audit log; a failure is reported but does not undo it.
async fn audit(store: &dyn Store, action: &str, id: TokenId, details: serde_json::Value) {
    let entry = AuditEntry {
        tenant_id: None,
        at: now_ms(),
        actor: ACTOR.to_owned(),
        token_id: None,
        remote_addr: None,
        action: action.to_owned(),
        object_id: Some(id.to_string()),
        details,
    };
    if let Err(error) = store.audit(entry).await {
        eprintln!("the change is made, but could not be recorded in the audit log: {error}");
    }
}

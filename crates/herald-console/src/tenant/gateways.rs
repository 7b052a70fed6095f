//! A tenant's gateways (processes inside its own network that deliver its
//! mail from there): the list with each one's instances, creating one with
//! its token shown once on the answer to the form, a new token after a
//! confirmation page, and deleting one after a confirmation page.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Form, Router};
use herald_api::gate::TenantAdmin;
use herald_api::service::WithToken;
use herald_api::{AppState, service};
use herald_core::GatewayId;
use herald_core::timestamp::now_ms;
use herald_store::Tenant;
use minijinja::context;

use super::{Confirmation, Id, store};
use crate::forms::{GatewayForm, Problems};
use crate::gate::TenantPage;
use crate::notice::{Done, Notice, Saved};
use crate::pages::{PageResult, base, submit_then};
use crate::render::page;
use crate::session::Signed;

/// The server a gateway's command names when the request named no host.
const EXAMPLE_SERVER: &str = "https://herald.example";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/gateways", get(gateways).post(create_gateway))
        .route(
            "/t/{tenant}/gateways/{id}/token",
            get(confirm_new_token).post(new_token),
        )
        .route(
            "/t/{tenant}/gateways/{id}/delete",
            get(confirm_delete).post(delete_gateway),
        )
}

async fn gateways_page(
    state: &AppState,
    me: &Signed,
    tenant: &Tenant,
    form: GatewayForm,
    problems: Problems,
    notice: Option<Notice>,
) -> PageResult {
    let now = now_ms();
    let gateways: Vec<_> = store(state.store.list_gateways(tenant.id).await)?
        .into_iter()
        .map(|g| service::gateway_view(state, g, now))
        .collect();
    Ok(page(
        "gateways.html",
        context! { gateways, form, problems, notice, ..base(me, tenant, "gateways") },
    ))
}

async fn gateways(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    done: Done,
) -> PageResult {
    let notice = done.notice(&[(
        Saved::GatewayDeleted,
        "Gateway deleted: its token no longer works, and its instances are forgotten.",
    )]);
    let form = GatewayForm::default();
    gateways_page(&state, &me, &tenant, form, Problems::default(), notice).await
}

/// The address a gateway reaches Herald by: the host the browser reached
/// this console by, over HTTPS. Only the characters of a host name, an IP
/// address and a port are kept, since the page shows it in a shell command.
fn server_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
    match host {
        Some(host) => format!("https://{host}"),
        None => EXAMPLE_SERVER.to_owned(),
    }
}

/// `word` as one word of a POSIX shell's command line: as it is when it
/// holds nothing the shell reads, else between single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:/+=".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The answer to a create or a new token: the only page that shows the
/// token, with the command that starts the gateway's first instance.
fn token_page(
    me: &Signed,
    tenant: &Tenant,
    headers: &HeaderMap,
    created: bool,
    shown: WithToken,
) -> PageResult {
    let server = server_url(headers);
    let command = format!(
        "herald gateway --server {server} --token {} --name {}",
        shown.token,
        shell_word(&format!("{}-1", shown.record.name))
    );
    Ok(page(
        "gateway_token.html",
        context! {
            created, server, command,
            gateway => shown.record,
            token => shown.token,
            ..base(me, tenant, "gateways")
        },
    ))
}

async fn create_gateway(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    headers: HeaderMap,
    Form(form): Form<GatewayForm>,
) -> PageResult {
    let again =
        |problems: Problems| gateways_page(&state, &me, &tenant, form.clone(), problems, None);
    let (signed, loaded, headers) = (&me, &tenant, &headers);
    let outcome = service::create_gateway(&state, &me.caller, &tenant, form.body());
    submit_then(
        outcome,
        |created| async move { token_page(signed, loaded, headers, true, created) },
        again,
    )
    .await
}

/// The page that asks before a gateway gets a new token.
const NEW_TOKEN: Confirmation = Confirmation {
    section: "gateways",
    template: "gateway_new_token.html",
    object: "gateway",
};

/// The page that asks before a gateway is deleted.
const DELETE: Confirmation = Confirmation {
    section: "gateways",
    template: "gateway_delete.html",
    object: "gateway",
};

async fn confirm_new_token(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<GatewayId>,
) -> PageResult {
    let gateway = store(state.store.gateway(tenant.id, id).await)?;
    let gateway = service::gateway_view(&state, gateway, now_ms());
    NEW_TOKEN.page(&me, &tenant, gateway, None)
}

async fn new_token(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<GatewayId>,
    headers: HeaderMap,
) -> PageResult {
    let replaced = service::replace_gateway_token(&state, &me.caller, &tenant, id).await?;
    token_page(&me, &tenant, &headers, false, replaced)
}

async fn confirm_delete(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<GatewayId>,
) -> PageResult {
    let gateway = store(state.store.gateway(tenant.id, id).await)?;
    DELETE.page(&me, &tenant, gateway, None)
}

async fn delete_gateway(
    State(state): State<AppState>,
    TenantPage { me, tenant, .. }: TenantPage<TenantAdmin>,
    Id(id): Id<GatewayId>,
) -> PageResult {
    let gateway = store(state.store.gateway(tenant.id, id).await)?;
    let deleted = service::delete_gateway(&state, &me.caller, &tenant, id);
    // A server still pinned to it: the confirmation page again, saying which.
    DELETE
        .delete(&me, &tenant, gateway, deleted, Saved::GatewayDeleted)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_server_is_the_host_the_browser_reached_or_an_example() {
        let with = |host: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(host));
            server_url(&headers)
        };
        assert_eq!(with("mail.acme.example"), "https://mail.acme.example");
        assert_eq!(with("127.0.0.1:8080"), "https://127.0.0.1:8080");
        assert_eq!(with("[2001:db8::1]:443"), "https://[2001:db8::1]:443");
        // Nothing a shell would read as more than a host.
        assert_eq!(with("evil.example;rm"), EXAMPLE_SERVER);
        assert_eq!(server_url(&HeaderMap::new()), EXAMPLE_SERVER);
    }

    #[test]
    fn a_name_the_shell_would_split_is_quoted() {
        assert_eq!(shell_word("office-1"), "office-1");
        assert_eq!(shell_word("Berlin office-1"), "'Berlin office-1'");
        assert_eq!(shell_word("O'Hare-1"), "'O'\\''Hare-1'");
    }
}

//! The console's sagas, webhooks and audit pages, and their actions: each action is
//! `ops::actions`' (the CLI's too), recorded in the audit with the console user and address.

use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Change, CsrfForm, internal, message};
use super::pages::render;
use super::state::Console;
use crate::ops::actions::{self, Actor};
use crate::store::{self, console::Session};

/// Rows a list shows at most.
const LIMIT: i64 = 200;

fn actor(session: &Session, peer: SocketAddr) -> Actor {
    Actor {
        name: session.name.clone(),
        source: "console",
        address: Some(peer.ip().to_string()),
    }
}

/// 303 back to `to`, or 404 when the action found nothing.
fn after(done: Result<bool, sqlx::Error>, to: &str, what: &str) -> Response {
    match done {
        Ok(true) => (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response(),
        Ok(false) => message(StatusCode::NOT_FOUND, "Nothing done", what),
        Err(e) => internal(e),
    }
}

#[derive(Template)]
#[template(path = "console/sagas.html")]
struct Sagas<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    sagas: Vec<store::sagas::Stuck>,
}

pub async fn sagas(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    let stuck_after = console.settings.saga.stuck_after_seconds as f64;
    match store::sagas::troubled(&console.pool, stuck_after, LIMIT).await {
        Ok(sagas) => render(Sagas {
            user: &session.name,
            role: &session.role,
            csrf_token: &session.csrf_token,
            sagas,
        }),
        Err(e) => internal(e),
    }
}

pub async fn retry_saga(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(client_id): Path<i32>,
    Change(session, _): Change<CsrfForm>,
) -> Response {
    let done = actions::retry_saga(&console.pool, &actor(&session, peer), client_id).await;
    after(
        done,
        "/sagas",
        "This client has no saga to retry: none, completed, or a worker holds it now.",
    )
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct Webhooks<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    endpoints: Vec<store::webhooks::Endpoint>,
    deliveries: Vec<store::webhooks::Delivery>,
}

pub async fn webhooks(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    let (endpoints, deliveries) = tokio::join!(
        store::webhooks::endpoints(&console.pool),
        store::webhooks::deliveries(&console.pool, false, None, LIMIT),
    );
    match (endpoints, deliveries) {
        (Ok(endpoints), Ok(deliveries)) => render(Webhooks {
            user: &session.name,
            role: &session.role,
            csrf_token: &session.csrf_token,
            endpoints,
            deliveries,
        }),
        (Err(e), _) | (_, Err(e)) => internal(e),
    }
}

/// `POST /webhooks/{endpoint_id}/enable` and `.../disable`.
pub async fn set_webhook_state(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((endpoint_id, state)): Path<(i64, String)>,
    Change(session, _): Change<CsrfForm>,
) -> Response {
    let enabled = match state.as_str() {
        "enable" => true,
        "disable" => false,
        _ => {
            return message(
                StatusCode::NOT_FOUND,
                "Not found",
                "Enable or disable only.",
            );
        }
    };
    let actor = actor(&session, peer);
    let done = actions::set_webhook_enabled(&console.pool, &actor, endpoint_id, enabled).await;
    after(done, "/webhooks", "No such webhook endpoint.")
}

pub async fn redeliver(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(delivery_id): Path<i64>,
    Change(session, _): Change<CsrfForm>,
) -> Response {
    let actor = actor(&session, peer);
    let done = actions::redeliver_webhook(&console.pool, &actor, delivery_id).await;
    after(done, "/webhooks", "No such webhook delivery.")
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct Audit<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    entries: Vec<store::audit::Entry>,
}

pub async fn audit(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    match store::audit::recent(&console.pool, LIMIT).await {
        Ok(entries) => render(Audit {
            user: &session.name,
            role: &session.role,
            csrf_token: &session.csrf_token,
            entries,
        }),
        Err(e) => internal(e),
    }
}

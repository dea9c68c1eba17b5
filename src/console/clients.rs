//! `/clients?q=`: the client search of `client.list` (alias, names, email, code, external id);
//! `/clients/{client_id}`: the client and its timeline.

use std::collections::HashMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::{internal, message};
use super::pages::render;
use super::state::Console;
use crate::domain::Client;
use crate::domain::paging::Sort;
use crate::store::{
    self,
    clients::{ClientFilter, ClientKey, PageStart},
    console::Session,
};

#[derive(Template)]
#[template(path = "console/clients.html")]
struct Clients<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    q: String,
    clients: Vec<Client>,
}

pub async fn clients(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let q = query
        .get("q")
        .map(|q| q.trim().to_string())
        .unwrap_or_default();
    let filter = ClientFilter {
        q: (!q.is_empty()).then(|| q.clone()),
        include_deleted: true,
        ..ClientFilter::default()
    };
    let mut conn = match console.pool.acquire().await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    match store::clients::list_clients(
        &mut conn,
        &filter,
        Sort::default(),
        PageStart::Offset(0),
        50,
    )
    .await
    {
        Ok(clients) => render(Clients {
            user: &session.name,
            role: &session.role,
            csrf_token: &session.csrf_token,
            q,
            clients,
        }),
        Err(e) => internal(e),
    }
}

#[derive(Template)]
#[template(path = "console/client.html")]
struct ClientPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    client: Client,
    profile: String,
    timeline: Vec<store::timeline::Entry>,
}

pub async fn client(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(client_id): Path<i32>,
) -> Response {
    let mut conn = match console.pool.acquire().await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let found = store::clients::find_client(&mut conn, &ClientKey::Id(client_id), true).await;
    drop(conn);
    let client = match found {
        Ok(Some(c)) => c,
        Ok(None) => return message(StatusCode::NOT_FOUND, "Not found", "No such client."),
        Err(e) => return internal(e),
    };
    let timeline = match store::timeline::of_client(&console.pool, client_id, 500).await {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    render(ClientPage {
        user: &session.name,
        role: &session.role,
        csrf_token: &session.csrf_token,
        profile: serde_json::to_string_pretty(&client).unwrap_or_default(),
        client,
        timeline,
    })
}

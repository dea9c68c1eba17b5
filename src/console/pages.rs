//! The console's pages and actions. Every action calls what the CLI calls (`ops::dlq`), so a
//! replay from the browser is the replay of `onboard dlq replay`, audited the same way
//! (`dlq_audit`, actor `console:<user>`, the address in its note).

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::auth::{Change, CsrfForm, internal, message};
use super::figures;
use super::state::Console;
use crate::ops::dlq::{DeadLetter, Dlq, Group, MoveRequest, Selector, edit_problems};
use crate::store;
use crate::store::console::Session;

/// Dead letters read for a page at most.
const PAGE_LIMIT: usize = 500;

pub(super) fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    refresh_seconds: u64,
    commands_queue: String,
    dead_letters: String,
    depths_age: String,
    commands_per_second: String,
    refusals_per_minute: String,
    dead_letters_per_minute: String,
    outbox_pending: String,
    outbox_oldest_seconds: String,
    stuck_sagas: String,
    failing_endpoints: String,
    disabled_endpoints: String,
    chart: figures::Chart,
    chart_minutes: usize,
}

/// A figure, or why it is missing.
fn figure<T: std::fmt::Display, E: std::fmt::Display>(read: Result<T, E>) -> String {
    match read {
        Ok(v) => v.to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "a console figure could not be read");
            "unavailable".into()
        }
    }
}

/// The overview: the sampler's last hour (no broker call per page) and three cheap counts.
pub async fn overview(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
) -> Response {
    let stuck_after = console.settings.saga.stuck_after_seconds as f64;
    let (backlog, stuck, endpoints) = tokio::join!(
        store::outbox::backlog(&console.pool),
        store::sagas::count_stuck(&console.pool, stuck_after),
        store::webhooks::count_failing(&console.pool),
    );
    let (pending, oldest) = match backlog {
        Ok((p, o)) => (p.to_string(), format!("{o:.0}")),
        Err(e) => (figure::<i64, _>(Err(e)), "unavailable".into()),
    };
    let (failing, disabled) = match endpoints {
        Ok((f, d)) => (f.to_string(), d.to_string()),
        Err(e) => (figure::<i64, _>(Err(e)), "unavailable".into()),
    };
    let snap = console.figures.snapshot();
    let not_yet = || "not sampled yet".to_string();
    let (commands_queue, dead_letters, depths_age) = match snap.depths {
        Some((d, at)) => (
            d.commands.to_string(),
            d.dead.to_string(),
            format!("{} s ago", (chrono::Utc::now() - at).num_seconds().max(0)),
        ),
        None => (not_yet(), not_yet(), not_yet()),
    };
    let last = snap.last();
    render(Overview {
        user: &session.name,
        role: &session.role,
        csrf_token: &session.csrf_token,
        // Not faster than every 5 s, whatever the sampling: a page that reloads under the
        // operator's hand is hard to read.
        refresh_seconds: console.settings.console.sample_seconds.max(5),
        commands_queue,
        dead_letters,
        depths_age,
        commands_per_second: last
            .map_or_else(not_yet, |m| format!("{:.1}", m.commands() as f64 / 60.0)),
        refusals_per_minute: last.map_or_else(not_yet, |m| m.refusals().to_string()),
        dead_letters_per_minute: last
            .and_then(|m| m.dead_lettered)
            .map_or_else(not_yet, |n| n.to_string()),
        outbox_pending: pending,
        outbox_oldest_seconds: oldest,
        stuck_sagas: figure(stuck),
        failing_endpoints: failing,
        disabled_endpoints: disabled,
        chart: figures::Chart::of(&snap.minutes),
        chart_minutes: figures::MINUTES,
    })
}

#[derive(Template)]
#[template(path = "console/dead_letters.html")]
struct DeadLetters<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    notice: Option<String>,
    depth: u32,
    filtered: bool,
    filters: Filters,
    groups: Vec<Group>,
    letters: Vec<DeadLetter>,
}

/// The dead-letters page's filter form, as given.
struct Filters {
    group: String,
    command_type: String,
    reason: String,
    older_than: String,
    newer_than: String,
    error: Option<String>,
}

pub async fn dead_letters(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // The CLI's filters (`dlq list --group --type --reason --older-than --newer-than`).
    let given = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut error = None;
    let mut age = |field: &str, value: Option<String>| {
        let v = value?;
        crate::ops::dlq::parse_age(&v)
            .map_err(|e| error = Some(format!("{field} \"{v}\": {e}")))
            .ok()
    };
    let older_than = age("older than", given("older_than"));
    let newer_than = age("newer than", given("newer_than"));
    let filters = Filters {
        group: given("group").unwrap_or_default(),
        command_type: given("type").unwrap_or_default(),
        reason: given("reason").unwrap_or_default(),
        older_than: given("older_than").unwrap_or_default(),
        newer_than: given("newer_than").unwrap_or_default(),
        error,
    };
    let selector = Selector {
        group: given("group"),
        command_type: given("type"),
        reason: given("reason"),
        older_than,
        newer_than,
        ..Selector::default()
    };
    let listing = async {
        let dlq = Dlq::connect(&console.settings).await?;
        let listing = dlq.list(&selector, PAGE_LIMIT).await;
        dlq.close().await;
        listing
    }
    .await;
    let listing = match listing {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    render(DeadLetters {
        user: &session.name,
        role: &session.role,
        csrf_token: &session.csrf_token,
        notice: query.get("done").cloned(),
        depth: listing.depth,
        filtered: !selector.is_empty(),
        filters,
        groups: crate::ops::dlq::group(&listing.letters),
        letters: listing.letters,
    })
}

#[derive(Template)]
#[template(path = "console/dead_letter.html")]
struct DeadLetterPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf_token: &'a str,
    message_id: &'a str,
    letters: Vec<Shown>,
    refused: Option<Refused>,
}

/// One dead letter as shown: masked, pretty JSON.
struct Shown {
    letter: DeadLetter,
    headers: String,
    body: String,
    history: String,
}

pub async fn dead_letter(
    State(console): State<Console>,
    Extension(session): Extension<Session>,
    Path(message_id): Path<String>,
) -> Response {
    let found = letters_of(&console, &message_id).await;
    let letters = match found {
        Ok(l) if l.is_empty() => {
            return message(
                StatusCode::NOT_FOUND,
                "Not found",
                "No dead letter has this message id (it may have been replayed or purged).",
            );
        }
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    show_letters(&session, &message_id, letters, None)
}

/// A body an operator edited that was not sent, and why, shown again for correction.
struct Refused {
    body: String,
    errors: String,
}

/// The dead letter page; with `refused`, 400 and the edited body kept in the form.
fn show_letters(
    session: &Session,
    message_id: &str,
    letters: Vec<DeadLetter>,
    refused: Option<Refused>,
) -> Response {
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
    let letters = letters
        .into_iter()
        .map(|letter| Shown {
            headers: pretty(letter.masked_headers()),
            body: pretty(letter.masked_body()),
            history: pretty(serde_json::Value::Array(letter.history())),
            letter,
        })
        .collect();
    let status = match refused {
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::OK,
    };
    let page = render(DeadLetterPage {
        user: &session.name,
        role: &session.role,
        csrf_token: &session.csrf_token,
        message_id,
        letters,
        refused,
    });
    (status, page).into_response()
}

/// The dead letters of one message id.
async fn letters_of(console: &Console, message_id: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let dlq = Dlq::connect(&console.settings).await?;
    let found = dlq.show(message_id, PAGE_LIMIT).await;
    dlq.close().await;
    found
}

/// The request an action makes: this one message, audited under the console user.
fn one(message_id: &str, session: &Session, peer: SocketAddr) -> MoveRequest {
    let mut req = MoveRequest::new(Selector {
        ids: vec![message_id.to_string()],
        ..Default::default()
    });
    req.actor = Some(format!("console:{}", session.name));
    req.note = Some(format!("from the console, address {}", peer.ip()));
    req
}

/// Back to the list, saying what was done.
fn done(text: &str) -> Response {
    let query: String = url_encode(text);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/dead-letters?done={query}"))],
    )
        .into_response()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".into(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub async fn replay(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(message_id): Path<String>,
    Change(session, _): Change<CsrfForm>,
) -> Response {
    move_and_say(&console, one(&message_id, &session, peer), "replayed").await
}

/// Replays every dead letter of one group (its fingerprint).
pub async fn replay_group(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(fingerprint): Path<String>,
    Change(session, _): Change<CsrfForm>,
) -> Response {
    let mut req = one("", &session, peer);
    req.selector = Selector {
        group: Some(fingerprint),
        ..Default::default()
    };
    move_and_say(&console, req, "replayed").await
}

/// Runs a replay and goes back to the list saying how it went.
async fn move_and_say(console: &Console, req: MoveRequest, verb: &str) -> Response {
    let report = async {
        let dlq = Dlq::connect(&console.settings).await?;
        let report = dlq.replay(&console.pool, &req).await;
        dlq.close().await;
        report
    }
    .await;
    match report {
        Ok(r) => done(&format!(
            "{verb} {} of {} ({} failed)",
            r.done.len(),
            r.selected.len(),
            r.failed.len()
        )),
        Err(e) => internal(e),
    }
}

#[derive(serde::Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    body: String,
}

impl super::auth::Csrf for EditForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }
}

/// Edit-and-retry: the new body is checked against the command's schema first (its errors
/// shown, nothing sent), then replayed under the dead letter's own message id; the audit keeps
/// the original.
pub async fn edit(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(message_id): Path<String>,
    Change(session, form): Change<EditForm>,
) -> Response {
    let found = letters_of(&console, &message_id).await;
    let letters = match found {
        Ok(l) if !l.is_empty() => l,
        Ok(_) => {
            return message(
                StatusCode::NOT_FOUND,
                "Not found",
                "No dead letter has this message id (it may have been replayed or purged).",
            );
        }
        Err(e) => return internal(e),
    };
    let problems = edit_problems(&letters[0].command_type, &form.body);
    if !problems.is_empty() {
        let refused = Refused {
            errors: problems.join("; "),
            body: form.body,
        };
        return show_letters(&session, &message_id, letters, Some(refused));
    }
    let req = one(&message_id, &session, peer).edited(form.body);
    move_and_say(&console, req, "edited and replayed").await
}

pub async fn purge(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(message_id): Path<String>,
    Change(session, _): Change<CsrfForm>,
) -> Response {
    let req = one(&message_id, &session, peer);
    let report = async {
        let dlq = Dlq::connect(&console.settings).await?;
        // The operator confirmed by pressing the button on this one message.
        let report = dlq.purge(&console.pool, &req, &mut |_| true).await;
        dlq.close().await;
        report
    }
    .await;
    match report {
        Ok(r) => done(&format!("purged {} of {}", r.done.len(), r.selected.len())),
        Err(e) => internal(e),
    }
}

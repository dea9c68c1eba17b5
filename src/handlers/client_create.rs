//! `client.create`, saga step 1 (persist), for a whole batch at once: required fields, PSP by
//! country, email uniqueness, gap-free client codes, client and admin user rows, the sagas,
//! and `client.created`, or one of the contract's refusals with nothing changed.
//!
//! The batch costs a handful of statements however many commands it holds: one read of the
//! PSPs, the month's code counter locked once, one check of the emails, and one multi-row
//! insert each for clients (with the counter's bump), admin users and sagas. Codes are taken
//! under the counter's lock and only for the commands that will insert, so they stay
//! gap-free; if an email was taken meanwhile by a transaction that does not hold the lock,
//! the insert skips it and the batch is tried again at once ([`HandlerError::Contended`]),
//! when the check sees it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::json;

use super::{Cx, Decision, HandlerError, Outcome};
use crate::domain::saga::Step;
use crate::domain::{NewClient, PspCandidate, choose_psp, client_code, created_body};
use crate::email::{AccessMode, FirstAccess, StoredAccess};
use crate::messages::event::derived_id;
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::saga::SagaJob;
use crate::store::{self, clients::ClientRow, sagas::NewSaga};

pub const CREATED: &str = "client.created";
pub const FAILED: &str = "client.creation_failed";

pub fn decide<'x>(
    cx: &'x mut Cx<'_>,
    cmds: &'x [&'x Command],
) -> BoxFuture<'x, Result<Vec<Decision>, HandlerError>> {
    Box::pin(decide_batch(cx, cmds))
}

/// A command that passed every check so far, on its way to becoming a client.
struct Accepted<'a> {
    index: usize,
    cmd: &'a Command,
    new: NewClient,
    psp: PspCandidate,
}

async fn decide_batch(cx: &mut Cx<'_>, cmds: &[&Command]) -> Result<Vec<Decision>, HandlerError> {
    let mut decisions: Vec<Option<Decision>> = cmds.iter().map(|_| None).collect();
    let refuse = |decisions: &mut Vec<Option<Decision>>, i: usize, refusal: Refusal| {
        decisions[i] = Some(Decision::Done(Outcome::refused(cmds[i], FAILED, refusal)));
    };

    // The five fields, their widths, and the PSP of the country.
    let mut parsed = Vec::with_capacity(cmds.len());
    for (i, cmd) in cmds.iter().enumerate() {
        match NewClient::parse(&cmd.body) {
            Ok(new) => parsed.push((i, new)),
            Err(refusal) => refuse(&mut decisions, i, refusal),
        }
    }
    let countries: Vec<&str> = {
        let set: HashSet<&str> = parsed
            .iter()
            .map(|(_, n)| n.country_code.as_str())
            .collect();
        set.into_iter().collect()
    };
    let mut psps: HashMap<String, Vec<PspCandidate>> = HashMap::new();
    if !countries.is_empty() {
        for (country, psp) in store::clients::psp_candidates(cx.conn, &countries).await? {
            psps.entry(country).or_default().push(psp);
        }
    }
    let mut accepted = Vec::with_capacity(parsed.len());
    for (i, new) in parsed {
        let candidates = psps
            .get(&new.country_code)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match choose_psp(candidates) {
            Ok(psp) => accepted.push(Accepted {
                index: i,
                cmd: cmds[i],
                psp: psp.clone(),
                new,
            }),
            Err(refusal) => refuse(&mut decisions, i, refusal),
        }
    }

    if !accepted.is_empty() {
        // From here to commit this batch is the only one inserting clients this month.
        let (year_month, last) = store::clients::lock_code_counter(cx.conn).await?;
        let emails: Vec<&str> = accepted.iter().map(|a| a.new.email.as_str()).collect();
        let taken = store::clients::emails_taken(cx.conn, &emails).await?;
        let mut seen = HashSet::new();
        let mut insert = Vec::with_capacity(accepted.len());
        for (a, (folded, is_taken)) in accepted.into_iter().zip(taken) {
            // Taken before, or by an earlier command of this very batch.
            if is_taken || !seen.insert(folded) {
                refuse(&mut decisions, a.index, Refusal::email_in_use());
            } else {
                insert.push(a);
            }
        }
        if !insert.is_empty() {
            persist(cx, &insert, &year_month, last, &mut decisions).await?;
        }
    }
    Ok(decisions
        .into_iter()
        .map(|d| d.expect("every command of the batch is decided"))
        .collect())
}

/// Inserts the clients, their admins and their sagas, and decides their outcomes.
async fn persist(
    cx: &mut Cx<'_>,
    insert: &[Accepted<'_>],
    year_month: &str,
    last: i32,
    decisions: &mut [Option<Decision>],
) -> Result<(), HandlerError> {
    let rows: Vec<ClientRow> = insert
        .iter()
        .zip(last + 1..)
        .map(|(a, seq)| ClientRow {
            new: &a.new,
            code: client_code(year_month, seq),
            psp_id: a.psp.psp_id,
        })
        .collect();
    let new_last = last + rows.len() as i32;
    let clients = store::clients::insert_clients(cx.conn, &rows, year_month, new_last).await?;
    if clients.len() != rows.len() {
        return Err(HandlerError::Contended(format!(
            "{} of {} emails were taken while the batch ran",
            rows.len() - clients.len(),
            rows.len()
        )));
    }
    let by_code: HashMap<&str, &crate::domain::Client> = clients
        .iter()
        .map(|c| (c.client_code.as_str(), c))
        .collect();
    let clients: Vec<&crate::domain::Client> =
        rows.iter().map(|r| by_code[r.code.as_str()]).collect();

    // The welcome email's activation link is made now, so its hash goes in with the admin
    // row and the email step has nothing to write before sending. The token itself stays in
    // this worker's memory, for the email step. (A temporary password costs an argon2 hash:
    // the email step makes it, off the async threads.)
    let access: Vec<Option<(FirstAccess, StoredAccess)>> = match cx.settings.email.access {
        AccessMode::ActivationLink => clients
            .iter()
            .map(|_| FirstAccess::issue(&cx.settings.email, Utc::now()).ok())
            .collect(),
        AccessMode::TemporaryPassword => clients.iter().map(|_| None).collect(),
    };
    let admin_rows: Vec<_> = clients
        .iter()
        .zip(&access)
        .map(|(c, a)| (*c, a.as_ref().map(|(_, stored)| stored)))
        .collect();
    let admins = store::clients::insert_admin_users(cx.conn, &admin_rows).await?;
    if admins.len() != clients.len() {
        return Err(HandlerError::Contended(format!(
            "{} of {} admin emails were taken while the batch ran",
            clients.len() - admins.len(),
            clients.len()
        )));
    }
    let by_client: HashMap<i32, &crate::domain::AdminUser> =
        admins.iter().map(|u| (u.client_id, u)).collect();

    // What happens next is recorded, not assumed: Xendit customers for Xendit clients, then
    // the welcome email, then completion. The sagas are leased to this worker, which carries
    // them on as soon as the batch commits.
    let lease = cx.settings.saga.lease_seconds as f64;
    let mut sagas = Vec::with_capacity(insert.len());
    for (a, client) in insert.iter().zip(&clients) {
        let admin = by_client[&client.client_id];
        let meta = &a.cmd.meta;
        sagas.push(NewSaga {
            saga_id: derived_id(&meta.message_id, "saga"),
            client_id: client.client_id,
            admin_user_id: admin.user_id,
            message_id: &meta.message_id,
            correlation_id: &meta.correlation_id,
            reply_to: meta.reply_to.as_deref(),
            traceparent: meta.traceparent.as_deref(),
            first_step: Step::first(a.psp.is_xendit()),
            data: json!({ "psp": { "psp_id": a.psp.psp_id, "psp_name": a.psp.psp_name } }),
        });
    }
    store::sagas::insert_many(cx.conn, &sagas, cx.worker_id, lease).await?;
    let leased_until = Instant::now() + Duration::from_secs_f64(lease);

    for (((a, client), saga), access) in insert.iter().zip(&clients).zip(sagas).zip(access) {
        let admin = by_client[&client.client_id];
        let mut data = created_body(client, admin);
        data["psp"] = json!({ "psp_id": a.psp.psp_id, "psp_name": a.psp.psp_name });
        data["saga"] = json!({ "saga_id": saga.saga_id, "next_step": saga.first_step.as_str() });
        // The reply to `reply_to` waits for completion, when the whole REST body is known.
        let mut outcome =
            Outcome::succeeded(vec![OutgoingMessage::event(&a.cmd.meta, CREATED, data)]);
        outcome.sagas.push(SagaJob {
            saga_id: saga.saga_id,
            step: saga.first_step,
            attempts: 0,
            origin: a.cmd.meta.clone(),
            client_id: client.client_id,
            admin_user_id: admin.user_id,
            snapshot: Some(((*client).clone(), admin.clone())),
            data: saga.data,
            access: access.map(|(first, _)| first),
            leased_until,
        });
        decisions[a.index] = Some(Decision::Done(outcome));
    }
    Ok(())
}

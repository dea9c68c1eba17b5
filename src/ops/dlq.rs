//! `onboard dlq list|groups|show|replay|purge`: the dead-letter queue for operators.
//!
//! # Reading without taking
//!
//! Every command starts from a *snapshot*: the tool consumes the dead-letter queue with manual
//! acks and a prefetch of `--limit`, acks nothing, and when it is done closes the channel, so
//! the broker puts every message back (a classic queue requeues in place; a quorum queue, with
//! `broker.replicated_queues`, may put them at its end).
//! Compared with `basic.get` + `nack(requeue)` per message this is one stream instead of a
//! round trip per message, the prefetch is a hard cap on what the broker lends us, and a
//! killed tool simply returns everything (the broker requeues a dead connection's unacked
//! messages). The dead-letter queue has no delivery limit (classic, or quorum without
//! `x-delivery-limit`), so being redelivered counts towards none; and while the snapshot is held another tool's snapshot does not see those
//! messages (they are not lost, only lent).
//!
//! # Moving safely
//!
//! `replay` is a move: the copy is published to the commands exchange with the original
//! routing key and `message_id`, `x-onboard-attempt` reset to 0 and `x-onboard-replays`
//! incremented, and only once the broker confirmed it is the dead letter acked. A crash in
//! between leaves both: at worst a duplicate, which the worker's inbox recognises. Dead
//! letters without a `message_id` are not replayed (the worker would reject them again, and
//! nothing could recognise the duplicate); purge them.
//!
//! A message rejected as malformed has an inbox row with outcome `rejected`; left there, it
//! would make the replayed copy look like a duplicate and vanish. Replay therefore deletes
//! *only* `rejected` rows of the messages it moves (they stand for no effect: no handler ever
//! ran), so the copy is checked afresh; if it is still malformed it is dead-lettered again,
//! not lost. Commands that exhausted their retries have no inbox row and replay cleanly;
//! commands that did succeed or were refused keep their rows, so replaying them is a no-op.
//!
//! Every replay and purge writes a `dlq_audit` row (who, from where, which selector, which
//! messages) before anything moves, adds the ids it moved as it goes, and completes it at the
//! end: a run that was killed shows as started and never finished. Without the database there
//! is no audit, so nothing moves.

pub mod cli;
mod fingerprint;
mod letter;
mod limits;
mod mask;
mod moves;
mod select;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use lapin::options::BasicAckOptions;
use lapin::{BasicProperties, Connection};
use serde_json::Value;
use sqlx::PgPool;

pub use fingerprint::{fingerprint, normalize};
pub use letter::DeadLetter;
pub use limits::{DEFAULT_LIMIT, MAX_LIMIT};
pub use mask::{is_secret_key, mask_json, mask_text};
use moves::*;
pub use moves::{MoveReport, MoveRequest, os_user};
pub use select::{Group, Listing, Selector, group, parse_age};
use snapshot::{Held, Snapshot};

use crate::broker::publisher::Outgoing;
use crate::broker::{self, Delivered, Names, Publisher};
use crate::configuration::Settings;
use crate::store;

/// What keeps `body` from being replayed as a corrected body of a dead `command_type`: not
/// JSON, or its command's schema's errors. Empty when it may be sent. Edit-and-retry checks
/// this first, from the console and from `onboard dlq edit`, and sends nothing otherwise.
pub fn edit_problems(command_type: &str, body: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(body) {
        Err(e) => vec![format!("not JSON: {e}")],
        Ok(value) => {
            let schemas = crate::registry::schemas();
            match schemas.type_of(command_type) {
                None => vec![format!("{command_type} is not a command type")],
                Some(t) => schemas.check(t, &value).err().unwrap_or_default(),
            }
        }
    }
}

/// The dead-letter queue of one deployment (one `broker.prefix`).
pub struct Dlq {
    connection: Connection,
    names: Names,
    confirm_timeout: Duration,
}

impl Dlq {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Dlq> {
        let connection = broker::connect(&settings.broker, "onboard dlq").await?;
        Ok(Dlq {
            connection,
            names: Names::new(&settings.broker.prefix),
            confirm_timeout: Duration::from_millis(settings.broker.confirm_timeout_ms),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    async fn snapshot(&self, limit: usize) -> anyhow::Result<Snapshot> {
        Snapshot::take(&self.connection, &self.names.dead_queue, limit).await
    }

    /// The dead letters matching `selector` among the first `limit`, in queue order.
    pub async fn list(&self, selector: &Selector, limit: usize) -> anyhow::Result<Listing> {
        let snap = self.snapshot(limit).await?;
        let now = Utc::now();
        let inspected = snap.held.len();
        let depth = snap.depth;
        let letters = snap
            .held
            .iter()
            .filter(|h| selector.matches(&h.letter, now))
            .map(|h| h.letter.clone())
            .collect();
        snap.release().await;
        Ok(Listing {
            depth,
            inspected,
            letters,
        })
    }

    /// The matching dead letters grouped by root cause.
    pub async fn groups(&self, selector: &Selector, limit: usize) -> anyhow::Result<Vec<Group>> {
        Ok(group(&self.list(selector, limit).await?.letters))
    }

    /// Every dead letter with this message id (a command can be dead-lettered more than once).
    pub async fn show(&self, message_id: &str, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let selector = Selector {
            ids: vec![message_id.to_string()],
            ..Default::default()
        };
        Ok(self.list(&selector, limit).await?.letters)
    }

    /// Replays the selected dead letters (see the module documentation).
    pub async fn replay(&self, pool: &PgPool, req: &MoveRequest) -> anyhow::Result<MoveReport> {
        self.run_move(pool, req, Action::Replay, &mut |_| true)
            .await
    }

    /// Deletes the selected dead letters for good, after `confirm` agreed to the plan (the
    /// first snapshot's selection; `more_beyond_limit` says whether more may follow).
    pub async fn purge(
        &self,
        pool: &PgPool,
        req: &MoveRequest,
        confirm: &mut (dyn FnMut(&MoveReport) -> bool + Send),
    ) -> anyhow::Result<MoveReport> {
        self.run_move(pool, req, Action::Purge, confirm).await
    }

    async fn run_move(
        &self,
        pool: &PgPool,
        req: &MoveRequest,
        action: Action,
        confirm: &mut (dyn FnMut(&MoveReport) -> bool + Send),
    ) -> anyhow::Result<MoveReport> {
        if req.selector.is_empty() {
            anyhow::bail!(
                "say which dead letters to {}: message ids, --group, --type, --reason, \
                 --older-than/--newer-than, or --all",
                action.as_str()
            );
        }
        if req.edited_body.is_some() && (action != Action::Replay || req.selector.ids.len() != 1) {
            anyhow::bail!("an edited body replaces one message's: select exactly one message id");
        }
        let limit = req.limit.clamp(1, MAX_LIMIT);
        let mut report = MoveReport {
            action: action.as_str().into(),
            dry_run: req.dry_run,
            ..Default::default()
        };
        let publisher = match action {
            Action::Replay if !req.dry_run => {
                Some(Publisher::open(&self.connection, self.confirm_timeout).await?)
            }
            _ => None,
        };
        // Ids handled in this run: a replayed copy that fails again comes back to the queue
        // and must not be replayed twice by one run.
        let mut seen: HashSet<String> = HashSet::new();
        let mut audit_id = None;
        let mut first_pass = true;
        let mut pacer = req.rate.filter(|r| *r > 0.0).map(|r| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });

        let result: anyhow::Result<()> = async {
            loop {
                let snap = self.snapshot(limit).await?;
                let full = snap.held.len() >= limit;
                let now = Utc::now();
                let chosen: Vec<&Held> = snap
                    .held
                    .iter()
                    .filter(|h| req.selector.matches(&h.letter, now))
                    .filter(|h| {
                        h.letter
                            .message_id
                            .as_ref()
                            .is_none_or(|id| !seen.contains(id))
                    })
                    .collect();
                let mut movable: Vec<&Held> = Vec::new();
                for h in chosen {
                    if action == Action::Replay && h.letter.message_id.is_none() {
                        report.skipped.push((
                            None,
                            "no message_id: it would be rejected again; purge it instead".into(),
                        ));
                    } else {
                        movable.push(h);
                    }
                }
                report
                    .selected
                    .extend(movable.iter().map(|h| h.letter.clone()));
                if action == Action::Replay {
                    let ids: Vec<String> = movable
                        .iter()
                        .filter_map(|h| h.letter.message_id.clone())
                        .collect();
                    if let Ok(rows) = store::dlq::inbox_outcomes(pool, &ids).await {
                        report.inbox.extend(rows);
                    }
                }
                if req.dry_run || movable.is_empty() {
                    report.more_beyond_limit = full && !movable.is_empty();
                    snap.release().await;
                    return Ok(());
                }
                if first_pass {
                    first_pass = false;
                    report.more_beyond_limit = full;
                    if !confirm(&report) {
                        snap.release().await;
                        anyhow::bail!("not confirmed; nothing was {}", action.past());
                    }
                    report.more_beyond_limit = false;
                }
                let letters: Vec<&DeadLetter> = movable.iter().map(|h| &h.letter).collect();
                let mut messages = audit_messages(&letters);
                if req.edited_body.is_some()
                    && let Value::Array(entries) = &mut messages
                {
                    for (entry, letter) in entries.iter_mut().zip(&letters) {
                        entry["edited"] = Value::Bool(true);
                        entry["original_body"] = letter.masked_body();
                    }
                }
                // The audit row comes first: without it nothing moves.
                let id = match audit_id {
                    Some(id) => {
                        store::dlq::add_messages(pool, id, &messages).await?;
                        id
                    }
                    None => {
                        let selector = serde_json::to_value(&req.selector)?;
                        let actor = req.actor.clone().unwrap_or_else(os_user);
                        let host = hostname();
                        let id = store::dlq::start(
                            pool,
                            store::dlq::AuditStart {
                                action: action.as_str(),
                                actor: &actor,
                                host: host.as_deref(),
                                note: req.note.as_deref(),
                                queue: &self.names.dead_queue,
                                selector: &selector,
                                messages: &messages,
                                selected: letters.len() as i32,
                            },
                        )
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "cannot write the audit record, so nothing moved: {e} \
                                 (is the database reachable and migrated? `onboard migrate`)"
                            )
                        })?;
                        audit_id = Some(id);
                        report.audit_id = Some(id);
                        id
                    }
                };
                match action {
                    Action::Purge => {
                        self.purge_pass(pool, id, &movable, &mut report).await?;
                    }
                    Action::Replay => {
                        let publisher = publisher.as_ref().expect("opened for replay");
                        let edited = req.edited_body.as_deref();
                        self.replay_pass(
                            (pool, id),
                            publisher,
                            &movable,
                            edited,
                            &mut pacer,
                            &mut report,
                        )
                        .await?;
                    }
                }
                for h in &movable {
                    if let Some(id) = &h.letter.message_id {
                        seen.insert(id.clone());
                    }
                }
                snap.release().await;
                if !full {
                    return Ok(());
                }
            }
        }
        .await;

        if let Some(id) = audit_id {
            let outcome = match (&result, report.failed.is_empty()) {
                (Ok(()), true) => "completed",
                (Ok(()), false) => "partial",
                (Err(_), _) => "failed",
            };
            let error = result
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .or_else(|| report.failed.first().map(|(id, e)| format!("{id}: {e}")));
            if let Err(e) = store::dlq::finish(pool, id, outcome, error.as_deref()).await {
                tracing::warn!(error = %e, audit_id = id, "could not complete the audit record");
            }
        }
        result.map(|()| report)
    }

    async fn purge_pass(
        &self,
        pool: &PgPool,
        audit_id: i64,
        movable: &[&Held],
        report: &mut MoveReport,
    ) -> anyhow::Result<()> {
        let mut done = Vec::new();
        for h in movable {
            h.acker.ack(BasicAckOptions::default()).await?;
            match &h.letter.message_id {
                Some(id) => done.push(id.clone()),
                None => report.done_without_id += 1,
            }
        }
        store::dlq::progress(pool, audit_id, &done).await?;
        report.done.extend(done);
        Ok(())
    }

    /// Publishes one copy per message id, waits for its confirm, then acks every dead letter
    /// of that id. Without a rate, copies go out in confirmed batches.
    async fn replay_pass(
        &self,
        (pool, audit_id): (&PgPool, i64),
        publisher: &Publisher,
        movable: &[&Held],
        edited: Option<&[u8]>,
        pacer: &mut Option<tokio::time::Interval>,
        report: &mut MoveReport,
    ) -> anyhow::Result<()> {
        // One copy per id; all dead letters of that id are acked once it is confirmed.
        let mut order: Vec<&str> = Vec::new();
        let mut by_id: HashMap<&str, Vec<&Held>> = HashMap::new();
        for h in movable {
            let id = h
                .letter
                .message_id
                .as_deref()
                .expect("replay moves ids only");
            by_id
                .entry(id)
                .or_insert_with(|| {
                    order.push(id);
                    Vec::new()
                })
                .push(h);
        }
        let ids: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        store::dlq::forget_rejected(pool, &ids).await?;

        let batch = if pacer.is_some() { 1 } else { 100 };
        for chunk in order.chunks(batch) {
            if let Some(p) = pacer.as_mut() {
                p.tick().await;
            }
            let props: Vec<(BasicProperties, &Held)> = chunk
                .iter()
                .map(|id| {
                    let first = by_id[id][0];
                    (first.letter.replay_properties(), first)
                })
                .collect();
            let outgoing = props
                .iter()
                .map(|(p, h)| Outgoing {
                    exchange: &self.names.commands_exchange,
                    routing_key: &h.letter.command_type,
                    body: edited.unwrap_or(&h.letter.body),
                    properties: p.clone(),
                })
                .collect();
            let results = publisher.publish_all(outgoing).await;
            let mut done = Vec::new();
            for (id, result) in chunk.iter().zip(results) {
                match result {
                    Ok(Delivered::Routed) => {
                        for h in &by_id[id] {
                            h.acker.ack(BasicAckOptions::default()).await?;
                        }
                        done.push(id.to_string());
                    }
                    Ok(Delivered::Returned { reply_text }) => report.failed.push((
                        id.to_string(),
                        format!("the commands exchange routed it nowhere ({reply_text})"),
                    )),
                    Err(e) => report.failed.push((id.to_string(), e.to_string())),
                }
            }
            store::dlq::progress(pool, audit_id, &done).await?;
            report.done.extend(done);
        }
        Ok(())
    }
}

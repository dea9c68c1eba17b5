//! A batch of commands, run as one unit of work: claim every message id in the inbox (one
//! statement; duplicates stop there), lock the clients the batch changes in client-id order,
//! let each type's handler decide its commands, each in a savepoint, record the exceptions,
//! write the outbox, commit, then ack. Up to `worker.batch_size` deliveries share one
//! transaction and one commit.
//!
//! One command's fate never touches the others': a refusal is an outcome like any other; a
//! command decided on its own that refuses, must wait ([`Decision::RetryLater`]), can never
//! succeed ([`Decision::Failed`]) or makes PostgreSQL refuse a value has its savepoint rolled
//! back, so it leaves nothing behind, and its neighbours commit in the same transaction. A
//! slice decided at once (`client.create`) whose handler errs is split in two until the
//! culprit is alone. When the transaction itself fails: transient errors (a deadlock among
//! them, counted) retry the whole batch at once, then send every command to the delay queues;
//! a permanent one outside any handler splits the batch in two, each half its own
//! transaction, until the command that cannot be stored is alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use backon::Retryable;
use futures::future::BoxFuture;
use serde_json::json;
use tracing::Instrument;

use super::context::Context;
use super::failure::{announce_failed, failed_messages};
use crate::fault::{Backoff, Fault, HandlerError};
use crate::handlers::{Body, Cx, Decision, Target, refusal_messages};
use crate::messages::{CommandMeta, Refusal};
use crate::observe::{self, HandlerResult};
use crate::registry::{Entry, Run, RunMany, RunOne};
use crate::store::uow::UnitOfWork;
use crate::store::{self, inbox::Claim, inbox::InboxOutcome, outbox::OutboxRow};

mod item;
mod settle;

use item::End;
pub use item::{Item, command_hash};
use settle::settle;

/// Reads an import's record from its source system (outside any transaction and any batch:
/// a stage of its own, bounded by `worker.source_calls_in_flight`) and keeps what came of it
/// on the command, for its handler.
pub async fn prepare_import(ctx: &Context, item: &mut Item) {
    use crate::handlers::client_import::{self, ClientImport};
    // The read is a span of the import's trace, and the request carries it.
    let span = crate::export_span!(parent: &item.span, "source.read", otel.kind = "client");
    let Some(import) = item.cmd.body.downcast_mut::<ClientImport>() else {
        return;
    };
    client_import::prepare(&ctx.sources, import)
        .instrument(span)
        .await;
}

/// Runs a batch to its end: every delivery acked, sent to a delay queue or dead-lettered.
pub async fn run(ctx: &Context, items: Vec<Item>) {
    if items.is_empty() {
        return;
    }
    let started = Instant::now();
    let handling = handle_spans(&items);
    let mut ends: Vec<Option<End>> = items.iter().map(|_| None).collect();
    let committed = decide_into(ctx, &items, (0..items.len()).collect(), &mut ends).await;
    drop(handling);
    let n = items.len();
    let ends = ends
        .into_iter()
        .map(|e| e.expect("every command of the batch has an end"));
    settle(ctx, items.into_iter().zip(ends).collect(), started).await;
    tracing::debug!(
        commands = n,
        transactions = committed,
        settled_ms = started.elapsed().as_millis() as u64,
        "batch done"
    );
}

/// Runs `items[which]` as one unit of work and publishes what it said. A unit of work that
/// fails for good outside any handler (a statement of the unit of work itself refused) is
/// split in two, each half its own unit of work, until the command that cannot be stored is
/// alone: it fails alone, announced. Returns the transactions it took.
fn decide_into<'a>(
    ctx: &'a Context,
    items: &'a [Item],
    which: Vec<usize>,
    ends: &'a mut [Option<End>],
) -> BoxFuture<'a, usize> {
    Box::pin(async move {
        match try_hard(ctx, items, &which).await {
            Ok((decided, said)) => {
                ctx.outbox.dispatch(said).await;
                for (i, end) in which.into_iter().zip(decided) {
                    ends[i] = Some(end);
                }
                1
            }
            Err(e) if e.fault() == Fault::Permanent && which.len() > 1 => {
                tracing::warn!(reason = %e.reason(), commands = which.len(), "a command of the batch cannot be stored; splitting the batch in two");
                let right = which[which.len() / 2..].to_vec();
                let left = which[..which.len() / 2].to_vec();
                decide_into(ctx, items, left, ends).await
                    + decide_into(ctx, items, right, ends).await
            }
            Err(e) if e.fault() == Fault::Permanent => {
                let reason = e.reason();
                cannot_be_stored(ctx, &items[which[0]], &reason).await;
                ends[which[0]] = Some(End::Failed(reason));
                1
            }
            Err(e) => {
                for i in which {
                    ends[i] = Some(End::RetryLater(e.reason()));
                }
                1
            }
        }
    })
}

/// Each command's `handle <type>` span in its own trace, when spans are exported: the batch
/// transaction that decided it (and the dispatch of what it said), shared by the batch.
fn handle_spans(items: &[Item]) -> Vec<tracing::Span> {
    items
        .iter()
        .map(|i| {
            crate::export_span!(
                parent: &i.span,
                "handle",
                otel.name = %format!("handle {}", i.cmd.meta.command_type.as_str()),
                batch_size = items.len(),
            )
        })
        .collect()
}

/// Logs and announces (`command.failed`, and the reply when asked) a command that cannot be
/// stored, in a transaction of its own; it is dead-lettered when settled.
async fn cannot_be_stored(ctx: &Context, item: &Item, reason: &str) {
    item.span.in_scope(
        || tracing::error!(reason = %reason, "command cannot be stored; dead-lettering it"),
    );
    if let Err(e) = announce_failed(ctx, &item.cmd.meta, reason).await {
        tracing::warn!(error = %e, "could not announce command.failed; dead-lettering anyway");
    }
}

/// What a committed attempt decided, and the outbox rows it wrote.
type Attempted = (Vec<End>, Vec<OutboxRow>);

/// [`attempt`], retried at once while its failure is worth it. A deadlock is counted: the
/// clients a batch changes are locked in one order, so one means another transaction (a saga
/// step, an operator's) took rows in another.
async fn try_hard(
    ctx: &Context,
    items: &[Item],
    which: &[usize],
) -> Result<Attempted, HandlerError> {
    (|| attempt(ctx, items, which))
        .retry(ctx.settings.retry.immediate().policy())
        .when(HandlerError::retry_at_once)
        .notify(|e, wait| {
            if e.is_deadlock() {
                ctx.metrics.batch_deadlock();
            }
            tracing::warn!(error = %e, ?wait, commands = which.len(), "batch failed; retrying in-process")
        })
        .await
}

/// One try at the unit of work for `items[which]`.
async fn attempt(
    ctx: &Context,
    items: &[Item],
    which: &[usize],
) -> Result<Attempted, HandlerError> {
    let mut ends: Vec<Option<End>> = which.iter().map(|_| None).collect();
    // A message id twice in one batch: the first copy runs, the others are repeats of it.
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut copies = Vec::new();
    let mut claims = Vec::with_capacity(which.len());
    for (slot, &i) in which.iter().enumerate() {
        let item = &items[i];
        match first_of.get(item.cmd.meta.message_id.as_str()) {
            Some(&first) => copies.push((slot, first)),
            None => {
                first_of.insert(&item.cmd.meta.message_id, slot);
                claims.push(Claim {
                    message_id: &item.cmd.meta.message_id,
                    command_type: item.cmd.meta.command_type.as_str(),
                    correlation_id: &item.cmd.meta.correlation_id,
                    body_sha256: &item.hash,
                });
            }
        }
    }

    let mut uow = ctx.outbox.begin().await?;
    let fresh = uow.claim(&claims).await?;

    // Repeats of commands handled before: the same command, or another under a reused key.
    let seen: Vec<&str> = claims
        .iter()
        .map(|c| c.message_id)
        .filter(|id| !fresh.contains(*id))
        .collect();
    if !seen.is_empty() {
        let stored = store::inbox::hashes(uow.conn(), &seen).await?;
        for id in seen {
            let slot = first_of[id];
            let item = &items[which[slot]];
            let same = match stored.get(id) {
                Some(Some(hash)) => hash.as_slice() == item.hash,
                // Recorded before hashes were kept: take it as the same command.
                Some(None) | None => true,
            };
            ends[slot] = Some(if same {
                End::Duplicate
            } else {
                key_reused(&mut uow, item);
                End::KeyReused
            });
        }
    }
    for &(slot, first) in &copies {
        ends[slot] = Some(if items[which[slot]].hash == items[which[first]].hash {
            End::Duplicate
        } else {
            key_reused(&mut uow, &items[which[slot]]);
            End::KeyReused
        });
    }

    // The clients the fresh commands change, locked now in client-id order: two batches
    // changing the same clients take them in the same order, so neither waits for the other
    // in a circle (each handler locks its client again; it holds it already).
    let (mut clients, mut actors) = (Vec::new(), Vec::new());
    for (slot, &i) in which.iter().enumerate() {
        if ends[slot].is_none() {
            match (items[i].entry.target)(&items[i].cmd.body) {
                Target::Client(id) => clients.push(id),
                Target::ClientOf(user) => actors.push(user),
                Target::None => {}
            }
        }
    }
    store::clients::lock_in_order(uow.conn(), &clients, &actors).await?;

    // The fresh commands, by type, each type's share to its handler.
    let mut groups: Vec<(&'static Entry, Vec<usize>)> = Vec::new();
    for (slot, &i) in which.iter().enumerate() {
        if ends[slot].is_some() {
            continue;
        }
        let entry = items[i].entry;
        match groups.iter_mut().find(|(e, _)| std::ptr::eq(*e, entry)) {
            Some((_, slots)) => slots.push(slot),
            None => groups.push((entry, vec![slot])),
        }
    }
    let mut exceptions: Vec<(usize, InboxOutcome, Option<&'static str>)> = Vec::new();
    let mut released: Vec<usize> = Vec::new();
    for (entry, slots) in groups {
        let decisions = match entry.run {
            Run::One(run) => {
                let mut decisions = Vec::with_capacity(slots.len());
                for &slot in &slots {
                    let item = &items[which[slot]];
                    decisions.push(decide_one(ctx, &mut uow, run, item).await?);
                }
                decisions
            }
            Run::Many(run) => {
                let cmds: Vec<(&CommandMeta, &Body)> = slots
                    .iter()
                    .map(|&slot| {
                        let item = &items[which[slot]];
                        (&item.cmd.meta, &item.cmd.body)
                    })
                    .collect();
                decide_many(ctx, &mut uow, run, &cmds).await?
            }
            Run::Query(_) => unreachable!("queries never join a batch"),
        };
        assert_eq!(decisions.len(), slots.len(), "one decision per command");
        for (slot, decision) in slots.into_iter().zip(decisions) {
            let item = &items[which[slot]];
            ends[slot] = Some(match decision {
                Decision::Done(outcome) => {
                    uow.say(outcome.messages);
                    let result = match outcome.inbox {
                        InboxOutcome::Succeeded => HandlerResult::Succeeded,
                        _ => HandlerResult::Refused,
                    };
                    if outcome.inbox != InboxOutcome::Succeeded {
                        exceptions.push((slot, outcome.inbox, outcome.code));
                    }
                    End::Done {
                        result,
                        code: outcome.code,
                        sagas: outcome.sagas,
                    }
                }
                Decision::RetryLater(reason) => {
                    released.push(slot);
                    End::RetryLater(reason)
                }
                Decision::Failed(reason) => {
                    released.push(slot);
                    item.span.in_scope(|| tracing::error!(reason = %reason, "command cannot succeed; dead-lettering it"));
                    uow.say(failed_messages(ctx, &item.cmd.meta, &reason));
                    End::Failed(reason)
                }
            });
        }
    }
    let outcomes: Vec<(&str, InboxOutcome, Option<&str>)> = exceptions
        .iter()
        .map(|&(slot, outcome, code)| {
            (
                items[which[slot]].cmd.meta.message_id.as_str(),
                outcome,
                code,
            )
        })
        .collect();
    store::inbox::set_outcomes(uow.conn(), &outcomes).await?;
    let released: Vec<&str> = released
        .iter()
        .map(|&slot| items[which[slot]].cmd.meta.message_id.as_str())
        .collect();
    store::inbox::release(uow.conn(), &released).await?;

    observe::at(&ctx.hooks.before_batch_commit, which.len()).await;
    let xid = uow.txid().await?;
    let said = match uow.commit().await {
        Ok(said) => said,
        // The connection went while COMMIT was on its way: it may have committed. Retried
        // blindly, the batch would find its commands handled and ack them, and the sagas it
        // started would wait out their lease (two minutes) before a sweeper took them.
        Err(e) if answer_may_be_lost(&e) => {
            if !committed_after_all(ctx, xid).await {
                return Err(e.into());
            }
            tracing::warn!(error = %e, commands = which.len(), "the answer to COMMIT was lost, but the transaction committed: the batch is done (its messages go out with the relay's next round)");
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let ends = ends
        .into_iter()
        .map(|e| e.expect("every command of the batch has an end"))
        .collect();
    Ok((ends, said))
}

/// The handlers' view of the unit of work.
fn cx<'a>(ctx: &'a Context, uow: &'a mut UnitOfWork) -> Cx<'a> {
    Cx {
        conn: uow.conn(),
        settings: &ctx.settings,
        worker_id: ctx.worker_id,
        key: &ctx.key,
        slots: ctx.runner.slots(),
    }
}

/// Decides one command in a savepoint of its own: kept when it succeeded, rolled back when it
/// refused, is to be retried, failed, or made PostgreSQL refuse a value (it then fails alone,
/// its neighbours unharmed). A transient error fails the whole unit of work.
async fn decide_one(
    ctx: &Context,
    uow: &mut UnitOfWork,
    run: RunOne,
    item: &Item,
) -> Result<Decision, HandlerError> {
    observe::at(&ctx.hooks.before_command, item.cmd.meta.clone()).await;
    uow.savepoint().await?;
    let result = {
        let mut cx = cx(ctx, uow);
        run(&mut cx, &item.cmd.meta, &item.cmd.body).await
    };
    let decision = match result {
        Ok(decision) => decision,
        Err(e) if e.fault() == Fault::Permanent => Decision::Failed(e.reason()),
        Err(e) => return Err(e),
    };
    if decision.keeps_effects() {
        uow.release_savepoint().await?;
    } else {
        uow.rollback_to_savepoint().await?;
    }
    Ok(decision)
}

/// Decides a slice of commands of one type at once, in a savepoint. A command to be retried
/// or that failed has the savepoint rolled back and the rest decided again without it; an
/// error the slice cannot be stored with splits it in two, each half in a savepoint of its
/// own, until the culprit is alone and fails alone. A transient error fails the whole unit of
/// work. A slice that keeps its decisions leaves its savepoint open: COMMIT ends it, and a
/// `RELEASE` would be one more round trip while a create batch holds the month's code counter
/// (a later savepoint nests inside it: one per command type of the batch at most).
fn decide_many<'a>(
    ctx: &'a Context,
    uow: &'a mut UnitOfWork,
    run: RunMany,
    cmds: &'a [(&'a CommandMeta, &'a Body)],
) -> BoxFuture<'a, Result<Vec<Decision>, HandlerError>> {
    Box::pin(async move {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        uow.savepoint().await?;
        let result = {
            let mut cx = cx(ctx, uow);
            run(&mut cx, cmds).await
        };
        match result {
            Ok(decisions) => {
                let kept =
                    |d: &Decision| !matches!(d, Decision::RetryLater(_) | Decision::Failed(_));
                if decisions.iter().all(kept) {
                    return Ok(decisions);
                }
                uow.rollback_to_savepoint().await?;
                let rest: Vec<(&CommandMeta, &Body)> = cmds
                    .iter()
                    .zip(&decisions)
                    .filter(|(_, d)| kept(d))
                    .map(|(c, _)| *c)
                    .collect();
                let mut again = decide_many(ctx, uow, run, &rest).await?.into_iter();
                Ok(decisions
                    .into_iter()
                    .map(|d| {
                        if kept(&d) {
                            again.next().expect("one each")
                        } else {
                            d
                        }
                    })
                    .collect())
            }
            Err(e) if e.fault() == Fault::Permanent => {
                uow.rollback_to_savepoint().await?;
                if cmds.len() == 1 {
                    return Ok(vec![Decision::Failed(e.reason())]);
                }
                let (left, right) = cmds.split_at(cmds.len() / 2);
                let mut decisions = decide_many(ctx, uow, run, left).await?;
                decisions.extend(decide_many(ctx, uow, run, right).await?);
                Ok(decisions)
            }
            Err(e) => Err(e),
        }
    })
}

/// Whether a failed COMMIT may have committed: the connection failed, not the statement.
fn answer_may_be_lost(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// Asks PostgreSQL (on a new connection, for up to about fifteen seconds while it is away)
/// whether transaction `xid` committed; false when it did not or nobody could say.
async fn committed_after_all(ctx: &Context, xid: i64) -> bool {
    struct NotKnown;
    const ASKING: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 11);
    (|| async {
        match store::txid_committed(&ctx.pool, xid).await {
            Ok(Some(committed)) => Ok(committed),
            Ok(None) | Err(_) => Err(NotKnown),
        }
    })
    .retry(ASKING.policy())
    .await
    .unwrap_or(false)
}

/// `IDEMPOTENCY_KEY_REUSED`: announced with the command type's refusal event and replied to,
/// under ids of its own (the first command's outcome keeps the plain ones).
fn key_reused(uow: &mut UnitOfWork, item: &Item) {
    let event = item
        .entry
        .refusal_event
        .expect("commands announce their refusals");
    let variant = hex::encode(&item.hash[..8]);
    uow.say(refusal_messages(
        &item.cmd.meta,
        event,
        &Refusal::idempotency_key_reused(),
        json!({ "message_id": item.cmd.meta.message_id }),
        Some(&variant),
    ));
}

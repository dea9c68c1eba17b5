//! Step 2: a BUSINESS customer for the client and an INDIVIDUAL customer for its admin at
//! Xendit, for a batch of sagas. The references and idempotency keys come from our ids, so
//! however often this step runs, Xendit holds at most one customer of each. Xendit never
//! fails the onboarding: a permanent refusal, or a transient one that outlasts the step's
//! attempts, is recorded and announced (`client.xendit_failed`), and the saga moves on to the
//! email. A transient failure with attempts left makes the saga due again after its delay
//! (the customers that did get created are kept, so the retry asks only for the rest).

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;

use super::env::Env;
use super::job::SagaJob;
use super::lease::Keeper;
use super::step::{Fresh, Moved, still_held, with_snapshots};
use crate::domain::saga::Step;
use crate::domain::{AdminUser, Client};
use crate::fault::HandlerError;
use crate::messages::OutgoingMessage;
use crate::observe;
use crate::store::{
    self,
    sagas::{Advance, Fence, Postpone},
    xendit_customers::Owner,
};
use crate::xendit::{
    BusinessInput, CustomerRequest, IndividualInput, XenditError, idempotency_key, reference_id,
};

pub const CREATED: &str = "client.xendit_customers_created";
pub const FAILED: &str = "client.xendit_failed";

/// One customer's fate in this run.
enum Fate {
    /// Not asked for: the saga's lease was lost before its turn.
    Skipped,
    /// Created now, or found (recorded by an earlier run, or recovered from Xendit).
    Ready(String),
    Failed {
        code: String,
        message: String,
        transient: bool,
        /// Whether the try counts against the step's attempts (a rate limit or a refused key
        /// does not: see `XenditError::counts_as_attempt`).
        counted: bool,
    },
}

struct Wanted {
    owner: Owner,
    reference: String,
    request: CustomerRequest,
    kind: &'static str,
}

fn wanted(namespace: &str, client: &Client, admin: &AdminUser) -> [Wanted; 2] {
    let business = reference_id(namespace, "client", client.client_id);
    let individual = reference_id(namespace, "user", admin.user_id);
    [
        Wanted {
            owner: Owner::Client(client.client_id),
            request: CustomerRequest::business(
                &business,
                BusinessInput {
                    client_alias: client.client_alias.clone(),
                    client_type: client.client_type.clone(),
                    email: client.email.clone(),
                    phone: client.phone.clone(),
                },
            ),
            reference: business,
            kind: "BUSINESS",
        },
        Wanted {
            owner: Owner::User(admin.user_id),
            request: CustomerRequest::individual(
                &individual,
                IndividualInput {
                    given_names: admin.username.clone(),
                    email: admin.email.clone(),
                    phone: admin.phone.clone(),
                },
            ),
            reference: individual,
            kind: "INDIVIDUAL",
        },
    ]
}

async fn ensure(
    env: &Env,
    keeper: &Keeper,
    saga_id: uuid::Uuid,
    w: &Wanted,
    known: Option<String>,
) -> Fate {
    match known {
        Some(id) => Fate::Ready(id),
        None if !keeper.holds(saga_id) => Fate::Skipped,
        None => call(env, w).await,
    }
}

async fn call(env: &Env, w: &Wanted) -> Fate {
    let Some(xendit) = &env.services.xendit else {
        return Fate::Failed {
            code: "XENDIT_NOT_CONFIGURED".into(),
            message: "No Xendit API key is configured for this worker.".into(),
            transient: false,
            counted: true,
        };
    };
    let started = Instant::now();
    let result = xendit
        .create_customer(&w.request, &idempotency_key(&w.reference))
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(XenditError::KeyRefused(answer)) => {
            // Every Indonesian onboarding waits on this: loud, counted, alerted.
            tracing::error!(
                status = answer.status,
                error_code = %answer.error_code,
                "Xendit refused our API key: xendit.secret_key is wrong, revoked or lacks the \
                 Customers permission; Xendit steps wait and retry until it is fixed"
            );
            env.metrics.xendit_key_refused();
            "key_refused"
        }
        Err(XenditError::RateLimited { .. }) => "rate_limited",
        Err(e) if e.is_transient() => "retryable",
        Err(_) => "rejected",
    };
    env.metrics
        .observe_call("xendit", "create_customer", outcome, started.elapsed());
    match result {
        Ok(customer) => Fate::Ready(customer.id),
        Err(e) => Fate::Failed {
            code: e.error_code().unwrap_or(kind_of(&e)).to_string(),
            message: e.to_string(),
            transient: e.is_transient(),
            counted: e.counts_as_attempt(),
        },
    }
}

fn kind_of(e: &XenditError) -> &'static str {
    if e.is_transient() {
        "XENDIT_UNAVAILABLE"
    } else {
        "XENDIT_ERROR"
    }
}

fn describe(w: &Wanted, fate: &Fate) -> Value {
    match fate {
        Fate::Ready(id) => {
            json!({ "status": "success", "customer_id": id, "customer_type": w.kind })
        }
        Fate::Failed { code, message, .. } => json!({
            "status": "failed",
            "customer_type": w.kind,
            "error": { "code": code, "message": message },
        }),
        Fate::Skipped => unreachable!("sagas with a skipped call are not recorded"),
    }
}

/// Runs the step; returns the sagas that moved on to the welcome email, and the slot they
/// run it in (none: they were given back, due now, for a sweeper with room).
pub async fn run(env: &Env, jobs: Vec<SagaJob>) -> Result<Moved, HandlerError> {
    let jobs = with_snapshots(env, jobs).await?;
    let jobs = still_held(env, jobs, Step::Xendit).await?;
    if jobs.is_empty() {
        return Ok((Vec::new(), None));
    }
    // The key's mode is part of the namespace: a test key's references and idempotency keys
    // never meet a live key's, even on one Xendit account.
    let namespace = match &env.services.xendit {
        Some(xendit) => format!(
            "{}-{}",
            env.services.settings.xendit_reference_namespace,
            xendit.mode()
        ),
        None => env.services.settings.xendit_reference_namespace.clone(),
    };
    let namespace = namespace.as_str();
    let wants: Vec<[Wanted; 2]> = jobs
        .iter()
        .map(|j| {
            let (client, admin) = j.snapshot.as_ref().expect("snapshots filled in");
            wanted(namespace, client, admin)
        })
        .collect();

    // Customers an earlier run recorded are not asked for again.
    let references: Vec<&str> = wants
        .iter()
        .flatten()
        .map(|w| w.reference.as_str())
        .collect();
    let known = {
        let mut conn = env.pool.acquire().await?;
        store::xendit_customers::find_many(&mut conn, &references).await?
    };
    let concurrency = env.services.settings.max_concurrent_xendit_calls.max(1);
    let keeper = Keeper::start(env, Step::Xendit, jobs.iter().map(SagaJob::lease).collect());
    let mut calls = Vec::with_capacity(wants.len() * 2);
    for (job, pair) in jobs.iter().zip(&wants) {
        for w in pair {
            calls.push(
                ensure(
                    env,
                    &keeper,
                    job.saga_id,
                    w,
                    known.get(&w.reference).cloned(),
                )
                .instrument(job.span.clone()),
            );
        }
    }
    let fates: Vec<Fate> = futures::stream::iter(calls)
        .buffered(concurrency)
        .collect()
        .await;
    let (lost, _) = keeper.stop().await;
    env.metrics.saga_fenced(Step::Xendit.as_str(), lost.len());
    observe::at(&env.hooks.after_xendit_answered, ()).await;

    let fates: Vec<[Fate; 2]> = {
        let mut it = fates.into_iter();
        wants
            .iter()
            .map(|_| [it.next().expect("two fates"), it.next().expect("two fates")])
            .collect()
    };
    // A saga whose lease was lost mid-way is its new holder's to finish.
    let (mut kept_jobs, mut kept_wants, mut kept_fates) = (Vec::new(), Vec::new(), Vec::new());
    for ((job, w), f) in jobs.into_iter().zip(wants).zip(fates) {
        if f.iter().any(|x| matches!(x, Fate::Skipped)) {
            continue;
        }
        kept_jobs.push(job);
        kept_wants.push(w);
        kept_fates.push(f);
    }
    // Room for the welcome email now, or the sagas are given back at the move.
    let next_slot = env.slots.reserve(Step::WelcomeEmail);
    let carry_on = next_slot.is_some();
    let next = env
        .retry_db("recording Xendit customers", || {
            record(env, &kept_jobs, &kept_wants, &kept_fates, carry_on)
        })
        .await?;
    Ok((next, next_slot))
}

async fn record(
    env: &Env,
    jobs: &[SagaJob],
    wants: &[[Wanted; 2]],
    fates: &[[Fate; 2]],
    carry_on: bool,
) -> Result<Vec<SagaJob>, HandlerError> {
    let budget = env.services.settings.xendit_max_attempts.max(1) as i32;
    let mut uow = env.outbox.begin().await?;

    let mut learnt = Vec::new();
    let mut later = Vec::new();
    let mut integrations = HashMap::new();
    for ((job, w), f) in jobs.iter().zip(wants).zip(fates) {
        let attempt = job.attempts + 1;
        let transient = f.iter().find_map(|fate| match fate {
            Fate::Failed {
                transient: true,
                message,
                counted,
                ..
            } => Some((message.as_str(), *counted)),
            _ => None,
        });
        // A rate limit or a refused key is waited out whatever the attempts: giving up would
        // lose the customers for a reason that is not theirs.
        let uncounted = f.iter().any(|fate| {
            matches!(
                fate,
                Fate::Failed {
                    transient: true,
                    counted: false,
                    ..
                }
            )
        });
        if let Some((error, _)) = transient
            && (attempt < budget || uncounted)
        {
            let counted = !uncounted;
            let delay = if counted {
                attempt
            } else {
                job.attempts.max(1)
            };
            later.push(Postpone {
                lease: job.lease(),
                error,
                delay_seconds: env.services.delay_after(delay).as_secs_f64(),
                counted,
            });
            continue;
        }
        let integration = json!({
            "psp_provider": "XENDIT",
            "business_customer": describe(&w[0], &f[0]),
            "admin_customer": describe(&w[1], &f[1]),
        });
        learnt.push((job, json!({ "xendit_integration": integration })));
        integrations.insert(
            job.saga_id,
            (
                integration,
                attempt,
                f.iter().any(|x| matches!(x, Fate::Failed { .. })),
            ),
        );
    }
    let moves: Vec<Advance<'_>> = learnt
        .iter()
        .map(|(job, data)| Advance {
            lease: job.lease(),
            next: Step::WelcomeEmail,
            learnt: data,
        })
        .collect();
    let lease = env.services.lease_seconds();
    // The saga rows first: what follows is written only for the sagas this lease still holds.
    let moved =
        store::sagas::advance_many(uow.conn(), Step::Xendit, &moves, carry_on, lease).await?;
    let postponed =
        store::sagas::postpone_many(uow.conn(), Step::Xendit, &later, Fence::Lease).await?;
    let held: std::collections::HashSet<uuid::Uuid> = moved
        .iter()
        .map(|(id, _)| *id)
        .chain(postponed.iter().copied())
        .collect();
    env.metrics.saga_fenced(
        Step::Xendit.as_str(),
        moves.len() + later.len() - held.len(),
    );

    // Keep what succeeded whatever happens next, so a retry asks Xendit only for the rest.
    let ready: Vec<store::xendit_customers::Customer> = jobs
        .iter()
        .zip(wants)
        .zip(fates)
        .filter(|((job, _), _)| held.contains(&job.saga_id))
        .flat_map(|((_, w), f)| w.iter().zip(f.iter()))
        .filter_map(|(w, f)| match f {
            Fate::Ready(id) => Some(store::xendit_customers::Customer {
                owner: w.owner,
                xendit_customer_id: id,
                reference_id: &w.reference,
                customer_type: w.kind,
            }),
            Fate::Failed { .. } | Fate::Skipped => None,
        })
        .collect();
    store::xendit_customers::insert_many(uow.conn(), &ready).await?;

    let mut next = Vec::with_capacity(moved.len());
    let fresh = if moved.is_empty() {
        None
    } else {
        Some(Fresh::read(uow.conn(), jobs).await?)
    };
    for (saga_id, data) in moved {
        let job = jobs
            .iter()
            .find(|j| j.saga_id == saga_id)
            .expect("a job of ours");
        let (integration, attempt, failed) = &integrations[&saga_id];
        let (client, _) = fresh.as_ref().expect("read").of(job);
        let mut event_data = json!({ "client_id": client.client_id, "saga_id": saga_id });
        event_data["business_customer"] = integration["business_customer"].clone();
        event_data["admin_customer"] = integration["admin_customer"].clone();
        let event = if *failed {
            event_data["attempts"] = json!(attempt);
            event_data["next_step"] = json!(Step::WelcomeEmail.as_str());
            tracing::warn!(
                client_id = client.client_id,
                "Xendit customers not created; onboarding continues without them"
            );
            FAILED
        } else {
            CREATED
        };
        uow.say([OutgoingMessage::event(&job.origin, event, event_data)]);
        if carry_on {
            let mut job = job.clone();
            job.step = Step::WelcomeEmail;
            job.attempts = 0;
            job.data = data;
            job.send_claimed = true;
            next.push(job);
        }
    }
    env.outbox.commit(uow).await?;
    Ok(next)
}

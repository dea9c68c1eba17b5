//! The worker: wires configuration, database, broker, relay, saga runner and HTTP together,
//! takes deliveries in batches, and drains on shutdown.
//!
//! ```text
//! consumer ─> pipeline::route ─┬─ command ─> batch (up to worker.batch_size, lingering
//!                              │             worker.batch_linger_ms) ─> batch::run: one unit
//!                              │             of work, acks after commit ─> saga runner
//!                              ├─ query ───> query::answer (its own task)
//!                              └─ malformed > pipeline::reject (its own task)
//! ```

pub mod batch;
mod context;
pub mod failure;
pub mod pipeline;
pub mod query;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{self, Names};
use crate::configuration::{Settings, redact_url};
use crate::metrics::Metrics;
pub use crate::observe::{Disposition, Hooks, Settled};
use crate::saga::{self};
use crate::{http, outbox, registry, store};
pub use context::Context;
use pipeline::Route;

/// How long a starting worker waits for the database, its key and the broker (about two
/// minutes each, then it exits for its supervisor).
const AT_START: crate::fault::Backoff =
    crate::fault::Backoff::new(Duration::from_millis(200), Duration::from_secs(5), 31);

/// A running worker.
pub struct Worker {
    pub names: Names,
    pub http_addr: SocketAddr,
    pub pool: PgPool,
    /// This worker's id (the owner of the saga leases it takes).
    pub id: Uuid,
    /// Cancel to drain and stop (what SIGTERM does).
    pub shutdown: CancellationToken,
    /// The consumer's session, and the session every publish goes through: separate
    /// connections, so a broker that blocks publishers (memory or disk alarm) does not also
    /// stop the consumer's acks.
    consume_link: Arc<broker::Link>,
    publish_link: Arc<broker::Link>,
    task: JoinHandle<anyhow::Result<()>>,
    /// The relay, HTTP and saga tasks, for [`Worker::kill`].
    helpers: Vec<tokio::task::AbortHandle>,
    sagas: Arc<std::sync::Mutex<Option<saga::runner::Tasks>>>,
}

impl Worker {
    /// Starts a worker: waits for the database and runs migrations, connects to the broker,
    /// declares the topology, starts the outbox relay, the saga runner, the HTTP endpoints
    /// and the consumer.
    pub async fn start(settings: Settings, hooks: Hooks) -> anyhow::Result<Worker> {
        let settings = Arc::new(settings);
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new(crate::registry::command_types());
        let hooks = metrics.observing(hooks);
        let pool = store::pool(&settings.database)?;
        let worker_id = Uuid::new_v4();

        (|| store::migrate(&pool))
            .retry(AT_START.policy())
            .notify(|e, d| {
                tracing::warn!(error = %e, url = %redact_url(&settings.database.url), "database not ready; retrying in {d:?}")
            })
            .await?;

        // Like the migrations, retried: a database slow to answer at start is not a reason to
        // exit (seen under a loaded test run: one pool timeout here stopped the worker).
        let key = (|| store::deployment_key(&pool))
            .retry(AT_START.policy())
            .notify(|e, d| {
                tracing::warn!(error = %e, "deployment key not readable yet; retrying in {d:?}")
            })
            .await?;

        let mut links = Vec::with_capacity(2);
        let mut names = None;
        for name in ["onboard worker (consume)", "onboard worker (publish)"] {
            let (connection, node) = (|| broker::connect_node(&settings.broker, name, 0))
                .retry(AT_START.policy())
                .notify(|e, d| {
                    let nodes: Vec<_> = settings.broker.nodes().into_iter().map(redact_url).collect();
                    tracing::warn!(error = %e, nodes = ?nodes, "broker not ready; retrying in {d:?}")
                })
                .await?;
            if names.is_none() {
                names = Some(broker::topology::declare_on(&connection, &settings).await?);
            }
            links.push(broker::Link::new(settings.clone(), name, connection, node));
        }
        let names = names.expect("declared on the first connection");
        let publish_link = links.pop().expect("two links");
        let consume_link = links.pop().expect("two links");
        let confirm = Duration::from_millis(settings.broker.confirm_timeout_ms);
        let publisher = publish_link.publisher(confirm).await?;
        let relay_publisher = publish_link.publisher(confirm).await?;
        let wake = outbox::Wake::default();
        let dispatcher = outbox::Dispatcher::new(
            pool.clone(),
            publish_link.publisher(confirm).await?,
            names.clone(),
            worker_id,
            Duration::from_millis(settings.outbox.dispatch_grace_ms),
            wake.clone(),
        );

        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(outbox::relay::run(
            outbox::relay::Relay {
                pool: pool.clone(),
                publisher: relay_publisher,
                names: names.clone(),
                settings: settings.outbox.clone(),
                inbox: settings.inbox.clone(),
                metrics: Some(metrics.clone()),
                wake,
            },
            relay_stop.clone(),
        ));

        let services = saga::Services::from_settings(&settings)?;
        let (runner, saga_tasks) = saga::runner::start(Arc::new(saga::Env {
            pool: pool.clone(),
            key: key.clone(),
            services,
            worker_id,
            hooks: hooks.clone(),
            outbox: dispatcher.clone(),
            metrics: metrics.clone(),
            batch_size: settings.worker.batch_size.max(1),
            // Two tries more than a delivery's: a step given up is a saga set back.
            db: crate::fault::Backoff {
                attempts: settings.retry.immediate_attempts.max(1) + 2,
                ..settings.retry.immediate()
            },
            slots: saga::Slots::new(settings.saga.steps_in_flight),
        }));
        let sagas = Arc::new(std::sync::Mutex::new(Some(saga_tasks)));

        let listener =
            tokio::net::TcpListener::bind((settings.http.host.as_str(), settings.http.port))
                .await?;
        let http_addr = listener.local_addr()?;
        let http_task = tokio::spawn(http::serve(
            listener,
            http::State {
                pool: pool.clone(),
                links: vec![consume_link.clone(), publish_link.clone()],
                names: names.clone(),
                metrics: metrics.clone(),
                stuck_after_seconds: settings.saga.stuck_after_seconds as f64,
            },
            shutdown.clone(),
        ));

        let ctx = Arc::new(Context {
            settings: settings.clone(),
            pool: pool.clone(),
            query_pool: store::pool_of(&settings.database, settings.database.query_connections)?,
            names: names.clone(),
            schemas: registry::schemas(),
            publisher,
            outbox: dispatcher,
            runner,
            worker_id,
            hooks,
            metrics,
            key,
            sources: crate::sources::Sources::new(
                settings.sources.clone(),
                settings.worker.source_calls_in_flight,
            ),
        });
        let (consume_channel, consumer) = open_consumer(&ctx, &consume_link).await?;
        tracing::info!(
            %worker_id,
            queue = %names.commands_queue,
            prefetch = settings.broker.prefetch,
            batch_size = settings.worker.batch_size,
            http = %http_addr,
            "worker started"
        );

        let helpers = vec![relay.abort_handle(), http_task.abort_handle()];
        let stop = shutdown.clone();
        let watched = consume_link.clone();
        let watched_publish = publish_link.clone();
        let watch_stop = CancellationToken::new();
        let http_stop = shutdown.clone();
        let saga_handle = sagas.clone();
        let task = tokio::spawn(async move {
            let consumed = tokio::select! {
                consumed = consume(ctx.clone(), watched.clone(), consume_channel, consumer, stop) => consumed,
                lost = watched.clone().keep_alive(watch_stop.clone()) => Err(lost),
                lost = watched_publish.keep_alive(watch_stop.clone()) => Err(lost),
            };
            watch_stop.cancel();
            // However consuming ended (shutdown, or a broker that did not come back), the
            // HTTP endpoints stop with it.
            http_stop.cancel();
            // Drain: the sagas in hand finish (bounded) and the rest are given back; then the
            // relay publishes what the outbox holds; then the connection closes.
            let bound = Duration::from_millis(ctx.settings.worker.shutdown_timeout_ms);
            let tasks = saga_handle.lock().expect("not poisoned").take();
            if let Some(tasks) = tasks {
                tasks.stop(bound).await;
            }
            let drained = drain(&ctx).await;
            relay_stop.cancel();
            let _ = relay.await;
            let _ = http_task.await;
            consumed.and(drained)
        });

        Ok(Worker {
            names,
            http_addr,
            pool,
            id: worker_id,
            shutdown,
            consume_link,
            publish_link,
            task,
            helpers,
            sagas,
        })
    }

    async fn close(links: [&Arc<broker::Link>; 2], code: u16, text: &str) {
        for link in links {
            let _ = link.connection().close(code, text.into()).await;
        }
    }

    /// Asks the worker to drain and waits for it to stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let result = self.task.await?;
        Self::close(
            [&self.consume_link, &self.publish_link],
            200,
            "worker stopped",
        )
        .await;
        result
    }

    /// Stops abruptly, as a crash would: no drain, no acks, no leases given back; the broker
    /// requeues what this worker held, and the others' sweepers take its sagas once its
    /// heartbeat is stale. (Tests use it to prove nothing is lost or duplicated.)
    pub async fn kill(self) {
        self.task.abort();
        for h in &self.helpers {
            h.abort();
        }
        if let Some(tasks) = self.sagas.lock().expect("not poisoned").take() {
            tasks.abort();
        }
        Self::close(
            [&self.consume_link, &self.publish_link],
            320,
            "worker killed",
        )
        .await;
    }

    /// Waits until the worker stops by itself (shutdown requested, or the broker connection
    /// could not be recovered).
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.task.await?;
        Self::close(
            [&self.consume_link, &self.publish_link],
            200,
            "worker stopped",
        )
        .await;
        result
    }
}

/// A channel with the prefetch and a consumer of the commands queue, on the link's current
/// session.
async fn open_consumer(
    ctx: &Context,
    link: &broker::Link,
) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
    let channel = link.connection().create_channel().await?;
    channel
        .basic_qos(ctx.settings.broker.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            ctx.names.commands_queue.as_str().into(),
            format!("onboard-{}", ctx.worker_id).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    link.consuming_on(&channel);
    Ok((channel, consumer))
}

/// Takes deliveries until shutdown. Commands gather into batches of up to
/// `worker.batch_size`, waiting at most `worker.batch_linger_ms` after the first; at most
/// `worker.batches_in_flight` batches run at once, and at most `worker.concurrency` queries
/// and rejections. An import first reads its source record in a stage of its own (at most
/// `worker.source_calls_in_flight` reads at once), outside any batch, then joins the next
/// batch: a slow source holds up only its imports. The prefetch bounds what waits in between.
///
/// The loop waits only in its `select!`: a task waits for its own slot, so shutdown, a batch's
/// linger and a replaced broker session are seen however busy the slots are.
async fn consume(
    ctx: Arc<Context>,
    link: Arc<broker::Link>,
    mut channel: lapin::Channel,
    mut consumer: lapin::Consumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut replaced = link.replaced();
    let w = &ctx.settings.worker;
    let batches = Arc::new(Semaphore::new(w.batches_in_flight.max(1)));
    let singles = Arc::new(Semaphore::new(w.concurrency.max(1)));
    // Every batch and task runs in this set: if this future is dropped (the worker killed),
    // they are aborted with it, as a crash would end them.
    let mut tasks: JoinSet<()> = JoinSet::new();
    let linger = Duration::from_millis(w.batch_linger_ms);
    let mut pending: Vec<batch::Item> = Vec::with_capacity(w.batch_size);
    let mut flush_at: Option<tokio::time::Instant> = None;
    let batch_size = w.batch_size.max(1);
    // Imports whose record was read come back here, tagged with the broker session they
    // arrived on: one from a session replaced meanwhile is dropped (the broker redelivers it).
    let (prepared_tx, mut prepared) = tokio::sync::mpsc::unbounded_channel::<(u64, batch::Item)>();
    let mut session: u64 = 0;
    // The delivery tags of this channel not settled yet: a batch acks its own run of them at
    // once. A new channel, or one lapin recovered (its tags start again), gets a new one.
    let mut window = broker::AckWindow::new();
    loop {
        while tasks.try_join_next().is_some() {}
        // A batch goes when it is full or its linger is over, and a batch slot is free; while
        // no slot is free it keeps filling (up to batch_size), so a busy worker runs fuller
        // batches instead of more of them.
        let due = !pending.is_empty()
            && (pending.len() >= batch_size
                || flush_at.is_some_and(|at| at <= tokio::time::Instant::now()));
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = replaced.changed() => {
                // A new session: what was gathered came through the old channel, whose acks
                // cannot reach the broker, which redelivers it all.
                pending.clear();
                flush_at = None;
                session += 1;
                window = broker::AckWindow::new();
                (channel, consumer) = open_consumer(&ctx, &link).await?;
                tracing::info!("consuming on the new broker session");
                continue;
            }
            permit = batches.clone().acquire_owned(), if due => {
                start_batch(&ctx, permit?, &mut pending, &mut tasks);
                flush_at = None;
                continue;
            }
            _ = sleep_until(flush_at), if !due => continue,
            Some((from, item)) = prepared.recv(), if pending.len() < batch_size => {
                if from == session {
                    pending.push(item);
                    if flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + linger);
                    }
                }
                continue;
            }
            next = consumer.next(), if pending.len() < batch_size => next,
        };
        match next {
            Some(Ok(delivery)) => {
                match pipeline::route(&ctx, broker::Delivery::tracked(delivery, &window)) {
                    Route::Command(item) => {
                        pending.push(*item);
                        if flush_at.is_none() {
                            flush_at = Some(tokio::time::Instant::now() + linger);
                        }
                    }
                    Route::Import(mut item) => {
                        let ctx = ctx.clone();
                        let back = prepared_tx.clone();
                        let from = session;
                        tasks.spawn(async move {
                            batch::prepare_import(&ctx, &mut item).await;
                            // The loop is gone only when the worker stops: the delivery goes back.
                            let _ = back.send((from, *item));
                        });
                    }
                    Route::Query(item) => {
                        let singles = singles.clone();
                        let ctx = ctx.clone();
                        tasks.spawn(async move {
                            let Ok(_permit) = singles.acquire_owned().await else {
                                return;
                            };
                            let span = item.span.clone();
                            tracing::Instrument::instrument(query::answer(&ctx, *item), span).await;
                        });
                    }
                    Route::Reject(rejected) => {
                        let singles = singles.clone();
                        let ctx = ctx.clone();
                        tasks.spawn(async move {
                            let Ok(_permit) = singles.acquire_owned().await else {
                                return;
                            };
                            let pipeline::Rejected {
                                delivery,
                                msg,
                                rejection,
                                span,
                            } = *rejected;
                            tracing::Instrument::instrument(
                                pipeline::reject(&ctx, delivery, msg, rejection),
                                span,
                            )
                            .await;
                        });
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer interrupted; waiting for the connection to recover");
                // What was gathered came through the old channel: its acks cannot reach the
                // broker, which redelivers it all; the inbox recognises what committed.
                pending.clear();
                session += 1;
                window = broker::AckWindow::new();
                flush_at = None;
                tokio::select! {
                    recovered = channel.wait_for_recovery(e) => {
                        recovered.map_err(|e| {
                            anyhow::anyhow!("broker connection lost and not recovered: {e}")
                        })?;
                        tracing::info!("broker connection recovered; consuming again");
                    }
                    _ = replaced.changed() => {
                        (channel, consumer) = open_consumer(&ctx, &link).await?;
                        tracing::info!("consuming on the new broker session");
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
            None => anyhow::bail!("the broker cancelled the consumer"),
        }
    }
    // Stop taking deliveries; those still prefetched are requeued when the channel closes.
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    // Commands gathered but not started are not started now: their deliveries go back to the
    // queue when the channel closes (a free batch slot could be a long wait).
    drop(pending);
    // Wait for the batches and tasks in flight (bounded by the shutdown timeout); what is
    // still running then is aborted (its transaction rolls back) and redelivered.
    let bound = Duration::from_millis(ctx.settings.worker.shutdown_timeout_ms);
    let all = async { while tasks.join_next().await.is_some() {} };
    match tokio::time::timeout(bound, all).await {
        Ok(()) => tracing::info!("in-flight commands finished"),
        Err(_) => {
            tracing::warn!(
                ?bound,
                "shutdown bound reached with commands in flight; they will be redelivered"
            );
            tasks.shutdown().await;
        }
    }
    let _ = channel.close(200, "draining".into()).await;
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts the gathered commands as a batch in the slot `permit` holds.
fn start_batch(
    ctx: &Arc<Context>,
    permit: tokio::sync::OwnedSemaphorePermit,
    pending: &mut Vec<batch::Item>,
    tasks: &mut JoinSet<()>,
) {
    let items = std::mem::take(pending);
    ctx.metrics.batch_sizes(None, items.len());
    let ctx = ctx.clone();
    tasks.spawn(async move {
        batch::run(&ctx, items).await;
        drop(permit);
    });
}

/// Gives the relay a bounded chance to publish what the drained handlers wrote. Claims this
/// worker still holds on rows (none, unless a batch was cut short) are given to the relay
/// first: nothing here will publish them any more.
async fn drain(ctx: &Context) -> anyhow::Result<()> {
    if let Err(e) = store::outbox::release_claims(&ctx.pool, ctx.worker_id).await {
        tracing::warn!(error = %e, "outbox claims not given back; they run out by themselves");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match store::outbox::backlog(&ctx.pool).await {
            Ok((0, _)) => return Ok(()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => return Ok(()),
        }
    }
    tracing::warn!(
        "outbox not empty at shutdown; another worker's relay (or the next start) publishes it"
    );
    Ok(())
}

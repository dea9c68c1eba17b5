//! The worker: wires configuration, database, broker, relay and HTTP together, consumes the
//! commands queue with bounded concurrency, and drains on shutdown.

pub mod failure;
pub mod pipeline;
pub mod query;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, Names, Publisher};
use crate::configuration::{Settings, redact_url};
use crate::messages::{CommandMeta, Schemas};
use crate::metrics::Metrics;
use crate::{http, outbox, store};

/// How a delivery ended in this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Effects committed (or a refusal recorded), then acked.
    Handled,
    /// Already processed (inbox), acked without effect.
    Duplicate,
    /// Copied to a delay queue, then acked.
    RetryScheduled,
    /// Copied to the dead-letter queue, then acked.
    DeadLettered,
    /// Handed back to the broker unacked (it could not be copied anywhere).
    Requeued,
}

/// A delivery's end, as observers see it.
#[derive(Debug, Clone)]
pub struct Settled {
    pub message_id: Option<String>,
    pub routing_key: String,
    pub disposition: Disposition,
}

/// Test seams: code run at chosen points of a command's life, to freeze or crash a worker
/// exactly there (like crates.io's worker tests), or to watch deliveries end. Production
/// leaves them empty.
#[allow(clippy::type_complexity)]
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs after a command's transaction committed and before its ack.
    pub after_commit: Option<Arc<dyn Fn(&CommandMeta) -> BoxFuture<'static, ()> + Send + Sync>>,
    /// Called once per delivery when it is settled.
    pub on_settled: Option<Arc<dyn Fn(Settled) + Send + Sync>>,
    /// Runs in the Xendit step after Xendit answered and before the answer is stored.
    pub after_xendit_answered: Option<Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>>,
}

impl Hooks {
    pub(crate) fn settled(&self, msg: &crate::messages::IncomingMessage, disposition: Disposition) {
        if let Some(f) = &self.on_settled {
            f(Settled {
                message_id: msg.message_id.clone(),
                routing_key: msg.routing_key.clone(),
                disposition,
            });
        }
    }
}

/// What every handler task shares.
pub struct Context {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub names: Names,
    pub schemas: Schemas,
    /// Publishes retries and dead letters (the relay has its own channel).
    pub publisher: Publisher,
    /// Rung after a transaction that wrote outbox rows committed: wakes this worker's relay.
    pub outbox_wake: Arc<outbox::relay::Wake>,
    /// Xendit, SMTP and their settings, for the saga steps.
    pub saga: crate::saga::Services,
    pub hooks: Hooks,
    /// Counters and histograms served on `/metrics`.
    pub metrics: Metrics,
}

/// A running worker.
pub struct Worker {
    pub names: Names,
    pub http_addr: SocketAddr,
    pub pool: PgPool,
    /// Cancel to drain and stop (what SIGTERM does).
    pub shutdown: CancellationToken,
    connection: Arc<lapin::Connection>,
    task: JoinHandle<anyhow::Result<()>>,
    /// The relay and HTTP tasks, for [`Worker::kill`].
    helpers: Vec<tokio::task::AbortHandle>,
}

impl Worker {
    /// Starts a worker: waits for the database and runs migrations, connects to the broker,
    /// declares the topology, starts the outbox relay, the HTTP endpoints and the consumer.
    pub async fn start(settings: Settings, hooks: Hooks) -> anyhow::Result<Worker> {
        let settings = Arc::new(settings);
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new();
        let hooks = metrics.observing(hooks);
        let pool = store::pool(&settings.database)?;

        let wait = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(30);
        (|| store::migrate(&pool))
            .retry(wait)
            .notify(|e, d| {
                tracing::warn!(error = %e, url = %redact_url(&settings.database.url), "database not ready; retrying in {d:?}")
            })
            .await?;

        let connection = (|| broker::connect(&settings.broker, "onboard worker"))
            .retry(wait)
            .notify(|e, d| {
                tracing::warn!(error = %e, url = %redact_url(&settings.broker.url), "broker not ready; retrying in {d:?}")
            })
            .await?;
        let connection = Arc::new(connection);
        let names = broker::topology::declare_on(&connection, &settings).await?;
        let confirm = Duration::from_millis(settings.broker.confirm_timeout_ms);
        let publisher = Publisher::open(&connection, confirm).await?;
        let relay_publisher = Publisher::open(&connection, confirm).await?;

        let relay_stop = CancellationToken::new();
        let outbox_wake = outbox::relay::Wake::new();
        let relay = tokio::spawn(outbox::relay::run(
            pool.clone(),
            relay_publisher,
            names.clone(),
            settings.outbox.clone(),
            relay_stop.clone(),
            outbox_wake.local(),
        ));
        // Stops with the relay (an abort on kill, like the relay's own task).
        let announcer = tokio::spawn(outbox::relay::announce(
            pool.clone(),
            outbox_wake.clone(),
            relay_stop.clone(),
        ));

        let listener =
            tokio::net::TcpListener::bind((settings.http.host.as_str(), settings.http.port))
                .await?;
        let http_addr = listener.local_addr()?;
        let http_task = tokio::spawn(http::serve(
            listener,
            http::State {
                pool: pool.clone(),
                connection: connection.clone(),
                names: names.clone(),
                metrics: metrics.clone(),
            },
            shutdown.clone(),
        ));

        let ctx = Arc::new(Context {
            settings: settings.clone(),
            pool: pool.clone(),
            names: names.clone(),
            schemas: Schemas::load(),
            publisher,
            outbox_wake,
            saga: crate::saga::Services::from_settings(&settings)?
                .with_hook(hooks.after_xendit_answered.clone()),
            hooks,
            metrics,
        });
        let consume_channel = connection.create_channel().await?;
        consume_channel
            .basic_qos(settings.broker.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = consume_channel
            .basic_consume(
                names.commands_queue.as_str().into(),
                format!("onboard-{}", uuid::Uuid::new_v4()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(
            queue = %names.commands_queue,
            prefetch = settings.broker.prefetch,
            concurrency = settings.worker.concurrency,
            http = %http_addr,
            "worker started"
        );

        let helpers = vec![
            relay.abort_handle(),
            http_task.abort_handle(),
            announcer.abort_handle(),
        ];
        let stop = shutdown.clone();
        let watched = connection.clone();
        let http_stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let consumed = tokio::select! {
                consumed = consume(ctx.clone(), consume_channel, consumer, stop) => consumed,
                lost = broker::lost_for_good(&watched, &ctx.settings.broker) => Err(lost),
            };
            // However consuming ended (shutdown, or a broker that did not come back), the
            // HTTP endpoints stop with it.
            http_stop.cancel();
            // Drain: whatever is in flight finishes (bounded); then the relay publishes what
            // the outbox holds; then the connection closes.
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
            shutdown,
            connection,
            task,
            helpers,
        })
    }

    /// Asks the worker to drain and waits for it to stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let result = self.task.await?;
        let _ = self.connection.close(200, "worker stopped".into()).await;
        result
    }

    /// Stops abruptly, as a crash would: no drain, no acks; the broker requeues what this
    /// worker held. (Tests use it to prove nothing is lost or duplicated.)
    pub async fn kill(self) {
        self.task.abort();
        for h in &self.helpers {
            h.abort();
        }
        let _ = self.connection.close(320, "worker killed".into()).await;
    }

    /// Waits until the worker stops by itself (shutdown requested, or the broker connection
    /// could not be recovered).
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.task.await?;
        let _ = self.connection.close(200, "worker stopped".into()).await;
        result
    }
}

/// Takes deliveries until shutdown, at most `concurrency` handlers at once: a permit is taken
/// before the next delivery is pulled, so the prefetch buffer is the only other backlog.
async fn consume(
    ctx: Arc<Context>,
    channel: lapin::Channel,
    mut consumer: lapin::Consumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(ctx.settings.worker.concurrency));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p?,
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    pipeline::process(&ctx, delivery).await;
                    drop(permit);
                });
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer interrupted; waiting for the connection to recover");
                channel.wait_for_recovery(e).await.map_err(|e| {
                    anyhow::anyhow!("broker connection lost and not recovered: {e}")
                })?;
                tracing::info!("broker connection recovered; consuming again");
            }
            None => anyhow::bail!("the broker cancelled the consumer"),
        }
    }
    // Stop taking deliveries; those still prefetched are requeued when the channel closes.
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    // Wait for in-flight handlers (bounded by the shutdown timeout).
    let bound = Duration::from_millis(ctx.settings.worker.shutdown_timeout_ms);
    let all = ctx.settings.worker.concurrency as u32;
    match tokio::time::timeout(bound, permits.acquire_many(all)).await {
        Ok(_) => tracing::info!("in-flight handlers finished"),
        Err(_) => tracing::warn!(
            ?bound,
            "shutdown bound reached with handlers in flight; they will be redelivered"
        ),
    }
    let _ = channel.close(200, "draining".into()).await;
    Ok(())
}

/// Gives the relay a bounded chance to publish what the drained handlers wrote.
async fn drain(ctx: &Context) -> anyhow::Result<()> {
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

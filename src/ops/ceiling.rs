//! `onboard-lab bench-ceiling`: the bare ceiling the worker is measured against.
//!
//! What one message costs at the least on this machine, with nothing of the worker in it:
//! N messages are pre-published to a quorum queue of their own, then consumed with prefetch
//! 200 and 16 handlers in flight; each handler runs one PostgreSQL transaction of four inserts
//! (shaped like an inbox row, a client, a user and an outbox row) and then acks. The rate of
//! that loop bounds any design that spends one message and one transaction per step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;

use crate::broker;
use crate::configuration::Settings;
use crate::store;

/// `onboard-lab bench-ceiling` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// Messages to pre-publish and consume.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    pub count: usize,
    #[arg(long, default_value_t = 200)]
    pub prefetch: u16,
    /// Handlers in flight (and database connections).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Also NOTIFY in each transaction, as the outbox trigger does (to measure what that costs).
    #[arg(long)]
    pub notify: bool,
    /// Also bump one shared counter row first in each transaction, as client codes do (to
    /// measure what a row every transaction locks until commit costs).
    #[arg(long)]
    pub counter: bool,
    /// Run the work in batches of this many messages, one transaction of four multi-row
    /// statements each (`INSERT ... SELECT FROM UNNEST`), acked after commit: the batched
    /// ceiling. 1 (the default) is the per-message loop.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    pub messages: usize,
    pub prefetch: u16,
    pub in_flight: usize,
    pub notify: bool,
    pub counter: bool,
    pub batch: usize,
    pub publish_seconds: f64,
    pub consume_seconds: f64,
    pub messages_per_sec: f64,
}

/// The ceiling creates and truncates tables: it runs only in a database that holds nothing
/// but its own (`ceiling_*`), never in one the worker or anyone else keeps data in.
async fn refuse_foreign_database(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let (database, foreign) = store::ceiling::tables_not_its_own(pool).await?;
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        anyhow::bail!(
            "bench-ceiling creates and truncates tables of its own, so it runs only in an empty \
             scratch database; {database:?} holds {} other tables ({}{}). Point \
             ONBOARD__DATABASE__URL at a database made for it, e.g. .../onboard_bench_ceiling \
             (scripts/bench.sh makes one).",
            foreign.len(),
            shown.join(", "),
            if foreign.len() > shown.len() {
                ", ..."
            } else {
                ""
            },
        );
    }
    Ok(())
}

pub async fn run(settings: &Settings, args: &CeilingArgs) -> anyhow::Result<CeilingReport> {
    let pool = PgPoolOptions::new()
        .max_connections(args.in_flight as u32)
        .connect(settings.database.url.expose_secret())
        .await?;
    refuse_foreign_database(&pool).await?;
    store::ceiling::create_tables(&pool).await?;

    let queue = format!("{}.ceiling", settings.broker.prefix);
    let connection = broker::connect(&settings.broker, "onboard-lab bench-ceiling").await?;
    let channel = connection.create_channel().await?;
    broker::topology::declare_quorum_queue(&channel, &queue).await?;
    channel
        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await?;

    // Pre-publish, confirmed, pipelined.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let window = Arc::new(Semaphore::new(1000));
    let mut confirms = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let permit = window.clone().acquire_owned().await?;
        let body = serde_json::to_vec(&serde_json::json!({
            "email": format!("ceiling-{i}@sg.example"),
            "client_alias": format!("Ceiling {i}"),
            "client_type": "CORPORATE",
            "country_code": "SG",
            "phone": "+6591234567",
        }))?;
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(uuid::Uuid::new_v4().to_string().as_str().into()),
            )
            .await?;
        confirms.push(tokio::spawn(async move {
            let ok = matches!(confirm.await, Ok(Confirmation::Ack(_)));
            drop(permit);
            ok
        }));
    }
    for c in confirms {
        if !c.await? {
            anyhow::bail!("the broker did not confirm a pre-published message");
        }
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    // Consume: prefetch, bounded handlers, one transaction of four inserts, ack.
    let consume = connection.create_channel().await?;
    consume
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            queue.as_str().into(),
            "onboard-ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let permits = Arc::new(Semaphore::new(args.in_flight));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut first = None;
    let mut received = 0;
    if args.batch > 1 {
        // Batches of up to `batch` deliveries, taking what has arrived within 5 ms of the
        // first; at most `in_flight` batches at once.
        let batches = Arc::new(Semaphore::new(args.in_flight.clamp(1, 4)));
        while received < args.count {
            let permit = batches.clone().acquire_owned().await?;
            let mut batch = Vec::with_capacity(args.batch);
            let Some(delivery) = consumer.next().await else {
                anyhow::bail!("the broker cancelled the consumer");
            };
            batch.push(delivery?);
            first.get_or_insert_with(Instant::now);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
            while batch.len() < args.batch && received + batch.len() < args.count {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(d)) => batch.push(d?),
                    _ => break,
                }
            }
            received += batch.len();
            let pool = pool.clone();
            let done = done.clone();
            let counter = args.counter;
            tokio::spawn(async move {
                loop {
                    match store::ceiling::batch_transaction(&pool, &batch, counter).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "ceiling batch failed; retrying");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                for d in &batch {
                    let _ = d.ack(BasicAckOptions::default()).await;
                }
                done.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
                drop(permit);
            });
        }
        let _ = batches
            .acquire_many(args.in_flight.clamp(1, 4) as u32)
            .await?;
    }
    while received < args.count {
        let permit = permits.clone().acquire_owned().await?;
        let Some(delivery) = consumer.next().await else {
            anyhow::bail!("the broker cancelled the consumer");
        };
        let delivery = delivery?;
        first.get_or_insert_with(Instant::now);
        received += 1;
        let pool = pool.clone();
        let done = done.clone();
        let extras = (args.notify, args.counter);
        tokio::spawn(async move {
            loop {
                match store::ceiling::one_transaction(&pool, &delivery.data, extras).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "ceiling transaction failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(permit);
        });
    }
    let _ = permits.acquire_many(args.in_flight as u32).await?;
    let consume_seconds = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "ceiling done".into()).await;
    pool.close().await;
    Ok(CeilingReport {
        messages: done.load(std::sync::atomic::Ordering::SeqCst),
        prefetch: args.prefetch,
        in_flight: args.in_flight,
        notify: args.notify,
        counter: args.counter,
        batch: args.batch,
        publish_seconds,
        consume_seconds,
        messages_per_sec: if consume_seconds > 0.0 {
            args.count as f64 / consume_seconds
        } else {
            0.0
        },
    })
}

/// `onboard-lab bench-ceiling`: runs and prints.
pub async fn cli(settings: &Settings, args: CeilingArgs) -> anyhow::Result<()> {
    let report = run(settings, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} ceiling: {} messages (prefetch {}, {} in flight), one transaction of four inserts{} each: {:.2} s = {:.0} messages/s",
            if report.batch > 1 {
                format!("batched ({} per transaction)", report.batch)
            } else {
                "bare".to_string()
            },
            report.messages,
            report.prefetch,
            report.in_flight,
            match (report.counter, report.notify) {
                (false, false) => "",
                (true, false) => " after a shared counter row",
                (false, true) => " and a NOTIFY",
                (true, true) => " after a shared counter row, and a NOTIFY",
            },
            report.consume_seconds,
            report.messages_per_sec
        );
    }
    Ok(())
}

//! `onboard-lab webhooks bench`: how fast events reach an endpoint that answers at once, alone or
//! beside one that never answers. Runs the real feed and sender in-process against the
//! configured broker and database, under a broker prefix of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use lapin::BasicProperties;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{self, Names, Publisher, publisher::Outgoing};
use crate::configuration::Settings;
use crate::store::{self, webhooks as db};

async fn receiver(hang: bool, count: Arc<AtomicU64>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/hook",
        post(move || {
            let count = count.clone();
            async move {
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                count.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

pub async fn run(mut settings: Settings, events: usize, hanging: bool) -> anyhow::Result<()> {
    let run = Uuid::new_v4().simple().to_string();
    settings.broker.prefix = format!("webhooks-bench-{}", &run[..8]);
    // Its endpoint listens on loopback.
    settings.webhooks.allow_private_addresses = true;
    let settings = Arc::new(settings);
    let pool = store::pool(&settings.database)?;
    store::migrate(&pool).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let fast = receiver(false, delivered.clone()).await?;
    let mut endpoints =
        vec![db::add_endpoint(&pool, &fast, &["*".into()], &super::new_secret()).await?];
    if hanging {
        let url = receiver(true, Arc::new(AtomicU64::new(0))).await?;
        endpoints.push(db::add_endpoint(&pool, &url, &["*".into()], &super::new_secret()).await?);
    }

    // The queue first, so no event published below is missed by the feed.
    let connection = broker::connect(&settings.broker, "onboard-lab webhooks bench").await?;
    super::serve::declare_feed(&connection, &settings).await?;
    let names = Names::new(&settings.broker.prefix);
    let stop = CancellationToken::new();
    let serving = tokio::spawn(super::serve::run(settings.clone(), stop.clone()));

    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await?;
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        let bodies: Vec<Vec<u8>> = chunk
            .iter()
            .map(|i| {
                serde_json::to_vec(&json!({
                    "event_id": Uuid::new_v4(), "type": "client.created",
                    "occurred_at": "2026-12-02T00:00:00Z", "correlation_id": format!("bench-{i}"),
                    "causation_id": null, "data": {"client": {"client_id": i}},
                }))
                .expect("JSON")
            })
            .collect();
        let messages = bodies
            .iter()
            .map(|b| Outgoing {
                exchange: &names.events_exchange,
                routing_key: "client.created",
                body: b,
                properties: BasicProperties::default().with_delivery_mode(2),
            })
            .collect();
        for r in publisher.publish_all(messages).await {
            r?;
        }
    }
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered.load(Ordering::Relaxed) < events as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "{got} of {events} events delivered to an endpoint answering at once{} in {:.2} s \
         (published in {:.2} s): {:.0} deliveries/s",
        if hanging {
            ", beside an endpoint that never answers"
        } else {
            ""
        },
        took.as_secs_f64(),
        published.as_secs_f64(),
        got as f64 / took.as_secs_f64()
    );

    stop.cancel();
    let _ = serving.await;
    for id in endpoints {
        db::remove_endpoint(&pool, id).await?;
    }
    let channel = connection.create_channel().await?;
    let queues = names.all_queues(&settings.retry.delays_ms);
    let exchanges = names.all_exchanges(&settings.retry.delays_ms);
    for q in queues {
        channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for e in exchanges {
        channel
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    let _ = connection.close(200, "bench done".into()).await;
    pool.close().await;
    anyhow::ensure!(
        got == events as u64,
        "not every event was delivered in time"
    );
    Ok(())
}

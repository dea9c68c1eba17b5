//! Operating endpoints: `/healthz` (the process answers), `/readyz` (database and broker
//! reachable, and the queues the worker consumes from and dead-letters to exist) and
//! `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::{Names, topology};
use crate::metrics::Metrics;
use crate::store;

/// Each probe of a dependency gives up after this long: a hanging database must make
/// `/readyz` answer 503 quickly, not hang the orchestrator's probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct State {
    pub pool: PgPool,
    /// The worker's broker sessions (consuming, publishing): ready when all are.
    pub links: Vec<Arc<crate::broker::Link>>,
    pub names: Names,
    pub metrics: Metrics,
    /// A saga due for longer than this counts as stuck.
    pub stuck_after_seconds: f64,
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn database_reachable(pool: &PgPool) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, store::ping(pool))
        .await
        .is_ok_and(|r| r.is_ok())
}

fn broker_up(state: &State) -> bool {
    state.links.iter().all(|l| l.healthy())
}

async fn topology_depths(state: &State) -> Option<topology::Depths> {
    if !broker_up(state) {
        return None;
    }
    tokio::time::timeout(
        PROBE_TIMEOUT,
        topology::check(&state.links[0].connection(), &state.names),
    )
    .await
    .ok()?
    .ok()
}

async fn ready(AxumState(state): AxumState<State>) -> impl IntoResponse {
    let (database, depths) = tokio::join!(database_reachable(&state.pool), topology_depths(&state));
    let broker = broker_up(&state);
    let topology = depths.is_some();
    let status = if database && broker && topology {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "database": database, "broker": broker, "topology": topology })),
    )
}

/// Samples what is not counted as it happens (outbox backlog, dead-letter depth, connection),
/// then encodes. A sample that cannot be taken keeps its previous value.
async fn metrics(AxumState(state): AxumState<State>) -> impl IntoResponse {
    let m = &state.metrics;
    let (backlog, depths, stuck, disabled) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, store::outbox::backlog(&state.pool)),
        topology_depths(&state),
        tokio::time::timeout(
            PROBE_TIMEOUT,
            store::sagas::count_stuck(&state.pool, state.stuck_after_seconds)
        ),
        tokio::time::timeout(PROBE_TIMEOUT, store::webhooks::count_failing(&state.pool)),
    );
    if let Ok(Ok((_, disabled))) = disabled {
        m.set_webhook_endpoints_disabled(disabled);
    }
    if let Ok(Ok((pending, oldest))) = backlog {
        m.set_outbox(pending, oldest);
    }
    if let Ok(Ok(stuck)) = stuck {
        m.set_sagas_stuck(stuck);
    }
    if let Some(d) = depths {
        m.set_dead_letter_depth(d.dead);
    }
    m.set_broker_connected(broker_up(&state));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

pub async fn serve(listener: tokio::net::TcpListener, state: State, shutdown: CancellationToken) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

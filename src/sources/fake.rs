//! A local source system for the quick start and the tests: `GET /clients/{id}` answers seed
//! 004's `client` object from records kept in memory (loaded from a JSON file whose keys are
//! the record ids, and added at runtime with `PUT /_fake/records/{id}`), behind a bearer token
//! (401 without it, 404 for an unknown id). `POST /_fake/fail {"next": N, "status": 503}`
//! makes the next N reads fail with that status, to exercise retries.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Flags of `onboard-lab fake-source`.
#[derive(Debug, Clone, clap::Args)]
pub struct FakeSourceArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8098")]
    pub listen: SocketAddr,
    /// A JSON object of records by id (seed 004 client objects), served from the start.
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// The bearer token readers must send.
    #[arg(
        long,
        env = "ONBOARD_FAKE_SOURCE_TOKEN",
        default_value = "fake-source-token"
    )]
    pub token: String,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Value>,
    fail_next: u32,
    fail_status: u16,
    reads: u64,
}

#[derive(Clone)]
pub struct FakeSource {
    inner: Arc<Mutex<Inner>>,
    token: Arc<String>,
}

impl FakeSource {
    pub fn new(token: &str, records: HashMap<String, Value>) -> FakeSource {
        FakeSource {
            inner: Arc::new(Mutex::new(Inner {
                records,
                fail_status: 503,
                ..Inner::default()
            })),
            token: Arc::new(token.to_string()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/clients/{id}", get(read))
            .route("/_fake/records/{id}", put(add))
            .route("/_fake/fail", post(fail))
            .route("/_fake/reads", get(reads))
            .with_state(self.clone())
    }
}

async fn read(
    State(fake): State<FakeSource>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let expected = format!("Bearer {}", fake.token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong bearer token"})),
        )
            .into_response();
    }
    let mut inner = fake.lock();
    inner.reads += 1;
    if inner.fail_next > 0 {
        inner.fail_next -= 1;
        let status =
            StatusCode::from_u16(inner.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, Json(json!({"error": "injected failure"}))).into_response();
    }
    match inner.records.get(&id) {
        Some(record) => Json(json!({ "client": record })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Client not found"})),
        )
            .into_response(),
    }
}

async fn add(
    State(fake): State<FakeSource>,
    Path(id): Path<String>,
    Json(record): Json<Value>,
) -> StatusCode {
    fake.lock().records.insert(id, record);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Fail {
    next: u32,
    #[serde(default = "unavailable")]
    status: u16,
}

fn unavailable() -> u16 {
    503
}

async fn fail(State(fake): State<FakeSource>, Json(fail): Json<Fail>) -> StatusCode {
    let mut inner = fake.lock();
    inner.fail_next = fail.next;
    inner.fail_status = fail.status;
    StatusCode::NO_CONTENT
}

async fn reads(State(fake): State<FakeSource>) -> Json<Value> {
    Json(json!({ "reads": fake.lock().reads }))
}

/// Runs the fake as `onboard-lab fake-source` does, until `shutdown`.
pub async fn run(
    args: FakeSourceArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let records: HashMap<String, Value> = match &args.records {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => HashMap::new(),
    };
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, records = records.len(), "fake source listening");
    let fake = FakeSource::new(&args.token, records);
    axum::serve(listener, fake.router())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

//! A local stand-in for Xendit's Customers API, for the quick start, docker-compose and tests:
//! the same paths, headers and answer shapes as `api-version: 2020-10-31`, kept in memory.
//!
//! It behaves like Xendit where the saga depends on it:
//! - `POST /customers` needs Basic auth with a key of Xendit's shape (`xnd_development_...` or
//!   `xnd_production_...`; anything else gives 401 `INVALID_API_KEY`), answers a repeated
//!   `idempotency-key` with the first customer, refuses a reused `reference_id` under another
//!   key with 409 `DUPLICATE_ERROR`, a reused key with another body with 409
//!   `IDEMPOTENCY_ERROR`, and validates as Xendit does, with 400 `API_VALIDATION_ERROR`: the
//!   required `type`, `reference_id` and matching detail, name lengths, `given_names` of letters,
//!   digits and spaces only, `business_type` one of the seven values, `mobile_number` in E.164,
//!   an `idempotency-key` of at most 100 characters;
//! - `GET /customers?reference_id=` answers `{"data": [...], "has_more": false}`.
//!
//! And it can misbehave on demand, to exercise retries ([`FakeSettings`]): added latency, a
//! failure status for the next N requests or a share of them, 429s with `Rate-Limit-Reset`,
//! creates whose answer is lost (the customer exists, the answer cannot be read), and answers
//! as sparse as Xendit's SDK models allow (null names, a `business_type` added since).
//! The switches are set at start and changed at runtime with `POST /_fake/mode` (a JSON object
//! with any of [`FakeSettings`]' fields); `GET /_fake/mode` shows them, and `GET /_fake/customers`
//! lists every customer created, oldest first.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

mod validate;
use validate::*;

/// Switches that make the fake misbehave. All off by default: a well-behaved Xendit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeSettings {
    /// Delay added before every answer on `/customers`, in milliseconds.
    pub latency_ms: u64,
    /// Status of an injected failure (`fail_next`, `fail_rate`), e.g. 503.
    pub fail_status: u16,
    /// Fail this many of the next requests on `/customers`, then behave again.
    pub fail_next: u32,
    /// Share of requests on `/customers` to fail, from 0 (none) to 1 (all).
    pub fail_rate: f64,
    /// Answer this many of the next requests on `/customers` with 429 `RATE_LIMIT_EXCEEDED`.
    pub rate_limit_next: u32,
    /// `Rate-Limit-Reset` sent with those 429s, in seconds.
    pub rate_limit_reset_secs: f64,
    /// Create the customer for this many of the next creates, then lose the answer: 200 with
    /// a body cut off mid-way.
    pub lose_next_answers: u32,
    /// Answer as sparsely as the SDKs' models allow: `given_names` null, `business_type` a
    /// value added after our code was written, no `created`.
    pub sparse_answers: bool,
}

impl Default for FakeSettings {
    fn default() -> Self {
        FakeSettings {
            latency_ms: 0,
            fail_status: 503,
            fail_next: 0,
            fail_rate: 0.0,
            rate_limit_next: 0,
            rate_limit_reset_secs: 1.0,
            lose_next_answers: 0,
            sparse_answers: false,
        }
    }
}

impl FakeSettings {
    /// Why these settings cannot be used, if they cannot.
    fn problem(&self) -> Option<String> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Some(format!(
                "fail_rate must be within 0..=1, got {}",
                self.fail_rate
            ));
        }
        if !(400..=599).contains(&self.fail_status) {
            return Some(format!(
                "fail_status must be an error status (400..=599), got {}",
                self.fail_status
            ));
        }
        if !(self.rate_limit_reset_secs.is_finite() && self.rate_limit_reset_secs >= 0.0) {
            return Some("rate_limit_reset_secs must be a non-negative number".to_owned());
        }
        None
    }
}

/// The fake's memory, shared by every request. Clones share it.
#[derive(Clone, Default)]
pub struct FakeState {
    /// Behind a plain mutex: no lock is held across an `.await`.
    store: Arc<Mutex<Store>>,
}

/// What the fake remembers.
#[derive(Default)]
struct Store {
    /// Current switches.
    settings: FakeSettings,
    /// Customers in creation order, as Xendit would return them.
    customers: Vec<Value>,
    /// `reference_id` → index in `customers`.
    by_reference: HashMap<String, usize>,
    /// `idempotency-key` → the request it first came with, and the customer it made.
    by_idempotency_key: HashMap<String, (Value, usize)>,
}

impl FakeState {
    /// An empty fake with these switches.
    pub fn new(settings: FakeSettings) -> Self {
        FakeState {
            store: Arc::new(Mutex::new(Store {
                settings,
                ..Store::default()
            })),
        }
    }

    /// The current switches.
    pub fn settings(&self) -> FakeSettings {
        self.lock().settings.clone()
    }

    /// Every customer created so far, oldest first.
    pub fn customers(&self) -> Vec<Value> {
        self.lock().customers.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fake's routes over `state`, for tests that serve it themselves.
pub fn router(state: FakeState) -> Router {
    let api = Router::new()
        .route("/customers", post(create_customer).get(find_customers))
        // Only the API misbehaves; the control routes below always answer.
        .route_layer(middleware::from_fn_with_state(state.clone(), misbehave));
    Router::new()
        .merge(api)
        .route("/_fake/mode", get(show_mode).post(change_mode))
        .route("/_fake/customers", get(list_customers))
        .with_state(state)
}

/// Serves the fake on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    settings: FakeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(FakeState::new(settings)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Flags of the fake-Xendit subcommand (e.g. `onboard-lab fake-xendit`); flatten them into the
/// binary's command line with `#[command(flatten)]` or use them as a subcommand's arguments.
///
/// - `--listen <ADDR>`: address to serve on (default `127.0.0.1:8099`; `0.0.0.0:8099` in a
///   container). Point `xendit.base_url` at `http://<ADDR>`.
/// - `--latency-ms <MS>`: delay added to every answer on `/customers` (default 0).
/// - `--fail-status <STATUS>`: status of injected failures (default 503).
/// - `--fail-rate <RATE>`: share of requests on `/customers` that fail with `--fail-status`,
///   from 0 to 1 (default 0).
///
/// `fail_next` and `rate_limit_next` have no flag: they are for tests, through `POST /_fake/mode`.
#[derive(Debug, Clone, clap::Args)]
pub struct FakeArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: SocketAddr,
    /// Delay added to every answer on /customers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Status of injected failures.
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(400..=599))]
    pub fail_status: u16,
    /// Share of requests on /customers that fail, from 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
}

impl FakeArgs {
    /// The switches these flags set.
    pub fn settings(&self) -> FakeSettings {
        FakeSettings {
            latency_ms: self.latency_ms,
            fail_status: self.fail_status,
            fail_rate: self.fail_rate,
            ..FakeSettings::default()
        }
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not within 0..=1"))
    }
}

/// Runs the fake as the subcommand does: binds `args.listen`, serves until `shutdown`.
/// See [`FakeArgs`] for the flags.
pub async fn run(
    args: FakeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        settings = ?args.settings(),
        "fake Xendit listening"
    );
    serve(listener, args.settings(), shutdown).await
}

/// What the switches decided for one request.
enum Injected {
    /// Answer 429 with this `Rate-Limit-Reset`.
    RateLimit(f64),
    /// Answer with this error status.
    Failure(StatusCode),
}

/// Applies the switches: latency first, then a 429 or a failure instead of the real answer.
async fn misbehave(State(state): State<FakeState>, request: Request, next: Next) -> Response {
    let (latency, injected) = {
        let mut store = state.lock();
        let settings = &mut store.settings;
        let injected = if settings.rate_limit_next > 0 {
            settings.rate_limit_next -= 1;
            Some(Injected::RateLimit(settings.rate_limit_reset_secs))
        } else if settings.fail_next > 0 {
            settings.fail_next -= 1;
            Some(Injected::Failure(failure_status(settings.fail_status)))
        } else if settings.fail_rate > 0.0 && rand::random::<f64>() < settings.fail_rate {
            Some(Injected::Failure(failure_status(settings.fail_status)))
        } else {
            None
        };
        (Duration::from_millis(settings.latency_ms), injected)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match injected {
        Some(Injected::RateLimit(reset)) => {
            let mut response = xendit_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                "Rate limit exceeded (injected by the fake)",
            );
            if let Ok(value) = HeaderValue::from_str(&reset.to_string()) {
                response.headers_mut().insert("rate-limit-reset", value);
            }
            response
        }
        Some(Injected::Failure(status)) => {
            let code = if status.is_server_error() {
                "SERVER_ERROR"
            } else {
                "FAKE_INJECTED_ERROR"
            };
            xendit_error(status, code, "Failure injected by the fake")
        }
        None => next.run(request).await,
    }
}

fn failure_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Xendit's error shape.
fn xendit_error(status: StatusCode, error_code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error_code": error_code, "message": message })),
    )
        .into_response()
}

/// Whether the request carries Basic auth with a key of Xendit's shape (`xnd_development_` or
/// `xnd_production_` and something after it), as Xendit requires. Any such key is accepted:
/// the fake checks that the client authenticates, not which account it is.
fn is_authenticated(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| BASE64_STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| pair.split_once(':').map(|(user, _)| is_key(user)))
        .unwrap_or(false)
}

fn is_key(key: &str) -> bool {
    ["xnd_development_", "xnd_production_"]
        .iter()
        .any(|prefix| {
            key.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty())
        })
}

/// Xendit's longest `idempotency-key`.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 100;

/// Xendit's answer to a request without a usable key.
fn unauthenticated() -> Response {
    xendit_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_API_KEY",
        "API key format is invalid",
    )
}

async fn create_customer(
    State(state): State<FakeState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_authenticated(&headers) {
        return unauthenticated();
    }
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => Value::Object(fields),
        _ => {
            return xendit_error(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON_FORMAT",
                "Request body is not a JSON object",
            );
        }
    };
    if let Err(message) = validate(&request) {
        return xendit_error(StatusCode::BAD_REQUEST, "API_VALIDATION_ERROR", &message);
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if idempotency_key
        .as_ref()
        .is_some_and(|k| k.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS)
    {
        return xendit_error(
            StatusCode::BAD_REQUEST,
            "API_VALIDATION_ERROR",
            "idempotency-key must be at most 100 characters",
        );
    }
    let reference_id = request["reference_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let mut store = state.lock();
    // Xendit checks the key before anything else: a repeat gets the first answer.
    if let Some(key) = &idempotency_key
        && let Some((first_request, index)) = store.by_idempotency_key.get(key)
    {
        return if *first_request == request {
            let customer = store.customers[*index].clone();
            answer(&mut store, customer)
        } else {
            xendit_error(
                StatusCode::CONFLICT,
                "IDEMPOTENCY_ERROR",
                "The idempotency key has been used with a different request body",
            )
        };
    }
    if store.by_reference.contains_key(&reference_id) {
        return xendit_error(
            StatusCode::CONFLICT,
            "DUPLICATE_ERROR",
            "The provided reference_id has been used before. Please use a unique reference_id",
        );
    }
    let customer = customer_from(&request, &format!("cust-{}", uuid::Uuid::new_v4()));
    let index = store.customers.len();
    store.customers.push(customer.clone());
    store.by_reference.insert(reference_id, index);
    if let Some(key) = idempotency_key {
        store.by_idempotency_key.insert(key, (request, index));
    }
    answer(&mut store, customer)
}

/// A create's 200, as the switches shape it: lost (cut off), sparse, or whole.
fn answer(store: &mut Store, mut customer: Value) -> Response {
    if store.settings.lose_next_answers > 0 {
        store.settings.lose_next_answers -= 1;
        let whole = customer.to_string();
        let cut = &whole[..whole.len() / 2];
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            cut.to_owned(),
        )
            .into_response();
    }
    if store.settings.sparse_answers {
        sparse(&mut customer);
    }
    (StatusCode::OK, Json(customer)).into_response()
}

/// What the SDKs' models allow an answer to leave out or hold unknown values in.
fn sparse(customer: &mut Value) {
    if let Some(detail) = customer["individual_detail"].as_object_mut() {
        detail.insert("given_names".into(), Value::Null);
    }
    if let Some(detail) = customer["business_detail"].as_object_mut() {
        detail.insert(
            "business_type".into(),
            Value::String("LIMITED_LIABILITY_PARTNERSHIP".into()),
        );
    }
    if let Some(fields) = customer.as_object_mut() {
        fields.remove("created");
        fields.remove("updated");
    }
}

/// Query of `GET /customers`.
#[derive(Deserialize)]
struct ReferenceQuery {
    /// The `reference_id` to look for; Xendit requires it.
    reference_id: Option<String>,
}

async fn find_customers(
    State(state): State<FakeState>,
    headers: HeaderMap,
    Query(query): Query<ReferenceQuery>,
) -> Response {
    if !is_authenticated(&headers) {
        return unauthenticated();
    }
    let Some(reference_id) = query.reference_id.filter(|r| !r.is_empty()) else {
        return xendit_error(
            StatusCode::BAD_REQUEST,
            "API_VALIDATION_ERROR",
            "reference_id is required",
        );
    };
    let store = state.lock();
    let data: Vec<Value> = store
        .by_reference
        .get(&reference_id)
        .map(|&index| store.customers[index].clone())
        .map(|mut customer| {
            if store.settings.sparse_answers {
                sparse(&mut customer);
            }
            customer
        })
        .into_iter()
        .collect();
    Json(json!({ "data": data, "has_more": false })).into_response()
}

async fn list_customers(State(state): State<FakeState>) -> Json<Vec<Value>> {
    Json(state.customers())
}

async fn show_mode(State(state): State<FakeState>) -> Json<FakeSettings> {
    Json(state.settings())
}

/// Merges the given fields into the current switches and answers with the result.
async fn change_mode(
    State(state): State<FakeState>,
    Json(change): Json<Map<String, Value>>,
) -> Response {
    let mut store = state.lock();
    let mut merged = match serde_json::to_value(&store.settings) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    merged.extend(change);
    let settings = match serde_json::from_value::<FakeSettings>(Value::Object(merged)) {
        Ok(settings) => settings,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    if let Some(problem) = settings.problem() {
        return (StatusCode::BAD_REQUEST, problem).into_response();
    }
    store.settings = settings.clone();
    Json(settings).into_response()
}

#[cfg(test)]
mod tests;

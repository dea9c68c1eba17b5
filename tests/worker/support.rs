//! `spawn_app()`: a worker on the real RabbitMQ and PostgreSQL, with its own database and its
//! own broker prefix, so tests run in parallel; plus the test's own view of the broker
//! (an events queue, reply queues, the dead-letter queue) to assert on what users observe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use onboard::broker::headers::table_to_json;
use onboard::configuration::Settings;
use onboard::worker::{Disposition, Hooks, Settled, Worker};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sqlx::{Connection as _, PgPool};
use tokio::sync::Notify;

pub const WAIT: Duration = Duration::from_secs(30);

fn admin_database_url() -> String {
    std::env::var("ONBOARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://onboard:onboard@127.0.0.1:5432/postgres".into())
}

fn broker_url() -> String {
    std::env::var("ONBOARD__BROKER__URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// One message the test received (event, reply or dead letter).
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// AMQP `type`.
    pub kind: Option<String>,
    pub headers: Map<String, Value>,
    pub body: Value,
    pub raw: Vec<u8>,
    pub delivery_mode: Option<u8>,
    pub expiration: Option<String>,
}

impl Received {
    fn from(d: &lapin::message::Delivery) -> Received {
        let p = &d.properties;
        Received {
            routing_key: d.routing_key.as_str().to_string(),
            message_id: p.message_id().as_ref().map(|s| s.as_str().to_string()),
            correlation_id: p.correlation_id().as_ref().map(|s| s.as_str().to_string()),
            kind: p.kind().as_ref().map(|s| s.as_str().to_string()),
            headers: p.headers().as_ref().map(table_to_json).unwrap_or_default(),
            body: serde_json::from_slice(&d.data).unwrap_or(Value::Null),
            raw: d.data.clone(),
            delivery_mode: *p.delivery_mode(),
            expiration: p.expiration().as_ref().map(|s| s.as_str().to_string()),
        }
    }

    /// An event from the events queue, checked against its published schema on arrival: every
    /// event any test sees is held to `schemas/events/`.
    /// (A test's own messages put on the exchange, `test.*`, are not the worker's.)
    fn event(d: &lapin::message::Delivery) -> Received {
        let r = Received::from(d);
        if !r.routing_key.starts_with("test.") {
            assert_event_schema(&r.body);
        }
        r
    }

    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.headers.get(key).and_then(Value::as_str)
    }
}

/// Every settled delivery the worker reported, and a bell that rings on each.
#[derive(Clone, Default)]
pub struct SettledLog {
    pub entries: Arc<Mutex<Vec<Settled>>>,
    pub bell: Arc<Notify>,
}

impl SettledLog {
    pub fn count(&self, disposition: Disposition) -> usize {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.disposition == disposition)
            .count()
    }

    pub fn for_message(&self, message_id: &str) -> Vec<Disposition> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.message_id.as_deref() == Some(message_id))
            .map(|s| s.disposition)
            .collect()
    }

    /// Waits until `pred` holds over the log (panics after [`WAIT`]).
    pub async fn wait_until(&self, what: &str, pred: impl Fn(&[Settled]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.bell.notified();
            if pred(&self.entries.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.entries.lock().unwrap().clone();
                panic!("timed out waiting for {what}; settled so far: {log:?}");
            }
        }
    }
}

pub struct TestApp {
    pub settings: Settings,
    pub pool: PgPool,
    pub database: String,
    pub worker: Option<Worker>,
    pub settled: SettledLog,
    pub connection: Connection,
    pub channel: Channel,
    events: lapin::Consumer,
    /// Events received but not yet taken by a `wait_for_event`.
    pending: Vec<Received>,
}

/// Settings for a test: its own database and prefix, quick retries.
pub async fn test_settings() -> (Settings, String) {
    let mut settings = Settings::defaults();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("onboard_test_{id}");
    let admin = admin_database_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("test database server (run scripts/services.sh up)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => panic!("ONBOARD_TEST_DATABASE_URL must end in /<database>"),
    };
    settings.database.url = SecretString::from(url);
    settings.database.max_connections = 10;
    settings.broker.url = SecretString::from(broker_url());
    settings.broker.prefix = format!("test-{}", &id[..12]);
    settings.http.port = 0;
    settings.worker.concurrency = 16;
    settings.worker.shutdown_timeout_ms = 5_000;
    settings.retry.immediate_attempts = 2;
    settings.retry.immediate_initial_ms = 10;
    settings.retry.immediate_max_ms = 50;
    settings.retry.delays_ms = vec![200, 500];
    settings.retry.max_attempts = 3;
    settings.outbox.poll_interval_ms = 200;
    settings.outbox.dispatch_grace_ms = 1_000;
    // Welcome emails go to files in a folder of this test's own.
    settings.email.file_dir = std::env::temp_dir()
        .join("onboard-tests")
        .join(&id)
        .join("mail");
    settings.saga.xendit_max_attempts = 3;
    settings.saga.email_max_attempts = 3;
    // Due sagas are found within 100 ms, and a killed worker's sagas are taken over once its
    // heartbeat is 2 s old (production: 1 s and 10 s).
    settings.saga.sweep_interval_ms = 100;
    settings.saga.heartbeat_ms = 200;
    settings.saga.worker_stale_seconds = 2;
    (settings, database)
}

pub async fn spawn_app() -> TestApp {
    let (settings, database) = test_settings().await;
    spawn_app_with(settings, database, Hooks::default()).await
}

pub async fn spawn_app_with(settings: Settings, database: String, hooks: Hooks) -> TestApp {
    let settled = SettledLog::default();
    let hooks = with_settled_log(hooks, &settled);
    let worker = Worker::start(settings.clone(), hooks.clone())
        .await
        .expect("worker starts");
    let pool = PgPool::connect(settings.database.url.expose_secret())
        .await
        .unwrap();

    let connection = Connection::connect(&broker_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // Our subscriber: every event the worker publishes.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            worker.names.events_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let events = channel
        .basic_consume(
            queue.name().clone(),
            "test-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    TestApp {
        settings,
        pool,
        database,
        worker: Some(worker),
        settled,
        connection,
        channel,
        events,
        pending: Vec::new(),
    }
}

fn with_settled_log(mut hooks: Hooks, log: &SettledLog) -> Hooks {
    let log = log.clone();
    let inner = hooks.on_settled.clone();
    hooks.on_settled = Some(Arc::new(move |s: Settled| {
        if let Some(f) = &inner {
            f(s.clone());
        }
        log.entries.lock().unwrap().push(s);
        log.bell.notify_waiters();
    }));
    hooks
}

/// A message as an upstream service would publish it.
#[derive(Default, Clone)]
pub struct Msg {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// Sent as the `traceparent` header.
    pub traceparent: Option<String>,
}

impl Msg {
    pub fn json(routing_key: &str, body: &Value) -> Msg {
        Msg {
            routing_key: routing_key.into(),
            body: serde_json::to_vec(body).unwrap(),
            message_id: Some(uuid::Uuid::new_v4().to_string()),
            ..Default::default()
        }
    }
}

impl TestApp {
    pub fn names(&self) -> onboard::broker::Names {
        onboard::broker::Names::new(&self.settings.broker.prefix)
    }

    /// Publishes with a confirm; returns the message_id used.
    pub async fn publish(&self, msg: Msg) -> Option<String> {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(id) = &msg.message_id {
            props = props.with_message_id(id.as_str().into());
        }
        if let Some(c) = &msg.correlation_id {
            props = props.with_correlation_id(c.as_str().into());
        }
        if let Some(r) = &msg.reply_to {
            props = props.with_reply_to(r.as_str().into());
        }
        if let Some(tp) = &msg.traceparent {
            let mut headers = FieldTable::default();
            headers.insert(
                "traceparent".into(),
                lapin::types::AMQPValue::LongString(tp.as_bytes().to_vec().into()),
            );
            props = props.with_headers(headers);
        }
        self.channel
            .basic_publish(
                self.names().commands_exchange.as_str().into(),
                msg.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &msg.body,
                props,
            )
            .await
            .unwrap();
        msg.message_id
    }

    pub async fn create_client(&self, body: &Value) -> String {
        self.publish(Msg::json("client.create", body))
            .await
            .unwrap()
    }

    /// The next event of `event_type` whose correlation id is `correlation` (any when None).
    pub async fn wait_for_event(
        &mut self,
        event_type: &str,
        correlation: Option<&str>,
    ) -> Received {
        let matches = |r: &Received| {
            r.routing_key == event_type
                && (correlation.is_none() || r.correlation_id.as_deref() == correlation)
        };
        if let Some(i) = self.pending.iter().position(matches) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.next()).await;
            let Ok(Some(Ok(delivery))) = next else {
                panic!(
                    "no {event_type} event (correlation {correlation:?}) within {WAIT:?}; got {:?}",
                    self.pending
                        .iter()
                        .map(|r| (&r.routing_key, &r.correlation_id, &r.body))
                        .collect::<Vec<_>>()
                );
            };
            let r = Received::event(&delivery);
            if matches(&r) {
                return r;
            }
            self.pending.push(r);
        }
    }

    /// The outcome event of a command: the first of `types` correlated with `correlation`.
    pub async fn wait_for_any(&mut self, types: &[&str], correlation: &str) -> Received {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(i) = self.pending.iter().position(|r| {
                types.contains(&r.routing_key.as_str())
                    && r.correlation_id.as_deref() == Some(correlation)
            }) {
                return self.pending.remove(i);
            }
            let next = tokio::time::timeout_at(deadline, self.events.next()).await;
            let Ok(Some(Ok(delivery))) = next else {
                panic!("no {types:?} event for {correlation} within {WAIT:?}");
            };
            self.pending.push(Received::event(&delivery));
        }
    }

    /// Every event published so far that is not taken yet, counted rather than waited for:
    /// once the outbox holds no unpublished row, everything the worker decided is on the
    /// events queue (a row is marked published only after the broker confirmed it, and a
    /// published row is never taken by a relay again), so a late duplicate would be among
    /// what this returns. Panics after [`WAIT`].
    pub async fn settled_events(&mut self) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.count("SELECT count(*) FROM outbox_pending").await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the outbox still holds unpublished rows after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Confirmed messages are on the queue: what is there arrives at once.
        self.drain_events(Duration::from_millis(100)).await
    }

    /// Every event that arrives within `quiet` of the previous one (drains what is in flight).
    pub async fn drain_events(&mut self, quiet: Duration) -> Vec<Received> {
        let mut out = std::mem::take(&mut self.pending);
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(quiet, self.events.next()).await {
            out.push(Received::event(&delivery));
        }
        out
    }

    /// A private queue for replies.
    pub async fn reply_queue(&self) -> String {
        let q = self
            .channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        q.name().as_str().to_string()
    }

    /// Waits for one message on `queue` (a reply queue or the dead-letter queue) and takes it.
    pub async fn take_from(&self, queue: &str) -> Received {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(msg) = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return Received::from(&msg.delivery);
            }
            if tokio::time::Instant::now() > deadline {
                panic!("nothing arrived on {queue} within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages ready in a queue (not counting unacked ones).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        self.queue_counts(queue).await.0
    }

    /// A queue's ready messages and its consumers.
    pub async fn queue_counts(&self, queue: &str) -> (u32, u32) {
        let q = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        (q.message_count(), q.consumer_count())
    }

    /// Waits until a statement on this test's database waits for a lock (a batch blocked on
    /// a row or a table the test, or another batch, holds); panics after [`WAIT`] naming `what`.
    pub async fn wait_for_a_lock_wait(&self, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self
            .count(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await
            == 0
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never waited for a lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// `CL-YYYYMM-` of the database's current UTC month.
    pub async fn code_prefix(&self) -> String {
        let ym: String = sqlx::query_scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        format!("CL-{ym}-")
    }

    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop().await.expect("worker stops cleanly");
        }
    }

    pub async fn kill_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.kill().await;
        }
    }

    /// Starts a (new) worker with the same settings and hooks.
    pub async fn start_worker(&mut self, hooks: Option<Hooks>) {
        let hooks = with_settled_log(hooks.unwrap_or_default(), &self.settled);
        self.worker = Some(
            Worker::start(self.settings.clone(), hooks)
                .await
                .expect("worker starts"),
        );
    }

    /// Stops the worker, deletes this test's broker objects and drops its database.
    pub async fn finish(mut self) {
        self.stop_worker().await;
        let names = self.names();
        let queues = names.all_queues(&self.settings.retry.delays_ms);
        let exchanges = names.all_exchanges(&self.settings.retry.delays_ms);
        for q in queues {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for e in exchanges {
            let _ = self
                .channel
                .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
        self.pool.close().await;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_database_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// A test seam that rings `frozen` and then holds the worker where it runs, until the worker
/// is killed (the place a crash is simulated at).
pub fn freeze<T: 'static>(frozen: Arc<Notify>) -> onboard::observe::Seam<T> {
    Arc::new(move |_: T| {
        let frozen = frozen.clone();
        Box::pin(async move {
            frozen.notify_one();
            std::future::pending::<()>().await
        })
    })
}

/// The seed's two example clients.
pub fn seed_id_client() -> Value {
    serde_json::json!({
        "email": "admin@company.com",
        "client_alias": "Tech Company Ltd",
        "client_type": "CORPORATE",
        "country_code": "ID",
        "phone": "+628123456789",
        "client_status": "PENDING"
    })
}

pub fn seed_sg_client() -> Value {
    serde_json::json!({
        "email": "admin@sgcompany.com",
        "client_alias": "Singapore Tech Ltd",
        "client_type": "CORPORATE",
        "country_code": "SG",
        "phone": "+6591234567"
    })
}

pub fn client_with_email(email: &str) -> Value {
    let mut body = seed_sg_client();
    body["email"] = Value::String(email.into());
    body
}

/// Counts by key, for concise assertions.
pub fn tally<'a>(items: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for i in items {
        *map.entry(i.to_string()).or_insert(0) += 1;
    }
    map
}

/// A TCP proxy in front of PostgreSQL that the test can cut: "the database is unreachable"
/// without stopping the server the other tests share.
pub struct CuttableProxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableProxy {
    pub async fn start(target: String) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound); // refused, as far as the client can tell
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        CuttableProxy { port, up, links }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// host:port of the test database server.
/// A worker whose database connections go through a proxy the test can cut (its pool gives
/// up on a connection after 300 ms), with `tweak` applied to its settings; the test's own
/// pool reaches the database directly.
pub async fn spawn_app_behind_db_proxy(
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, CuttableProxy) {
    let (mut settings, database) = test_settings().await;
    let proxy = CuttableProxy::start(database_host_port()).await;
    let direct = settings.database.url.expose_secret().to_string();
    let via_proxy = direct.replace(&database_host_port(), &format!("127.0.0.1:{}", proxy.port));
    settings.database.url = SecretString::from(via_proxy);
    settings.database.acquire_timeout_ms = 300;
    tweak(&mut settings);
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    app.pool = sqlx::PgPool::connect(&direct).await.unwrap();
    (app, proxy)
}

/// A TCP port free on loopback right now (for a private server a test boots:
/// the fault suite's broker_restart and pg_restart).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run as root (private servers then run as their package's user).
#[allow(dead_code)]
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn database_host_port() -> String {
    let url = admin_database_url();
    let after_at = url.rsplit_once('@').map(|(_, r)| r).unwrap_or(&url);
    after_at.split('/').next().unwrap().to_string()
}

/// The Xendit key the tests configure; no outbox row, event, reply or log may contain it.
pub const XENDIT_KEY: &str = "xnd_development_T3stK3yThatMustNeverLeak0123456789";

/// Xendit at the HTTP level, as `wiremock` serves it: answers POST /customers like Xendit
/// (`cust-<uuid>`, the reference echoed, the same customer again for a repeated
/// idempotency key), after failing the first `fail_first` calls of each type with 503.
#[derive(Clone, Default)]
pub struct XenditResponder {
    pub fail_first: usize,
    /// Fail every call.
    pub always_fail: bool,
    /// How long each answer takes (a slow Xendit that does answer).
    pub delay: Duration,
    pub state: Arc<Mutex<XenditState>>,
}

#[derive(Default)]
pub struct XenditState {
    calls_by_type: HashMap<String, usize>,
    calls_by_key: HashMap<String, usize>,
    by_key: HashMap<String, Value>,
}

impl XenditResponder {
    /// Customers created (distinct idempotency keys answered with success).
    pub fn customers(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .by_key
            .values()
            .cloned()
            .collect()
    }

    /// Requests per idempotency key (one customer each).
    pub fn calls_by_key(&self) -> HashMap<String, usize> {
        self.state.lock().unwrap().calls_by_key.clone()
    }

    pub fn calls(&self, customer_type: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls_by_type
            .get(customer_type)
            .copied()
            .unwrap_or(0)
    }
}

impl wiremock::Respond for XenditResponder {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let kind = body["type"].as_str().unwrap_or("?").to_string();
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut state = self.state.lock().unwrap();
        *state.calls_by_key.entry(key.clone()).or_insert(0) += 1;
        let n = {
            let c = state.calls_by_type.entry(kind.clone()).or_insert(0);
            *c += 1;
            *c
        };
        if self.always_fail || n <= self.fail_first {
            return wiremock::ResponseTemplate::new(503)
                .set_delay(self.delay)
                .set_body_json(serde_json::json!({"error_code": "SERVER_ERROR", "message": "Xendit is having a moment"}));
        }
        let customer = state
            .by_key
            .entry(key)
            .or_insert_with(|| {
                let mut c = serde_json::json!({
                    "id": format!("cust-{}", uuid::Uuid::new_v4()),
                    "reference_id": body["reference_id"],
                    "type": kind,
                    "email": body["email"],
                    "mobile_number": body["mobile_number"],
                    "created": "2024-01-15T10:30:00.000Z",
                    "updated": "2024-01-15T10:30:00.000Z",
                });
                for detail in ["business_detail", "individual_detail"] {
                    if !body[detail].is_null() {
                        c[detail] = body[detail].clone();
                    }
                }
                c
            })
            .clone();
        wiremock::ResponseTemplate::new(200)
            .set_body_json(customer)
            .set_delay(self.delay)
    }
}

/// A wiremock Xendit with `responder` on POST /customers, and settings pointing at it
/// (one request per call: retries go through the saga's delay queues, where tests see them).
pub async fn mock_xendit(
    settings: &mut Settings,
    responder: XenditResponder,
) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/customers"))
        .respond_with(responder)
        .mount(&server)
        .await;
    let mut x = onboard::xendit::XenditSettings::new(server.uri(), SecretString::from(XENDIT_KEY));
    x.max_attempts = 1;
    x.timeout_ms = 2_000;
    // The mock has no rate limit to respect (tests/worker/xendit.rs tests ours).
    x.requests_per_minute = Some(1_000_000);
    settings.xendit = Some(x);
    server
}

/// Every log line of this test binary, captured (for the no-secrets-in-logs check).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).to_string()
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line at every level of this process to the capture buffer, once.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace,h2=info,hyper=info,rustls=info,lapin=debug,amq_protocol=info")
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(|| LogSink)
            .try_init();
    });
}

/// A URL of the running worker's HTTP endpoints.
pub fn url(app: &TestApp, path: &str) -> String {
    format!(
        "http://{}{path}",
        app.worker.as_ref().expect("worker running").http_addr
    )
}

/// A GET: status and body.
pub async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("HTTP answers");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The value of one sample line of the exposition, e.g. `onboard_messages_received_total{type="client.create"}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// One series of the worker's `/metrics` now (0 when it has no sample yet).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let (_, text) = get(&url(app, "/metrics")).await;
    sample(&text, series).unwrap_or(0.0)
}

/// Waits until a series of the worker's `/metrics` reaches `at_least` (panics after [`WAIT`]).
pub async fn wait_for_metric(app: &TestApp, series: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric(app, series).await;
        if v >= at_least {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `.eml` files written for this test.
pub fn emails(settings: &Settings) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(&settings.email.file_dir) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

/// The `onboard` binary, set up for this test's database, broker and prefix (for tests that
/// run the tool or the worker as an operator would).
pub fn onboard_bin(settings: &Settings) -> tokio::process::Command {
    binary(env!("CARGO_BIN_EXE_onboard"), settings)
}

/// A worker running as a process of its own (an `onboard worker` from [`onboard_bin`]), and
/// the JSON log lines it wrote to stderr.
#[allow(dead_code)]
pub struct WorkerProcess {
    pub child: tokio::process::Child,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Its health server's address, as its "worker started" line says.
    pub http: String,
}

#[allow(dead_code)]
impl WorkerProcess {
    /// Spawns `command` with JSON logs on a pipe and waits for its "worker started" line;
    /// panics with what it logged when it exits first or does not start within [`WAIT`].
    pub async fn start(mut command: tokio::process::Command) -> WorkerProcess {
        let mut child = command
            .env("ONBOARD__LOG__FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the onboard binary starts");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stderr.take().unwrap(),
        ));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = std::time::Instant::now() + WAIT;
        let http = loop {
            let started = log
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == "worker started");
            if let Some(v) = started {
                break v["http"].as_str().unwrap_or_default().to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker did not start: {:?}",
                log.lock().unwrap()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "worker exited: {:?}",
                log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        WorkerProcess { child, log, http }
    }
}

/// The `onboard-lab` binary (fakes, load, ceiling), set up as [`onboard_bin`] is.
pub fn lab_bin(settings: &Settings) -> tokio::process::Command {
    binary(env!("CARGO_BIN_EXE_onboard-lab"), settings)
}

fn binary(path: &str, settings: &Settings) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(path);
    cmd.env_remove("ONBOARD_CONFIG")
        .env(
            "ONBOARD__DATABASE__URL",
            settings.database.url.expose_secret(),
        )
        .env("ONBOARD__BROKER__URL", settings.broker.url.expose_secret())
        .env("ONBOARD__BROKER__PREFIX", &settings.broker.prefix)
        .env("ONBOARD__HTTP__PORT", "0")
        .env("RUST_LOG", "info,lapin=warn,sqlx=warn")
        .kill_on_drop(true);
    cmd
}

/// Deletes a test's broker objects and drops its database, for tests that ran the worker as
/// a separate process (and so have no [`TestApp`] to `finish`): the fault suite's signals and
/// broker_restart, which include this file.
#[allow(dead_code)]
pub async fn remove_test_objects(settings: &Settings, database: &str) {
    if let Ok(connection) = Connection::connect(
        settings.broker.url.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
        && let Ok(channel) = connection.create_channel().await
    {
        let names = onboard::broker::Names::new(&settings.broker.prefix);
        let mut both = vec![
            names.commands_queue.clone(),
            names.dead_queue.clone(),
            names.unrouted_events.clone(),
        ];
        both.extend(settings.retry.delays_ms.iter().map(|d| names.retry(*d)));
        for q in &both {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        both.extend([names.events_exchange.clone()]);
        for e in &both {
            let _ = channel
                .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "test done".into()).await;
    }
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_database_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// Checks an event (the whole envelope) against `schemas/events/<type>.json`, formats
/// asserted; panics naming every violation.
pub fn assert_event_schema(event: &Value) {
    static VALIDATORS: std::sync::OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        std::sync::OnceLock::new();
    let event_type = event["type"].as_str().expect("an event has a type");
    let path = format!(
        "{}/schemas/events/{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let validators = VALIDATORS.get_or_init(Mutex::default);
    let known = validators.lock().unwrap().get(event_type).cloned();
    let validator = known.unwrap_or_else(|| {
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap();
        let v = Arc::new(
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{path} is not a valid schema: {e}")),
        );
        validators
            .lock()
            .unwrap()
            .insert(event_type.to_string(), v.clone());
        v
    });
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{event_type} does not match {path}: {errors:?}\n{event}"
    );
}

/// Publishes `n` `client.create` commands (emails `<tag><i>@example.com`) to the commands
/// exchange of `prefix` at `url`, each confirmed by the broker; their message ids. For the
/// tests that run the worker as a process of its own (the fault suite's signals and broker_restart).
#[allow(dead_code)]
pub async fn publish_creates(url: &str, prefix: &str, n: usize, tag: &str) -> Vec<String> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // Confirmed, so "published" means the broker has each one (without confirm mode awaiting
    // a publish proves nothing, and the connection is closed right after).
    channel.confirm_select(Default::default()).await.unwrap();
    let names = onboard::broker::Names::new(prefix);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let confirmation = channel
            .basic_publish(
                names.commands_exchange.as_str().into(),
                "client.create".into(),
                Default::default(),
                &serde_json::to_vec(&client_with_email(&format!("{tag}{i}@example.com"))).unwrap(),
                BasicProperties::default()
                    .with_message_id(id.as_str().into())
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_ack(), "the broker refused command {i}");
        ids.push(id);
    }
    let _ = connection.close(200, "published".into()).await;
    ids
}

/// Rows of `table` read so far (by sequential scans and index fetches), as PostgreSQL's
/// statistics count them, this connection's own counts flushed first: what a statement run on
/// `conn` between two calls read of it.
pub async fn rows_read(conn: &mut sqlx::PgConnection, table: &str) -> i64 {
    for statement in [
        "SELECT pg_stat_force_next_flush()",
        "SELECT pg_stat_clear_snapshot()",
    ] {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
         FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .unwrap()
}

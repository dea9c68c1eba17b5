//! The rig of a fault-injection case: a database and a broker prefix of its own, the real
//! `onboard` binary as worker subprocesses reaching PostgreSQL and RabbitMQ through proxies the
//! case can cut, a fake Xendit and an SMTP sink with switches, and the checks every case ends
//! with (see [`Rig::check`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use onboard::broker::Names;
use onboard::configuration::Settings;
use onboard::ops::load::{self, Options, Report};
use secrecy::SecretString;
use sqlx::{Connection as _, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

fn admin_database_url() -> String {
    std::env::var("ONBOARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://onboard:onboard@127.0.0.1:5432/postgres".into())
}

fn broker_url() -> String {
    std::env::var("ONBOARD__BROKER__URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of a URL like `scheme://user:pass@host:port/path`.
fn host_port(url: &str) -> String {
    let after_at = url.rsplit_once('@').map(|(_, r)| r).unwrap_or(url);
    let after_scheme = after_at.split("://").last().unwrap_or(after_at);
    after_scheme.split('/').next().unwrap().to_string()
}

/// `url` with its `host:port` replaced by `127.0.0.1:<port>`.
fn through(url: &str, port: u16) -> String {
    url.replacen(&host_port(url), &format!("127.0.0.1:{port}"), 1)
}

/// Commands per case: a few hundred by default, a few thousand with `ONBOARD_FAULTS_FULL=1`.
pub fn commands(default: usize, full: usize) -> usize {
    match std::env::var("ONBOARD_FAULTS_FULL").as_deref() {
        Ok("1") | Ok("true") | Ok("yes") => full,
        _ => default,
    }
}

/// A three-node RabbitMQ cluster of the case's own, run by `scripts/cluster.sh` (its own data
/// directory and ports); `down` (data deleted) on drop.
pub struct Cluster {
    dir: PathBuf,
    base: u16,
}

impl Cluster {
    pub async fn up() -> Cluster {
        let base = Cluster::free_base();
        let dir = std::env::temp_dir().join(format!(
            "onboard-cluster-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let cluster = Cluster { dir, base };
        cluster.script(&["up"]).await;
        cluster
    }

    /// A base port with the three AMQP ports and their distribution ports (+20000) free, both
    /// below Linux's ephemeral range (32768 and up): a port found free there can be taken by
    /// any outgoing connection before the node binds it (seen: eaddrinuse at a node's start).
    fn free_base() -> u16 {
        for _ in 0..200 {
            let base = 10_000 + (rand::random::<u16>() % 2_700);
            let free = (0..3).all(|n| {
                [base + n, base + n + 20_000]
                    .iter()
                    .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            });
            if free {
                return base;
            }
        }
        panic!("no free ports for a cluster");
    }

    async fn script(&self, args: &[&str]) {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(args)
            .env("ONBOARD_CLUSTER_DIR", &self.dir)
            .env("ONBOARD_CLUSTER_PORT", self.base.to_string())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("scripts/cluster.sh runs");
        assert!(
            out.status.success(),
            "scripts/cluster.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Node `n` (1-3)'s URL.
    pub fn url(&self, n: u16) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.base + n - 1)
    }

    pub fn urls(&self) -> Vec<String> {
        (1..=3).map(|n| self.url(n)).collect()
    }

    /// Stops node `n` (the script first waits until no quorum queue needs it).
    pub async fn stop(&self, n: u16) {
        self.script(&["stop", &n.to_string()]).await;
    }

    pub async fn start(&self, n: u16) {
        self.script(&["start", &n.to_string()]).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
                .arg("down")
                .env("ONBOARD_CLUSTER_DIR", &self.dir)
                .env("ONBOARD_CLUSTER_PORT", self.base.to_string())
                .stdin(std::process::Stdio::null())
                .output();
    }
}

/// A TCP proxy the case can cut: every open connection dropped, new ones refused, until
/// restored; as the worker sees it, the server went away and came back.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut l = links2.lock().unwrap();
                l.retain(|h| !h.is_finished());
                l.push(link.abort_handle());
            }
        });
        Proxy {
            port,
            up,
            links,
            task,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }
}

/// A minimal SMTP server that accepts every message (plain text, no auth), counting them per
/// recipient; `down` makes its port refuse connections, as a stopped server's would.
pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<HashMap<String, usize>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SmtpSink {
    /// Reserves a port with nothing listening on it yet (connections are refused).
    pub async fn reserve() -> SmtpSink {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        SmtpSink {
            port,
            received: Arc::default(),
            task: None,
        }
    }

    pub async fn up(&mut self) {
        if self.task.is_some() {
            return;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let received = self.received.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    let _ = serve_smtp(stream, received).await;
                });
            }
        }));
    }

    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Messages received per recipient.
    pub fn received(&self) -> HashMap<String, usize> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.down();
    }
}

async fn serve_smtp(
    stream: TcpStream,
    received: Arc<Mutex<HashMap<String, usize>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let addr = line[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_lowercase();
            rcpt.push(addr);
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
            }
            {
                let mut r = received.lock().unwrap();
                for a in rcpt.drain(..) {
                    *r.entry(a).or_insert(0) += 1;
                }
            }
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper.starts_with("RSET") {
            rcpt.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
}

/// The fake Xendit, served in this process, switched over its HTTP control route.
pub struct FakeXendit {
    pub url: String,
    state: onboard::xendit::fake::FakeState,
    task: tokio::task::JoinHandle<()>,
}

impl FakeXendit {
    pub async fn start() -> FakeXendit {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = onboard::xendit::fake::FakeState::default();
        let router = onboard::xendit::fake::router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeXendit { url, state, task }
    }

    /// Changes the switches (any of `FakeSettings`' fields).
    pub async fn mode(&self, switches: serde_json::Value) {
        let status = reqwest::Client::new()
            .post(format!("{}/_fake/mode", self.url))
            .json(&switches)
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status.is_success(),
            "fake Xendit refused {switches}: {status}"
        );
    }

    /// Customers created, per reference_id.
    pub fn customers_by_reference(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for c in self.state.customers() {
            let r = c["reference_id"].as_str().unwrap_or("?").to_string();
            *out.entry(r).or_insert(0) += 1;
        }
        out
    }
}

impl Drop for FakeXendit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A worker subprocess and what the case watches of it.
struct Supervised {
    child: Child,
    /// Its HTTP port (`/readyz`).
    port: u16,
    started: Instant,
    unready_since: Option<Instant>,
}

/// How long a worker may answer `/readyz` with 503 (or not at all) before the case fails.
pub const UNREADY_LIMIT: Duration = Duration::from_secs(20);

/// One case's world.
pub struct Rig {
    pub name: String,
    /// Direct URLs: what the load publisher and the checks use.
    pub settings: Settings,
    pub pool: PgPool,
    database: String,
    pub pg: Proxy,
    pub amqp: Proxy,
    /// The broker the load publisher and the checks talk to directly.
    broker: String,
    /// `ONBOARD__*` variables of every worker subprocess (its URLs go through the proxies).
    env: BTreeMap<String, String>,
    workers: Vec<Option<Supervised>>,
    pub dir: PathBuf,
    spawned: AtomicUsize,
    /// Faults injected, for the figures.
    pub faults: Vec<String>,
}

impl Rig {
    /// A fresh database and prefix, proxies in front of both servers, fast retries.
    pub async fn new(name: &str) -> Rig {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("onboard_faults_{}", &id[..16]);
        let admin = admin_database_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("test database server (run scripts/services.sh up)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut conn)
            .await
            .expect("create the case's database");
        let _ = conn.close().await;
        let database_url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => panic!("ONBOARD_TEST_DATABASE_URL must end in /<database>"),
        };
        let pg = Proxy::start(host_port(&database_url)).await;
        let amqp = Proxy::start(host_port(&broker_url())).await;
        let dir = std::env::temp_dir()
            .join("onboard-faults")
            .join(format!("{name}-{}", &id[..8]));
        std::fs::create_dir_all(&dir).unwrap();

        let mut settings = Settings::defaults();
        settings.database.url = SecretString::from(database_url.clone());
        settings.broker.url = SecretString::from(broker_url());
        settings.broker.prefix = format!("faults-{}", &id[..12]);
        settings.retry.delays_ms = vec![200, 500, 1000, 2000];
        settings.retry.max_attempts = 15;
        settings.email.file_dir = dir.join("mail");

        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("ONBOARD__DATABASE__URL", through(&database_url, pg.port));
        set("ONBOARD__BROKER__URL", through(&broker_url(), amqp.port));
        set("ONBOARD__BROKER__PREFIX", settings.broker.prefix.clone());
        set("ONBOARD__DATABASE__MAX_CONNECTIONS", "10".into());
        set("ONBOARD__DATABASE__ACQUIRE_TIMEOUT_MS", "3000".into());
        set("ONBOARD__RETRY__DELAYS_MS", "200,500,1000,2000".into());
        set("ONBOARD__RETRY__MAX_ATTEMPTS", "15".into());
        set("ONBOARD__RETRY__IMMEDIATE_INITIAL_MS", "20".into());
        set("ONBOARD__RETRY__IMMEDIATE_MAX_MS", "200".into());
        set("ONBOARD__OUTBOX__POLL_INTERVAL_MS", "200".into());
        set("ONBOARD__BROKER__CONFIRM_TIMEOUT_MS", "3000".into());
        set("ONBOARD__WORKER__SHUTDOWN_TIMEOUT_MS", "5000".into());
        set(
            "ONBOARD__EMAIL__FILE_DIR",
            settings.email.file_dir.display().to_string(),
        );
        // A worker killed while sending leaves its lease on the saga: keep it short, so the
        // redeliveries get through within the (fast) retry budget above.
        set("ONBOARD__SAGA__LEASE_SECONDS", "5".into());
        set("ONBOARD__LOG__FILTER", "info,lapin=warn,sqlx=warn".into());
        set("ONBOARD__LOG__FORMAT", "json".into());

        let pool = PgPool::connect(&database_url).await.unwrap();
        let rig = Rig {
            name: name.to_string(),
            settings,
            pool,
            database,
            pg,
            amqp,
            broker: broker_url(),
            env,
            workers: Vec::new(),
            dir,
            spawned: AtomicUsize::new(0),
            faults: Vec::new(),
        };
        println!("[{name}] logs and mail in {}", rig.dir.display());
        rig
    }

    /// A rig whose workers use the three nodes of `cluster` (`broker.urls`, every queue
    /// replicated) directly, no proxy: the case stops and starts the real nodes. The load and
    /// the checks go through node 3.
    pub async fn on_cluster(name: &str, cluster: &Cluster) -> Rig {
        let mut rig = Rig::new(name).await;
        rig.broker = cluster.url(3);
        rig.settings.broker.url = SecretString::from(cluster.url(3));
        rig.settings.broker.replicated_queues = true;
        rig.worker_env("ONBOARD__BROKER__URLS", cluster.urls().join(","));
        rig.worker_env("ONBOARD__BROKER__REPLICATED_QUEUES", "true");
        rig
    }

    /// The lines of worker `i`'s log that contain `text`.
    pub fn worker_log_lines(&self, i: usize, text: &str) -> usize {
        std::fs::read_to_string(self.dir.join(format!("worker-{i}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Sets a worker setting (`ONBOARD__SECTION__KEY`) for the workers started from now on.
    pub fn worker_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.insert(key.to_string(), value.into());
    }

    /// Starts one more worker: the real binary, as a subprocess.
    pub fn spawn_worker(&mut self) -> usize {
        let n = self.spawned.fetch_add(1, Ordering::SeqCst);
        let log = std::fs::File::create(self.dir.join(format!("worker-{n}.log"))).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onboard"));
        cmd.arg("worker")
            .env_remove("ONBOARD_CONFIG")
            .envs(&self.env)
            .env("ONBOARD__HTTP__PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start the onboard binary");
        self.workers.push(Some(Supervised {
            child,
            port,
            started: Instant::now(),
            unready_since: None,
        }));
        self.workers.len() - 1
    }

    /// SIGKILL: no drain, no ack; the broker requeues what it held.
    pub async fn kill_worker(&mut self, i: usize) {
        if let Some(mut w) = self.workers[i].take() {
            w.child.start_kill().unwrap();
            let _ = w.child.wait().await;
            self.faults.push(format!("SIGKILL worker {i}"));
        }
    }

    /// Watches the workers as an operator's alerting would, and replaces none of them: a
    /// worker that exits by itself, or whose `/readyz` fails for [`UNREADY_LIMIT`] (its broker
    /// session never came back, say), fails the case. Faults are survived by the worker, not
    /// hidden by a supervisor (issue 12).
    pub async fn watch_workers(&mut self) {
        let client = reqwest::Client::new();
        for (i, slot) in self.workers.iter_mut().enumerate() {
            let Some(w) = slot else { continue };
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!(
                    "[{}] worker {i} exited by itself ({status}); see its log",
                    self.name
                );
            }
            if w.started.elapsed() < Duration::from_secs(10) {
                continue;
            }
            let ready = client
                .get(format!("http://127.0.0.1:{}/readyz", w.port))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                w.unready_since = None;
                continue;
            }
            let since = *w.unready_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < UNREADY_LIMIT,
                "[{}] worker {i} not ready for {UNREADY_LIMIT:?}; see its log",
                self.name
            );
        }
    }

    /// SIGTERM every worker and wait for them to drain and exit.
    pub async fn stop_workers(&mut self) {
        for w in self.workers.iter_mut() {
            if let Some(Supervised { mut child, .. }) = w.take() {
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
                if tokio::time::timeout(Duration::from_secs(15), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
    }

    /// Sagas completed so far (progress, to time the faults).
    pub async fn completed(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM onboarding_sagas WHERE status = 'completed'")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0)
    }

    /// Waits until at least `n` sagas completed (or `within` passed).
    pub async fn wait_completed(&mut self, n: i64, within: Duration) {
        let deadline = Instant::now() + within;
        let mut probe = Instant::now();
        while Instant::now() < deadline {
            if self.completed().await >= n {
                return;
            }
            if probe.elapsed() >= Duration::from_secs(1) {
                probe = Instant::now();
                self.watch_workers().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "[{}] fewer than {n} sagas completed within {within:?}",
            self.name
        );
    }

    /// The load publisher's options for this case: every event kept, patient with faults.
    pub fn load_options(&self, count: usize, countries: &[&str]) -> Options {
        let mut o = Options::new(count);
        o.countries = countries.iter().map(|c| c.to_string()).collect();
        o.record_events = true;
        o.idle_timeout = Duration::from_secs(90);
        o.max_unconfirmed = 200;
        o.missing_cap = 50;
        o
    }

    /// Starts the load in the background.
    pub fn load(&self, options: Options) -> tokio::task::JoinHandle<anyhow::Result<Report>> {
        let settings = self.settings.clone();
        tokio::spawn(async move { load::run(&settings, &options).await })
    }

    /// Waits until nothing is left in flight: every saga done, the outbox empty, the
    /// commands, retry and dead-letter queues empty. Returns what is still there on timeout.
    pub async fn settle(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = self.leftovers().await;
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let scalar = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&self.pool)
                .await
                .unwrap_or(-1)
        };
        let pending = scalar("SELECT count(*) FROM outbox_pending").await;
        if pending != 0 {
            out.push(format!("{pending} outbox rows unpublished"));
        }
        let open =
            scalar("SELECT count(*) FROM onboarding_sagas WHERE status <> 'completed'").await;
        if open != 0 {
            out.push(format!("{open} sagas not completed"));
        }
        let names = Names::new(&self.settings.broker.prefix);
        let mut queues = vec![names.commands_queue.clone(), names.dead_queue.clone()];
        for d in &self.settings.retry.delays_ms {
            queues.push(names.retry(*d));
        }
        if let Ok(conn) =
            lapin::Connection::connect(&self.broker, lapin::ConnectionProperties::default()).await
        {
            for q in queues {
                let Ok(ch) = conn.create_channel().await else {
                    continue;
                };
                if let Ok(info) = ch
                    .queue_declare(
                        q.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    && info.message_count() > 0
                {
                    out.push(format!("{} messages in {q}", info.message_count()));
                }
            }
            let _ = conn.close(200, "checked".into()).await;
        }
        out
    }

    /// The checks every case ends with, and its figures. Panics with all that failed.
    pub async fn check(&self, report: &Report, expect: &Expect<'_>) -> Figures {
        let mut problems = Vec::new();
        let left = self.settle(Duration::from_secs(60)).await;
        if !left.is_empty() {
            problems.push(format!("still in flight: {left:?}"));
        }

        // Exactly one outcome per command.
        if report.publish_failed > 0 {
            problems.push(format!(
                "{} commands never confirmed by the broker",
                report.publish_failed
            ));
        }
        let lost_outcomes = report.missing_count;
        if lost_outcomes > 0 {
            problems.push(format!(
                "{lost_outcomes} commands without an outcome, e.g. {:?}",
                report.missing
            ));
        }
        if report.conflicting_outcomes > 0 {
            problems.push(format!(
                "{} commands with two different outcomes",
                report.conflicting_outcomes
            ));
        }
        let completed = report
            .outcomes
            .get("client.onboarding_completed")
            .copied()
            .unwrap_or(0) as usize;
        if completed != report.published {
            problems.push(format!(
                "{completed} of {} onboardings completed: {:?}",
                report.published, report.outcomes
            ));
        }

        // Nothing created twice: per command's email one client, one admin user, one saga;
        // per reference one Xendit customer, here and at Xendit.
        let emails: Vec<String> = report.sent.iter().map(|s| s.email.clone()).collect();
        let per_email = |sql: &'static str| {
            let emails = emails.clone();
            async move {
                sqlx::query_as::<_, (String, i64)>(sql)
                    .bind(emails)
                    .fetch_all(&self.pool)
                    .await
                    .unwrap()
            }
        };
        let clients = per_email(
            "SELECT lower(email), count(*) FROM clients WHERE lower(email) = ANY($1) GROUP BY 1",
        )
        .await;
        let users = per_email(
            "SELECT lower(email), count(*) FROM users WHERE lower(email) = ANY($1) GROUP BY 1",
        )
        .await;
        let sagas = per_email(
            "SELECT lower(c.email), count(*) FROM onboarding_sagas s JOIN clients c USING (client_id)
             WHERE lower(c.email) = ANY($1) GROUP BY 1",
        )
        .await;
        let mut duplicated = 0;
        for (what, rows) in [("clients", &clients), ("users", &users), ("sagas", &sagas)] {
            let twice: Vec<_> = rows.iter().filter(|(_, n)| *n > 1).collect();
            duplicated += twice.len();
            if !twice.is_empty() {
                problems.push(format!("{what} created twice: {twice:?}"));
            }
            if rows.len() != emails.len() {
                problems.push(format!(
                    "{} {what} for {} commands",
                    rows.len(),
                    emails.len()
                ));
            }
        }
        let xendit_rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reference_id, count(*) FROM xendit_customers GROUP BY 1 HAVING count(*) > 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        duplicated += xendit_rows.len();
        if !xendit_rows.is_empty() {
            problems.push(format!("Xendit customers recorded twice: {xendit_rows:?}"));
        }
        let xendit_clients = report
            .sent
            .iter()
            .filter(|s| s.country_code == "ID")
            .count();
        if let Some(fake) = expect.xendit {
            let at_xendit = fake.customers_by_reference();
            let twice: Vec<_> = at_xendit.iter().filter(|(_, n)| **n > 1).collect();
            duplicated += twice.len();
            if !twice.is_empty() {
                problems.push(format!("customers created twice at Xendit: {twice:?}"));
            }
            let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM xendit_customers")
                .fetch_one(&self.pool)
                .await
                .unwrap();
            if recorded as usize != 2 * xendit_clients || at_xendit.len() != 2 * xendit_clients {
                problems.push(format!(
                    "{recorded} Xendit customers recorded, {} at Xendit, for {xendit_clients} Indonesian clients",
                    at_xendit.len()
                ));
            }
        }

        // Every expected event published, seen by a subscriber (repeats allowed, gaps not).
        let mut by_command: HashMap<&str, HashMap<&str, HashSet<&str>>> = HashMap::new();
        let mut seen_ids = HashSet::new();
        let mut repeats = 0;
        for e in &report.events {
            let Some(id) = e.message_id.as_deref() else {
                continue;
            };
            if !seen_ids.insert(id) {
                repeats += 1;
                continue;
            }
            if let Some(c) = e.correlation_id.as_deref() {
                by_command
                    .entry(c)
                    .or_default()
                    .entry(e.event_type.as_str())
                    .or_default()
                    .insert(id);
            }
        }
        let mut gaps = 0;
        let mut twice_announced = 0;
        for sent in &report.sent {
            let events = by_command.get(sent.message_id.as_str());
            let count = |types: &[&str]| -> usize {
                events
                    .map(|m| {
                        types
                            .iter()
                            .map(|t| m.get(t).map(HashSet::len).unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0)
            };
            let mut wanted: Vec<&[&str]> = vec![
                &["client.created"],
                &["client.welcome_email_sent", "client.welcome_email_failed"],
                &["client.onboarding_completed"],
            ];
            if sent.country_code == "ID" {
                wanted.push(&["client.xendit_customers_created", "client.xendit_failed"]);
            }
            for types in wanted {
                match count(types) {
                    0 => {
                        gaps += 1;
                        if gaps <= 5 {
                            problems.push(format!("{} never announced {types:?}", sent.message_id));
                        }
                    }
                    1 => {}
                    _ => twice_announced += 1,
                }
            }
        }
        if gaps > 5 {
            problems.push(format!("{gaps} expected events missing in all"));
        }
        if twice_announced > 0 {
            duplicated += twice_announced;
            problems.push(format!(
                "{twice_announced} events announced twice under different message ids"
            ));
        }
        // And everything the outbox holds was seen.
        let outbox_events: Vec<(uuid::Uuid,)> =
            sqlx::query_as("SELECT message_id FROM outbox WHERE kind = 'event'")
                .fetch_all(&self.pool)
                .await
                .unwrap();
        let unseen = outbox_events
            .iter()
            .filter(|(id,)| !seen_ids.contains(id.to_string().as_str()))
            .count();
        if unseen > 0 {
            gaps += unseen;
            problems.push(format!(
                "{unseen} events in the outbox that no subscriber received"
            ));
        }

        let emails_twice = match expect.smtp {
            Some(sink) => sink.received().values().filter(|n| **n > 1).count(),
            None => self.emails_written().values().filter(|n| **n > 1).count(),
        };
        let figures = Figures {
            case: self.name.clone(),
            commands: report.published,
            faults: self.faults.clone(),
            lost: lost_outcomes + gaps,
            duplicated,
            repeats,
            emails_twice,
            seconds: report.elapsed_seconds,
        };
        println!("{figures}");
        assert!(
            problems.is_empty(),
            "[{}] {} problem(s):\n  {}\n(logs: {})",
            self.name,
            problems.len(),
            problems.join("\n  "),
            self.dir.display()
        );
        figures
    }

    /// Welcome emails written as `.eml` files (no SMTP configured), per recipient.
    fn emails_written(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        let Ok(dir) = std::fs::read_dir(&self.settings.email.file_dir) else {
            return out;
        };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if let Some(to) = text.lines().find_map(|l| l.strip_prefix("To: ")).map(|t| {
                let addr = t.rsplit('<').next().unwrap_or(t);
                addr.trim().trim_end_matches('>').to_lowercase()
            }) {
                *out.entry(to).or_insert(0) += 1;
            }
        }
        out
    }

    /// Stops the workers, deletes the broker objects and the database.
    pub async fn finish(mut self) {
        self.stop_workers().await;
        let names = Names::new(&self.settings.broker.prefix);
        if let Ok(conn) =
            lapin::Connection::connect(&self.broker, lapin::ConnectionProperties::default()).await
            && let Ok(ch) = conn.create_channel().await
        {
            let queues = names.all_queues(&self.settings.retry.delays_ms);
            let exchanges = names.all_exchanges(&self.settings.retry.delays_ms);
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in exchanges {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, "case done".into()).await;
        }
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

/// What a case's outside world looks like, for the checks.
#[derive(Default)]
pub struct Expect<'a> {
    /// The fake Xendit the workers used (customers are counted there too).
    pub xendit: Option<&'a FakeXendit>,
    /// The SMTP sink the workers used (emails per recipient).
    pub smtp: Option<&'a SmtpSink>,
}

/// A case's figures, printed as one line.
pub struct Figures {
    pub case: String,
    pub commands: usize,
    pub faults: Vec<String>,
    /// Commands without an outcome, plus expected events nobody received.
    pub lost: usize,
    /// Clients, users, sagas or Xendit customers created twice, events announced twice.
    pub duplicated: usize,
    /// Events delivered again with the same message_id (allowed: subscribers dedupe).
    pub repeats: usize,
    /// Recipients who got the welcome email more than once (a crash between sending and
    /// recording it; allowed, reported).
    pub emails_twice: usize,
    pub seconds: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAULTS {:<34} commands {:>5}  faults {:>2}  lost {}  duplicated {}  (repeated deliveries {}, emails sent twice {}, {:.1} s) [{}]",
            self.case,
            self.commands,
            self.faults.len(),
            self.lost,
            self.duplicated,
            self.repeats,
            self.emails_twice,
            self.seconds,
            self.faults.join("; ")
        )
    }
}

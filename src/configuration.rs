//! Typed settings, layered: compiled-in defaults (`config/default.toml`), then an optional file,
//! then `ONBOARD__SECTION__KEY` environment variables. Secrets are `SecretString`s, so neither
//! `Debug` nor a log line can print them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::email::EmailSettings;
use crate::sources::SourceSettings;
pub use crate::telemetry::{LogFormat, LogSettings, TelemetrySettings};
use crate::xendit::XenditSettings;

mod millis;
mod processes;

pub use millis::millis_list;
pub use processes::{ConsoleSettings, WebhookSettings};

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    pub retry: RetrySettings,
    pub lifecycle: LifecycleSettings,
    pub outbox: OutboxSettings,
    #[serde(default)]
    pub inbox: InboxSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    /// Traces exported over OTLP (off unless `telemetry.otlp_endpoint` is set).
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    pub saga: SagaSettings,
    /// Absent when no Xendit key is configured: the Xendit step then records that and moves on.
    pub xendit: Option<XenditSettings>,
    #[serde(default)]
    pub email: EmailSettings,
    /// Systems clients are imported from (`client.import`), by name: `[sources.<name>]`.
    #[serde(default)]
    pub sources: HashMap<String, SourceSettings>,
    /// `onboard webhooks serve`.
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// `onboard console`.
    #[serde(default)]
    pub console: ConsoleSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SagaSettings {
    /// Delayed attempts of the Xendit step before its failure is recorded and the saga moves on.
    pub xendit_max_attempts: u32,
    /// Delayed attempts of the welcome email before FAILED is final and the saga completes.
    pub email_max_attempts: u32,
    /// First part of the `reference_id` we give Xendit (`<namespace>-client-<id>`): environments
    /// sharing one Xendit account need different namespaces.
    pub xendit_reference_namespace: String,
    /// How long a worker holds a saga it runs, in seconds, renewed before a send that could
    /// outlast it: longer than any step's outside calls may take. A worker that dies leaves
    /// its leases behind; the others take them over when its heartbeat goes stale
    /// (`worker_stale_seconds`), or at the latest when the lease runs out.
    pub lease_seconds: u64,
    /// How often each worker's sweeper looks for due sagas (retries whose time came, sagas
    /// of dead workers).
    pub sweep_interval_ms: u64,
    /// How often a worker says it is alive (`workers.seen_at`).
    pub heartbeat_ms: u64,
    /// A worker not heard from for this long is taken for dead and its sagas are taken over.
    pub worker_stale_seconds: u64,
    /// A saga due for longer than this that nobody took is stuck (`/metrics`,
    /// `onboard saga stuck`).
    pub stuck_after_seconds: u64,
    /// Saga step batches running at once in one worker, for each step.
    pub steps_in_flight: usize,
    /// How long the sagas of a `client.create` batch smaller than a full batch wait for those
    /// of the next ones before their first step runs, so that one step batch takes them all.
    pub step_linger_ms: u64,
    /// Welcome emails sent at once by one step batch.
    pub max_concurrent_sends: usize,
    /// Xendit calls made at once by one step batch.
    pub max_concurrent_xendit_calls: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BrokerSettings {
    /// AMQP URL, credentials included: secret.
    pub url: SecretString,
    /// The nodes of a RabbitMQ cluster, in order of preference (credentials included: secret).
    /// When set, `url` is not used: the worker connects to the first node that accepts, and
    /// when its node goes away it moves its session to the next one that does.
    #[serde(default)]
    pub urls: Vec<SecretString>,
    /// Every queue the worker declares is a quorum queue (replicated on the cluster's nodes),
    /// not only the commands queue: the retry, dead-letter and unrouted-events queues too, so
    /// that losing one node loses none of them. For clusters; a queue's type cannot change
    /// once declared.
    #[serde(default)]
    pub replicated_queues: bool,
    /// Prefix of every exchange and queue name (see `broker::Names`).
    pub prefix: String,
    /// basic.qos prefetch count for the commands consumer.
    pub prefetch: u16,
    /// `x-delivery-limit` of the quorum commands queue.
    pub delivery_limit: u32,
    /// Longest wait for a publisher confirm.
    pub confirm_timeout_ms: u64,
    /// Reconnection attempts after the connection is lost (with backoff up to
    /// `reconnect_max_delay_ms`); when they are spent the worker exits non-zero.
    #[serde(default = "default_reconnect_attempts")]
    pub reconnect_attempts: usize,
    #[serde(default = "default_reconnect_max_delay_ms")]
    pub reconnect_max_delay_ms: u64,
    /// How long the session may stay unhealthy (the connection or one of the worker's
    /// channels not open) while the broker accepts connections, before the worker stops
    /// waiting for lapin's recovery and replaces the whole session (see `broker::Link`).
    #[serde(default = "default_stuck_recovery_ms")]
    pub stuck_recovery_ms: u64,
    /// The queues the worker answers on: a `reply_to` matching none of these (exact names,
    /// or prefixes ending in `*`) is refused, so a command cannot make the worker push client
    /// data into another service's queue.
    #[serde(default = "default_reply_to_patterns")]
    pub reply_to_patterns: Vec<String>,
}

fn default_reply_to_patterns() -> Vec<String> {
    vec!["amq.gen-*".into(), "amq.rabbitmq.reply-to*".into()]
}

impl BrokerSettings {
    /// The broker nodes to use, in order of preference: `urls`, or `url` alone.
    pub fn nodes(&self) -> Vec<&SecretString> {
        if self.urls.is_empty() {
            vec![&self.url]
        } else {
            self.urls.iter().collect()
        }
    }

    /// Whether the worker may answer on `reply_to`.
    pub fn answers_on(&self, reply_to: &str) -> bool {
        self.reply_to_patterns
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => reply_to.starts_with(prefix),
                None => reply_to == p,
            })
    }
}

fn default_stuck_recovery_ms() -> u64 {
    3_000
}

fn default_reconnect_attempts() -> usize {
    60
}

fn default_reconnect_max_delay_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// PostgreSQL URL, credentials included: secret.
    pub url: SecretString,
    pub max_connections: u32,
    /// How long a handler waits for a pooled connection before the attempt counts as failed.
    pub acquire_timeout_ms: u64,
    /// Connections of a pool of their own for queries and rejected messages, so that however
    /// many of them arrive they never take the connections command batches need.
    #[serde(default = "default_query_connections")]
    pub query_connections: u32,
}

fn default_query_connections() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Commands run together in one transaction, at most.
    pub batch_size: usize,
    /// How long a batch waits for more commands after its first one, in milliseconds.
    pub batch_linger_ms: u64,
    /// Batches running at once in one worker.
    pub batches_in_flight: usize,
    /// Bound on queries and rejections handled at once in one worker.
    pub concurrency: usize,
    /// Bound on the drain at shutdown.
    pub shutdown_timeout_ms: u64,
    /// Reads of source systems (`client.import`) made at once by one worker.
    #[serde(default = "default_source_calls_in_flight")]
    pub source_calls_in_flight: usize,
}

fn default_source_calls_in_flight() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetrySettings {
    /// In-process attempts for one delivery, the first included.
    pub immediate_attempts: usize,
    pub immediate_initial_ms: u64,
    pub immediate_max_ms: u64,
    /// One TTL retry queue per distinct delay; attempt n waits `delays_ms[min(n, len) - 1]`.
    #[serde(deserialize_with = "millis_list")]
    pub delays_ms: Vec<u64>,
    /// Delayed retries before the dead-letter queue.
    pub max_attempts: u32,
}

impl RetrySettings {
    /// The in-process retries of one delivery (and of a saga step's transactions).
    pub fn immediate(&self) -> crate::fault::Backoff {
        crate::fault::Backoff::new(
            Duration::from_millis(self.immediate_initial_ms),
            Duration::from_millis(self.immediate_max_ms),
            self.immediate_attempts,
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LifecycleSettings {
    /// Refuse `client.approve` (EKYC_NOT_APPROVED) unless the client's eKYC is APPROVED.
    pub require_ekyc_for_approval: bool,
    /// Delayed retries of a lifecycle or eKYC command whose client is not there yet (it may
    /// be racing its `client.create`) before CLIENT_NOT_FOUND; capped by `retry.max_attempts`.
    pub not_found_retries: u32,
}

impl LifecycleSettings {
    pub fn approval_policy(&self) -> crate::domain::ApprovalPolicy {
        crate::domain::ApprovalPolicy {
            require_ekyc_approved: self.require_ekyc_for_approval,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSettings {
    pub batch_size: i64,
    pub poll_interval_ms: u64,
    /// Rows younger than this are left to the worker that wrote them (it publishes them right
    /// after its commit); the relays take the older ones.
    #[serde(default = "default_dispatch_grace_ms")]
    pub dispatch_grace_ms: u64,
    pub retention_hours: u64,
}

fn default_dispatch_grace_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct InboxSettings {
    /// Inbox rows (the record of every message_id handled) are kept this long, then pruned:
    /// a copy of a command arriving later than this is processed again. Keep it well past
    /// the delayed-retry budget and any replay window.
    pub retention_hours: u64,
}

impl Default for InboxSettings {
    fn default() -> Self {
        InboxSettings {
            retention_hours: 720,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Keys no setting has: a misspelt or retired name would otherwise leave its setting at
    /// the default without a word.
    #[error("{}", describe_unknown(.0))]
    Unknown(Vec<UnknownKey>),
}

/// A key given in a file or the environment that no setting has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Dotted, as in a file: `worker.batch_siz`.
    pub key: String,
    /// The environment variable it came from, when one spells it.
    pub variable: Option<String>,
    /// The known key nearest to it, when one is near enough to be a likely typo.
    pub nearest: Option<&'static str>,
}

fn describe_unknown(keys: &[UnknownKey]) -> String {
    let lines: Vec<String> = keys
        .iter()
        .map(|k| {
            let mut line = format!("unknown setting `{}`", k.key);
            if let Some(v) = &k.variable {
                line.push_str(&format!(" (environment variable {v})"));
            }
            match k.nearest {
                Some(n) => line.push_str(&format!("; did you mean `{n}`?")),
                None => line.push_str("; no setting has that name (see config/default.toml)"),
            }
            line
        })
        .collect();
    lines.join("\n")
}

/// Keys that are settings although `config/default.toml` does not set them (optional
/// sections), for the "did you mean" of an unknown key. `*` stands for any name.
const OPTIONAL_KEYS: &[&str] = &[
    "xendit.base_url",
    "xendit.secret_key",
    "xendit.timeout_ms",
    "xendit.max_attempts",
    "xendit.min_backoff_ms",
    "xendit.max_backoff_ms",
    "xendit.max_rate_limit_wait_ms",
    "xendit.requests_per_minute",
    "email.smtp.host",
    "email.smtp.port",
    "email.smtp.tls",
    "email.smtp.username",
    "email.smtp.password",
    "email.smtp.timeout_ms",
    "email.smtp.pool_max_size",
    "sources.*.base_url",
    "sources.*.token",
    "sources.*.timeout_ms",
];

/// Every key a setting has: those `config/default.toml` sets, and [`OPTIONAL_KEYS`].
fn known_keys() -> &'static [String] {
    static KNOWN: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let defaults = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>())
            .expect("config/default.toml is valid");
        let mut keys = Vec::new();
        leaves(&defaults, "", &mut keys);
        keys.extend(OPTIONAL_KEYS.iter().map(|k| k.to_string()));
        keys
    });
    &KNOWN
}

/// The dotted paths of a table's leaves.
fn leaves(table: &config::Map<String, config::Value>, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match &value.kind {
            config::ValueKind::Table(inner) => leaves(inner, &path, out),
            _ => out.push(path),
        }
    }
}

/// The known key most like `key` (Jaro-Winkler over the dotted path, source names as `*`),
/// when it is alike enough to be what was meant.
fn nearest_key(key: &str) -> Option<&'static str> {
    let generic = match key.split_once('.') {
        Some(("sources", rest)) => match rest.split_once('.') {
            Some((_, field)) => format!("sources.*.{field}"),
            None => key.to_string(),
        },
        _ => key.to_string(),
    };
    known_keys()
        .iter()
        .map(|k| (strsim::jaro_winkler(&generic, k), k.as_str()))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A key's path as a file spells it (`xendit.timeout_ms`): optional sections are no step.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(dotted(parent), &index.to_string()),
        Path::Map { parent, key } => join(dotted(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

fn join(parent: String, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Settings {
    /// Defaults, then `file` when given, then the environment. A key that no setting has,
    /// in the file or as an `ONBOARD__...` variable, is an error naming it and the nearest
    /// known key.
    pub fn load(file: Option<&Path>) -> Result<Settings, LoadError> {
        Self::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with the environment given (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, LoadError> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ONBOARD__"))
            .collect();
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let config = builder
            .add_source(
                config::Environment::with_prefix("ONBOARD")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("retry.delays_ms")
                    .with_list_parse_key("broker.reply_to_patterns")
                    .with_list_parse_key("broker.urls")
                    .with_list_parse_key("webhooks.delays_ms")
                    .try_parsing(true)
                    .source(Some(env.clone().into_iter().collect())),
            )
            .build()?;
        let mut unknown = Vec::new();
        let settings: Result<Settings, _> = serde_ignored::deserialize(config, |path| {
            let key = dotted(&path);
            let variable = format!("ONBOARD__{}", key.replace('.', "__")).to_uppercase();
            let variable = env.keys().find(|k| k.to_uppercase() == variable).cloned();
            unknown.push(UnknownKey {
                nearest: nearest_key(&key),
                key,
                variable,
            });
        });
        // Unknown keys first: a misspelt required key shows up as missing as well, and the
        // misspelling is what to fix.
        if !unknown.is_empty() {
            unknown.sort_by(|a: &UnknownKey, b| a.key.cmp(&b.key));
            return Err(LoadError::Unknown(unknown));
        }
        Ok(settings?)
    }

    /// The compiled-in defaults alone, ignoring files and the environment (tests start here).
    pub fn defaults() -> Settings {
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("config/default.toml is valid")
    }
}

impl RetrySettings {
    /// The delay before delayed retry number `attempt` (1-based).
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let idx = (attempt.max(1) as usize - 1).min(self.delays_ms.len().saturating_sub(1));
        Duration::from_millis(self.delays_ms.get(idx).copied().unwrap_or(1000))
    }
}

/// A URL with its password replaced, for log lines.
pub fn redact_url(url: &SecretString) -> String {
    let raw = url.expose_secret();
    match (raw.find("://"), raw.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &raw[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &raw[..scheme_end], user, &raw[at + 1..])
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests;

//! `onboard dlq list|groups|show|replay|purge`: the dead-letter queue for operators.
//!
//! # Reading without taking
//!
//! Every command starts from a *snapshot*: the tool consumes the dead-letter queue with manual
//! acks and a prefetch of `--limit`, acks nothing, and when it is done closes the channel, so
//! the broker puts every message back (a classic queue requeues in place; a quorum queue, with
//! `broker.replicated_queues`, may put them at its end).
//! Compared with `basic.get` + `nack(requeue)` per message this is one stream instead of a
//! round trip per message, the prefetch is a hard cap on what the broker lends us, and a
//! killed tool simply returns everything (the broker requeues a dead connection's unacked
//! messages). The dead-letter queue has no delivery limit (classic, or quorum without
//! `x-delivery-limit`), so being redelivered counts towards none; and while the snapshot is held another tool's snapshot does not see those
//! messages (they are not lost, only lent).
//!
//! # Moving safely
//!
//! `replay` is a move: the copy is published to the commands exchange with the original
//! routing key and `message_id`, `x-onboard-attempt` reset to 0 and `x-onboard-replays`
//! incremented, and only once the broker confirmed it is the dead letter acked. A crash in
//! between leaves both: at worst a duplicate, which the worker's inbox recognises. Dead
//! letters without a `message_id` are not replayed (the worker would reject them again, and
//! nothing could recognise the duplicate); purge them.
//!
//! A message rejected as malformed has an inbox row with outcome `rejected`; left there, it
//! would make the replayed copy look like a duplicate and vanish. Replay therefore deletes
//! *only* `rejected` rows of the messages it moves (they stand for no effect: no handler ever
//! ran), so the copy is checked afresh; if it is still malformed it is dead-lettered again,
//! not lost. Commands that exhausted their retries have no inbox row and replay cleanly;
//! commands that did succeed or were refused keep their rows, so replaying them is a no-op.
//!
//! Every replay and purge writes a `dlq_audit` row (who, from where, which selector, which
//! messages) before anything moves, adds the ids it moved as it goes, and completes it at the
//! end: a run that was killed shows as started and never finished. Without the database there
//! is no audit, so nothing moves.

pub mod cli;
mod fingerprint;
mod mask;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::PgPool;

pub use fingerprint::{fingerprint, normalize};
pub use mask::{is_secret_key, mask_json, mask_text};

use crate::broker::headers::{self, string, table_to_json};
use crate::broker::publisher::Outgoing;
use crate::broker::{self, Delivered, Names, Publisher};
use crate::configuration::Settings;
use crate::store;

/// Default and largest snapshot: what one run holds unacked at most.
pub const DEFAULT_LIMIT: usize = 10_000;
pub const MAX_LIMIT: usize = u16::MAX as usize;

/// How long the snapshot waits for the next message before taking what it has.
const IDLE: Duration = Duration::from_secs(2);

/// Headers of a dead letter's failure that a replayed copy does not carry: the copy starts
/// afresh, and fails (if it does) with its own history.
const FAILURE_HEADERS: [&str; 6] = [
    headers::REASON,
    headers::FAILURE,
    headers::DEAD_LETTERED_AT,
    headers::FIRST_FAILED_AT,
    headers::LAST_ERROR,
    headers::ROUTING_KEY,
];
const BROKER_HEADERS: [&str; 8] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// One dead letter, as read from the queue.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The command type: the routing key it was published with.
    #[serde(rename = "type")]
    pub command_type: String,
    /// `rejected` (malformed), `retries_exhausted`, or `broker:<reason>` when the broker
    /// dead-lettered it itself (e.g. `broker:delivery_limit`).
    pub failure: String,
    pub reason: String,
    /// Fingerprint of the normalized reason (see [`normalize`]).
    pub fingerprint: String,
    /// Delayed retries made (or deliveries counted by the broker, whichever is larger).
    pub attempts: u32,
    /// Times an operator replayed it before.
    pub replays: u32,
    pub first_failed_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered.
    pub last_failed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub headers: Map<String, Value>,
    #[serde(skip)]
    pub properties: BasicProperties,
    #[serde(skip)]
    pub body: Vec<u8>,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn from_unix(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(v.as_i64()?, 0)
}

impl DeadLetter {
    /// Reads what our headers (`x-onboard-*`) and the broker's (`x-death`) say about it.
    pub fn from_parts(routing_key: &str, properties: BasicProperties, body: Vec<u8>) -> DeadLetter {
        let table = properties.headers().as_ref();
        let headers_json = table.map(table_to_json).unwrap_or_default();
        let deaths: Vec<&Map<String, Value>> = headers_json
            .get("x-death")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default();
        // x-death lists the most recent death first.
        let latest_death = deaths.first();
        let text = |k: &str| headers::get_str(table, k).filter(|s| !s.is_empty());

        let command_type = text(headers::ROUTING_KEY).unwrap_or_else(|| routing_key.to_string());
        let (failure, reason) = match (text(headers::FAILURE), text(headers::REASON)) {
            (Some(f), Some(r)) => (f, r),
            (f, r) => match latest_death {
                Some(d) => {
                    let why = d.get("reason").and_then(Value::as_str).unwrap_or("unknown");
                    let queue = d.get("queue").and_then(Value::as_str).unwrap_or("?");
                    (
                        f.unwrap_or_else(|| format!("broker:{why}")),
                        r.unwrap_or_else(|| {
                            format!("dead-lettered by the broker from {queue}: {why}")
                        }),
                    )
                }
                None => (
                    f.unwrap_or_else(|| "unknown".into()),
                    r.unwrap_or_else(|| "(no reason recorded)".into()),
                ),
            },
        };
        let delivery_count = headers::get_u32(table, "x-delivery-count").unwrap_or(0);
        let attempts = headers::get_u32(table, headers::ATTEMPT)
            .unwrap_or(0)
            .max(delivery_count);
        let death_times: Vec<DateTime<Utc>> = deaths
            .iter()
            .filter_map(|d| d.get("time").and_then(from_unix))
            .collect();
        DeadLetter {
            message_id: properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_string())
                .filter(|s| !s.trim().is_empty()),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str().to_string()),
            command_type,
            fingerprint: fingerprint(&reason),
            failure,
            reason,
            attempts,
            replays: headers::get_u32(table, headers::REPLAYS).unwrap_or(0),
            first_failed_at: text(headers::FIRST_FAILED_AT)
                .and_then(|s| parse_time(&s))
                .or_else(|| death_times.iter().min().copied()),
            last_failed_at: text(headers::DEAD_LETTERED_AT)
                .and_then(|s| parse_time(&s))
                .or_else(|| death_times.iter().max().copied()),
            headers: headers_json,
            properties,
            body,
        }
    }

    /// The properties of its replayed copy: everything the publisher set (message_id,
    /// correlation_id, reply_to, traceparent, its own headers) minus the failure history,
    /// with the attempt counter at 0 and the replay counter one up.
    pub fn replay_properties(&self) -> BasicProperties {
        let mut table = FieldTable::default();
        if let Some(old) = self.properties.headers() {
            for (k, v) in old.inner() {
                let k = k.as_str();
                if !FAILURE_HEADERS.contains(&k) && !BROKER_HEADERS.contains(&k) {
                    table.insert(k.into(), v.clone());
                }
            }
        }
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(0));
        table.insert(
            headers::REPLAYS.into(),
            AMQPValue::LongLongInt(i64::from(self.replays) + 1),
        );
        table.insert(
            headers::REPLAYED_AT.into(),
            string(&Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        headers::durable_copy(&self.properties, table)
    }

    /// Headers with secret-looking values masked, for display.
    pub fn masked_headers(&self) -> Value {
        let mut h = Value::Object(self.headers.clone());
        mask_json(&mut h);
        h
    }

    /// The body for display: pretty JSON with secrets masked, or masked text.
    pub fn masked_body(&self) -> Value {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(mut v) => {
                mask_json(&mut v);
                v
            }
            Err(_) => Value::String(crate::messages::command::truncate(
                &mask_text(&String::from_utf8_lossy(&self.body)),
                4000,
            )),
        }
    }

    /// Failure history, oldest first: the broker's `x-death` entries (retry queues waited
    /// out, delivery limits) and our own headers.
    pub fn history(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(deaths) = self.headers.get("x-death").and_then(Value::as_array) {
            for d in deaths.iter().rev() {
                out.push(json!({
                    "at": d.get("time").and_then(from_unix).map(|t| t.to_rfc3339()),
                    "queue": d.get("queue"),
                    "reason": d.get("reason"),
                    "count": d.get("count"),
                    "routing_keys": d.get("routing-keys"),
                }));
            }
        }
        let ours: Map<String, Value> = self
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-onboard-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !ours.is_empty() {
            out.push(Value::Object(ours));
        }
        out
    }
}

/// Which dead letters a command applies to. Every given criterion must hold; nothing given
/// selects everything for `list` and `groups`, and nothing for `replay` and `purge` unless
/// `all` is set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selector {
    pub ids: Vec<String>,
    /// A fingerprint (or a prefix of one, at least 4 characters).
    pub group: Option<String>,
    #[serde(rename = "type")]
    pub command_type: Option<String>,
    /// Case-insensitive substring of the reason.
    pub reason: Option<String>,
    /// Dead-lettered at least this long ago.
    #[serde(serialize_with = "secs")]
    pub older_than: Option<Duration>,
    /// Dead-lettered at most this long ago.
    #[serde(serialize_with = "secs")]
    pub newer_than: Option<Duration>,
    pub all: bool,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

impl Selector {
    /// Nothing chosen (and not `all`).
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.ids.is_empty()
            && self.group.is_none()
            && self.command_type.is_none()
            && self.reason.is_none()
            && self.older_than.is_none()
            && self.newer_than.is_none()
    }

    pub fn matches(&self, dl: &DeadLetter, now: DateTime<Utc>) -> bool {
        let age = |d: &Duration| -> Option<chrono::Duration> {
            let at = dl.last_failed_at?;
            Some(now - at - chrono::Duration::from_std(*d).ok()?)
        };
        (self.ids.is_empty()
            || dl
                .message_id
                .as_ref()
                .is_some_and(|id| self.ids.contains(id)))
            && self
                .group
                .as_ref()
                .is_none_or(|g| dl.fingerprint.starts_with(g.as_str()))
            && self
                .command_type
                .as_ref()
                .is_none_or(|t| &dl.command_type == t)
            && self
                .reason
                .as_ref()
                .is_none_or(|r| dl.reason.to_lowercase().contains(&r.to_lowercase()))
            && self
                .older_than
                .as_ref()
                .is_none_or(|d| age(d).is_some_and(|a| a >= chrono::Duration::zero()))
            && self
                .newer_than
                .as_ref()
                .is_none_or(|d| age(d).is_some_and(|a| a <= chrono::Duration::zero()))
    }
}

/// `30s`, `15m`, `2h`, `3d`, `1w`, or plain seconds.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not an age like 30s, 15m, 2h, 3d or 1w"))?;
    let secs = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use s, m, h, d or w)"
            ));
        }
    };
    Ok(Duration::from_secs(n * secs))
}

/// What `list` found.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Messages ready in the queue when the snapshot began.
    pub depth: u32,
    /// Messages read (at most the limit).
    pub inspected: usize,
    pub letters: Vec<DeadLetter>,
}

/// One root cause.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub fingerprint: String,
    pub count: usize,
    /// The normalized reason.
    pub reason: String,
    /// One reason as it was written, for the details.
    pub example: String,
    pub types: BTreeMap<String, usize>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Up to three message ids, to start a `show` from.
    pub sample_ids: Vec<String>,
}

/// Groups dead letters by fingerprint, largest group first.
pub fn group(letters: &[DeadLetter]) -> Vec<Group> {
    let mut groups: HashMap<&str, Group> = HashMap::new();
    for dl in letters {
        let g = groups.entry(&dl.fingerprint).or_insert_with(|| Group {
            fingerprint: dl.fingerprint.clone(),
            count: 0,
            reason: normalize(&dl.reason),
            example: dl.reason.clone(),
            types: BTreeMap::new(),
            first_failed_at: None,
            last_failed_at: None,
            sample_ids: Vec::new(),
        });
        g.count += 1;
        *g.types.entry(dl.command_type.clone()).or_default() += 1;
        g.first_failed_at = match (g.first_failed_at, dl.first_failed_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        g.last_failed_at = g.last_failed_at.max(dl.last_failed_at);
        if g.sample_ids.len() < 3
            && let Some(id) = &dl.message_id
        {
            g.sample_ids.push(id.clone());
        }
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    out
}

/// A dead letter held unacked by a snapshot.
struct Held {
    acker: Acker,
    letter: DeadLetter,
}

/// Messages lent to us by the broker until [`Snapshot::release`] (or until the connection
/// drops, whichever is first).
struct Snapshot {
    channel: Channel,
    depth: u32,
    held: Vec<Held>,
}

impl Snapshot {
    async fn take(connection: &Connection, queue: &str, limit: usize) -> anyhow::Result<Snapshot> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let channel = connection.create_channel().await?;
        let depth = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!("no dead-letter queue {queue} ({e}); is broker.prefix right?")
            })?
            .message_count();
        let want = (depth as usize).min(limit);
        let mut held = Vec::with_capacity(want);
        if want > 0 {
            // The prefetch is the cap: the broker lends us no more than `want` at once.
            channel
                .basic_qos(want as u16, BasicQosOptions::default())
                .await?;
            let mut consumer = channel
                .basic_consume(
                    queue.into(),
                    format!("onboard-dlq-{}", uuid::Uuid::new_v4())
                        .as_str()
                        .into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            while held.len() < want {
                match tokio::time::timeout(IDLE, consumer.next()).await {
                    Ok(Some(Ok(d))) => held.push(Held {
                        letter: DeadLetter::from_parts(
                            d.routing_key.as_str(),
                            d.properties,
                            d.data,
                        ),
                        acker: d.acker,
                    }),
                    Ok(Some(Err(e))) => return Err(e.into()),
                    // Fewer than counted (another client took some): what we have is it.
                    Ok(None) | Err(_) => break,
                }
            }
            // No more deliveries: acking what we move must not pull in new ones.
            channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await?;
        }
        Ok(Snapshot {
            channel,
            depth,
            held,
        })
    }

    /// Gives back everything not acked, in its original place.
    async fn release(self) {
        let _ = self
            .channel
            .close(200, "dlq snapshot released".into())
            .await;
    }
}

/// What `replay` and `purge` were asked to do.
#[derive(Debug, Clone)]
pub struct MoveRequest {
    pub selector: Selector,
    /// Snapshot size (see [`DEFAULT_LIMIT`]).
    pub limit: usize,
    /// List what would move, move nothing.
    pub dry_run: bool,
    /// Replays per second at most.
    pub rate: Option<f64>,
    /// Who, for the audit (default: the OS user).
    pub actor: Option<String>,
    pub note: Option<String>,
    /// Edit-and-retry: replay this body instead of the dead letter's (one message id only).
    /// The audit keeps the original body (masked) beside the selection.
    pub edited_body: Option<Vec<u8>>,
}

impl MoveRequest {
    pub fn new(selector: Selector) -> MoveRequest {
        MoveRequest {
            selector,
            limit: DEFAULT_LIMIT,
            dry_run: false,
            rate: None,
            actor: None,
            note: None,
            edited_body: None,
        }
    }
}

/// What `replay` or `purge` did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MoveReport {
    pub action: String,
    pub dry_run: bool,
    /// Dead letters selected (a message id dead-lettered twice counts twice).
    pub selected: Vec<DeadLetter>,
    /// Message ids replayed (confirmed, then acked) or purged.
    pub done: Vec<String>,
    /// Messages purged that had no message_id.
    pub done_without_id: usize,
    /// Selected but left alone, with why.
    pub skipped: Vec<(Option<String>, String)>,
    /// Could not be moved; still in the dead-letter queue.
    pub failed: Vec<(String, String)>,
    /// The inbox outcome of selected ids, where one exists (replay: what the worker will do).
    pub inbox: BTreeMap<String, String>,
    pub audit_id: Option<i64>,
    /// The snapshot was full and the last pass still found work: more may match beyond it.
    pub more_beyond_limit: bool,
}

/// The OS user running the tool (the one behind `sudo` when there is one).
pub fn os_user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn audit_messages(letters: &[&DeadLetter]) -> Value {
    Value::Array(
        letters
            .iter()
            .map(|d| {
                json!({
                    "message_id": d.message_id,
                    "type": d.command_type,
                    "fingerprint": d.fingerprint,
                    "reason": crate::messages::command::truncate(&d.reason, 200),
                })
            })
            .collect(),
    )
}

/// The dead-letter queue of one deployment (one `broker.prefix`).
pub struct Dlq {
    connection: Connection,
    names: Names,
    confirm_timeout: Duration,
}

impl Dlq {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Dlq> {
        let connection = broker::connect(&settings.broker, "onboard dlq").await?;
        Ok(Dlq {
            connection,
            names: Names::new(&settings.broker.prefix),
            confirm_timeout: Duration::from_millis(settings.broker.confirm_timeout_ms),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }

    async fn snapshot(&self, limit: usize) -> anyhow::Result<Snapshot> {
        Snapshot::take(&self.connection, &self.names.dead_queue, limit).await
    }

    /// The dead letters matching `selector` among the first `limit`, in queue order.
    pub async fn list(&self, selector: &Selector, limit: usize) -> anyhow::Result<Listing> {
        let snap = self.snapshot(limit).await?;
        let now = Utc::now();
        let inspected = snap.held.len();
        let depth = snap.depth;
        let letters = snap
            .held
            .iter()
            .filter(|h| selector.matches(&h.letter, now))
            .map(|h| h.letter.clone())
            .collect();
        snap.release().await;
        Ok(Listing {
            depth,
            inspected,
            letters,
        })
    }

    /// The matching dead letters grouped by root cause.
    pub async fn groups(&self, selector: &Selector, limit: usize) -> anyhow::Result<Vec<Group>> {
        Ok(group(&self.list(selector, limit).await?.letters))
    }

    /// Every dead letter with this message id (a command can be dead-lettered more than once).
    pub async fn show(&self, message_id: &str, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let selector = Selector {
            ids: vec![message_id.to_string()],
            ..Default::default()
        };
        Ok(self.list(&selector, limit).await?.letters)
    }

    /// Replays the selected dead letters (see the module documentation).
    pub async fn replay(&self, pool: &PgPool, req: &MoveRequest) -> anyhow::Result<MoveReport> {
        self.run_move(pool, req, Action::Replay, &mut |_| true)
            .await
    }

    /// Deletes the selected dead letters for good, after `confirm` agreed to the plan (the
    /// first snapshot's selection; `more_beyond_limit` says whether more may follow).
    pub async fn purge(
        &self,
        pool: &PgPool,
        req: &MoveRequest,
        confirm: &mut (dyn FnMut(&MoveReport) -> bool + Send),
    ) -> anyhow::Result<MoveReport> {
        self.run_move(pool, req, Action::Purge, confirm).await
    }

    async fn run_move(
        &self,
        pool: &PgPool,
        req: &MoveRequest,
        action: Action,
        confirm: &mut (dyn FnMut(&MoveReport) -> bool + Send),
    ) -> anyhow::Result<MoveReport> {
        if req.selector.is_empty() {
            anyhow::bail!(
                "say which dead letters to {}: message ids, --group, --type, --reason, \
                 --older-than/--newer-than, or --all",
                action.as_str()
            );
        }
        if req.edited_body.is_some() && (action != Action::Replay || req.selector.ids.len() != 1) {
            anyhow::bail!("an edited body replaces one message's: select exactly one message id");
        }
        let limit = req.limit.clamp(1, MAX_LIMIT);
        let mut report = MoveReport {
            action: action.as_str().into(),
            dry_run: req.dry_run,
            ..Default::default()
        };
        let publisher = match action {
            Action::Replay if !req.dry_run => {
                Some(Publisher::open(&self.connection, self.confirm_timeout).await?)
            }
            _ => None,
        };
        // Ids handled in this run: a replayed copy that fails again comes back to the queue
        // and must not be replayed twice by one run.
        let mut seen: HashSet<String> = HashSet::new();
        let mut audit_id = None;
        let mut first_pass = true;
        let mut pacer = req.rate.filter(|r| *r > 0.0).map(|r| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });

        let result: anyhow::Result<()> = async {
            loop {
                let snap = self.snapshot(limit).await?;
                let full = snap.held.len() >= limit;
                let now = Utc::now();
                let chosen: Vec<&Held> = snap
                    .held
                    .iter()
                    .filter(|h| req.selector.matches(&h.letter, now))
                    .filter(|h| {
                        h.letter
                            .message_id
                            .as_ref()
                            .is_none_or(|id| !seen.contains(id))
                    })
                    .collect();
                let mut movable: Vec<&Held> = Vec::new();
                for h in chosen {
                    if action == Action::Replay && h.letter.message_id.is_none() {
                        report.skipped.push((
                            None,
                            "no message_id: it would be rejected again; purge it instead".into(),
                        ));
                    } else {
                        movable.push(h);
                    }
                }
                report
                    .selected
                    .extend(movable.iter().map(|h| h.letter.clone()));
                if action == Action::Replay {
                    let ids: Vec<String> = movable
                        .iter()
                        .filter_map(|h| h.letter.message_id.clone())
                        .collect();
                    if let Ok(rows) = store::dlq::inbox_outcomes(pool, &ids).await {
                        report.inbox.extend(rows);
                    }
                }
                if req.dry_run || movable.is_empty() {
                    report.more_beyond_limit = full && !movable.is_empty();
                    snap.release().await;
                    return Ok(());
                }
                if first_pass {
                    first_pass = false;
                    report.more_beyond_limit = full;
                    if !confirm(&report) {
                        snap.release().await;
                        anyhow::bail!("not confirmed; nothing was {}", action.past());
                    }
                    report.more_beyond_limit = false;
                }
                let letters: Vec<&DeadLetter> = movable.iter().map(|h| &h.letter).collect();
                let mut messages = audit_messages(&letters);
                if req.edited_body.is_some()
                    && let Value::Array(entries) = &mut messages
                {
                    for (entry, letter) in entries.iter_mut().zip(&letters) {
                        entry["edited"] = Value::Bool(true);
                        entry["original_body"] = letter.masked_body();
                    }
                }
                // The audit row comes first: without it nothing moves.
                let id = match audit_id {
                    Some(id) => {
                        store::dlq::add_messages(pool, id, &messages).await?;
                        id
                    }
                    None => {
                        let selector = serde_json::to_value(&req.selector)?;
                        let actor = req.actor.clone().unwrap_or_else(os_user);
                        let host = hostname();
                        let id = store::dlq::start(
                            pool,
                            store::dlq::AuditStart {
                                action: action.as_str(),
                                actor: &actor,
                                host: host.as_deref(),
                                note: req.note.as_deref(),
                                queue: &self.names.dead_queue,
                                selector: &selector,
                                messages: &messages,
                                selected: letters.len() as i32,
                            },
                        )
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "cannot write the audit record, so nothing moved: {e} \
                                 (is the database reachable and migrated? `onboard migrate`)"
                            )
                        })?;
                        audit_id = Some(id);
                        report.audit_id = Some(id);
                        id
                    }
                };
                match action {
                    Action::Purge => {
                        self.purge_pass(pool, id, &movable, &mut report).await?;
                    }
                    Action::Replay => {
                        let publisher = publisher.as_ref().expect("opened for replay");
                        let edited = req.edited_body.as_deref();
                        self.replay_pass(
                            (pool, id),
                            publisher,
                            &movable,
                            edited,
                            &mut pacer,
                            &mut report,
                        )
                        .await?;
                    }
                }
                for h in &movable {
                    if let Some(id) = &h.letter.message_id {
                        seen.insert(id.clone());
                    }
                }
                snap.release().await;
                if !full {
                    return Ok(());
                }
            }
        }
        .await;

        if let Some(id) = audit_id {
            let outcome = match (&result, report.failed.is_empty()) {
                (Ok(()), true) => "completed",
                (Ok(()), false) => "partial",
                (Err(_), _) => "failed",
            };
            let error = result
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .or_else(|| report.failed.first().map(|(id, e)| format!("{id}: {e}")));
            if let Err(e) = store::dlq::finish(pool, id, outcome, error.as_deref()).await {
                tracing::warn!(error = %e, audit_id = id, "could not complete the audit record");
            }
        }
        result.map(|()| report)
    }

    async fn purge_pass(
        &self,
        pool: &PgPool,
        audit_id: i64,
        movable: &[&Held],
        report: &mut MoveReport,
    ) -> anyhow::Result<()> {
        let mut done = Vec::new();
        for h in movable {
            h.acker.ack(BasicAckOptions::default()).await?;
            match &h.letter.message_id {
                Some(id) => done.push(id.clone()),
                None => report.done_without_id += 1,
            }
        }
        store::dlq::progress(pool, audit_id, &done).await?;
        report.done.extend(done);
        Ok(())
    }

    /// Publishes one copy per message id, waits for its confirm, then acks every dead letter
    /// of that id. Without a rate, copies go out in confirmed batches.
    async fn replay_pass(
        &self,
        (pool, audit_id): (&PgPool, i64),
        publisher: &Publisher,
        movable: &[&Held],
        edited: Option<&[u8]>,
        pacer: &mut Option<tokio::time::Interval>,
        report: &mut MoveReport,
    ) -> anyhow::Result<()> {
        // One copy per id; all dead letters of that id are acked once it is confirmed.
        let mut order: Vec<&str> = Vec::new();
        let mut by_id: HashMap<&str, Vec<&Held>> = HashMap::new();
        for h in movable {
            let id = h
                .letter
                .message_id
                .as_deref()
                .expect("replay moves ids only");
            by_id
                .entry(id)
                .or_insert_with(|| {
                    order.push(id);
                    Vec::new()
                })
                .push(h);
        }
        let ids: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        store::dlq::forget_rejected(pool, &ids).await?;

        let batch = if pacer.is_some() { 1 } else { 100 };
        for chunk in order.chunks(batch) {
            if let Some(p) = pacer.as_mut() {
                p.tick().await;
            }
            let props: Vec<(BasicProperties, &Held)> = chunk
                .iter()
                .map(|id| {
                    let first = by_id[id][0];
                    (first.letter.replay_properties(), first)
                })
                .collect();
            let outgoing = props
                .iter()
                .map(|(p, h)| Outgoing {
                    exchange: &self.names.commands_exchange,
                    routing_key: &h.letter.command_type,
                    body: edited.unwrap_or(&h.letter.body),
                    properties: p.clone(),
                })
                .collect();
            let results = publisher.publish_all(outgoing).await;
            let mut done = Vec::new();
            for (id, result) in chunk.iter().zip(results) {
                match result {
                    Ok(Delivered::Routed) => {
                        for h in &by_id[id] {
                            h.acker.ack(BasicAckOptions::default()).await?;
                        }
                        done.push(id.to_string());
                    }
                    Ok(Delivered::Returned { reply_text }) => report.failed.push((
                        id.to_string(),
                        format!("the commands exchange routed it nowhere ({reply_text})"),
                    )),
                    Err(e) => report.failed.push((id.to_string(), e.to_string())),
                }
            }
            store::dlq::progress(pool, audit_id, &done).await?;
            report.done.extend(done);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Action::Replay => "replayed",
            Action::Purge => "purged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn ours(reason: &str, at: &str) -> DeadLetter {
        let props = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_headers(table(&[
                (headers::REASON, string(reason)),
                (headers::FAILURE, string("retries_exhausted")),
                (headers::DEAD_LETTERED_AT, string(at)),
                (headers::FIRST_FAILED_AT, string("2024-01-01T00:00:00.000Z")),
                (headers::ROUTING_KEY, string("client.create")),
                (headers::ATTEMPT, AMQPValue::LongLongInt(3)),
                (headers::TRACEPARENT, string("00-abc")),
                ("x-death", AMQPValue::FieldArray(vec![].into())),
            ]));
        DeadLetter::from_parts("client.create", props, b"{}".to_vec())
    }

    #[test]
    fn our_headers_give_type_reason_attempts_and_times() {
        let dl = ours("boom 42", "2024-01-02T00:00:00.000Z");
        assert_eq!(dl.command_type, "client.create");
        assert_eq!(dl.failure, "retries_exhausted");
        assert_eq!(dl.attempts, 3);
        assert_eq!(dl.fingerprint, fingerprint("boom 7"));
        assert_eq!(
            dl.last_failed_at.unwrap().to_rfc3339(),
            "2024-01-02T00:00:00+00:00"
        );
    }

    #[test]
    fn a_broker_dead_letter_is_explained_from_x_death() {
        let death = table(&[
            ("reason", string("delivery_limit")),
            ("queue", string("p.commands")),
            ("time", AMQPValue::Timestamp(1_700_000_000)),
            ("count", AMQPValue::LongLongInt(1)),
        ]);
        let props = BasicProperties::default().with_headers(table(&[
            (
                "x-death",
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
            ),
            ("x-delivery-count", AMQPValue::LongLongInt(20)),
        ]));
        let dl = DeadLetter::from_parts("client.create", props, vec![]);
        assert_eq!(dl.failure, "broker:delivery_limit");
        assert!(dl.reason.contains("p.commands"), "{}", dl.reason);
        assert_eq!(dl.attempts, 20);
        assert_eq!(dl.last_failed_at.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(dl.message_id, None);
    }

    #[test]
    fn a_replayed_copy_starts_afresh_and_counts_the_replay() {
        let dl = ours("boom", "2024-01-02T00:00:00.000Z");
        let props = dl.replay_properties();
        let h = props.headers().as_ref();
        assert_eq!(headers::get_u32(h, headers::ATTEMPT), Some(0));
        assert_eq!(headers::get_u32(h, headers::REPLAYS), Some(1));
        assert_eq!(
            headers::get_str(h, headers::TRACEPARENT).as_deref(),
            Some("00-abc")
        );
        for gone in [headers::REASON, headers::FAILURE, "x-death"] {
            assert_eq!(headers::get_str(h, gone), None, "{gone}");
        }
        assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        let again = DeadLetter::from_parts("client.create", props, vec![]);
        assert_eq!(
            headers::get_u32(
                again.replay_properties().headers().as_ref(),
                headers::REPLAYS
            ),
            Some(2)
        );
    }

    #[test]
    fn selectors_combine_and_ages_compare_with_the_dead_letter_time() {
        let now = DateTime::parse_from_rfc3339("2024-01-02T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let dl = ours("Database: pool timed out", "2024-01-02T00:00:00.000Z");
        let s = |f: &dyn Fn(&mut Selector)| {
            let mut s = Selector::default();
            f(&mut s);
            s.matches(&dl, now)
        };
        assert!(s(&|_| {}));
        assert!(s(&|s| s.reason = Some("POOL timed".into())));
        assert!(!s(&|s| s.reason = Some("deadlock".into())));
        assert!(s(&|s| s.command_type = Some("client.create".into())));
        assert!(!s(&|s| s.command_type = Some("client.approve".into())));
        assert!(s(&|s| s.older_than = Some(Duration::from_secs(1800))));
        assert!(!s(&|s| s.older_than = Some(Duration::from_secs(7200))));
        assert!(s(&|s| s.newer_than = Some(Duration::from_secs(7200))));
        assert!(!s(&|s| s.newer_than = Some(Duration::from_secs(1800))));
        assert!(s(&|s| s.ids = vec!["m-1".into()]));
        assert!(!s(&|s| s.ids = vec!["m-2".into()]));
        assert!(s(&|s| s.group = Some(dl.fingerprint[..6].to_string())));
        assert!(Selector::default().is_empty());
    }

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_age("3d").unwrap(), Duration::from_secs(259_200));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("5y").is_err());
    }

    #[test]
    fn groups_count_one_line_per_cause() {
        let mut a = ours("client 1 blocked", "2024-01-02T00:00:00.000Z");
        let b = ours("client 2 blocked", "2024-01-03T00:00:00.000Z");
        let c = ours("something else", "2024-01-03T00:00:00.000Z");
        a.message_id = Some("m-a".into());
        let groups = group(&[a, b, c]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[0].reason, "client <n> blocked");
        assert_eq!(groups[0].types["client.create"], 2);
        assert_eq!(groups[0].sample_ids, vec!["m-a", "m-1"]);
    }
}

//! What the broker says when a queue exists with other arguments than we declare: every
//! argument that differs, found by declaring again with the broker's value of each, and the
//! setting behind ours.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

pub(super) async fn probe(
    connection: &lapin::Connection,
    queue: &str,
    mut args: FieldTable,
    first: Mismatch,
) -> Vec<Mismatch> {
    let mut found = vec![first];
    // Each round takes one argument as the broker has it; a queue has only a few.
    for _ in 0..8 {
        let last = found.last().expect("at least the first");
        let Some(value) = last.theirs_value() else {
            break;
        };
        let mut next = FieldTable::default();
        for (k, v) in args.inner() {
            if k.as_str() != last.argument {
                next.insert(k.clone(), v.clone());
            }
        }
        if let Some(v) = value {
            next.insert(last.argument.as_str().into(), v);
        }
        args = next;
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        match channel
            .queue_declare(queue.into(), options, args.clone())
            .await
        {
            Ok(_) => {
                let _ = channel.close(200, "probed".into()).await;
                break;
            }
            Err(e) => match mismatch_of(&e) {
                Some(m) if !found.iter().any(|f| f.argument == m.argument) => found.push(m),
                _ => break,
            },
        }
    }
    found
}

pub(super) fn mismatch_of(e: &lapin::Error) -> Option<Mismatch> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(e) => Mismatch::parse(e.get_message().as_str()),
        _ => None,
    }
}

/// A declare the broker refused. When the object exists with other arguments, the message
/// names each mismatching argument, both values, and the setting behind ours.
#[derive(Debug, thiserror::Error)]
pub struct TopologyError {
    pub what: String,
    #[source]
    pub source: lapin::Error,
    /// Every argument found to differ (filled by [`declare_on`]; empty otherwise).
    pub mismatches: Vec<Mismatch>,
    /// The queue and the arguments we declared, to probe further.
    pub(super) declared: Option<(String, FieldTable)>,
}

/// One argument an existing queue or exchange has with another value than we declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub argument: String,
    /// What this worker declares.
    pub ours: String,
    /// What the broker holds (`None`: not set there).
    pub theirs: Option<String>,
    /// The broker's AMQP type of `theirs` (`longstr`, `long`, `signedint`, ...).
    pub theirs_type: Option<String>,
}

impl Mismatch {
    /// Reads RabbitMQ's PRECONDITION_FAILED text, in the shapes it uses: `inequivalent arg
    /// 'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum' of type 'longstr'
    /// but current is the value 'classic' of type 'longstr'`, `... received '20' but current
    /// is '5'`, `... received none but current is ...`, `... but current is none`.
    pub fn parse(reply_text: &str) -> Option<Mismatch> {
        let quoted = |s: &str| -> Option<String> {
            let rest = s.strip_prefix('\'')?;
            Some(rest[..rest.find('\'')?].to_string())
        };
        // `none`, `'v'`, or `the value 'v' of type 't'`: (value, type).
        let value = |s: &str| -> (Option<String>, Option<String>) {
            if s.starts_with("none") {
                return (None, None);
            }
            if let Some(rest) = s.strip_prefix("the value ") {
                let v = quoted(rest);
                let t = rest
                    .find("of type ")
                    .and_then(|i| quoted(&rest[i + "of type ".len()..]));
                return (v, t);
            }
            (quoted(s), None)
        };
        let arg_at = reply_text.find("inequivalent arg ")? + "inequivalent arg ".len();
        let argument = quoted(&reply_text[arg_at..])?;
        let received = reply_text.find("received ")? + "received ".len();
        let current = reply_text.find("but current is ")? + "but current is ".len();
        let (ours, _) = value(&reply_text[received..]);
        let (theirs, theirs_type) = value(&reply_text[current..]);
        Some(Mismatch {
            argument,
            ours: ours.unwrap_or_else(|| "nothing".into()),
            theirs,
            theirs_type,
        })
    }

    /// The broker's value as an AMQP value to declare with (`Some(None)`: leave it out), or
    /// `None` when it cannot be rebuilt from the text.
    pub(super) fn theirs_value(&self) -> Option<Option<AMQPValue>> {
        let Some(v) = &self.theirs else {
            return Some(None);
        };
        match self.theirs_type.as_deref().unwrap_or_else(|| {
            if v.parse::<i64>().is_ok() {
                "long"
            } else {
                "longstr"
            }
        }) {
            "longstr" => Some(Some(AMQPValue::LongString(v.as_bytes().to_vec().into()))),
            "long" | "signedint" | "short" | "byte" | "unsignedint" | "unsignedshort" => {
                v.parse().ok().map(|n| Some(AMQPValue::LongLongInt(n)))
            }
            "bool" => v.parse().ok().map(|b| Some(AMQPValue::Boolean(b))),
            _ => None,
        }
    }

    /// The setting (or fact) behind our value.
    fn source_of_ours(&self) -> &'static str {
        match self.argument.as_str() {
            "x-delivery-limit" => " (broker.delivery_limit)",
            "x-message-ttl" => " (retry.delays_ms)",
            "x-queue-type" => {
                " (the commands queue is always quorum; the others are quorum only with \
                 broker.replicated_queues)"
            }
            "x-queue-mode" => {
                " (the dead-letter and unrouted-events queues are lazy; a queue in another mode \
                 is kept as it is when nothing else differs)"
            }
            "x-dead-letter-exchange" | "x-dead-letter-strategy" | "x-overflow" => {
                " (fixed: dead letters go to <prefix>.dead, at least once)"
            }
            _ => "",
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} on the broker, but this worker declares {}{}",
            self.argument,
            self.theirs.as_deref().unwrap_or("not set"),
            self.ours,
            self.source_of_ours()
        )
    }
}

impl TopologyError {
    pub(super) fn new(what: String, source: lapin::Error) -> TopologyError {
        TopologyError {
            what,
            source,
            mismatches: Vec::new(),
            declared: None,
        }
    }

    /// The first mismatching argument, when the broker named one.
    pub fn mismatch(&self) -> Option<Mismatch> {
        self.mismatches
            .first()
            .cloned()
            .or_else(|| mismatch_of(&self.source))
    }
}

impl std::fmt::Display for TopologyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<Mismatch> = match (self.mismatches.is_empty(), self.mismatch()) {
            (false, _) => self.mismatches.clone(),
            (true, Some(m)) => vec![m],
            (true, None) => Vec::new(),
        };
        if all.is_empty() {
            return write!(
                f,
                "declaring {} failed: {}. If it already exists with other arguments (a different \
                 delivery limit, queue type or dead-letter exchange), delete it or change the \
                 prefix.",
                self.what, self.source
            );
        }
        let list = all
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        write!(
            f,
            "{what} already exists with other arguments: {list}. A queue's arguments cannot \
             change in place: make the settings match, or move its messages elsewhere and \
             delete {what}, or use another broker.prefix",
            what = self.what,
        )
    }
}

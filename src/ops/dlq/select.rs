//! Which dead letters an operator means (`--group`, `--type`, `--reason`, ages), and the
//! listing and grouping of what was found.

use super::fingerprint::normalize;
use super::letter::DeadLetter;
use chrono::DateTime;
use chrono::Utc;
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

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

pub(super) fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
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

//! What `replay` and `purge` are asked and report, and what their audit row keeps.

use super::letter::DeadLetter;
use super::limits::DEFAULT_LIMIT;
use super::select::Selector;
use serde::Serialize;
use serde_json::Value;
use serde_json::json;
use std::collections::BTreeMap;

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

    /// Edit-and-retry: replay `body` instead of the dead letter's, the audit note saying so
    /// (the console and `onboard dlq edit` both).
    pub fn edited(mut self, body: String) -> MoveRequest {
        self.note = Some(match self.note.take() {
            Some(n) => format!("{n}; edited and retried"),
            None => "edited and retried".into(),
        });
        self.edited_body = Some(body.into_bytes());
        self
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

pub(super) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(super) fn audit_messages(letters: &[&DeadLetter]) -> Value {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Replay,
    Purge,
}

impl Action {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }

    pub(super) fn past(self) -> &'static str {
        match self {
            Action::Replay => "replayed",
            Action::Purge => "purged",
        }
    }
}

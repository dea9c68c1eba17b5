//! `onboard dlq ...`: arguments and what is printed. The work is in [`super`].

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{DEFAULT_LIMIT, DeadLetter, Dlq, MoveReport, MoveRequest, Selector, parse_age};
use crate::configuration::Settings;
use crate::messages::command::truncate;
use crate::store;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// What is in the dead-letter queue: read without taking, nothing moves.
    List {
        #[command(flatten)]
        select: SelectArgs,
    },
    /// The dead letters grouped by root cause (a fingerprint of the reason), with counts.
    Groups {
        #[command(flatten)]
        select: SelectArgs,
    },
    /// One dead letter: properties, headers and body (secrets masked), failure history.
    Show {
        message_id: String,
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Sends dead letters back to the commands exchange (confirmed, then removed here).
    Replay {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// At most this many replays per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Edit-and-retry: replays one dead letter with a corrected body, checked against its
    /// command's schema first (nothing is sent when it fails); same message id, and the audit
    /// keeps the original body.
    Edit {
        message_id: String,
        /// The corrected body (JSON): a file, or - for standard input.
        #[arg(long, value_name = "FILE")]
        body: std::path::PathBuf,
        #[command(flatten)]
        change: ChangeArgs,
        /// Read at most this many messages from the head of the queue to find it.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Deletes dead letters for good (asks first unless --yes).
    Purge {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Recent replays and purges: who, when, what.
    Audit {
        #[arg(long, default_value_t = 20)]
        last: i64,
        #[arg(long)]
        json: bool,
    },
}

/// Which dead letters (every criterion given must hold).
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Message ids.
    #[arg(value_name = "MESSAGE_ID")]
    ids: Vec<String>,
    /// A group's fingerprint (from `dlq groups`), or a prefix of it.
    #[arg(long)]
    group: Option<String>,
    /// Command type (routing key), e.g. client.create.
    #[arg(long = "type")]
    command_type: Option<String>,
    /// Text the reason contains (case-insensitive).
    #[arg(long)]
    reason: Option<String>,
    /// Dead-lettered at least this long ago: 30s, 15m, 2h, 3d, 1w.
    #[arg(long, value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Dead-lettered at most this long ago.
    #[arg(long, value_parser = parse_age)]
    newer_than: Option<Duration>,
    /// Every dead letter (replay and purge need a selector or this).
    #[arg(long)]
    all: bool,
    /// Read at most this many messages from the head of the queue (at most 65535).
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl SelectArgs {
    fn selector(&self) -> Selector {
        Selector {
            ids: self.ids.clone(),
            group: self.group.clone(),
            command_type: self.command_type.clone(),
            reason: self.reason.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            all: self.all,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Show what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Who does this, for the audit record (default: the OS user).
    #[arg(long)]
    actor: Option<String>,
    /// Why, for the audit record (a ticket, the fix that was deployed).
    #[arg(long)]
    note: Option<String>,
}

fn request(select: &SelectArgs, change: &ChangeArgs, rate: Option<f64>) -> MoveRequest {
    MoveRequest {
        selector: select.selector(),
        limit: select.limit,
        dry_run: change.dry_run,
        rate,
        actor: change.actor.clone(),
        note: change.note.clone(),
        edited_body: None,
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_letters(letters: &[DeadLetter]) {
    println!(
        "{:<38} {:<26} {:>8} {:<19} {:<19} {:<11} {:<17} REASON",
        "MESSAGE_ID", "TYPE", "ATTEMPTS", "FIRST FAILED", "LAST FAILED", "GROUP", "FAILURE"
    );
    for d in letters {
        println!(
            "{:<38} {:<26} {:>8} {:<19} {:<19} {:<11} {:<17} {}",
            d.message_id.as_deref().unwrap_or("(none)"),
            truncate(&d.command_type, 26),
            d.attempts,
            time(d.first_failed_at),
            time(d.last_failed_at),
            d.fingerprint,
            d.failure,
            truncate(&d.reason.replace('\n', " "), 100),
        );
    }
}

/// Runs one `onboard dlq` command, printing to stdout.
pub async fn run(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    if let DlqCommand::Audit { last, json } = command {
        let pool = store::pool(&settings.database)?;
        let rows = store::dlq::recent(&pool, last).await?;
        if json {
            let v: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id, "action": r.action, "actor": r.actor, "host": r.host,
                        "note": r.note, "queue": r.queue, "selector": r.selector,
                        "messages": r.messages, "selected": r.selected, "done": r.done,
                        "done_ids": r.done_ids, "started_at": r.started_at,
                        "finished_at": r.finished_at, "outcome": r.outcome, "error": r.error,
                    })
                })
                .collect();
            return print_json(&v);
        }
        println!(
            "{:>5} {:<19} {:<7} {:<16} {:>8} {:>6} {:<10} SELECTOR / NOTE",
            "ID", "STARTED", "ACTION", "ACTOR", "SELECTED", "DONE", "OUTCOME"
        );
        for r in rows {
            println!(
                "{:>5} {:<19} {:<7} {:<16} {:>8} {:>6} {:<10} {} {}",
                r.id,
                time(Some(r.started_at)),
                r.action,
                truncate(&r.actor, 16),
                r.selected,
                r.done,
                r.outcome.as_deref().unwrap_or("unfinished"),
                r.selector,
                r.note.unwrap_or_default(),
            );
        }
        return Ok(());
    }

    let dlq = Dlq::connect(settings).await?;
    let result = run_on(settings, &dlq, command).await;
    dlq.close().await;
    result
}

async fn run_on(settings: &Settings, dlq: &Dlq, command: DlqCommand) -> anyhow::Result<()> {
    let queue = dlq.names().dead_queue.clone();
    match command {
        DlqCommand::List { select } => {
            let listing = dlq.list(&select.selector(), select.limit).await?;
            if select.json {
                return print_json(&listing);
            }
            println!(
                "dead-letter queue {queue}: {} ready, {} read, {} match (nothing was moved)",
                listing.depth,
                listing.inspected,
                listing.letters.len()
            );
            if (listing.depth as usize) > listing.inspected {
                println!("  only the first {} were read (--limit)", listing.inspected);
            }
            if !listing.letters.is_empty() {
                print_letters(&listing.letters);
            }
            Ok(())
        }
        DlqCommand::Groups { select } => {
            let groups = dlq.groups(&select.selector(), select.limit).await?;
            if select.json {
                return print_json(&groups);
            }
            println!(
                "{:<11} {:>6} {:<19} {:<30} REASON (normalized)",
                "GROUP", "COUNT", "LAST FAILED", "TYPES"
            );
            for g in &groups {
                let types = g
                    .types
                    .iter()
                    .map(|(t, n)| format!("{t}×{n}"))
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "{:<11} {:>6} {:<19} {:<30} {}",
                    g.fingerprint,
                    g.count,
                    time(g.last_failed_at),
                    truncate(&types, 30),
                    truncate(&g.reason, 120)
                );
            }
            if !groups.is_empty() {
                println!("replay a group with: onboard dlq replay --group <GROUP> [--dry-run]");
            }
            Ok(())
        }
        DlqCommand::Show {
            message_id,
            limit,
            json,
        } => {
            let copies = dlq.show(&message_id, limit).await?;
            if copies.is_empty() {
                anyhow::bail!(
                    "no dead letter with message_id {message_id:?} among the first {limit} of {queue}"
                );
            }
            // What the worker recorded for it, when the database answers (best effort).
            let pool = store::pool(&settings.database)?;
            let inbox = tokio::time::timeout(
                Duration::from_secs(3),
                store::inbox::outcome(&pool, &message_id),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
            let shown: Vec<Value> = copies
                .iter()
                .map(|d| {
                    json!({
                        "summary": d,
                        "properties": properties(d),
                        "headers": d.masked_headers(),
                        "body": d.masked_body(),
                        "history": d.history(),
                    })
                })
                .collect();
            if json {
                return print_json(&json!({ "inbox_outcome": inbox, "dead_letters": shown }));
            }
            if copies.len() > 1 {
                println!("{} dead letters carry this message_id", copies.len());
            }
            println!(
                "inbox: {}",
                inbox.as_deref().unwrap_or("no record (never handled)")
            );
            for (i, d) in copies.iter().enumerate() {
                println!("--- dead letter {} of {}", i + 1, copies.len());
                println!("type:          {}", d.command_type);
                println!("failure:       {}", d.failure);
                println!("reason:        {}", d.reason);
                println!("group:         {}", d.fingerprint);
                println!(
                    "attempts:      {} (replayed {} times before)",
                    d.attempts, d.replays
                );
                println!("first failed:  {}", time(d.first_failed_at));
                println!("dead-lettered: {}", time(d.last_failed_at));
                println!(
                    "properties:\n{}",
                    serde_json::to_string_pretty(&properties(d))?
                );
                println!(
                    "headers (secrets masked):\n{}",
                    serde_json::to_string_pretty(&d.masked_headers())?
                );
                println!(
                    "body (secrets masked):\n{}",
                    serde_json::to_string_pretty(&d.masked_body())?
                );
                println!("history (oldest first):");
                for h in d.history() {
                    println!("  {h}");
                }
            }
            Ok(())
        }
        DlqCommand::Replay {
            select,
            change,
            rate,
        } => {
            let pool = store::pool(&settings.database)?;
            let report = dlq.replay(&pool, &request(&select, &change, rate)).await?;
            finish(&report, select.json)
        }
        DlqCommand::Edit {
            message_id,
            body,
            change,
            limit,
            json,
        } => {
            let copies = dlq.show(&message_id, limit).await?;
            let Some(letter) = copies.first() else {
                anyhow::bail!(
                    "no dead letter with message_id {message_id:?} among the first {limit} of {queue}"
                );
            };
            let edited = if body.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&body)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", body.display()))?
            };
            let problems = super::edit_problems(&letter.command_type, &edited);
            if !problems.is_empty() {
                anyhow::bail!(
                    "the edited body was not sent: {} (message {message_id} stays dead-lettered)",
                    problems.join("; ")
                );
            }
            let mut req = MoveRequest::new(Selector {
                ids: vec![message_id],
                ..Default::default()
            });
            req.limit = limit;
            req.dry_run = change.dry_run;
            req.actor = change.actor;
            req.note = change.note;
            let req = req.edited(edited);
            let pool = store::pool(&settings.database)?;
            let report = dlq.replay(&pool, &req).await?;
            finish(&report, json)
        }
        DlqCommand::Purge {
            select,
            change,
            yes,
        } => {
            let pool = store::pool(&settings.database)?;
            let req = request(&select, &change, None);
            let mut ask = |plan: &MoveReport| yes || confirm_on_terminal(plan, &queue);
            let report = dlq.purge(&pool, &req, &mut ask).await?;
            finish(&report, select.json)
        }
        DlqCommand::Audit { .. } => unreachable!("handled before connecting"),
    }
}

fn properties(d: &DeadLetter) -> Value {
    let p = &d.properties;
    let s = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_string());
    json!({
        "message_id": s(p.message_id()),
        "correlation_id": s(p.correlation_id()),
        "reply_to": s(p.reply_to()),
        "content_type": s(p.content_type()),
        "app_id": s(p.app_id()),
        "timestamp": p.timestamp(),
        "delivery_mode": p.delivery_mode(),
    })
}

/// Asks on the terminal; refuses when there is none to ask on.
fn confirm_on_terminal(plan: &MoveReport, queue: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("refusing to purge without confirmation: stdin is not a terminal (pass --yes)");
        return false;
    }
    let more = if plan.more_beyond_limit {
        " (and possibly more beyond --limit)"
    } else {
        ""
    };
    println!(
        "about to delete {} dead letters from {queue} for good{more}:",
        plan.selected.len()
    );
    for g in super::group(&plan.selected).iter().take(10) {
        println!("  {:>6} × {}", g.count, truncate(&g.reason, 100));
    }
    print!("type 'purge' to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "purge"
}

fn finish(report: &MoveReport, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(report)?;
    } else if report.dry_run {
        let verb = if report.action == "replay" {
            "replay"
        } else {
            "purge"
        };
        println!(
            "dry run: would {verb} {} dead letters (nothing was moved)",
            report.selected.len()
        );
        if !report.selected.is_empty() {
            print_letters(&report.selected);
        }
        for (id, outcome) in &report.inbox {
            let what = match outcome.as_str() {
                "rejected" => "was rejected as malformed; replay checks it afresh",
                _ => "already processed; replaying it is a no-op duplicate",
            };
            println!("  {id}: inbox says {outcome}: {what}");
        }
        if report.more_beyond_limit {
            println!("  more may match beyond --limit");
        }
    } else {
        let verb = if report.action == "replay" {
            "replayed"
        } else {
            "purged"
        };
        println!(
            "{verb} {} dead letters{}",
            report.done.len() + report.done_without_id,
            report
                .audit_id
                .map(|id| format!(" (audit record #{id})"))
                .unwrap_or_default()
        );
    }
    for (id, why) in &report.skipped {
        eprintln!(
            "skipped {}: {why}",
            id.as_deref().unwrap_or("a message without message_id")
        );
    }
    for (id, why) in &report.failed {
        eprintln!("not moved {id}: {why} (it stays in the dead-letter queue)");
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} dead letters could not be {}; run again",
            report.failed.len(),
            report.action
        );
    }
    Ok(())
}

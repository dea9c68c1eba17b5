//! `onboard import FILE`: clients in bulk from another system's export (DESIGN.md, "Relations,
//! imports and webhooks"), for operators migrating.
//!
//! The file is CSV with a header row (`.csv`) or JSON lines (anything else, or `--format`).
//! Columns are `client.create` fields plus `external_id`; in CSV, a cell of `metadata`,
//! `identity`, `address`, `direct_partner` or `relations` is JSON, the others are text, and an
//! empty cell is absent. Each row becomes one `client.create` whose `message_id` is derived
//! from the row's content (a UUIDv5 of its canonical JSON), so running the same file again
//! publishes the same messages: the worker's inbox recognises every one, nothing is created
//! twice, and the tool reports each row's outcome again from the inbox.
//!
//! It publishes every row (confirmed by the broker; what is not confirmed is published again
//! with the same id), waits for every row's outcome in the inbox with a progress bar, prints
//! the counts by outcome and code, and writes the rows that did not succeed, with their
//! reasons, to a report file. The exit status is 0 only when every row got an outcome.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::BasicProperties;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::broker::{self, Names, Publisher, publisher::Outgoing};
use crate::configuration::Settings;
use crate::messages::Refusal;
use crate::store;

/// Namespace of the rows' message ids (fixed, so ids are the same on every run).
const ROW_NAMESPACE: Uuid = Uuid::from_u128(0x6f6e_626f_6172_6400_8000_0000_0000_0002);
/// CSV columns holding JSON.
const JSON_COLUMNS: [&str; 5] = [
    "metadata",
    "identity",
    "address",
    "direct_partner",
    "relations",
];
/// Messages published before their confirms are awaited together.
const PUBLISH_WINDOW: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// Flags of `onboard import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row, or JSON lines (one `client.create` body per line).
    pub file: PathBuf,
    /// Its format; by default `.csv` files are CSV and the rest JSON lines.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Where the rows that did not succeed go, with their reasons (CSV). Default:
    /// FILE.report.csv beside the file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Give up waiting when no row got its outcome for this many seconds.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One row of the file.
#[derive(Debug, Clone)]
pub struct Row {
    /// 1-based line of the file (for CSV, the header is line 1).
    pub line: usize,
    /// The command body, or why the row could not be read.
    pub body: Result<Value, String>,
    pub message_id: String,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    /// succeeded, refused, rejected (the worker could not read it), unreadable (nor could
    /// this tool), duplicate (the same content as an earlier row, sent once), or none (no
    /// outcome in time).
    pub outcome: String,
    pub code: Option<String>,
}

/// The tool's result.
#[derive(Debug, Clone)]
pub struct Summary {
    pub rows: usize,
    /// Rows per outcome, and refused rows per code.
    pub outcomes: BTreeMap<String, usize>,
    pub codes: BTreeMap<String, usize>,
    pub report: PathBuf,
    /// Rows without an outcome.
    pub missing: usize,
}

/// The message id of a row: the same content, the same id.
pub fn row_message_id(body: &Value) -> String {
    // serde_json's maps are ordered by key, so this is canonical.
    let canonical = serde_json::to_string(body).expect("a JSON value serialises");
    Uuid::new_v5(&ROW_NAMESPACE, canonical.as_bytes()).to_string()
}

fn unreadable(line: usize, reason: String, raw: &str) -> Row {
    Row {
        line,
        body: Err(reason),
        message_id: Uuid::new_v5(
            &ROW_NAMESPACE,
            format!("unreadable:{line}:{raw}").as_bytes(),
        )
        .to_string(),
    }
}

fn row(line: usize, body: Value) -> Row {
    Row {
        line,
        message_id: row_message_id(&body),
        body: Ok(body),
    }
}

/// Reads a file's rows.
pub fn read_rows(path: &Path, format: Option<Format>) -> anyhow::Result<Vec<Row>> {
    let format = format.unwrap_or_else(|| {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            Format::Csv
        } else {
            Format::Jsonl
        }
    });
    let text = std::fs::read_to_string(path)?;
    Ok(match format {
        Format::Jsonl => parse_jsonl(&text),
        Format::Csv => parse_csv(&text)?,
    })
}

pub fn parse_jsonl(text: &str) -> Vec<Row> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match serde_json::from_str::<Value>(l) {
            Ok(v @ Value::Object(_)) => row(i + 1, v),
            Ok(_) => unreadable(i + 1, "not a JSON object".into(), l),
            Err(e) => unreadable(i + 1, format!("not JSON: {e}"), l),
        })
        .collect()
}

pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let (line, record) = match record {
            Ok(r) => (r.position().map_or(0, |p| p.line() as usize), r),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                rows.push(unreadable(line, format!("not CSV: {e}"), &e.to_string()));
                continue;
            }
        };
        if record.len() != headers.len() {
            let raw = record.iter().collect::<Vec<_>>().join(",");
            rows.push(unreadable(
                line,
                format!("{} cells for {} columns", record.len(), headers.len()),
                &raw,
            ));
            continue;
        }
        let mut body = Map::new();
        let mut problem = None;
        for (column, cell) in headers.iter().zip(record.iter()) {
            let cell = cell.trim();
            if cell.is_empty() || column.is_empty() {
                continue;
            }
            let value = if JSON_COLUMNS.contains(&column.as_str()) {
                match serde_json::from_str(cell) {
                    Ok(v) => v,
                    Err(e) => {
                        problem = Some(format!("column {column} is not JSON: {e}"));
                        break;
                    }
                }
            } else {
                Value::String(cell.to_string())
            };
            body.insert(column.clone(), value);
        }
        rows.push(match problem {
            Some(reason) => {
                let raw = record.iter().collect::<Vec<_>>().join(",");
                unreadable(line, reason, &raw)
            }
            None => row(line, Value::Object(body)),
        });
    }
    Ok(rows)
}

/// Publishes what has not been published yet, confirmed; what the broker does not confirm is
/// published again (same id: the inbox makes a second copy harmless).
async fn publish(
    publisher: &Publisher,
    names: &Names,
    rows: &[&Row],
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut pending: Vec<&Row> = rows.to_vec();
    for round in 0..4 {
        if pending.is_empty() {
            return Ok(());
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(500 * round)).await;
        }
        let mut failed = Vec::new();
        let mut done = 0;
        for chunk in pending.chunks(PUBLISH_WINDOW) {
            let bodies: Vec<Vec<u8>> = chunk
                .iter()
                .map(|r| serde_json::to_vec(r.body.as_ref().expect("readable")).expect("JSON"))
                .collect();
            let messages = chunk
                .iter()
                .zip(&bodies)
                .map(|(r, body)| Outgoing {
                    exchange: &names.commands_exchange,
                    routing_key: "client.create",
                    body,
                    properties: BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2)
                        .with_message_id(r.message_id.as_str().into())
                        .with_correlation_id(r.message_id.as_str().into())
                        .with_app_id("onboard import".into()),
                })
                .collect();
            for (r, result) in chunk.iter().zip(publisher.publish_all(messages).await) {
                match result {
                    Ok(broker::Delivered::Routed) => {}
                    _ => failed.push(*r),
                }
            }
            done += chunk.len();
            bar.set_message(format!("(published {done} of {})", pending.len()));
        }
        pending = failed;
    }
    anyhow::ensure!(
        pending.is_empty(),
        "{} rows could not be published (the broker did not confirm them); run again",
        pending.len()
    );
    Ok(())
}

/// Reads the outcomes the inbox has for `ids`.
async fn outcomes(
    pool: &sqlx::PgPool,
    ids: &[String],
) -> Result<HashMap<String, RowOutcome>, sqlx::Error> {
    Ok(crate::store::inbox::outcomes(pool, ids)
        .await?
        .into_iter()
        .map(|(id, (outcome, code))| (id, RowOutcome { outcome, code }))
        .collect())
}

fn progress(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr_with_hz(5));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows with an outcome {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Runs an import; the summary, with the report written.
pub async fn run(settings: &Settings, args: &ImportArgs) -> anyhow::Result<Summary> {
    let rows = read_rows(&args.file, args.format)?;
    let report = args.report.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".report.csv");
        PathBuf::from(name)
    });
    let pool = store::pool(&settings.database)?;
    let names = Names::new(&settings.broker.prefix);
    let connection = broker::connect(&settings.broker, "onboard import").await?;
    let publisher = Publisher::open(
        &connection,
        Duration::from_millis(settings.broker.confirm_timeout_ms),
    )
    .await?;
    let bar = progress(rows.len());

    // Rows with the same content are one command: published once, answered once.
    let mut readable: Vec<&Row> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in rows.iter().filter(|r| r.body.is_ok()) {
        if seen.insert(r.message_id.as_str()) {
            readable.push(r);
        }
    }
    let ids: Vec<String> = readable.iter().map(|r| r.message_id.clone()).collect();
    // A re-run: what already has an outcome is not published again.
    let before = outcomes(&pool, &ids).await?;
    let todo: Vec<&Row> = readable
        .iter()
        .copied()
        .filter(|r| !before.contains_key(&r.message_id))
        .collect();
    publish(&publisher, &names, &todo, &bar).await?;
    let _ = connection.close(200, "published".into()).await;
    bar.set_message(format!(
        "({} published, {} known)",
        todo.len(),
        before.len()
    ));

    let mut known = before;
    let mut last_progress = Instant::now();
    let idle = Duration::from_secs(args.idle_timeout);
    loop {
        let waiting: Vec<String> = ids
            .iter()
            .filter(|id| !known.contains_key(*id))
            .cloned()
            .collect();
        bar.set_position((ids.len() - waiting.len()) as u64);
        if waiting.is_empty() || last_progress.elapsed() > idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let found = outcomes(&pool, &waiting).await?;
        if !found.is_empty() {
            last_progress = Instant::now();
            known.extend(found);
        }
    }
    bar.finish_and_clear();

    let mut summary = Summary {
        rows: rows.len(),
        outcomes: BTreeMap::new(),
        codes: BTreeMap::new(),
        report: report.clone(),
        missing: 0,
    };
    let mut writer = csv::Writer::from_path(&report)?;
    writer.write_record(["line", "message_id", "outcome", "code", "reason"])?;
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        let first = *first_line.entry(r.message_id.as_str()).or_insert(r.line);
        let (outcome, reason) = match &r.body {
            Ok(_) if first != r.line => (
                RowOutcome::local("duplicate"),
                format!("the same row as line {first}, which is the one sent"),
            ),
            Err(reason) => (RowOutcome::local("unreadable"), reason.clone()),
            Ok(_) => match known.get(&r.message_id) {
                Some(o) => (o.clone(), reason_of(o)),
                None => (
                    RowOutcome::local("none"),
                    format!("no outcome within {}s of the last one", args.idle_timeout),
                ),
            },
        };
        *summary.outcomes.entry(outcome.outcome.clone()).or_insert(0) += 1;
        if let Some(code) = &outcome.code {
            *summary.codes.entry(code.clone()).or_insert(0) += 1;
        }
        if outcome.outcome == "none" {
            summary.missing += 1;
        }
        if outcome.outcome != "succeeded" {
            writer.write_record([
                r.line.to_string(),
                r.message_id.clone(),
                outcome.outcome.clone(),
                outcome.code.clone().unwrap_or_default(),
                reason,
            ])?;
        }
    }
    writer.flush()?;
    pool.close().await;
    Ok(summary)
}

impl RowOutcome {
    /// An outcome this tool decides itself (no code).
    fn local(outcome: &str) -> RowOutcome {
        RowOutcome {
            outcome: outcome.into(),
            code: None,
        }
    }
}

fn reason_of(o: &RowOutcome) -> String {
    match (o.outcome.as_str(), o.code.as_deref()) {
        ("succeeded", _) => String::new(),
        ("rejected", _) => {
            "the worker could not read it as a client.create (see onboard dlq list)".into()
        }
        (_, Some(code)) => Refusal::known(code)
            .map(|r| r.message)
            .unwrap_or_else(|| code.to_string()),
        (other, None) => other.to_string(),
    }
}

/// What `onboard import` runs; false when a row got no outcome.
pub async fn cli(settings: &Settings, args: ImportArgs) -> anyhow::Result<bool> {
    let summary = run(settings, &args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rows": summary.rows,
                "outcomes": summary.outcomes,
                "codes": summary.codes,
                "missing": summary.missing,
                "report": summary.report,
            })
        );
    } else {
        println!("{} rows", summary.rows);
        for (outcome, n) in &summary.outcomes {
            println!("  {outcome:<11} {n}");
        }
        for (code, n) in &summary.codes {
            println!("    {code:<26} {n}");
        }
        println!("rows that did not succeed: {}", summary.report.display());
    }
    Ok(summary.missing == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_row_gets_the_same_id_whatever_the_key_order() {
        let a: Value = serde_json::from_str(r#"{"email": "a@x.io", "phone": "+65"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"phone": "+65", "email": "a@x.io"}"#).unwrap();
        assert_eq!(row_message_id(&a), row_message_id(&b));
        let c: Value = serde_json::from_str(r#"{"phone": "+66", "email": "a@x.io"}"#).unwrap();
        assert_ne!(row_message_id(&a), row_message_id(&c));
    }

    #[test]
    fn csv_cells_are_text_or_json_and_empty_ones_are_absent() {
        let text = "email,client_alias,client_type,country_code,phone,external_id,metadata\n\
                    a@x.io,A Ltd,CORPORATE,SG,+6591234567,crm-1,\"{\"\"seats\"\": 3}\"\n\
                    b@x.io,B Ltd,CORPORATE,SG,+6591234568,,\n\
                    c@x.io,C Ltd,CORPORATE,SG,+6591234569,crm-3,{not json\n\
                    short,row\n";
        let rows = parse_csv(text).unwrap();
        assert_eq!(rows.len(), 4);
        let a = rows[0].body.as_ref().unwrap();
        assert_eq!(a["metadata"]["seats"], 3);
        assert_eq!(a["external_id"], "crm-1");
        assert_eq!(rows[0].line, 2);
        let b = rows[1].body.as_ref().unwrap();
        assert!(b.get("external_id").is_none() && b.get("metadata").is_none());
        assert!(rows[2].body.as_ref().unwrap_err().contains("metadata"));
        assert!(
            rows[3]
                .body
                .as_ref()
                .unwrap_err()
                .contains("2 cells for 7 columns")
        );
    }

    #[test]
    fn json_lines_skip_blank_lines_and_name_the_bad_ones() {
        let rows = parse_jsonl("{\"email\": \"a@x.io\"}\n\n[1]\n{oops\n");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].line, 1);
        assert_eq!(rows[1].line, 3);
        assert!(rows[1].body.as_ref().unwrap_err().contains("object"));
        assert!(rows[2].body.as_ref().unwrap_err().contains("not JSON"));
    }
}

//! The published contract against the worker's real output (issue 13): every event and every
//! reply body the demo's commands, the lifecycle, the instance, partner, relation and import
//! commands and the failure paths produce is checked against its schema in `schemas/`; every
//! event type the code can emit has a schema; every schema is referenced by `asyncapi.yaml`.
//!
//! `ONBOARD_CONTRACT_SAMPLES=DIR` also writes the first body of each event type and of each
//! (command, status) reply to DIR, which is where the schemas' examples come from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use onboard::sources::SourceSettings;
use onboard::sources::fake::FakeSource;
use onboard::worker::Hooks;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::arrange;
use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A compiled schema from `schemas/<dir>/<name>.json`, or why there is none.
fn validator(dir: &str, name: &str) -> Result<jsonschema::Validator, String> {
    let path = root()
        .join("schemas")
        .join(dir)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (every one needs a schema)", path.display()))?;
    let schema: Value = serde_json::from_str(&text).unwrap();
    Ok(jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", path.display())))
}

fn errors(validator: &Result<jsonschema::Validator, String>, body: &Value) -> Vec<String> {
    match validator {
        Ok(v) => v
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect(),
        Err(missing) => vec![missing.clone()],
    }
}

/// What one scenario saw: events, and each reply with the command it answers.
#[derive(Default)]
struct Seen {
    events: Vec<Received>,
    replies: Vec<(String, Received)>,
}

/// Commands sent with `reply_to`, each awaited before the next.
struct Asker {
    queue: String,
    seen: Seen,
}

impl Asker {
    async fn new(app: &TestApp) -> Asker {
        Asker {
            queue: app.reply_queue().await,
            seen: Seen::default(),
        }
    }

    /// Publishes `body` (bytes as given) as `command` and returns its reply.
    async fn ask_raw(&mut self, app: &TestApp, command: &str, body: Vec<u8>) -> Received {
        let id = uuid::Uuid::new_v4().to_string();
        let msg = Msg {
            routing_key: command.into(),
            body,
            message_id: Some(id.clone()),
            reply_to: Some(self.queue.clone()),
            ..Default::default()
        };
        app.publish(msg).await;
        let reply = app.take_from(&self.queue).await;
        assert_eq!(
            reply.correlation_id.as_deref(),
            Some(id.as_str()),
            "replies come one at a time, in order"
        );
        self.seen.replies.push((command.to_string(), reply.clone()));
        reply
    }

    async fn ask(&mut self, app: &TestApp, command: &str, body: Value) -> Received {
        self.ask_raw(app, command, serde_json::to_vec(&body).unwrap())
            .await
    }

    /// [`Asker::ask`], asserting the reply's status.
    async fn expect(&mut self, app: &TestApp, command: &str, body: Value, status: i64) -> Received {
        let r = self.ask(app, command, body).await;
        assert_eq!(self::status(&r), status, "{command}: {}", r.body);
        r
    }

    /// Every event published so far (the outbox may still be relaying the last ones).
    async fn finish(mut self, app: &mut TestApp) -> Seen {
        self.seen.events = app.drain_events(Duration::from_secs(2)).await;
        self.seen
    }
}

fn status(reply: &Received) -> i64 {
    reply.headers["status"]
        .as_i64()
        .expect("a reply has a status")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// The demo's commands (examples/*.json, in order, as `scripts/demo.sh` sends them), then the
/// lifecycle, instance, partner, relation and query paths, on a healthy worker.
async fn healthy_paths() -> Seen {
    let (mut settings, database) = test_settings().await;
    let _xendit = mock_xendit(&mut settings, XenditResponder::default()).await;
    // The fake source with the demo's records, as the demo runs it.
    let records: HashMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/source/legacy.json")).unwrap(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = format!("http://{}", listener.local_addr().unwrap());
    let fake = FakeSource::new("contract-token", records);
    tokio::spawn(async move { axum::serve(listener, fake.router()).await });
    settings.sources.insert(
        "legacy".into(),
        SourceSettings {
            base_url: source,
            token: SecretString::from("contract-token"),
            timeout_ms: 5_000,
        },
    );
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let mut asker = Asker::new(&app).await;

    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 20, "the demo's examples are here");
    for path in &examples {
        let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let command = file["type"].as_str().unwrap();
        let body = match &file["body"] {
            Value::String(raw) => raw.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap(),
        };
        asker.ask_raw(&app, command, body).await;
    }

    // Lifecycle: one client through every transition, one exited and refused, one rejected.
    let mut made = Vec::new();
    for i in 0..3 {
        let reply = asker
            .ask(
                &app,
                "client.create",
                client_with_email(&format!("contract{i}@example.com")),
            )
            .await;
        assert_eq!(status(&reply), 201, "{}", reply.body);
        made.push((
            int(&reply.body["client"]["client_id"]),
            int(&reply.body["admin_user"]["user_id"]),
        ));
    }
    let (a, admin) = made[0];
    let (b, _) = made[1];
    let (c, _) = made[2];
    for client in [a, b] {
        let kyc = json!({"client_id": client, "ekyc_status": "APPROVED"});
        asker.expect(&app, "client.kyc.update", kyc, 200).await;
        let approve = json!({"client_id": client});
        asker.expect(&app, "client.approve", approve, 200).await;
    }
    for (command, body) in [
        (
            "client.record_first_transaction",
            json!({"client_id": a, "transaction_id": "tx-1"}),
        ),
        (
            "client.blacklist",
            json!({"client_id": a, "reason": "chargebacks"}),
        ),
        ("client.unblacklist", json!({"client_id": a})),
        (
            "client.exit",
            json!({"client_id": b, "reason": "left the platform"}),
        ),
        ("client.reject", json!({"client_id": c, "reason": "no KYC"})),
    ] {
        asker.expect(&app, command, body, 200).await;
    }
    let refused = asker
        .ask(&app, "client.approve", json!({"client_id": b}))
        .await;
    assert_eq!(status(&refused), 409, "{}", refused.body);
    let refused = asker
        .ask(
            &app,
            "client.kyc.update",
            json!({"client_id": 999_999, "ekyc_status": "APPROVED"}),
        )
        .await;
    assert_eq!(status(&refused), 404, "{}", refused.body);

    // Instances: create, rename, (de)activate, list, delete; a nameless one and a stranger's
    // refused.
    let created = asker
        .ask(
            &app,
            "instance.create",
            json!({"actor_user_id": admin, "instance_name": "Checkout"}),
        )
        .await;
    assert_eq!(status(&created), 201, "{}", created.body);
    let instance = int(&created.body["instance"]["instance_id"]);
    for (command, body, expected) in [
        (
            "instance.update_alias",
            json!({"actor_user_id": admin, "instance_id": instance, "alias": "Shop"}),
            200,
        ),
        (
            "instance.deactivate",
            json!({"actor_user_id": admin, "instance_id": instance, "reason": "paused"}),
            200,
        ),
        ("instance.list", json!({"actor_user_id": admin}), 200),
        (
            "instance.activate",
            json!({"actor_user_id": admin, "instance_id": instance}),
            200,
        ),
        (
            "instance.delete",
            json!({"actor_user_id": admin, "instance_id": instance}),
            200,
        ),
        (
            "instance.create",
            json!({"actor_user_id": admin, "instance_name": "  "}),
            400,
        ),
        (
            "instance.delete",
            json!({"actor_user_id": admin, "instance_id": instance + 1000}),
            404,
        ),
    ] {
        asker.expect(&app, command, body, expected).await;
    }

    // Partners, client state and the queries beyond the demo's.
    for (command, body, expected) in [
        (
            "partner.create",
            json!({"name": "Northwind Resellers"}),
            409,
        ),
        ("partner.list", json!({}), 200),
        ("client.reactivate", json!({"client_id": 3}), 200),
        (
            "client.update",
            json!({"client_id": 999_999, "version": 0, "phone": "+6561234567"}),
            404,
        ),
        ("client.get", json!({"client_id": a}), 200),
        ("client.get", json!({"client_id": 999_999}), 404),
        ("client.list", json!({"page_size": 2}), 200),
        ("client.relation.list", json!({"client_id": 3}), 200),
        ("client.teleport", json!({"client_id": a}), 400),
    ] {
        asker.expect(&app, command, body, expected).await;
    }

    // Relations one by one: the list's first is renamed, read, then removed.
    let listed = asker
        .ask(&app, "client.relation.list", json!({"client_id": 3}))
        .await;
    let relation = listed.body["relations"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("example 17 added relations to client 3: {}", listed.body))
        .to_string();
    for (command, body, expected) in [
        (
            "client.relation.update",
            json!({"client_id": 3, "relation_id": relation,
                   "profile": {"phone": "+16505550199"}}),
            200,
        ),
        (
            "client.relation.get",
            json!({"client_id": 3, "relation_id": relation}),
            200,
        ),
        (
            "client.relation.remove",
            json!({"client_id": 3, "relation_id": relation}),
            200,
        ),
        (
            "client.relation.remove",
            json!({"client_id": 3, "relation_id": relation}),
            404,
        ),
    ] {
        asker.expect(&app, command, body, expected).await;
    }

    let seen = asker.finish(&mut app).await;
    app.finish().await;
    seen
}

/// Xendit down for good, SMTP refusing, and one command PostgreSQL refuses on every retry.
async fn failure_paths() -> Seen {
    let (mut settings, database) = test_settings().await;
    let xendit = XenditResponder {
        always_fail: true,
        ..Default::default()
    };
    let _xendit = mock_xendit(&mut settings, xendit).await;
    let port = free_port();
    let mut smtp = onboard::email::SmtpSettings::new("127.0.0.1", port);
    smtp.tls = onboard::email::SmtpTls::None;
    settings.email.smtp = Some(smtp);
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    arrange::refuse_poison_emails(&app).await;
    let mut asker = Asker::new(&app).await;
    let done = asker.ask(&app, "client.create", seed_id_client()).await;
    assert_eq!(status(&done), 201, "{}", done.body);
    let failed = asker
        .ask(
            &app,
            "client.create",
            client_with_email("poison@example.com"),
        )
        .await;
    assert_eq!(status(&failed), 500, "{}", failed.body);
    let seen = asker.finish(&mut app).await;
    app.finish().await;
    seen
}

/// The samples directory, when asked for.
fn samples() -> Option<PathBuf> {
    std::env::var_os("ONBOARD_CONTRACT_SAMPLES").map(PathBuf::from)
}

/// Writes `body` as `<name>.json`, unless a body of the same top-level keys was written
/// already (a body of other keys, for an event of other data keys, e.g. a list by page rather than by take/skip, is written
/// beside it as `<name>.<n>.json`).
fn write_sample(dir: &Path, name: &str, body: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    // An event's keys are its data's.
    let keys = |v: &Value| -> Vec<String> {
        let v = v.get("data").unwrap_or(v);
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for n in 1.. {
        let file = match n {
            1 => format!("{name}.json"),
            n => format!("{name}.{n}.json"),
        };
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let written: Value = serde_json::from_str(&text).unwrap();
                if keys(&written) == keys(body) {
                    return;
                }
            }
            Err(_) => {
                std::fs::write(path, serde_json::to_string_pretty(body).unwrap()).unwrap();
                return;
            }
        }
    }
}

/// The schema a reply body answers to: the command's own, or the common error body for a
/// command that was rejected before it was read, or failed for good.
fn reply_schema(command: &str, reply: &Received) -> String {
    match reply.kind.as_deref() {
        Some("command.rejected" | "command.failed") => "error".into(),
        _ => command.to_string(),
    }
}

#[tokio::test]
async fn every_event_and_reply_the_worker_sends_matches_its_published_schema() {
    let (healthy, failing) = tokio::join!(healthy_paths(), failure_paths());
    let mut event_types = BTreeSet::new();
    let mut reply_kinds = BTreeSet::new();
    let mut validators: HashMap<String, Arc<Result<jsonschema::Validator, String>>> =
        HashMap::new();
    let mut problems = Vec::new();
    for seen in [&healthy, &failing] {
        for event in &seen.events {
            let kind = event.routing_key.clone();
            let v = validators
                .entry(format!("events/{kind}"))
                .or_insert_with(|| Arc::new(validator("events", &kind)))
                .clone();
            for e in errors(&v, &event.body) {
                problems.push(format!("event {kind}: {e}\n{}", event.body));
            }
            assert_eq!(event.kind.as_deref(), Some(kind.as_str()), "AMQP type");
            if let Some(dir) = samples() {
                write_sample(&dir.join("events"), &kind, &event.body);
            }
            event_types.insert(kind);
        }
        for (command, reply) in &seen.replies {
            let schema = reply_schema(command, reply);
            let v = validators
                .entry(format!("replies/{schema}"))
                .or_insert_with(|| Arc::new(validator("replies", &schema)))
                .clone();
            for e in errors(&v, &reply.body) {
                problems.push(format!(
                    "reply to {command} ({:?}, {}): {e}\n{}",
                    reply.kind,
                    status(reply),
                    reply.body
                ));
            }
            if let Some(dir) = samples() {
                let name = format!("{command}.{}", status(reply));
                write_sample(&dir.join("replies"), &name, &reply.body);
            }
            reply_kinds.insert(command.clone());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));

    // Every event type but the webhook process's own was seen here (that one is checked
    // against its schema in tests/worker/webhooks.rs), and every command was answered.
    let expected: BTreeSet<String> = emitted_event_types()
        .into_iter()
        .filter(|t| t != "webhook.endpoint_disabled")
        .collect();
    let missing: Vec<_> = expected.difference(&event_types).collect();
    assert!(missing.is_empty(), "never produced here: {missing:?}");
    let unanswered: Vec<_> = onboard::registry::command_types()
        .iter()
        .map(|c| c.as_str().to_string())
        .filter(|c| !reply_kinds.contains(c))
        .collect();
    assert!(unanswered.is_empty(), "never asked here: {unanswered:?}");
}

/// The string literals under `src/` that name an event: `<client|instance|partner|command|
/// webhook>.<name>` that are not a command type. A new event type written anywhere in the code
/// shows up here, whatever constant or module it is written in.
fn emitted_event_types() -> BTreeSet<String> {
    let commands: BTreeSet<&str> = onboard::registry::command_types()
        .iter()
        .map(|c| c.as_str())
        .collect();
    let pattern =
        regex::Regex::new(r#""((?:client|instance|partner|command|webhook)\.[a-z_]+)""#).unwrap();
    let mut found = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may name types that do not exist (unknown commands, filters).
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for m in pattern.captures_iter(code) {
            let name = &m[1];
            if !commands.contains(name) {
                found.insert(name.to_string());
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_event_type_in_the_code_has_a_schema_and_every_schema_is_in_the_asyncapi_document() {
    let types = emitted_event_types();
    assert!(
        types.len() >= 30 && types.contains("client.onboarding_completed"),
        "the scan finds the events: {types:?}"
    );
    let asyncapi = std::fs::read_to_string(root().join("asyncapi.yaml")).unwrap();
    let mut problems = Vec::new();
    for t in &types {
        let path = root().join(format!("schemas/events/{t}.json"));
        if !path.exists() {
            problems.push(format!("event {t} has no schema at {}", path.display()));
        }
        if !asyncapi.contains(&format!("./schemas/events/{t}.json")) {
            problems.push(format!("event {t} is not referenced by asyncapi.yaml"));
        }
    }
    // No schema for an event the code does not emit.
    let mut files = BTreeMap::new();
    for dir in ["events", "replies"] {
        for entry in std::fs::read_dir(root().join("schemas").join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            files.insert(format!("{dir}/{name}"), name);
        }
    }
    for (path, name) in &files {
        let t = name.trim_end_matches(".json");
        if path.starts_with("events/") && !types.contains(t) {
            problems.push(format!("schemas/{path} names no event the code emits"));
        }
        if !asyncapi.contains(&format!("./schemas/{path}")) {
            problems.push(format!("schemas/{path} is not referenced by asyncapi.yaml"));
        }
    }
    for c in onboard::registry::command_types() {
        let name = c.as_str();
        if !asyncapi.contains(&format!("./schemas/{name}.json")) {
            problems.push(format!(
                "command schema {name} is not referenced by asyncapi.yaml"
            ));
        }
        if !files.contains_key(&format!("replies/{name}.json")) {
            problems.push(format!("command {name} has no reply schema"));
        }
    }
    // Each schema's own examples (taken from real output) pass it.
    for path in files.keys() {
        let (dir, name) = path.split_once('/').unwrap();
        let name = name.trim_end_matches(".json");
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("schemas").join(path)).unwrap(),
        )
        .unwrap();
        let examples = schema["examples"].as_array().cloned().unwrap_or_default();
        if examples.is_empty() {
            problems.push(format!("schemas/{path} has no example"));
        }
        let v = validator(dir, name);
        for example in &examples {
            for e in errors(&v, example) {
                problems.push(format!("schemas/{path}: its example fails it: {e}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

//! Webhooks (DESIGN.md, "Relations, imports and webhooks"), from outside: endpoints added with
//! the real `onboard webhooks add`, the real `onboard webhooks serve` delivering the worker's
//! events to receivers on loopback that check every Standard Webhooks signature with the
//! endpoint's secret.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::support::*;

/// What a receiver does with a request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// 500 the first time an event id comes, 200 after.
    FailFirst,
    /// Never answers.
    Hang,
    /// Answers 200 after this long.
    Slow(Duration),
}

#[derive(Clone, Debug)]
struct Request {
    id: String,
    /// The `onboard-event-type` and `onboard-correlation-id` headers.
    event_type: String,
    correlation_id: Option<String>,
    body: Value,
    signed: bool,
    answered: u16,
    /// The request's W3C trace context.
    traceparent: Option<String>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    secret: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let secret = onboard::webhooks::new_secret();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let state = (mode, secret.clone(), requests.clone());
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            secret,
            requests,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Event ids answered 2xx, by event type.
    fn delivered(&self, event_type: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .requests()
            .into_iter()
            .filter(|r| r.answered < 300 && r.event_type == event_type)
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

type ReceiverState = (Mode, String, Arc<Mutex<Vec<Request>>>);

async fn receive(
    State((mode, secret, requests)): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signed = standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&body, &headers)
        .is_ok();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let traceparent = header("traceparent");
    let event_type = header("onboard-event-type").unwrap_or_default();
    let correlation_id = header("onboard-correlation-id");
    let answered = match mode {
        Mode::Ok => 200,
        Mode::FailFirst => {
            let seen = requests.lock().unwrap().iter().any(|r| r.id == id);
            if seen { 200 } else { 500 }
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            200
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    requests.lock().unwrap().push(Request {
        id,
        event_type,
        correlation_id,
        body,
        signed,
        answered,
        traceparent,
    });
    StatusCode::from_u16(answered).unwrap()
}

/// `onboard webhooks ARGS` (the real binary) on the test's database; its stdout. The tests'
/// receivers listen on loopback, so private addresses are allowed (as in the quick start).
async fn webhooks_cli(app: &TestApp, args: &[&str], secret: Option<&str>) -> String {
    let mut cmd = onboard_bin(&app.settings);
    cmd.arg("webhooks")
        .args(args)
        .env("ONBOARD__WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true");
    if let Some(s) = secret {
        cmd.env("ONBOARD_WEBHOOK_SECRET", s);
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "webhooks {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(s) = secret {
        assert!(!stdout.contains(s), "the secret was printed");
    }
    stdout
}

async fn add(app: &TestApp, receiver: &Receiver, events: &[&str]) -> i64 {
    let mut args = vec!["add", receiver.url.as_str(), "--events"];
    args.extend_from_slice(events);
    let out = webhooks_cli(app, &args, Some(&receiver.secret)).await;
    out.trim_start_matches("endpoint ")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{out}"))
}

/// `onboard webhooks serve` with `env` on top; waits until its queue is bound.
async fn serve(app: &TestApp, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = onboard_bin(&app.settings);
    cmd.args(["webhooks", "serve"])
        .env("ONBOARD__WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    let queue = format!("{}.webhooks", app.settings.broker.prefix);
    let deadline = Instant::now() + WAIT;
    loop {
        let channel = app.connection.create_channel().await.unwrap();
        let found = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        if found {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks serve never declared {queue}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn onboard(app: &TestApp, n: usize, tag: &str) {
    for i in 0..n {
        app.create_client(&client_with_email(&format!("{tag}{i}@example.com")))
            .await;
    }
}

#[tokio::test]
async fn every_delivery_is_signed_and_an_endpoint_answering_500_then_200_gets_each_event_twice_at_most()
 {
    let app = spawn_app().await;
    let all = Receiver::start(Mode::Ok).await;
    let flaky = Receiver::start(Mode::FailFirst).await;
    add(&app, &all, &["client.*"]).await;
    let flaky_id = add(&app, &flaky, &["client.created"]).await;
    let mut server = serve(
        &app,
        &[
            ("ONBOARD__WEBHOOKS__DELAYS_MS", "200"),
            ("ONBOARD__WEBHOOKS__MAX_ATTEMPTS", "5"),
        ],
    )
    .await;
    onboard(&app, 3, "hook").await;

    until("every onboarding reached the client.* endpoint", || {
        all.delivered("client.onboarding_completed").len() == 3
    })
    .await;
    until("every client.created reached the flaky endpoint", || {
        flaky.delivered("client.created").len() == 3
    })
    .await;
    for r in all.requests().iter().chain(flaky.requests().iter()) {
        assert!(r.signed, "a request whose signature did not verify: {r:?}");
        assert!(
            uuid::Uuid::parse_str(&r.id).is_ok(),
            "webhook-id is the event id"
        );
        assert!(r.correlation_id.is_some(), "{r:?}");
        assert_webhook_schema(&r.event_type, &r.body);
    }
    // Each POST carries the trace of the command behind its event: one trace per correlation.
    let mut traces: HashMap<String, String> = HashMap::new();
    for r in all.requests().iter().chain(flaky.requests().iter()) {
        let tp = r
            .traceparent
            .as_deref()
            .expect("a traceparent on every webhook");
        let (trace, _, _) = onboard::telemetry::parse_traceparent(tp).expect("a valid traceparent");
        let correlation = r.correlation_id.clone().unwrap();
        let first = traces
            .entry(correlation)
            .or_insert_with(|| trace.to_string());
        assert_eq!(first, trace, "one trace per command: {r:?}");
    }
    let created = &all.requests()[..];
    let first = created
        .iter()
        .find(|r| r.body["webhook"]["type"] == "created")
        .unwrap();
    // Seed 004's body: the client with the seed's keys, connect and metadata empty.
    assert_eq!(first.event_type, "client.created");
    assert_eq!(first.body["webhook"]["module"], json!("clients"));
    let keys: Vec<&String> = first.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["connect", "data", "metadata", "webhook"]);
    let client = &first.body["data"]["client"];
    assert!(client["id"].is_number());
    assert!(client["clientNumber"].as_str().unwrap().starts_with("CL-"));
    assert_eq!(client["status"], json!("pending"));
    assert_eq!(client["profile"]["identityType"], json!("corporate"));
    assert_eq!(client["fullName"], client["identity"]["legalName"]);
    assert_eq!(
        (&first.body["connect"], &first.body["metadata"]),
        (&json!({}), &json!({}))
    );
    assert!(
        all.requests()
            .iter()
            .all(|r| r.body["webhook"]["module"] == "clients"),
        "only client.* events"
    );

    // Each event twice at the flaky endpoint, 500 then 200, and the log shows both.
    let mut per_event: HashMap<String, Vec<u16>> = HashMap::new();
    for r in flaky.requests() {
        per_event.entry(r.id).or_default().push(r.answered);
    }
    assert_eq!(per_event.len(), 3);
    assert!(
        per_event.values().all(|a| a == &[500, 200]),
        "{per_event:?}"
    );
    let log: Value = serde_json::from_str(
        &webhooks_cli(
            &app,
            &["deliveries", "--endpoint", &flaky_id.to_string(), "--json"],
            None,
        )
        .await,
    )
    .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 3);
    for d in log {
        assert_eq!(d["delivery"]["status"], json!("delivered"));
        let codes: Vec<&Value> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["status_code"])
            .collect();
        assert_eq!(codes, [&json!(500), &json!(200)]);
    }
    let listed = webhooks_cli(&app, &["list", "--json"], None).await;
    assert!(!listed.contains(&all.secret) && !listed.contains(&flaky.secret));

    // An operator sends one again: a third request for that event, the third attempt logged.
    let again = log[0]["delivery"]["delivery_id"].as_i64().unwrap();
    let event = log[0]["delivery"]["event_id"].as_str().unwrap().to_string();
    webhooks_cli(&app, &["redeliver", &again.to_string()], None).await;
    until("the redelivered event came again", || {
        flaky.requests().iter().filter(|r| r.id == event).count() == 3
    })
    .await;
    let _ = server.start_kill();
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_disabled_after_its_budget_while_another_receives_everything()
 {
    let mut app = spawn_app().await;
    let good = Receiver::start(Mode::Ok).await;
    let dead = Receiver::start(Mode::Hang).await;
    add(&app, &good, &["*"]).await;
    let dead_id = add(&app, &dead, &["client.*"]).await;
    let mut server = serve(
        &app,
        &[
            ("ONBOARD__WEBHOOKS__TIMEOUT_MS", "300"),
            ("ONBOARD__WEBHOOKS__DELAYS_MS", "100"),
            ("ONBOARD__WEBHOOKS__MAX_ATTEMPTS", "2"),
            ("ONBOARD__WEBHOOKS__DISABLE_AFTER_FAILED_DELIVERIES", "2"),
            ("ONBOARD__WEBHOOKS__PER_ENDPOINT_IN_FLIGHT", "2"),
        ],
    )
    .await;
    let started = Instant::now();
    onboard(&app, 10, "alive").await;
    until("the good endpoint received every onboarding", || {
        good.delivered("client.onboarding_completed").len() == 10
    })
    .await;
    let took = started.elapsed();

    let disabled = app.wait_for_event("webhook.endpoint_disabled", None).await;
    assert_event_schema(&disabled.body);
    assert_eq!(disabled.body["data"]["endpoint_id"], json!(dead_id));
    assert_eq!(disabled.body["data"]["failed_deliveries"], json!(2));
    until("the good endpoint got the webhook about it", || {
        !good.delivered("webhook.endpoint_disabled").is_empty()
    })
    .await;
    let listed: Value =
        serde_json::from_str(&webhooks_cli(&app, &["list", "--json"], None).await).unwrap();
    let dead_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint_id"] == json!(dead_id))
        .unwrap();
    assert_eq!(dead_row["enabled"], json!(false));
    let failed: Value = serde_json::from_str(
        &webhooks_cli(&app, &["deliveries", "--failed", "--json"], None).await,
    )
    .unwrap();
    for d in failed.as_array().unwrap() {
        assert_eq!(d["delivery"]["endpoint_id"], json!(dead_id));
        assert_eq!(d["attempts"].as_array().unwrap().len(), 2);
        assert_eq!(d["attempts"][0]["error"], json!("no answer in time"));
    }
    println!(
        "WEBHOOKS 10 onboardings delivered to the live endpoint in {took:?} beside a hanging one"
    );
    let _ = server.start_kill();
}

#[tokio::test]
async fn a_webhooks_process_killed_mid_delivery_loses_no_delivery() {
    let app = spawn_app().await;
    let slow = Receiver::start(Mode::Slow(Duration::from_millis(300))).await;
    add(&app, &slow, &["client.created"]).await;
    let env = [
        ("ONBOARD__WEBHOOKS__TIMEOUT_MS", "2000"),
        ("ONBOARD__WEBHOOKS__PER_ENDPOINT_IN_FLIGHT", "4"),
    ];
    let mut first = serve(&app, &env).await;
    onboard(&app, 20, "killed").await;
    until("the first deliveries are under way", || {
        slow.requests().len() >= 3
    })
    .await;
    first.start_kill().unwrap();
    let _ = first.wait().await;
    let mut second = serve(&app, &env).await;
    until("every client.created delivered", || {
        slow.delivered("client.created").len() == 20
    })
    .await;
    let _ = second.start_kill();
}

/// Checks a webhook body against `schemas/webhooks/<event type>.json`, formats asserted.
fn assert_webhook_schema(event_type: &str, body: &Value) {
    let path = format!(
        "{}/schemas/webhooks/{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{path} is not a valid schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{event_type}: {errors:?}\n{body}");
}

fn schemas_in(dir: &str) -> Vec<(String, Value)> {
    let dir = format!("{}/schemas/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            (
                name,
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_event_type_has_a_webhook_schema_in_step_with_its_event_and_in_the_openapi_document() {
    let openapi =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let webhooks: std::collections::BTreeMap<String, Value> =
        schemas_in("webhooks").into_iter().collect();
    for (event_type, event) in schemas_in("events") {
        let hook = webhooks
            .get(&event_type)
            .unwrap_or_else(|| panic!("no schemas/webhooks/{event_type}.json"));
        assert!(
            openapi.contains(&format!("./schemas/webhooks/{event_type}.json")),
            "{event_type} is not in openapi.yaml's webhooks"
        );
        // The project's own types carry the event's data: the same schema, kept in step.
        if !matches!(
            event_type.as_str(),
            "client.created" | "client.connection_created"
        ) {
            assert_eq!(
                hook["properties"]["data"], event["properties"]["data"],
                "{event_type}"
            );
            assert_eq!(hook.get("$defs"), event.get("$defs"), "{event_type}");
        }
        // What body_of makes of every example event is what its webhook schema describes.
        for example in event["examples"].as_array().unwrap() {
            let body = onboard::webhooks::body_of(example).unwrap();
            assert_webhook_schema(&event_type, &body);
        }
    }
    assert_eq!(
        webhooks.len(),
        schemas_in("events").len(),
        "a webhook schema of no event"
    );
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_at_add_and_at_every_delivery() {
    let app = spawn_app().await;
    let secret = onboard::webhooks::new_secret();
    // `webhooks add` as production runs it (private addresses not allowed).
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9000/hook",
        "http://[::1]:9000/hook",
        "http://10.0.0.7/hook",
        "http://localhost:9000/hook",
    ] {
        let out = onboard_bin(&app.settings)
            .args(["webhooks", "add", url, "--events", "*"])
            .env("ONBOARD_WEBHOOK_SECRET", &secret)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} was accepted");
        assert!(
            stderr.contains("not a public address") && stderr.contains("allow_private_addresses"),
            "{url}: {stderr}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 0);

    // Endpoints that were registered while private addresses were allowed (or whose name
    // resolves elsewhere now): each delivery is refused on the address it would connect to,
    // recorded with the reason, and not retried.
    let receiver = Receiver::start(Mode::Ok).await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    add(&app, &receiver, &["client.created"]).await;
    let args = ["add", by_name.as_str(), "--events", "client.created"];
    webhooks_cli(&app, &args, Some(&receiver.secret)).await;
    let mut server = serve(
        &app,
        &[
            ("ONBOARD__WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "false"),
            ("ONBOARD__WEBHOOKS__DELAYS_MS", "100"),
        ],
    )
    .await;
    onboard(&app, 1, "ssrf").await;
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log: Value =
            serde_json::from_str(&webhooks_cli(&app, &["deliveries", "--json"], None).await)
                .unwrap();
        let done = log.as_array().unwrap().len() == 2
            && log
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["delivery"]["status"] == json!("failed"));
        if done {
            break log;
        }
        assert!(Instant::now() < deadline, "deliveries not refused: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for d in log.as_array().unwrap() {
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "refused once, not retried: {d}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(
            error.starts_with("refused: ") && error.contains("not a public address"),
            "{error}"
        );
        assert_eq!(attempts[0]["status_code"], Value::Null);
    }
    assert!(
        receiver.requests().is_empty(),
        "a private endpoint was called"
    );
    let _ = server.start_kill();
}

/// The sender's lease, raced for real in the store: a claim held back by a lock still gets a
/// whole lease (measured from when it took the rows, so no second claim takes the same
/// delivery meanwhile), and a holder whose lease ran out and was claimed again changes
/// nothing with its late record or give-back: the new holder's outcome is the one that stands.
#[tokio::test]
async fn a_webhook_lease_counts_from_the_claim_and_a_stale_holder_changes_nothing() {
    use onboard::store::webhooks as db;
    let app = spawn_app().await;
    let endpoint = db::add_endpoint(
        &app.pool,
        "http://127.0.0.1:9/hook",
        &["*".into()],
        &onboard::webhooks::new_secret(),
    )
    .await
    .unwrap();
    let event_id = uuid::Uuid::new_v4();
    let row = db::NewDelivery {
        endpoint_id: endpoint,
        event_id,
        event_type: "client.created".into(),
        correlation_id: None,
        body: "{}".into(),
        traceparent: None,
    };
    let mut conn = app.pool.acquire().await.unwrap();
    assert_eq!(db::insert_deliveries(&mut conn, &[row]).await.unwrap(), 1);
    drop(conn);

    // A claim that waits 1.5 s on a lock for a lease of 1 s. Its statement is prepared on its
    // one connection first (an endpoint that is not there is busy), so that the wait falls in
    // the execution, as it does for a sender that has claimed before, not in the preparing.
    let claimer = onboard::store::pool_of(&app.settings.database, 1).unwrap();
    assert!(
        db::claim_due(&claimer, &[endpoint], 10, 1.0)
            .await
            .unwrap()
            .is_empty()
    );
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE webhook_deliveries IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { db::claim_due(&claimer, &[], 10, 1.0).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "the claim did not wait on the lock");
    blocker.commit().await.unwrap();
    let first = waiting.await.unwrap().unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        first[0].lease_left_ms > 500,
        "a lease that began when the claim did: {} ms left",
        first[0].lease_left_ms
    );
    let again = db::claim_due(&app.pool, &[], 10, 1.0).await.unwrap();
    assert!(
        again.is_empty(),
        "a second claim took a delivery under lease: {again:?}"
    );

    // Holder A's lease runs out; B claims the delivery; A's late record and give-back are fenced.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = db::claim_due(&app.pool, &[], 10, 0.2)
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = db::claim_due(&app.pool, &[], 10, 30.0)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((a.attempts, b.attempts), (2, 3));
    let refused = db::Answered {
        status_code: None,
        error: Some("refused: test"),
        duration_ms: 1,
    };
    let late = db::record_attempt(&app.pool, &a, refused, db::Next::GiveUp, 1, |_| {
        unreachable!("a stale holder disabled the endpoint")
    })
    .await
    .unwrap();
    assert!(matches!(late, db::Recorded::Superseded), "{late:?}");
    db::give_back(&app.pool, &[&a]).await.unwrap();
    let (status, attempts, leased): (String, i32, bool) = sqlx::query_as(
        "SELECT status, attempts, leased_until > now() FROM webhook_deliveries WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts, leased), ("pending", 3, true));

    let delivered = db::Answered {
        status_code: Some(200),
        error: None,
        duration_ms: 1,
    };
    let done = db::record_attempt(&app.pool, &b, delivered, db::Next::Delivered, 1, |_| {
        unreachable!("a delivery disabled the endpoint")
    })
    .await
    .unwrap();
    assert!(matches!(done, db::Recorded::Applied(None)), "{done:?}");
    let log = db::attempts(&app.pool, &[b.delivery_id]).await.unwrap();
    assert_eq!(log.len(), 2, "both attempts are in the log");
    let (status, failed_in_a_row, enabled): (String, i32, bool) = sqlx::query_as(
        "SELECT d.status, e.failed_in_a_row, e.enabled FROM webhook_deliveries d
         JOIN webhook_endpoints e USING (endpoint_id) WHERE d.event_id = $1",
    )
    .bind(event_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), failed_in_a_row, enabled),
        ("delivered", 0, true)
    );
}

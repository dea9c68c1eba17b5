//! OpenTelemetry export (issue 13, item 5): the worker run as an operator runs it, with
//! `telemetry.otlp_endpoint` pointing at an OTLP/HTTP receiver on loopback that decodes what
//! it is sent with the protocol's own protobuf definitions (`opentelemetry-proto`).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use onboard::worker::Hooks;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

/// One span as received: names and ids in hex.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
}

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

/// `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf, as OTLP/HTTP has it.
async fn export(
    State(r): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    r.content_types.lock().unwrap().push(content_type);
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = r.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for s in scope.spans {
                spans.push(Span {
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    service: service.clone(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const QUERY_TRACE: &str = "5cf92f3577b34da6a3ce929d0e0e4737";

#[tokio::test]
async fn one_trace_holds_a_whole_onboarding_exported_over_otlp() {
    let (endpoint, received) = otlp_receiver().await;
    let (mut settings, database) = test_settings().await;
    let xendit_server = mock_xendit(&mut settings, XenditResponder::default()).await;
    // The test's own view of the broker (events, replies); the worker runs as a process.
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    app.stop_worker().await;
    let xendit = app.settings.xendit.clone().unwrap();
    let mut child = onboard_bin(&app.settings)
        .arg("worker")
        .env("ONBOARD__TELEMETRY__OTLP_ENDPOINT", &endpoint)
        .env("ONBOARD__XENDIT__BASE_URL", &xendit.base_url)
        .env(
            "ONBOARD__XENDIT__SECRET_KEY",
            xendit.secret_key.expose_secret(),
        )
        .env("ONBOARD__EMAIL__FILE_DIR", &app.settings.email.file_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the onboard binary starts");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });

    let replies = app.reply_queue().await;
    let mut msg = Msg::json("client.create", &seed_id_client());
    msg.reply_to = Some(replies.clone());
    msg.traceparent = Some(format!("00-{TRACE}-{CALLER_SPAN}-01"));
    let id = app.publish(msg).await.unwrap();
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.headers["status"], 201, "{}", reply.body);
    let completed = app
        .wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    let tp = completed.header_str("traceparent").unwrap().to_string();

    // A query: answered on its own, its reply published directly.
    let mut query = Msg::json(
        "client.get",
        &serde_json::json!({"client_id": reply.body["client"]["client_id"]}),
    );
    query.reply_to = Some(replies.clone());
    query.traceparent = Some(format!("00-{QUERY_TRACE}-{CALLER_SPAN}-01"));
    app.publish(query).await;
    let answer = app.take_from(&replies).await;
    assert_eq!(answer.headers["status"], 200, "{}", answer.body);

    // SIGTERM: the worker drains and exports what it still holds before it exits.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}: {:?}", log.lock().unwrap());

    let spans: Vec<Span> = received.spans.lock().unwrap().clone();
    assert!(
        received
            .content_types
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "application/x-protobuf"),
        "OTLP/HTTP protobuf"
    );
    let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == TRACE).collect();
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    for (name, at_least) in [
        ("receive client.create", 1),
        ("handle client.create", 1),
        ("saga xendit", 1),
        ("xendit.create_customer", 2),
        ("saga welcome_email", 1),
        ("email.send", 1),
        ("publish client.created", 1),
        ("publish client.xendit_customers_created", 1),
        ("publish client.welcome_email_sent", 1),
        ("publish client.onboarding_completed", 1),
        ("reply client.onboarding_completed", 1),
    ] {
        assert!(
            count(name) >= at_least,
            "{name} x{at_least} in the trace; it has {names:?}"
        );
    }
    // One tree: the receive span's parent is the caller's span, every other span's parent is
    // a span of this trace, and each step hangs where it belongs.
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let receive = trace
        .iter()
        .find(|s| s.name == "receive client.create")
        .unwrap();
    assert_eq!(receive.parent_span_id, CALLER_SPAN);
    for s in &trace {
        if s.span_id != receive.span_id {
            assert!(
                by_id.contains_key(s.parent_span_id.as_str()),
                "{} has a parent outside the trace: {s:?}",
                s.name
            );
        }
        assert!(s.service.contains("onboard"), "service.name: {s:?}");
    }
    let parent_name = |s: &Span| by_id[s.parent_span_id.as_str()].name.clone();
    for s in &trace {
        let expected = match s.name.as_str() {
            "handle client.create" | "saga xendit" | "saga welcome_email" => {
                Some("receive client.create")
            }
            "xendit.create_customer" => Some("saga xendit"),
            "email.send" => Some("saga welcome_email"),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(parent_name(s), expected, "{s:?}");
        }
    }
    // What the command caused carries the receive span as its parent.
    assert_eq!(tp, format!("00-{TRACE}-{}-01", receive.span_id));
    // The Xendit requests carried their own span's context (W3C propagation to outside calls).
    let calls: Vec<String> = trace
        .iter()
        .filter(|s| s.name == "xendit.create_customer")
        .map(|s| format!("00-{TRACE}-{}-01", s.span_id))
        .collect();
    let sent: Vec<String> = xendit_server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.headers.get("traceparent"))
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(sent.len(), 2, "a traceparent on each Xendit call: {sent:?}");
    for tp in &sent {
        assert!(
            calls.contains(tp),
            "{tp} names a xendit.create_customer span: {calls:?}"
        );
    }

    // The query's own trace: receive, the read, the reply.
    let query: Vec<(&str, &str)> = spans
        .iter()
        .filter(|s| s.trace_id == QUERY_TRACE)
        .map(|s| (s.name.as_str(), s.parent_span_id.as_str()))
        .collect();
    let received_at = spans
        .iter()
        .find(|s| s.trace_id == QUERY_TRACE && s.name == "receive client.get")
        .unwrap_or_else(|| panic!("receive client.get: {query:?}"));
    assert_eq!(received_at.parent_span_id, CALLER_SPAN);
    for name in ["handle client.get", "reply client.get.answered"] {
        assert!(
            query.contains(&(name, received_at.span_id.as_str())),
            "{name} under receive client.get: {query:?}"
        );
    }
    let distinct: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(distinct.len(), trace.len(), "each span exported once");
    app.finish().await;
}

/// `onboard traces receive` (the real binary): a span sent in OTLP/HTTP protobuf comes out as
/// one JSON line, and the count at exit says how many it took.
#[tokio::test]
async fn traces_receive_prints_each_span_it_is_sent() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};

    let port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_onboard"))
        .args([
            "traces",
            "receive",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let span = ProtoSpan {
        trace_id: hex::decode(TRACE).unwrap(),
        span_id: hex::decode(CALLER_SPAN).unwrap(),
        name: "receive client.create".into(),
        start_time_unix_nano: 1_000_000,
        end_time_unix_nano: 3_000_000,
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("onboard".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        match http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
        {
            Ok(answer) => break answer,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the receiver never listened: {e}"),
        }
    };
    assert_eq!(answer.status(), 200);
    ExportTraceServiceResponse::decode(answer.bytes().await.unwrap()).expect("an OTLP response");
    let refused = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(b"\xff\xff not protobuf".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["trace_id"], TRACE);
    assert_eq!(lines[0]["span_id"], CALLER_SPAN);
    assert_eq!(lines[0]["name"], "receive client.create");
    assert_eq!(lines[0]["service"], "onboard");
    assert_eq!(lines[0]["duration_us"], 2_000);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("\"spans_received\": 1"), "{stderr}");
}

//! `onboard traces receive`: an OTLP/HTTP receiver on loopback that prints one JSON line per
//! span it is sent (`POST /v1/traces`, protobuf), for looking at the worker's traces
//! without a collector, and for `scripts/bench.sh` to count what an export delivered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::json;
use tokio::net::TcpListener;

/// Flags of `onboard traces receive`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiveArgs {
    /// Address to serve on (point `telemetry.otlp_endpoint` at http://<it>).
    #[arg(long, default_value = "127.0.0.1:4318")]
    pub listen: SocketAddr,
    /// Print nothing per span; only the count at exit.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum TracesCommand {
    /// Receive spans over OTLP/HTTP and print one JSON line per span until SIGTERM.
    Receive(ReceiveArgs),
}

#[derive(Clone)]
struct Receiver {
    spans: Arc<AtomicU64>,
    quiet: bool,
}

/// One line per span: ids in hex, times in Unix nanoseconds.
fn lines(request: &ExportTraceServiceRequest) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for resource in &request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            });
        for scope in &resource.scope_spans {
            for s in &scope.spans {
                out.push(json!({
                    "service": service,
                    "trace_id": hex::encode(&s.trace_id),
                    "span_id": hex::encode(&s.span_id),
                    "parent_span_id": hex::encode(&s.parent_span_id),
                    "name": s.name,
                    "start_unix_nano": s.start_time_unix_nano,
                    "duration_us": s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1_000,
                }));
            }
        }
    }
    out
}

async fn export(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    if content_type.starts_with("application/json") {
        // OTLP/JSON is not decoded here; say so rather than drop it silently.
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "text/plain")],
            b"this receiver takes OTLP/HTTP protobuf".to_vec(),
        );
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain")],
                format!("not an ExportTraceServiceRequest: {e}").into_bytes(),
            );
        }
    };
    let spans = lines(&request);
    r.spans.fetch_add(spans.len() as u64, Ordering::Relaxed);
    if !r.quiet {
        let mut out = String::new();
        for line in spans {
            out.push_str(&line.to_string());
            out.push('\n');
        }
        print!("{out}");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

pub async fn run(
    command: TracesCommand,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let TracesCommand::Receive(args) = command;
    let receiver = Receiver {
        spans: Arc::default(),
        quiet: args.quiet,
    };
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(receiver.clone());
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "OTLP/HTTP receiver listening on /v1/traces");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    eprintln!(
        "{{\"spans_received\": {}}}",
        receiver.spans.load(Ordering::Relaxed)
    );
    Ok(())
}

//! `onboard-lab webhooks receive`: a local endpoint that checks signatures, for the quick start
//! and for anyone trying webhooks before their own endpoint exists.

use std::future::Future;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// Serves `POST /hook` (and `/`) until `stop`: 200 for a request whose signature holds under
/// `secret`, 401 otherwise, and one line on stdout either way.
pub async fn run(
    listen: SocketAddr,
    secret: &str,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let verifier = std::sync::Arc::new(
        standardwebhooks::Webhook::new(secret)
            .map_err(|e| anyhow::anyhow!("the secret cannot verify: {e}"))?,
    );
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .route("/", post(receive))
        .with_state(verifier);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "webhook receiver listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

async fn receive(
    State(verifier): State<std::sync::Arc<standardwebhooks::Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signed = verifier.verify(&body, &headers).is_ok();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let hook = &parsed["webhook"];
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    println!(
        "webhook {} {}.{} signature {} trace {}",
        header("webhook-id").unwrap_or("-"),
        hook["module"].as_str().unwrap_or("?"),
        hook["type"].as_str().unwrap_or("?"),
        if signed { "ok" } else { "INVALID" },
        crate::telemetry::trace_id(header("traceparent")).unwrap_or("-"),
    );
    if signed {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

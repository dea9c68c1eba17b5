//! The console's routes, its security headers, and serving them until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::state::Console;
use super::{auth, clients, figures, operate, pages};
use crate::configuration::Settings;

/// The console's routes.
pub fn router(console: Console) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/dead-letters/{message_id}", get(pages::dead_letter))
        .route("/dead-letters/{message_id}/replay", post(pages::replay))
        .route("/dead-letters/{message_id}/purge", post(pages::purge))
        .route("/dead-letters/{message_id}/edit", post(pages::edit))
        .route(
            "/dead-letters/groups/{fingerprint}/replay",
            post(pages::replay_group),
        )
        .route("/clients", get(clients::clients))
        .route("/clients/{client_id}", get(clients::client))
        .route("/sagas", get(operate::sagas))
        .route("/sagas/{client_id}/retry", post(operate::retry_saga))
        .route("/webhooks", get(operate::webhooks))
        .route(
            "/webhooks/{endpoint_id}/{state}",
            post(operate::set_webhook_state),
        )
        .route(
            "/webhooks/deliveries/{delivery_id}/redeliver",
            post(operate::redeliver),
        )
        .route("/audit", get(operate::audit))
        .route("/logout", post(auth::logout))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require_session,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/console.css", get(stylesheet))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

async fn stylesheet() -> impl axum::response::IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/console/console.css"),
    )
}

/// The headers every answer carries: no inline or foreign script, no framing, no sniffing.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Serves the console until `stop`.
pub async fn run(settings: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let pool = crate::store::pool(&settings.database)?;
    crate::store::migrate(&pool).await?;
    let listen = settings.console.listen;
    let console = Console {
        pool,
        settings: Arc::new(settings),
        figures: figures::Figures::default(),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let sampler = tokio::spawn(figures::sample(
        console.figures.clone(),
        console.pool.clone(),
        console.settings.clone(),
        stop.clone(),
    ));
    tracing::info!(address = %listener.local_addr()?, "console listening");
    axum::serve(
        listener,
        router(console).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await?;
    let _ = sampler.await;
    Ok(())
}

//! Other systems clients are imported from (DESIGN.md, "Relations, imports and webhooks"):
//! `client.import {source, source_id}` reads `GET {base_url}/clients/{source_id}` of the
//! configured source, whose body is seed 004's `client` object, and [`map_record`] turns it
//! into a `client.create` body. [`fake`] serves such records locally for the quick start.
//!
//! The read happens before the command's transaction (see `worker::batch`), never inside it,
//! and calls to the sources share one concurrency bound (`sources_max_concurrent_calls`), so
//! a slow source holds neither database connections nor the worker's other commands.

pub mod fake;
mod mapping;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use mapping::map_record;

/// One source system (`[sources.<name>]`).
#[derive(Debug, Clone, Deserialize)]
pub struct SourceSettings {
    /// Where its API is: records are read at `{base_url}/clients/{source_id}`.
    pub base_url: String,
    /// Bearer token for its API (secret).
    pub token: SecretString,
    /// Longest wait for one read.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// No `[sources.<name>]` in the settings: SOURCE_NOT_CONFIGURED.
    NotConfigured,
    /// The source answered 404: SOURCE_RECORD_NOT_FOUND.
    NotFound,
    /// Down, slow, or answering what we cannot read: retried through the delay queues.
    Unavailable(String),
}

/// A configured source, its URL read once at start.
struct Source {
    /// `{base_url}/clients/`, or why `base_url` cannot be used (said on every import from it,
    /// which retries and then dead-letters with that reason).
    clients: Result<reqwest::Url, String>,
    settings: SourceSettings,
}

fn clients_url(name: &str, base_url: &str) -> Result<reqwest::Url, String> {
    let mut url =
        reqwest::Url::parse(base_url).map_err(|e| format!("sources.{name}.base_url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("sources.{name}.base_url must be http or https"));
    }
    url.path_segments_mut()
        .map_err(|_| format!("sources.{name}.base_url cannot be a base"))?
        .pop_if_empty()
        .push("clients");
    Ok(url)
}

/// The configured sources and one HTTP client for all of them.
#[derive(Clone)]
pub struct Sources {
    sources: Arc<HashMap<String, Source>>,
    http: reqwest::Client,
    calls: Arc<Semaphore>,
}

impl Sources {
    pub fn new(sources: HashMap<String, SourceSettings>, max_concurrent_calls: usize) -> Sources {
        let http = reqwest::Client::builder()
            .user_agent(concat!("onboard/", env!("CARGO_PKG_VERSION")))
            // A record is where the source says it is; a redirect is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client with static settings builds");
        let sources = sources
            .into_iter()
            .map(|(name, settings)| {
                let clients = clients_url(&name, &settings.base_url);
                if let Err(problem) = &clients {
                    tracing::warn!(%problem, "a source that imports cannot use");
                }
                (name, Source { clients, settings })
            })
            .collect();
        Sources {
            sources: Arc::new(sources),
            http,
            calls: Arc::new(Semaphore::new(max_concurrent_calls.max(1))),
        }
    }

    pub fn is_configured(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// Reads the record `source_id` of source `name`.
    pub async fn fetch(&self, name: &str, source_id: &str) -> Result<Value, SourceError> {
        let Some(source) = self.sources.get(name) else {
            return Err(SourceError::NotConfigured);
        };
        let mut url = source.clients.clone().map_err(SourceError::Unavailable)?;
        url.path_segments_mut()
            .expect("checked at start: a base URL")
            .push(source_id);
        let _permit = self
            .calls
            .acquire()
            .await
            .map_err(|_| SourceError::Unavailable("shutting down".into()))?;
        let mut request = self
            .http
            .get(url)
            .bearer_auth(source.settings.token.expose_secret())
            .header("accept", "application/json")
            .timeout(Duration::from_millis(source.settings.timeout_ms));
        if let Some(tp) = crate::telemetry::current_traceparent() {
            request = request.header("traceparent", tp);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(format!("source {name}: {}", describe(e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(SourceError::NotFound);
        }
        if !status.is_success() {
            return Err(SourceError::Unavailable(format!(
                "source {name} answered {status}"
            )));
        }
        let body: Value = response.json().await.map_err(|e| {
            SourceError::Unavailable(format!("source {name}: unreadable body: {}", describe(e)))
        })?;
        Ok(body)
    }
}

/// What went wrong with a call, without the URL (it may carry the record's id, and the
/// token never reaches it anyway).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or failed".into()
    } else if e.is_decode() {
        "not JSON".into()
    } else {
        e.without_url().to_string()
    }
}

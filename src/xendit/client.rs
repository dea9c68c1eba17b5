//! HTTP client for Xendit's Customers API: create a customer exactly once, find one by our
//! `reference_id`, and retry what is worth retrying within one call.
//!
//! Retries inside a call are for blips (a 503, a dropped connection, a short rate limit); a longer
//! outage comes back as a transient [`XenditError`] so the saga can retry through the delay queue
//! without holding a worker.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{RequestBuilder, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::customer::{Customer, CustomerRequest};
use super::error::{ApiError, XenditError};
use crate::fault::Backoff;

/// The Customers API version we speak: the first that knows BUSINESS customers. Sent on every
/// request so a change of the account's default version cannot change the shapes under us.
pub const API_VERSION: &str = "2020-10-31";

/// Xendit's production and test API; test or live is decided by the key, not the URL.
pub const DEFAULT_BASE_URL: &str = "https://api.xendit.co";

/// Error codes with which Xendit says the customer already exists. All are recovered by looking
/// the customer up by `reference_id`:
/// - `DUPLICATE_ERROR` (409): the `reference_id` is taken (e.g. our idempotency key expired
///   after 24 hours and a retry created again);
/// - `IDEMPOTENCY_ERROR` (409): the key was used for a different body; our key is derived from
///   the `reference_id`, so it is the same customer sent with changed details;
/// - `DUPLICATE_END_CUSTOMER_ERROR` (400): the older name of the duplicate reference answer,
///   still listed in Xendit's SDKs.
const DUPLICATE_ERROR_CODES: [&str; 3] = [
    "DUPLICATE_ERROR",
    "IDEMPOTENCY_ERROR",
    "DUPLICATE_END_CUSTOMER_ERROR",
];

/// How to reach Xendit, read from the `xendit` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct XenditSettings {
    /// Root of the API, without `/customers`; the fake's address in dev and tests.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Secret API key, sent as the Basic auth user name. Never printed: `Debug` redacts it.
    pub secret_key: SecretString,
    /// Longest wait for one request, from connecting to the last byte of the answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests one call may send before giving up with a transient error (1 = no retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First pause between attempts; it doubles (with jitter) up to `max_backoff_ms`.
    #[serde(default = "default_min_backoff_ms")]
    pub min_backoff_ms: u64,
    /// Longest pause between attempts after a 5xx or a transport error.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Longest pause after a 429, whatever `Rate-Limit-Reset` asks: past it the worker would
    /// rather hand the message to the delay queue than sit idle.
    #[serde(default = "default_max_rate_limit_wait_ms")]
    pub max_rate_limit_wait_ms: u64,
    /// Requests a minute this process sends with its key, at most (a client-side rate limit,
    /// so a burst of Indonesian onboardings meets our limit, not Xendit's 429s). Unset: what
    /// Xendit documents for the key's mode, 60 for a development (test) key and 600 for a
    /// production one. Workers sharing a key share Xendit's limit: give each its share.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_min_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    5_000
}
fn default_max_rate_limit_wait_ms() -> u64 {
    5_000
}

impl XenditSettings {
    /// Settings with every default, for the given API root and key.
    pub fn new(base_url: impl Into<String>, secret_key: SecretString) -> Self {
        XenditSettings {
            base_url: base_url.into(),
            secret_key,
            timeout_ms: default_timeout_ms(),
            max_attempts: default_max_attempts(),
            min_backoff_ms: default_min_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_rate_limit_wait_ms: default_max_rate_limit_wait_ms(),
            requests_per_minute: None,
        }
    }

    /// The key's mode, `development` or `production` (Xendit's keys say which:
    /// `xnd_development_...`, `xnd_production_...`; anything else is taken for development).
    pub fn mode(&self) -> &'static str {
        mode_of(self.secret_key.expose_secret())
    }

    /// The rate limit in force: the configured one, or Xendit's documented one for the mode.
    pub fn requests_per_minute(&self) -> u32 {
        self.requests_per_minute
            .unwrap_or(match self.mode() {
                "production" => 600,
                _ => 60,
            })
            .max(1)
    }

    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`Self::max_rate_limit_wait_ms`] as a duration.
    pub fn max_rate_limit_wait(&self) -> Duration {
        Duration::from_millis(self.max_rate_limit_wait_ms)
    }
}

fn mode_of(key: &str) -> &'static str {
    if key.starts_with("xnd_production_") {
        "production"
    } else {
        "development"
    }
}

/// Settings that cannot make a client. Found at start-up, never during a call.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `base_url` does not parse as an http(s) URL.
    #[error("xendit.base_url {base_url:?} is not an http(s) URL")]
    BaseUrl {
        /// The configured value.
        base_url: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("could not build the HTTP client for Xendit")]
    HttpClient(#[source] reqwest::Error),
}

/// Client for Xendit's Customers API. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct XenditClient {
    /// Pooled HTTP client; its own timeout backs up the per-request one.
    http: reqwest::Client,
    /// `{base_url}/customers`, parsed once.
    customers_url: Url,
    /// Basic auth user name.
    secret_key: SecretString,
    /// Per-request timeout.
    timeout: Duration,
    /// Pauses between attempts; its retry count is `max_attempts - 1`.
    backoff: ExponentialBuilder,
    /// Cap on a pause asked for by `Rate-Limit-Reset`, or by our own rate limit.
    max_rate_limit_wait: Duration,
    /// Our side of the key's rate limit; clones share it.
    limiter: Arc<DefaultDirectRateLimiter>,
    /// `development` or `production`, from the key.
    mode: &'static str,
}

impl std::fmt::Debug for XenditClient {
    // Written out rather than derived so the key stays out even if its type ever changes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenditClient")
            .field("customers_url", &self.customers_url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl XenditClient {
    /// A client for the API at `settings.base_url`.
    pub fn new(settings: &XenditSettings) -> Result<Self, SettingsError> {
        let bad_url = || SettingsError::BaseUrl {
            base_url: settings.base_url.clone(),
        };
        let customers_url = Url::parse(&format!(
            "{}/customers",
            settings.base_url.trim_end_matches('/')
        ))
        .map_err(|_| bad_url())?;
        if !matches!(customers_url.scheme(), "http" | "https") {
            return Err(bad_url());
        }
        let timeout = settings.timeout();
        let http = reqwest::Client::builder()
            .user_agent(concat!("onboard/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(SettingsError::HttpClient)?;
        let retries = settings.max_attempts.max(1) - 1;
        let backoff = Backoff::new(
            Duration::from_millis(settings.min_backoff_ms),
            Duration::from_millis(settings.max_backoff_ms),
            retries as usize + 1,
        )
        .policy();
        let per_minute = NonZeroU32::new(settings.requests_per_minute()).expect("at least 1");
        Ok(XenditClient {
            http,
            customers_url,
            secret_key: settings.secret_key.clone(),
            timeout,
            backoff,
            max_rate_limit_wait: settings.max_rate_limit_wait(),
            limiter: Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))),
            mode: settings.mode(),
        })
    }

    /// The key's mode (`development` or `production`): part of every reference's namespace,
    /// so a test key's customers and a live key's never share a `reference_id` or an
    /// idempotency key.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Waits for our rate limit to allow one more request, at most `max_rate_limit_wait`;
    /// `Err` with the wait when that would be longer.
    async fn take_turn(&self) -> Result<(), Duration> {
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if wait > self.max_rate_limit_wait {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Creates the customer, or returns the one Xendit already has under `request.reference_id`.
    ///
    /// `idempotency_key` must be the same on every retry of the same saga step (use
    /// [`super::ids::idempotency_key`]): Xendit then answers a repeat with the first customer instead
    /// of creating a second. After Xendit forgets the key (24 hours) a repeat is refused as a
    /// duplicate reference, and the existing customer is fetched by `reference_id` instead.
    #[tracing::instrument(
        name = "xendit.create_customer",
        skip_all,
        fields(reference_id = %request.reference_id, customer_type = ?request.customer_type)
    )]
    pub async fn create_customer(
        &self,
        request: &CustomerRequest,
        idempotency_key: &str,
    ) -> Result<Customer, XenditError> {
        let outcome = self
            .send("create_customer", || {
                self.http
                    .post(self.customers_url.clone())
                    .header("idempotency-key", idempotency_key)
                    .json(request)
            })
            .await;
        match outcome {
            Ok(answer) => match answer.parse::<Customer>() {
                Ok(customer) => Ok(customer),
                // Xendit said yes; what it said cannot be read. The customer exists, or will
                // on a retry with the same key: find it, never record it as failed.
                Err(unreadable) => {
                    tracing::warn!(
                        error = %unreadable,
                        "Xendit's answer to a create could not be read; looking the customer up"
                    );
                    match self.find_by_reference(&request.reference_id).await? {
                        Some(found) => Ok(found),
                        None => Err(unreadable),
                    }
                }
            },
            Err(CallFailed {
                last: Failure::Api { answer, .. },
                ..
            }) if DUPLICATE_ERROR_CODES.contains(&answer.error_code.as_str()) => {
                tracing::info!(
                    error_code = %answer.error_code,
                    "Xendit already has this customer; fetching it by reference_id"
                );
                match self.find_by_reference(&request.reference_id).await? {
                    Some(existing) => Ok(existing),
                    None => Err(XenditError::DuplicateNotFound {
                        reference_id: request.reference_id.clone(),
                        answer,
                    }),
                }
            }
            Err(failed) => Err(failed.into()),
        }
    }

    /// The customer Xendit has under our `reference_id`, if any.
    #[tracing::instrument(name = "xendit.find_by_reference", skip(self))]
    pub async fn find_by_reference(
        &self,
        reference_id: &str,
    ) -> Result<Option<Customer>, XenditError> {
        let mut url = self.customers_url.clone();
        url.query_pairs_mut()
            .append_pair("reference_id", reference_id);
        match self
            .send("find_by_reference", || self.http.get(url.clone()))
            .await
        {
            Ok(answer) => {
                let customers = answer.parse::<CustomerList>()?.into_customers();
                // Checked rather than trusted: adopting another customer's id would be far worse
                // than creating none.
                Ok(customers
                    .into_iter()
                    .find(|customer| customer.reference_id == reference_id))
            }
            // A 404, or a 400 `*_NOT_FOUND_ERROR` (Xendit's SDKs list `DATA_NOT_FOUND_ERROR`
            // and `CUSTOMER_NOT_FOUND_ERROR` for lookups), means "no such customer".
            Err(CallFailed {
                last: Failure::Api { answer, .. },
                ..
            }) if answer.status == StatusCode::NOT_FOUND.as_u16()
                || (answer.status == StatusCode::BAD_REQUEST.as_u16()
                    && answer.error_code.ends_with("_NOT_FOUND_ERROR")) =>
            {
                Ok(None)
            }
            Err(failed) => Err(failed.into()),
        }
    }

    /// Sends the request built by `request` until it succeeds, fails for good, or runs out of
    /// attempts. Adds what every request carries: auth, API version, timeout.
    async fn send(
        &self,
        operation: &'static str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, CallFailed> {
        let attempts = AtomicU32::new(0);
        let max_rate_limit_wait = self.max_rate_limit_wait;
        let outcome = (|| async {
            self.take_turn().await.map_err(Failure::Throttled)?;
            attempts.fetch_add(1, Ordering::Relaxed);
            let mut request = request()
                .basic_auth(self.secret_key.expose_secret(), None::<&str>)
                .header("api-version", API_VERSION)
                .timeout(self.timeout);
            if let Some(tp) = crate::telemetry::current_traceparent() {
                request = request.header("traceparent", tp);
            }
            exchange(request).await
        })
        .retry(self.backoff)
        .sleep(tokio::time::sleep)
        .when(Failure::is_retryable)
        .adjust(|failure, backoff| {
            // `None` means the attempts are spent; a rate limit does not buy more of them.
            let backoff = backoff?;
            Some(match failure.rate_limit_reset() {
                Some(reset) => reset.min(max_rate_limit_wait),
                None => backoff,
            })
        })
        .notify(|failure, pause| {
            tracing::warn!(
                operation,
                attempt = attempts.load(Ordering::Relaxed),
                pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                error = %failure,
                "Xendit call failed; retrying"
            );
        })
        .await;
        outcome.map_err(|last| {
            let attempts = attempts.load(Ordering::Relaxed);
            if last.is_retryable() {
                tracing::warn!(operation, attempts, error = %last, "Xendit call failed; giving up");
            }
            CallFailed { last, attempts }
        })
    }
}

/// One request, one answer: a 2xx body, or why there is none.
async fn exchange(request: RequestBuilder) -> Result<Answer, Failure> {
    let response = request.send().await.map_err(Failure::Transport)?;
    let status = response.status();
    let rate_limit_reset = response
        .headers()
        .get("rate-limit-reset")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_rate_limit_reset);
    let body = response.bytes().await.map_err(Failure::Transport)?;
    if status.is_success() {
        Ok(Answer { status, body })
    } else {
        Err(Failure::Api {
            answer: ApiError::from_answer(status.as_u16(), &body),
            rate_limit_reset,
        })
    }
}

/// `Rate-Limit-Reset` is the time left in the rate window, in seconds, possibly fractional
/// (Xendit's example: `58.37`).
fn parse_rate_limit_reset(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// A 2xx answer, not yet parsed.
struct Answer {
    /// Its status, for the error when the body does not parse.
    status: StatusCode,
    /// Its raw body.
    body: Bytes,
}

impl Answer {
    fn parse<T: DeserializeOwned>(&self) -> Result<T, XenditError> {
        serde_json::from_slice(&self.body).map_err(|source| XenditError::UnreadableAnswer {
            status: self.status.as_u16(),
            source,
        })
    }
}

/// The answer of `GET /customers?reference_id=`.
#[derive(Deserialize)]
#[serde(untagged)]
enum CustomerList {
    /// 2020-10-31: `{"data": [...], "has_more": false}`.
    Page {
        /// Matching customers; at most one, as references are unique.
        data: Vec<Customer>,
    },
    /// 2020-05-19 answered a bare array; accepted in case an account pins the old version.
    Bare(Vec<Customer>),
}

impl CustomerList {
    fn into_customers(self) -> Vec<Customer> {
        match self {
            CustomerList::Page { data } | CustomerList::Bare(data) => data,
        }
    }
}

/// Why one attempt produced no 2xx answer.
#[derive(Debug)]
enum Failure {
    /// Xendit answered with an error status.
    Api {
        /// The error answer.
        answer: ApiError,
        /// How long Xendit asked us to wait, on a 429.
        rate_limit_reset: Option<Duration>,
    },
    /// No usable answer: timeout, connection error, body cut off.
    Transport(reqwest::Error),
    /// Not sent: our rate limit for the key would have made it wait this long.
    Throttled(Duration),
}

impl Failure {
    fn is_retryable(&self) -> bool {
        match self {
            Failure::Api { answer, .. } => answer.is_retryable(),
            // A POST is safe to resend after a timeout: the idempotency key makes Xendit answer
            // a resend of a create that did go through with the same customer.
            Failure::Transport(error) => {
                error.is_timeout() || error.is_connect() || error.is_request() || error.is_body()
            }
            // The saga tries again after its delay, when the window has room.
            Failure::Throttled(_) => false,
        }
    }

    fn rate_limit_reset(&self) -> Option<Duration> {
        match self {
            Failure::Api {
                answer,
                rate_limit_reset,
            } if answer.status == StatusCode::TOO_MANY_REQUESTS.as_u16() => *rate_limit_reset,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api { answer, .. } => write!(f, "{answer}"),
            Failure::Transport(error) => write!(f, "{error}"),
            Failure::Throttled(wait) => write!(f, "our rate limit asks to wait {wait:?}"),
        }
    }
}

/// A call that ended without a 2xx answer.
struct CallFailed {
    /// Why the last attempt failed.
    last: Failure,
    /// How many requests the call sent.
    attempts: u32,
}

impl From<CallFailed> for XenditError {
    fn from(CallFailed { last, attempts }: CallFailed) -> Self {
        match last {
            Failure::Api { answer, .. } if answer.status == 429 => XenditError::RateLimited {
                answer: Some(answer),
            },
            Failure::Api { answer, .. } if matches!(answer.status, 401 | 403) => {
                XenditError::KeyRefused(answer)
            }
            Failure::Api { answer, .. } if answer.is_retryable() => {
                XenditError::Unavailable { answer, attempts }
            }
            Failure::Api { answer, .. } => XenditError::Rejected(answer),
            Failure::Transport(source) => XenditError::Unreachable { attempts, source },
            Failure::Throttled(_) => XenditError::RateLimited { answer: None },
        }
    }
}

#[cfg(test)]
mod tests;

//! The settings of the two processes besides the worker that read the whole `Settings`
//! (`onboard console` and `onboard webhooks`): their sections are defined here, beside the
//! rest, so that configuration does not import the modules that import it.

use std::net::SocketAddr;

use serde::Deserialize;

use super::millis::millis_list;

/// `[console]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsoleSettings {
    /// Where `onboard console` listens.
    pub listen: SocketAddr,
    /// Session cookies without `Secure`, for plain http on loopback only.
    pub insecure_cookies: bool,
    /// How long a session lasts from its login.
    pub session_hours: u64,
    /// How often the overview's figures are sampled (one sampler for every session).
    pub sample_seconds: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            insecure_cookies: false,
            session_hours: 12,
            sample_seconds: 10,
        }
    }
}

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Longest wait for an endpoint's answer.
    pub timeout_ms: u64,
    /// Delays before the 2nd, 3rd, ... attempt; the last repeats.
    #[serde(deserialize_with = "millis_list")]
    pub delays_ms: Vec<u64>,
    /// Attempts of one delivery before it is given up (`failed`).
    pub max_attempts: u32,
    /// Deliveries given up in a row that disable an endpoint.
    pub disable_after_failed_deliveries: u32,
    /// Requests in flight at once, in all.
    pub in_flight: usize,
    /// Requests in flight at once to one endpoint: a slow endpoint holds no more than this.
    pub per_endpoint_in_flight: usize,
    /// How often due deliveries are looked for when none were found.
    pub poll_interval_ms: u64,
    /// Let endpoints be on loopback, private, link-local or other non-public addresses
    /// (`address`). Off by default: a webhook URL is where the worker's data goes, and an
    /// internal address there is a request forgery. The quick start and the tests, whose
    /// receivers listen on loopback, turn it on.
    pub allow_private_addresses: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            timeout_ms: 5_000,
            delays_ms: vec![
                5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000,
                43_200_000,
            ],
            max_attempts: 10,
            disable_after_failed_deliveries: 5,
            in_flight: 64,
            per_endpoint_in_flight: 8,
            poll_interval_ms: 200,
            allow_private_addresses: false,
        }
    }
}

impl WebhookSettings {
    /// The wait after attempt `attempt` (1-based) failed.
    pub fn delay_after(&self, attempt: u32) -> std::time::Duration {
        let i = (attempt.max(1) as usize - 1).min(self.delays_ms.len().saturating_sub(1));
        std::time::Duration::from_millis(self.delays_ms.get(i).copied().unwrap_or(60_000))
    }
}

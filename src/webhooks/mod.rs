//! Webhooks (DESIGN.md, "Relations, imports and webhooks"): the events, POSTed to the HTTP
//! endpoints operators registered, at least once, signed as Standard Webhooks specifies.
//!
//! - [`cli`]: `onboard webhooks add|list|enable|disable|remove|deliveries|redeliver|serve`.
//! - [`serve`]: the process that does it. A durable queue (`<prefix>.webhooks`, quorum) bound
//!   to the events exchange feeds it; each event becomes one delivery row per matching enabled
//!   endpoint before the event is acked, and a sender works the due rows off under a lease,
//!   recording every attempt, retrying with growing delays, and disabling an endpoint whose
//!   deliveries keep failing (announced as `webhook.endpoint_disabled`).
//!
//! It runs as its own process, not inside the worker: the calls go to third parties whose
//! speed and behaviour nobody here controls, so they get their own CPU, connections and
//! failure domain, and scale (or stop) apart from the commands.

pub mod address;
pub mod bench;
pub mod body;
pub mod cli;
pub mod receive;
pub mod serve;

/// Whether an event type matches a pattern: exact, or with `*` standing for any run of
/// characters (`client.*`, `*`).
pub fn matches(pattern: &str, event_type: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == event_type;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !event_type.starts_with(first) || event_type.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &event_type[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

pub use body::body_of;

/// Why a URL cannot be an endpoint: only `http` and `https`, with a host, and no credentials
/// in it (they would be stored and shown).
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https endpoints are allowed, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "credentials in the URL are not allowed; the endpoint checks signatures".into(),
        );
    }
    Ok(parsed)
}

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", base64::prelude::BASE64_STANDARD.encode(bytes))
}

/// Whether a secret can sign (`whsec_` + base64, at least 24 bytes).
pub fn check_secret(secret: &str) -> Result<(), String> {
    use base64::Engine;
    let raw = secret
        .strip_prefix("whsec_")
        .ok_or("a secret starts with whsec_")?;
    let bytes = base64::prelude::BASE64_STANDARD
        .decode(raw)
        .map_err(|_| "a secret is whsec_ followed by base64")?;
    if bytes.len() < 24 {
        return Err("a secret needs at least 24 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::WebhookSettings;

    #[test]
    fn patterns_match_exactly_or_with_stars() {
        assert!(matches("client.created", "client.created"));
        assert!(!matches("client.created", "client.creation_failed"));
        assert!(matches("client.*", "client.relation_updated"));
        assert!(!matches("client.*", "instance.created"));
        assert!(matches("*", "anything.at_all"));
        assert!(matches("*.created", "instance.created"));
        assert!(matches("client.*_failed", "client.xendit_failed"));
        assert!(!matches("client.*_failed", "client.created"));
    }

    #[test]
    fn only_http_and_https_urls_without_credentials() {
        assert!(check_url("https://hooks.example.com/onboard").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://example.com",
            "gopher://x",
            "https://user:pw@example.com/",
            "not a url",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_whsec_base64_and_long_enough() {
        let s = new_secret();
        assert!(check_secret(&s).is_ok());
        assert!(standardwebhooks::Webhook::new(&s).is_ok());
        assert!(check_secret("whsec_c2hvcnQ=").is_err());
        assert!(check_secret("plain").is_err());
    }

    #[test]
    fn delays_grow_and_the_last_repeats() {
        let s = WebhookSettings {
            delays_ms: vec![100, 1000],
            ..WebhookSettings::default()
        };
        assert_eq!(s.delay_after(1).as_millis(), 100);
        assert_eq!(s.delay_after(2).as_millis(), 1000);
        assert_eq!(s.delay_after(9).as_millis(), 1000);
    }
}

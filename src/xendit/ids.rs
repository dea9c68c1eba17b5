//! Ids we send to Xendit, derived only from our own ids so every retry sends the same ones.
//!
//! Two ids protect against a second customer, at two layers:
//! - the `idempotency-key` header: for 24 hours Xendit answers a repeated request with the first
//!   answer instead of creating again;
//! - the `reference_id`: unique per Xendit account, so after those 24 hours a repeated create is
//!   refused as a duplicate, and the client finds the existing customer by it.
//!
//! Both must be the same on every retry of the same saga step, on any worker, after any restart:
//! nothing random or time-based goes into them.

use sha2::{Digest, Sha256};
use std::fmt::Display;

/// Our `reference_id` for a customer: `{namespace}-{kind}-{id}`, e.g. `onboard-prod-client-42`.
///
/// - `namespace` tells deployments apart that share one Xendit account (Xendit wants references
///   unique "across development & production"): e.g. the broker prefix.
/// - `kind` tells our id spaces apart (`client`, `user`), since client 42 and user 42 are
///   different customers.
///
/// Keep `namespace` and `kind` free of spaces; the whole must stay within Xendit's 255 chars.
pub fn reference_id(namespace: &str, kind: &str, id: impl Display) -> String {
    format!("{namespace}-{kind}-{id}")
}

/// The `idempotency-key` for creating the customer with this `reference_id`: the hex SHA-256 of
/// the reference (64 chars).
///
/// Hashed rather than the reference itself because Xendit caps keys at 100 chars while a
/// reference may have 255; the hash keeps the key deterministic and within bounds.
pub fn idempotency_key(reference_id: &str) -> String {
    hex::encode(Sha256::digest(reference_id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_id_joins_namespace_kind_and_id() {
        assert_eq!(reference_id("onboard", "client", 42), "onboard-client-42");
        assert_eq!(
            reference_id("onboard-prod", "user", "7"),
            "onboard-prod-user-7"
        );
    }

    #[test]
    fn client_and_user_with_the_same_id_get_different_references() {
        assert_ne!(
            reference_id("onboard", "client", 1),
            reference_id("onboard", "user", 1)
        );
    }

    #[test]
    fn idempotency_key_is_deterministic_and_fits_xendits_limit() {
        let reference = reference_id("onboard", "client", 42);
        let key = idempotency_key(&reference);
        assert_eq!(key, idempotency_key(&reference));
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));

        let longest_reference = "r".repeat(255);
        assert!(idempotency_key(&longest_reference).len() <= 100);
    }

    #[test]
    fn different_references_get_different_keys() {
        assert_ne!(
            idempotency_key(&reference_id("onboard", "client", 1)),
            idempotency_key(&reference_id("onboard", "client", 2))
        );
    }
}

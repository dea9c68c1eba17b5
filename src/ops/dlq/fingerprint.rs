//! Grouping dead letters by root cause: the reason with its variable parts (ids, numbers,
//! quoted values) replaced, hashed to a short fingerprint. Ten thousand commands that failed
//! because one table was missing become one line of `onboard dlq groups`.

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
        .expect("valid regex")
});
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\w.+-]+@[\w-]+(\.[\w-]+)+").expect("valid regex"));
static DOUBLE_QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*""#).expect("valid regex"));
// Single quotes only around a value (after a space, bracket, `=` or `:`), so the apostrophe
// of "worker's" does not swallow the rest of the sentence.
static SINGLE_QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[\s(\[=:,])'[^']*'").expect("valid regex"));
// Long hex runs (trace ids, hashes) that contain a digit, so ordinary words stay.
static HEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9a-fA-F]*[0-9][0-9a-fA-F]*\b").expect("valid regex"));
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+(\.\d+)?").expect("valid regex"));
static SPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("valid regex"));

/// The reason with what varies between messages of one cause replaced by placeholders:
/// uuids `<uuid>`, emails `<email>`, quoted values `<v>`, long hex runs `<hex>`, numbers `<n>`.
pub fn normalize(reason: &str) -> String {
    let s = UUID.replace_all(reason, "<uuid>");
    let s = EMAIL.replace_all(&s, "<email>");
    let s = DOUBLE_QUOTED.replace_all(&s, "<v>");
    let s = SINGLE_QUOTED.replace_all(&s, "${1}<v>");
    let s = HEX.replace_all(&s, |c: &regex::Captures| {
        if c[0].len() >= 16 {
            "<hex>".to_string()
        } else {
            c[0].to_string()
        }
    });
    let s = NUMBER.replace_all(&s, "<n>");
    let s = SPACE.replace_all(s.trim(), " ");
    crate::messages::command::truncate(&s, 300)
}

/// A short, stable id of a reason's normalized form (10 hex characters of its SHA-256).
pub fn fingerprint(reason: &str) -> String {
    let digest = Sha256::digest(normalize(reason).as_bytes());
    hex::encode(&digest[..5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_that_differ_only_in_ids_numbers_and_values_share_a_fingerprint() {
        let a = "retries exhausted after 3 delayed attempts: database: error returned from \
                 database: client CL-202401-0001 blocked by rule 17 (id 0af76519-16cd-43dd-8448-eb211c80319c)";
        let b = "retries exhausted after 10 delayed attempts: database: error returned from \
                 database: client CL-202402-0420 blocked by rule 17 (id 11111111-2222-3333-4444-555555555555)";
        assert_eq!(fingerprint(a), fingerprint(b));
        assert_eq!(
            normalize(a),
            "retries exhausted after <n> delayed attempts: database: error returned from \
             database: client CL-<n>-<n> blocked by rule <n> (id <uuid>)"
        );
    }

    #[test]
    fn quoted_values_and_emails_are_placeholders_but_the_sentence_stays() {
        assert_eq!(
            normalize(r#"body does not match: /email: "a@b.co" is not of type "integer""#),
            "body does not match: /email: <v> is not of type <v>"
        );
        assert_eq!(
            normalize("the worker's key 'abc' for bob@example.com"),
            "the worker's key <v> for <email>"
        );
        assert_eq!(
            normalize("trace b7ad6b7169203331a and line 1 column 14"),
            "trace <hex> and line <n> column <n>"
        );
    }

    #[test]
    fn different_causes_get_different_fingerprints() {
        assert_ne!(
            fingerprint("body is not valid JSON: expected value at line 1 column 1"),
            fingerprint("missing message_id property")
        );
        assert_eq!(fingerprint("x").len(), 10);
    }
}

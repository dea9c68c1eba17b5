//! Secrets out of sight: `onboard dlq show` prints bodies and headers with the values of
//! secret-looking keys (password, token, secret, key, authorization, api_key, ...) replaced,
//! wherever they sit in the JSON. Bodies that are not JSON get a textual best effort.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const MASK: &str = "***";

/// Words that make a key secret, matched against the key's words (`api_key` → `api`, `key`;
/// `accessToken` → `access`, `token`).
const SECRET_WORDS: [&str; 18] = [
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "apikey",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "cookie",
    "pin",
    "otp",
    "cvv",
    "cvc",
    "signature",
];

/// Run-together spellings (`apitoken`, `secretkey`) that word splitting cannot see.
const SECRET_PARTS: [&str; 4] = ["password", "passwd", "secret", "token"];

fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Keys that say "key" without holding a secret (AMQP routing keys, our own headers).
const NOT_SECRET: [&str; 3] = ["routingkey", "routingkeys", "idempotencykey"];

/// Whether a key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let flat = key.to_lowercase();
    let joined: String = flat.chars().filter(|c| c.is_alphanumeric()).collect();
    if NOT_SECRET.iter().any(|n| joined.ends_with(n)) {
        return false;
    }
    words(key)
        .iter()
        .any(|w| SECRET_WORDS.contains(&w.as_str()))
        || SECRET_PARTS.iter().any(|p| flat.contains(p))
        || flat.ends_with("apikey")
}

/// Replaces, in place, the value of every secret-looking key at any depth.
pub fn mask_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = Value::String(MASK.into());
                } else {
                    mask_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        _ => {}
    }
}

// `"key": "value"`, `"key": 123`, `key=value`, `key: value` in text that is not JSON.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)("?([A-Za-z0-9_.-]+)"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|[^\s,;&}\]]+)"#)
        .expect("valid regex")
});

/// Best effort for bodies that are not JSON (e.g. broken JSON that still holds a password).
pub fn mask_text(text: &str) -> String {
    KEY_VALUE
        .replace_all(text, |c: &regex::Captures| {
            if is_secret_key(&c[2]) {
                format!("{}\"{MASK}\"", &c[1])
            } else {
                c[0].to_string()
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_recognised_in_any_spelling() {
        for k in [
            "password",
            "Password",
            "admin_password",
            "api_key",
            "apiKey",
            "x-api-key",
            "Authorization",
            "access_token",
            "accessToken",
            "client_secret",
            "secretkey",
            "apitoken",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "email",
            "client_alias",
            "phone",
            "keyword",
            "monkey_name",
            "tokenizer",
        ] {
            // "tokenizer" contains "token": over-masking is the safe side.
            if k == "tokenizer" {
                continue;
            }
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn nested_secrets_are_masked_and_everything_else_is_kept() {
        let mut body = json!({
            "email": "a@b.co",
            "password": "hunter2",
            "xendit": {"api_key": "xnd_live_123", "headers": [{"Authorization": "Basic abc"}]},
            "token": null
        });
        mask_json(&mut body);
        assert_eq!(
            body,
            json!({
                "email": "a@b.co",
                "password": "***",
                "xendit": {"api_key": "***", "headers": [{"Authorization": "***"}]},
                "token": null
            })
        );
    }

    #[test]
    fn broken_json_and_form_text_get_their_secrets_masked() {
        let masked = mask_text(r#"{"email": "a@b.co", "password": "hunter2", "pin": 1234"#);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(!masked.contains("1234"), "{masked}");
        assert!(masked.contains("a@b.co"), "{masked}");
        let masked = mask_text("user=bob&token=abc123&x=1");
        assert!(!masked.contains("abc123"), "{masked}");
        assert!(masked.contains("user=bob"), "{masked}");
    }
}

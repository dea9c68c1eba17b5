//! What can go wrong when we talk to Xendit, sorted by what the caller should do next.
//!
//! The saga needs two decisions from an error: try again later (through the delay queue) or
//! record the failure and move on ([`XenditError::is_transient`]), and whether the try counts
//! against the step's attempts ([`XenditError::counts_as_attempt`]):
//!
//! | variant | when | transient | counted |
//! | --- | --- | --- | --- |
//! | [`XenditError::Unavailable`] | Xendit answered 5xx on every in-process attempt | yes | yes |
//! | [`XenditError::Unreachable`] | timeout, connection refused or reset, body cut off, on every attempt | yes | yes |
//! | [`XenditError::DuplicateNotFound`] | Xendit said "duplicate" but the lookup by `reference_id` found nothing | yes | yes |
//! | [`XenditError::UnreadableAnswer`] | a 2xx whose body cannot be read, and no customer found under our `reference_id` | yes | yes |
//! | [`XenditError::RateLimited`] | our own rate limit for the key, or Xendit's 429 on every attempt | yes | no |
//! | [`XenditError::KeyRefused`] | 401 or 403: the key is wrong or lacks a permission (configuration) | yes | no |
//! | [`XenditError::Rejected`] | any other 4xx: `API_VALIDATION_ERROR`, ... | no | - |
//!
//! No success of Xendit's is ever made a permanent failure here: a customer created at Xendit
//! whose answer cannot be read is looked up by its `reference_id`, and if it cannot be found
//! yet, the call is tried again later (with the same idempotency key).

use std::fmt;

/// An error answer from Xendit, in its documented shape
/// `{"error_code": "API_VALIDATION_ERROR", "message": "...", "errors": [...]}`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer, e.g. 400, 409, 503.
    pub status: u16,
    /// Xendit's `error_code`, e.g. `API_VALIDATION_ERROR`, `DUPLICATE_ERROR`.
    /// `HTTP_<status>` when the body was not Xendit's error shape (a proxy's HTML page, say),
    /// so callers always have a code to record.
    pub error_code: String,
    /// Xendit's `message`, or the start of the raw body when it was not Xendit's shape.
    pub message: String,
}

/// Longest raw body we keep as a message: enough to recognise a proxy's error page,
/// short enough that a log line stays a line.
const MAX_RAW_MESSAGE_CHARS: usize = 200;

impl ApiError {
    /// Reads an error answer. Never fails: an answer we cannot parse is still an answer,
    /// and its status alone decides whether it is worth retrying.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Shape {
            error_code: String,
            #[serde(default)]
            message: Option<serde_json::Value>,
        }
        match serde_json::from_slice::<Shape>(body) {
            Ok(shape) => ApiError {
                status,
                error_code: shape.error_code,
                // Documented as a string; the SDKs type it `any`, so keep whatever came.
                message: match shape.message {
                    Some(serde_json::Value::String(text)) => text,
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
            },
            Err(_) => ApiError {
                status,
                error_code: format!("HTTP_{status}"),
                message: String::from_utf8_lossy(body)
                    .chars()
                    .take(MAX_RAW_MESSAGE_CHARS)
                    .collect(),
            },
        }
    }

    /// Whether retrying the very same request later can succeed: Xendit is overloaded or broken,
    /// not refusing what we sent.
    pub(crate) fn is_retryable(&self) -> bool {
        self.status == 429 || (500..600).contains(&self.status)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error_code, self.message)
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a call to Xendit did not produce a customer. See the module docs for which are transient.
#[derive(thiserror::Error)]
pub enum XenditError {
    /// Xendit answered 5xx or 429 on every in-process attempt. Worth retrying later.
    #[error("Xendit is unavailable after {attempts} attempt(s): last answer {answer}")]
    Unavailable {
        /// The last answer Xendit gave.
        answer: ApiError,
        /// How many requests were sent in this call.
        attempts: u32,
    },
    /// No usable answer on every in-process attempt: timeout, connection error, body cut off.
    /// Worth retrying later.
    #[error("Xendit could not be reached after {attempts} attempt(s)")]
    Unreachable {
        /// How many requests were sent in this call.
        attempts: u32,
        /// The transport error of the last attempt.
        #[source]
        source: reqwest::Error,
    },
    /// Xendit reported the customer as a duplicate but has none under our `reference_id`.
    /// Transient: the likeliest cause is another worker's create still in flight, which a later
    /// retry will find.
    #[error(
        "Xendit reported reference_id {reference_id} as a duplicate ({answer}) but no customer has it"
    )]
    DuplicateNotFound {
        /// The `reference_id` we sent and looked up.
        reference_id: String,
        /// Xendit's duplicate answer.
        answer: ApiError,
    },
    /// Xendit refused the request (validation, authentication, permission, other 4xx).
    /// Retrying the same request will not help: the request or the configuration must change.
    #[error("Xendit refused the request: {0}")]
    Rejected(ApiError),
    /// Xendit answered with success but a body that cannot be read, and no customer could be
    /// found under our `reference_id`. Transient: the customer may well exist (the retry's
    /// idempotency key gets its answer again, or the lookup finds it).
    #[error("Xendit answered {status} with a body we could not read")]
    UnreadableAnswer {
        /// HTTP status of the answer.
        status: u16,
        /// Why the body did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Our rate limit for this key (`xendit.requests_per_minute`) or Xendit's 429: tried again
    /// later, not counted against the step's attempts.
    #[error("Xendit's rate limit for this key was reached{}", answer.as_ref().map(|a| format!(" ({a})")).unwrap_or_default())]
    RateLimited {
        /// Xendit's 429, when it was Xendit that said so.
        answer: Option<ApiError>,
    },
    /// 401 or 403: the key is wrong, revoked or lacks a permission. A configuration fault, not
    /// the customer's: tried again later, not counted against the step's attempts, alerted.
    #[error("Xendit refused our API key: {0} (a configuration fault: check xendit.secret_key)")]
    KeyRefused(ApiError),
}

impl XenditError {
    /// `true` when retrying later (through the delay queue) may succeed; `false` when the request
    /// or the configuration must change first.
    pub fn is_transient(&self) -> bool {
        !matches!(self, XenditError::Rejected(_))
    }

    /// Whether this try counts against the step's attempts: not when the limit is the rate of
    /// calls or the configuration, which no number of tries of this customer changes.
    pub fn counts_as_attempt(&self) -> bool {
        !matches!(
            self,
            XenditError::RateLimited { .. } | XenditError::KeyRefused(_)
        )
    }

    /// Xendit's answer behind this error, when there was one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            XenditError::Unavailable { answer, .. }
            | XenditError::DuplicateNotFound { answer, .. }
            | XenditError::Rejected(answer)
            | XenditError::KeyRefused(answer) => Some(answer),
            XenditError::RateLimited { answer } => answer.as_ref(),
            XenditError::Unreachable { .. } | XenditError::UnreadableAnswer { .. } => None,
        }
    }

    /// Xendit's `error_code`, e.g. `API_VALIDATION_ERROR`, when Xendit answered.
    pub fn error_code(&self) -> Option<&str> {
        self.api_error().map(|answer| answer.error_code.as_str())
    }

    /// Xendit's `message`, when Xendit answered.
    pub fn message(&self) -> Option<&str> {
        self.api_error().map(|answer| answer.message.as_str())
    }
}

// Debug prints the whole cause chain (as zero2prod does), because `{:?}` is what ends up in
// logs and dead-letter headers, and "error sending request" alone does not say why.
impl fmt::Debug for XenditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(inner) = cause {
            write!(f, "\n  caused by: {inner}")?;
            cause = inner.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xendit_error_shape() {
        let body =
            br#"{"error_code":"API_VALIDATION_ERROR","message":"type is required","errors":[]}"#;
        let answer = ApiError::from_answer(400, body);
        assert_eq!(answer.error_code, "API_VALIDATION_ERROR");
        assert_eq!(answer.message, "type is required");
        assert!(!answer.is_retryable());
    }

    #[test]
    fn keeps_a_non_xendit_body_as_message_with_a_status_code() {
        let answer = ApiError::from_answer(502, b"<html>Bad Gateway</html>");
        assert_eq!(answer.error_code, "HTTP_502");
        assert_eq!(answer.message, "<html>Bad Gateway</html>");
        assert!(answer.is_retryable());
    }

    #[test]
    fn raw_message_is_cut_on_a_char_boundary() {
        let body = "é".repeat(500);
        let answer = ApiError::from_answer(500, body.as_bytes());
        assert_eq!(answer.message.chars().count(), MAX_RAW_MESSAGE_CHARS);
    }

    #[test]
    fn only_429_and_5xx_are_retryable() {
        for (status, retryable) in [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (409, false),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(
                ApiError::from_answer(status, b"{}").is_retryable(),
                retryable,
                "{status}"
            );
        }
    }

    #[test]
    fn rejected_is_permanent_and_keeps_code_and_message() {
        let error = XenditError::Rejected(ApiError::from_answer(
            400,
            br#"{"error_code":"API_VALIDATION_ERROR","message":"type is required"}"#,
        ));
        assert!(!error.is_transient());
        assert_eq!(error.error_code(), Some("API_VALIDATION_ERROR"));
        assert_eq!(error.message(), Some("type is required"));
    }

    #[test]
    fn a_refused_key_and_a_rate_limit_are_retried_without_counting() {
        let refused = XenditError::KeyRefused(ApiError::from_answer(
            401,
            br#"{"error_code":"INVALID_API_KEY","message":"API key format is invalid"}"#,
        ));
        assert!(refused.is_transient() && !refused.counts_as_attempt());
        assert_eq!(refused.error_code(), Some("INVALID_API_KEY"));
        let limited = XenditError::RateLimited { answer: None };
        assert!(limited.is_transient() && !limited.counts_as_attempt());
        let down = XenditError::Unavailable {
            answer: ApiError::from_answer(503, b""),
            attempts: 1,
        };
        assert!(down.counts_as_attempt());
    }

    #[test]
    fn unavailable_is_transient() {
        let error = XenditError::Unavailable {
            answer: ApiError::from_answer(503, b""),
            attempts: 3,
        };
        assert!(error.is_transient());
        assert_eq!(error.error_code(), Some("HTTP_503"));
    }
}

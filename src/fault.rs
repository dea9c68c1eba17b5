//! The one failure policy: when something goes wrong, is it worth trying again?
//!
//! - [`Fault::Transient`]: the world may be different in a moment (a connection dropped, the
//!   database chose us as a deadlock victim, a lock timed out, Xendit answered 5xx or not at
//!   all). Retried at once a few times in the worker, then through the delay queues, then
//!   dead-lettered with the reason.
//! - [`Fault::Permanent`]: the same input fails the same way every time (a value PostgreSQL
//!   refuses, SQLSTATE classes 22 and 23; a body a handler cannot read; a row the code cannot
//!   decode). Retrying only spends the delay budget, so it goes to the dead-letter queue at
//!   once, with its reason and a `command.failed` outcome.
//!
//! Errors this module does not recognise count as transient: a missing table after a botched
//! deploy is fixed by the next deploy, and the delay queues give it that chance.

use std::time::Duration;

use backon::ExponentialBuilder;

/// How an operation is tried again at once, in process: delays growing from `min` to `max`,
/// with jitter (workers that failed together do not retry together), `attempts` tries in all,
/// the first included. Every in-process retry in the crate is built from one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub attempts: usize,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration, attempts: usize) -> Backoff {
        Backoff { min, max, attempts }
    }

    /// The policy for `backon`'s `retry`.
    pub fn policy(&self) -> ExponentialBuilder {
        self.builder()
            .with_max_times(self.attempts.saturating_sub(1))
    }

    /// The same delays, tried however many times fit in `budget` of waiting (for work that
    /// must be done before a deadline, not after a number of tries).
    pub fn within(&self, budget: Duration) -> ExponentialBuilder {
        self.builder()
            .with_max_times(usize::MAX)
            .with_total_delay(Some(budget))
    }

    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max.max(self.min))
            .with_jitter()
    }
}

/// What a failure means for the message that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Transient,
    Permanent,
}

/// The fault class of a database error.
pub fn of_db(err: &sqlx::Error) -> Fault {
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) => of_sqlstate(code),
            None => Fault::Transient,
        },
        // What we read cannot be turned into our types: the same row fails the same way.
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Encode(_) => Fault::Permanent,
        _ => Fault::Transient,
    }
}

/// The fault class of a PostgreSQL SQLSTATE.
pub fn of_sqlstate(code: &str) -> Fault {
    match code.get(..2) {
        // data exception (value too long, invalid text, out of range...), integrity
        // constraint violation (unique, foreign key, not null, check).
        Some("22" | "23") => Fault::Permanent,
        _ => Fault::Transient,
    }
}

/// Whether a database error is worth an immediate, in-process retry: the connection, a
/// serialization failure or deadlock, a lock or statement timeout, the server too busy or
/// restarting. Other transient errors wait for the delay queues.
pub fn retry_at_once(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            matches!(
                c.as_ref(),
                "40001"
                    | "40P01"
                    | "55P03"
                    | "57014"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "53300"
                    | "53400"
            ) || c.starts_with("08")
        }),
        _ => false,
    }
}

/// Why a handler or a saga step could not decide.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Another transaction got in between (e.g. an email was taken after it was checked):
    /// the whole batch is tried again at once and will see what happened.
    #[error("contended: {0}")]
    Contended(String),
    /// Worth trying again later, not now: straight to the delay queues.
    #[error("{0}")]
    RetryLater(String),
    /// Can never succeed as sent: dead-lettered at once with `command.failed`.
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn fault(&self) -> Fault {
        match self {
            HandlerError::Database(e) => of_db(e),
            HandlerError::Contended(_) | HandlerError::RetryLater(_) => Fault::Transient,
            HandlerError::Permanent(_) => Fault::Permanent,
        }
    }

    /// The database chose this transaction as a deadlock's victim.
    pub fn is_deadlock(&self) -> bool {
        matches!(self, HandlerError::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("40P01"))
    }

    /// Worth an immediate, in-process retry of the batch.
    pub fn retry_at_once(&self) -> bool {
        match self {
            HandlerError::Database(e) => retry_at_once(e),
            HandlerError::Contended(_) => true,
            HandlerError::RetryLater(_) | HandlerError::Permanent(_) => false,
        }
    }

    /// A reason fit for a dead-letter header, an event and a log line: what kind of failure,
    /// the SQLSTATE and the constraint or table it names, and PostgreSQL's message, except for
    /// data exceptions (class 22), whose messages quote the offending value ("invalid input
    /// syntax for type integer: ..."). Values of the command are in the DETAIL, never shown.
    pub fn reason(&self) -> String {
        match self {
            HandlerError::Database(sqlx::Error::Database(db)) => {
                let code = db
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into());
                let mut reason = format!("the database refused it (SQLSTATE {code}");
                if let Some(c) = db.constraint() {
                    reason.push_str(&format!(", constraint {c}"));
                } else if let Some(t) = db.table() {
                    reason.push_str(&format!(", table {t}"));
                }
                reason.push(')');
                if !code.starts_with("22") {
                    reason.push_str(&format!(": {}", db.message()));
                }
                reason
            }
            HandlerError::Database(e) if of_db(e) == Fault::Permanent => {
                "a row could not be read as the code expects it".to_string()
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_integrity_errors_are_permanent_the_rest_transient() {
        for code in ["22001", "22P02", "23505", "23503", "23502"] {
            assert_eq!(of_sqlstate(code), Fault::Permanent, "{code}");
        }
        for code in [
            "40001", "40P01", "55P03", "08006", "57P01", "53300", "42P01",
        ] {
            assert_eq!(of_sqlstate(code), Fault::Transient, "{code}");
        }
    }

    #[test]
    fn connection_errors_are_retried_at_once_and_decoding_errors_never() {
        assert!(retry_at_once(&sqlx::Error::PoolTimedOut));
        assert_eq!(of_db(&sqlx::Error::PoolTimedOut), Fault::Transient);
        let decode = sqlx::Error::Decode("bad".into());
        assert_eq!(of_db(&decode), Fault::Permanent);
        assert!(!retry_at_once(&decode));
        assert!(HandlerError::Contended("x".into()).retry_at_once());
        assert!(!HandlerError::RetryLater("x".into()).retry_at_once());
        assert_eq!(
            HandlerError::Permanent("x".into()).fault(),
            Fault::Permanent
        );
    }
}

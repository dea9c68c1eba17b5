//! Paging of `client.list`, newest first: the page size rule and the keyset cursor.
//!
//! Offset paging (`page`) over a newest-first list breaks while clients are being created:
//! each new client pushes every other one a place down, so the next page repeats the last
//! client of the previous one (or, with deletions, skips one). A keyset cursor does not move:
//! it names the last client served, `(created, client_id)`, and the next page is every client
//! strictly after it in `(created DESC, client_id DESC)` order. A client that existed when the
//! listing started is therefore served exactly once; one created meanwhile sorts before the
//! first page and is simply not in this listing.
//!
//! The cursor is opaque to upstream: base64url of `v1:<page>:<created µs>:<client_id>`. The
//! page number rides along only so replies can say which page they are.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

/// Clients per page when the query does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The most clients one reply carries (the schema refuses more; this guards other callers).
pub const MAX_PAGE_SIZE: u32 = 100;
/// Entries per page with `take`/`skip` paging when `take` is absent (seed 002).
pub const DEFAULT_TAKE: u64 = 10;

/// `take`/`skip` paging (seed 002) of a query: `take` defaulted and capped, `skip` 0 when
/// absent.
pub fn take_skip(take: Option<u64>, skip: Option<u64>) -> (u64, u64) {
    (
        take.unwrap_or(DEFAULT_TAKE).min(MAX_PAGE_SIZE as u64),
        skip.unwrap_or(0),
    )
}

/// The page size a query asked for, defaulted and capped.
pub fn page_size(requested: Option<u64>) -> u32 {
    match requested {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) => n.min(MAX_PAGE_SIZE as u64) as u32,
    }
}

/// Where the next page starts: strictly after this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The page the cursor leads to (1-based).
    pub page: u32,
    pub created: DateTime<Utc>,
    pub client_id: i32,
}

const VERSION: &str = "v1";

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!(
            "{VERSION}:{}:{}:{}",
            self.page,
            self.created.timestamp_micros(),
            self.client_id
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// `None` for anything this worker did not write.
    pub fn decode(token: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts = raw.split(':');
        if parts.next()? != VERSION {
            return None;
        }
        let page: u32 = parts.next()?.parse().ok()?;
        let micros: i64 = parts.next()?.parse().ok()?;
        let client_id: i32 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || page < 2 || client_id < 1 {
            return None;
        }
        Some(Cursor {
            page,
            created: DateTime::from_timestamp_micros(micros)?,
            client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_is_capped() {
        assert_eq!(page_size(None), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(Some(0)), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(Some(7)), 7);
        assert_eq!(page_size(Some(100)), 100);
        assert_eq!(page_size(Some(5000)), MAX_PAGE_SIZE);
    }

    #[test]
    fn a_cursor_round_trips_to_the_microsecond() {
        let created = DateTime::from_timestamp_micros(1_705_315_400_123_456).unwrap();
        let c = Cursor {
            page: 3,
            created,
            client_id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }

    #[test]
    fn the_schema_example_cursor_is_one_we_read() {
        let c = Cursor::decode("djE6MjoxNzA1MzE1NDAwMDAwMDAwOjQy").unwrap();
        assert_eq!((c.page, c.client_id), (2, 42));
    }

    #[test]
    fn foreign_or_damaged_cursors_are_refused() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "".to_string(),
            "not base64!".to_string(),
            enc("v2:2:1:1"),
            enc("v1:2:1"),
            enc("v1:2:1:1:9"),
            enc("v1:x:1:1"),
            enc("v1:1:1:1"),
            enc("v1:2:1:0"),
            enc(&format!("v1:2:{}:1", i64::MAX)),
        ] {
            assert_eq!(Cursor::decode(&bad), None, "{bad}");
        }
    }
}

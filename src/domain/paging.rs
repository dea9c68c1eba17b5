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
//! The cursor is opaque to upstream: base64url of `v1:<page>:<created µs>:<client_id>` for the
//! default order, of `v2:<page>:<sort>:<order>:<client_id>:<key>` for the others (`sort`
//! updated or alias). The page number rides along only so replies can say which page they are.

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
fn take_skip(take: Option<u64>, skip: Option<u64>) -> (u64, u64) {
    (
        take.unwrap_or(DEFAULT_TAKE).min(MAX_PAGE_SIZE as u64),
        skip.unwrap_or(0),
    )
}

/// A take/skip page a list query asked for (seeds 002-004): `take` entries (defaulted and
/// capped) after the first `skip`. Every take/skip list reads and answers through one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    pub take: u64,
    pub skip: u64,
}

impl Offset {
    pub fn asked(take: Option<u64>, skip: Option<u64>) -> Offset {
        let (take, skip) = take_skip(take, skip);
        Offset { take, skip }
    }

    /// `LIMIT` of the page's statement.
    pub fn limit(&self) -> i64 {
        i64::try_from(self.take).unwrap_or(i64::MAX)
    }

    /// `OFFSET` of the page's statement.
    pub fn offset(&self) -> i64 {
        i64::try_from(self.skip).unwrap_or(i64::MAX)
    }

    /// The answer: `{<key>: items}` and what the page says of itself ([`offset_page`]).
    pub fn answer(&self, key: &str, items: impl serde::Serialize, total: i64) -> serde_json::Value {
        let mut answer = serde_json::Map::new();
        answer.insert(
            key.to_string(),
            serde_json::to_value(items).expect("list items serialise"),
        );
        if let serde_json::Value::Object(page) = offset_page(self.take, self.skip, total) {
            answer.extend(page);
        }
        serde_json::Value::Object(answer)
    }
}

/// Pages of `per_page` that `total` entries fill (0 for none), as seeds 003 and 004 answer.
pub fn total_pages(total: i64, per_page: u64) -> u64 {
    let total = u64::try_from(total).unwrap_or(0);
    total.div_ceil(per_page.max(1))
}

/// What a take/skip reply says of its page: `take`, `skip`, `total`, and (seeds 003, 004)
/// the page number and `total_pages`.
pub fn offset_page(take: u64, skip: u64, total: i64) -> serde_json::Value {
    serde_json::json!({
        "take": take,
        "skip": skip,
        "total": total,
        "page": skip / take.max(1) + 1,
        "total_pages": total_pages(total, take),
    })
}

/// The page size a query asked for, defaulted and capped.
pub fn page_size(requested: Option<u64>) -> u32 {
    match requested {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) => n.min(MAX_PAGE_SIZE as u64) as u32,
    }
}

/// What `client.list` is ordered by; the client id breaks ties in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    #[default]
    Created,
    Updated,
    Alias,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

/// An order of `client.list`: newest first unless asked otherwise; by alias, A to Z unless
/// asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub order: Order,
}

impl Sort {
    pub fn new(key: Option<SortKey>, order: Option<Order>) -> Sort {
        let key = key.unwrap_or_default();
        let order = order.unwrap_or(match key {
            SortKey::Alias => Order::Asc,
            SortKey::Created | SortKey::Updated => Order::Desc,
        });
        Sort { key, order }
    }

    fn name(self) -> &'static str {
        match self.key {
            SortKey::Created => "created",
            SortKey::Updated => "updated",
            SortKey::Alias => "alias",
        }
    }

    fn order_name(self) -> &'static str {
        match self.order {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    fn parse(name: &str, order: &str) -> Option<Sort> {
        let key = match name {
            "created" => SortKey::Created,
            "updated" => SortKey::Updated,
            "alias" => SortKey::Alias,
            _ => return None,
        };
        let order = match order {
            "asc" => Order::Asc,
            "desc" => Order::Desc,
            _ => return None,
        };
        Some(Sort { key, order })
    }
}

impl Default for Sort {
    fn default() -> Sort {
        Sort::new(None, None)
    }
}

/// The sort key of the last client served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    Time(DateTime<Utc>),
    Text(String),
}

/// Where the next page starts: strictly after this client, in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The page the cursor leads to (1-based).
    pub page: u32,
    pub sort: Sort,
    pub key: KeyValue,
    pub client_id: i32,
}

/// `v1:<page>:<created µs>:<client_id>` for the default order (what earlier versions wrote);
/// `v2:<page>:<sort>:<order>:<client_id>:<key>` for the others, the key last (an alias may
/// hold colons).
impl Cursor {
    pub fn encode(&self) -> String {
        let raw = match (&self.key, self.sort == Sort::default()) {
            (KeyValue::Time(t), true) => {
                format!(
                    "v1:{}:{}:{}",
                    self.page,
                    t.timestamp_micros(),
                    self.client_id
                )
            }
            (key, _) => {
                let key = match key {
                    KeyValue::Time(t) => t.timestamp_micros().to_string(),
                    KeyValue::Text(s) => s.clone(),
                };
                format!(
                    "v2:{}:{}:{}:{}:{key}",
                    self.page,
                    self.sort.name(),
                    self.sort.order_name(),
                    self.client_id
                )
            }
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// `None` for anything this worker did not write.
    pub fn decode(token: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (version, rest) = raw.split_once(':')?;
        let cursor = match version {
            "v1" => {
                let mut parts = rest.split(':');
                let page: u32 = parts.next()?.parse().ok()?;
                let micros: i64 = parts.next()?.parse().ok()?;
                let client_id: i32 = parts.next()?.parse().ok()?;
                if parts.next().is_some() {
                    return None;
                }
                let key = KeyValue::Time(DateTime::from_timestamp_micros(micros)?);
                Cursor {
                    page,
                    sort: Sort::default(),
                    key,
                    client_id,
                }
            }
            "v2" => {
                let mut parts = rest.splitn(5, ':');
                let page: u32 = parts.next()?.parse().ok()?;
                let sort = Sort::parse(parts.next()?, parts.next()?)?;
                let client_id: i32 = parts.next()?.parse().ok()?;
                let key = parts.next()?;
                let key = match sort.key {
                    SortKey::Alias => KeyValue::Text(key.to_string()),
                    SortKey::Created | SortKey::Updated => {
                        KeyValue::Time(DateTime::from_timestamp_micros(key.parse().ok()?)?)
                    }
                };
                Cursor {
                    page,
                    sort,
                    key,
                    client_id,
                }
            }
            _ => return None,
        };
        (cursor.page >= 2 && cursor.client_id >= 1).then_some(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_counted_as_the_seeds_do() {
        assert_eq!(total_pages(0, 10), 0);
        assert_eq!(total_pages(10, 10), 1);
        assert_eq!(total_pages(11, 10), 2);
        assert_eq!(total_pages(5, 0), 5);
        let page = offset_page(10, 20, 35);
        assert_eq!(
            (page["page"].as_u64(), page["total_pages"].as_u64()),
            (Some(3), Some(4))
        );
    }

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
            sort: Sort::default(),
            key: KeyValue::Time(created),
            client_id: 42,
        };
        assert!(
            URL_SAFE_NO_PAD
                .decode(c.encode())
                .unwrap()
                .starts_with(b"v1:")
        );
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }

    #[test]
    fn a_cursor_of_another_order_carries_it_and_its_key() {
        let by_alias = Cursor {
            page: 2,
            sort: Sort::new(Some(SortKey::Alias), None),
            key: KeyValue::Text("PT. Maju: & Co.".into()),
            client_id: 7,
        };
        assert_eq!(by_alias.sort.order, Order::Asc);
        assert_eq!(Cursor::decode(&by_alias.encode()), Some(by_alias));
        let updated = DateTime::from_timestamp_micros(1_705_315_400_123_456).unwrap();
        let by_updated = Cursor {
            page: 4,
            sort: Sort::new(Some(SortKey::Updated), Some(Order::Asc)),
            key: KeyValue::Time(updated),
            client_id: 9,
        };
        assert_eq!(Cursor::decode(&by_updated.encode()), Some(by_updated));
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
            enc("v3:2:1:1"),
            enc("v2:2:alias:up:1:x"),
            enc("v2:2:name:asc:1:x"),
            enc("v2:2:updated:asc:1:soon"),
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

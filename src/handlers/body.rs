//! Reading command bodies into their types: what JSON Schema allows that serde's defaults do
//! not (an integer written `2.0`), patch fields where absent and `null` differ, and text that
//! counts as given only when it is not blank.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An integer as JSON Schema counts one: `2` and `2.0` alike (`"type": "integer"` accepts
/// both), within `i32`.
pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    integral(&n)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom("not an integer within 32 bits"))
}

/// [`id`], optional (absent or `null` is `None`).
pub fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "id")] i32);
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

/// A count (`take`, `page_size`, ...), optional: an integer as JSON Schema counts one, not
/// negative.
pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    integral(&n)
        .and_then(|n| u64::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("not a count"))
}

/// A 64-bit integer, optional, as JSON Schema counts one.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    integral(&n)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("not an integer"))
}

fn integral(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= i64::MAX as f64)
            .map(|f| f as i64)
    })
}

/// A value read with its `FromStr` (an enum the schema lists, say).
pub fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// A field of a patch: absent (leave it), `null` (remove it), or a new value. Needs
/// `#[serde(default)]` on the field, so that absent is told from `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Patch<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Patch::Value(v),
            None => Patch::Null,
        })
    }
}

/// How a command names a partner (`direct_partner`): `{id}`, `{name}` or both.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct PartnerGiven {
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl PartnerGiven {
    /// The partner it names; `None` when it names none (`{}`, or a blank name).
    pub fn selector(&self) -> Option<crate::domain::profile::PartnerSelector> {
        crate::domain::profile::PartnerSelector::new(self.id, self.name.as_deref())
    }
}

/// Text as the seed reads it: trimmed, and blank is not given.
pub fn text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Ids {
        #[serde(deserialize_with = "id")]
        client_id: i32,
        #[serde(default, deserialize_with = "opt_id")]
        parent: Option<i32>,
        #[serde(default, deserialize_with = "opt_count")]
        take: Option<u64>,
    }

    #[test]
    fn ids_the_schema_accepts_as_integers_are_read_as_integers() {
        let read = |v: serde_json::Value| serde_json::from_value::<Ids>(v);
        assert_eq!(read(json!({"client_id": 2})).unwrap().client_id, 2);
        assert_eq!(read(json!({"client_id": 2.0})).unwrap().client_id, 2);
        let both = read(json!({"client_id": 1, "parent": 3.0, "take": 10.0})).unwrap();
        assert_eq!((both.parent, both.take), (Some(3), Some(10)));
        let none = read(json!({"client_id": 1, "parent": null})).unwrap();
        assert_eq!((none.parent, none.take), (None, None));
        for bad in [
            json!({"client_id": 2.5}),
            json!({"client_id": 1e12}),
            json!({"client_id": "2"}),
            json!({}),
            json!({"client_id": 1, "take": -1}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct Patched {
        #[serde(default)]
        metadata: Patch<serde_json::Map<String, serde_json::Value>>,
    }

    #[test]
    fn a_patch_tells_absent_from_null_from_a_value() {
        let read = |v: serde_json::Value| serde_json::from_value::<Patched>(v).unwrap().metadata;
        assert_eq!(read(json!({})), Patch::Absent);
        assert_eq!(read(json!({"metadata": null})), Patch::Null);
        assert!(matches!(read(json!({"metadata": {"a": 1}})), Patch::Value(m) if m.len() == 1));
    }

    #[test]
    fn text_is_trimmed_and_blank_is_not_given() {
        for blank in [None, Some(""), Some("  ")] {
            assert_eq!(text(blank), None, "{blank:?}");
        }
        assert_eq!(text(Some(" API ")).as_deref(), Some("API"));
    }
}

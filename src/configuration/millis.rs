//! Lists of milliseconds in the settings (retry delays, webhook delays).

use serde::Deserialize;

/// A list of milliseconds from a file (`[1000, 5000]`) or the environment, where a
/// comma-separated value is a list but a single value arrives as a number.
pub fn millis_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    // Untagged enums see the raw values: from the environment a list's items are strings.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Number(u64),
        Text(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Item),
        Many(Vec<Item>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(Item::Text(t)) => t.split(',').map(|p| Item::Text(p.to_string())).collect(),
        OneOrMany::One(item) => vec![item],
        OneOrMany::Many(items) => items,
    };
    items
        .into_iter()
        .map(|i| match i {
            Item::Number(n) => Ok(n),
            Item::Text(t) => t.trim().parse::<u64>().map_err(|e| {
                serde::de::Error::custom(format!("{t:?} is not a number of milliseconds: {e}"))
            }),
        })
        .collect()
}

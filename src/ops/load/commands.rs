//! The commands a run publishes: unique, valid `client.create` bodies over the countries.

use super::options::Options;
use super::options::SEEDED_COUNTRIES;
use super::report::Sent;
use serde_json::json;

/// The `client.create` bodies of a run: unique emails (run id and index), spread over the
/// countries round-robin, valid for the schema and the handler.
pub fn client_create_commands(options: &Options) -> Vec<(Sent, Vec<u8>)> {
    let countries: Vec<String> = if options.countries.is_empty() {
        SEEDED_COUNTRIES.iter().map(|c| c.to_string()).collect()
    } else {
        options.countries.clone()
    };
    (0..options.count)
        .map(|i| {
            let country = countries[i % countries.len()].to_uppercase();
            let email = format!(
                "load-{}-{i}@{}.load.example",
                options.run_id,
                country.to_lowercase()
            );
            let body = json!({
                "email": email,
                "client_alias": format!("Load {} #{i}", options.run_id),
                "client_type": "CORPORATE",
                "country_code": country,
                "phone": phone(&country, i),
            });
            let sent = Sent {
                message_id: format!("load-{}-{i}", options.run_id),
                email,
                country_code: country,
            };
            (sent, serde_json::to_vec(&body).expect("JSON serialises"))
        })
        .collect()
}

/// A plausible mobile number of the country, unique per index (at most 20 characters).
pub(super) fn phone(country: &str, i: usize) -> String {
    let prefix = match country {
        "SG" => "+659",
        "US" => "+1415",
        "IN" => "+919",
        "AU" => "+614",
        "VN" => "+849",
        "ID" => "+628",
        _ => "+999",
    };
    format!("{prefix}{:08}", i % 100_000_000)
}

//! The schema checks and the client.create body rules on any JSON value: every command type's
//! schema answers (at most ten complaints), `NewClient::parse` answers, nothing panics.
//! Input: any bytes; those that are JSON are checked (seeds in fuzz/seeds/schemas).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use onboard::domain::NewClient;
use onboard::messages::{CommandType, Schemas};

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(onboard::registry::schemas);

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for t in CommandType::ALL {
        if let Err(details) = SCHEMAS.check(t, &value) {
            assert!(!details.is_empty() && details.len() <= 10);
        }
    }
    let _ = NewClient::parse(&value);
});

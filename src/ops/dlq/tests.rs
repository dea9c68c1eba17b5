use crate::broker::headers;
use crate::broker::headers::string;
use chrono::DateTime;
use lapin::types::AMQPValue;
use lapin::types::FieldTable;

use super::*;

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn ours(reason: &str, at: &str) -> DeadLetter {
    let props = BasicProperties::default()
        .with_message_id("m-1".into())
        .with_headers(table(&[
            (headers::REASON, string(reason)),
            (headers::FAILURE, string("retries_exhausted")),
            (headers::DEAD_LETTERED_AT, string(at)),
            (headers::FIRST_FAILED_AT, string("2024-01-01T00:00:00.000Z")),
            (headers::ROUTING_KEY, string("client.create")),
            (headers::ATTEMPT, AMQPValue::LongLongInt(3)),
            (headers::TRACEPARENT, string("00-abc")),
            ("x-death", AMQPValue::FieldArray(vec![].into())),
        ]));
    DeadLetter::from_parts("client.create", props, b"{}".to_vec())
}

#[test]
fn our_headers_give_type_reason_attempts_and_times() {
    let dl = ours("boom 42", "2024-01-02T00:00:00.000Z");
    assert_eq!(dl.command_type, "client.create");
    assert_eq!(dl.failure, "retries_exhausted");
    assert_eq!(dl.attempts, 3);
    assert_eq!(dl.fingerprint, fingerprint("boom 7"));
    assert_eq!(
        dl.last_failed_at.unwrap().to_rfc3339(),
        "2024-01-02T00:00:00+00:00"
    );
}

#[test]
fn a_broker_dead_letter_is_explained_from_x_death() {
    let death = table(&[
        ("reason", string("delivery_limit")),
        ("queue", string("p.commands")),
        ("time", AMQPValue::Timestamp(1_700_000_000)),
        ("count", AMQPValue::LongLongInt(1)),
    ]);
    let props = BasicProperties::default().with_headers(table(&[
        (
            "x-death",
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        ),
        ("x-delivery-count", AMQPValue::LongLongInt(20)),
    ]));
    let dl = DeadLetter::from_parts("client.create", props, vec![]);
    assert_eq!(dl.failure, "broker:delivery_limit");
    assert!(dl.reason.contains("p.commands"), "{}", dl.reason);
    assert_eq!(dl.attempts, 20);
    assert_eq!(dl.last_failed_at.unwrap().timestamp(), 1_700_000_000);
    assert_eq!(dl.message_id, None);
}

#[test]
fn a_replayed_copy_starts_afresh_and_counts_the_replay() {
    let dl = ours("boom", "2024-01-02T00:00:00.000Z");
    let props = dl.replay_properties();
    let h = props.headers().as_ref();
    assert_eq!(headers::get_u32(h, headers::ATTEMPT), Some(0));
    assert_eq!(headers::get_u32(h, headers::REPLAYS), Some(1));
    assert_eq!(
        headers::get_str(h, headers::TRACEPARENT).as_deref(),
        Some("00-abc")
    );
    for gone in [headers::REASON, headers::FAILURE, "x-death"] {
        assert_eq!(headers::get_str(h, gone), None, "{gone}");
    }
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
    let again = DeadLetter::from_parts("client.create", props, vec![]);
    assert_eq!(
        headers::get_u32(
            again.replay_properties().headers().as_ref(),
            headers::REPLAYS
        ),
        Some(2)
    );
}

#[test]
fn selectors_combine_and_ages_compare_with_the_dead_letter_time() {
    let now = DateTime::parse_from_rfc3339("2024-01-02T01:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let dl = ours("Database: pool timed out", "2024-01-02T00:00:00.000Z");
    let s = |f: &dyn Fn(&mut Selector)| {
        let mut s = Selector::default();
        f(&mut s);
        s.matches(&dl, now)
    };
    assert!(s(&|_| {}));
    assert!(s(&|s| s.reason = Some("POOL timed".into())));
    assert!(!s(&|s| s.reason = Some("deadlock".into())));
    assert!(s(&|s| s.command_type = Some("client.create".into())));
    assert!(!s(&|s| s.command_type = Some("client.approve".into())));
    assert!(s(&|s| s.older_than = Some(Duration::from_secs(1800))));
    assert!(!s(&|s| s.older_than = Some(Duration::from_secs(7200))));
    assert!(s(&|s| s.newer_than = Some(Duration::from_secs(7200))));
    assert!(!s(&|s| s.newer_than = Some(Duration::from_secs(1800))));
    assert!(s(&|s| s.ids = vec!["m-1".into()]));
    assert!(!s(&|s| s.ids = vec!["m-2".into()]));
    assert!(s(&|s| s.group = Some(dl.fingerprint[..6].to_string())));
    assert!(Selector::default().is_empty());
}

#[test]
fn ages_parse_with_units() {
    assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_age("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_age("3d").unwrap(), Duration::from_secs(259_200));
    assert!(parse_age("soon").is_err());
    assert!(parse_age("5y").is_err());
}

#[test]
fn groups_count_one_line_per_cause() {
    let mut a = ours("client 1 blocked", "2024-01-02T00:00:00.000Z");
    let b = ours("client 2 blocked", "2024-01-03T00:00:00.000Z");
    let c = ours("something else", "2024-01-03T00:00:00.000Z");
    a.message_id = Some("m-a".into());
    let groups = group(&[a, b, c]);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].count, 2);
    assert_eq!(groups[0].reason, "client <n> blocked");
    assert_eq!(groups[0].types["client.create"], 2);
    assert_eq!(groups[0].sample_ids, vec!["m-a", "m-1"]);
}

use super::*;

#[test]
fn the_broker_text_names_the_argument_and_both_values() {
    let m = Mismatch::parse(
        "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 't.commands' in \
         vhost '/': received the value '20' of type 'signedint' but current is the value '5' \
         of type 'long'",
    )
    .unwrap();
    assert_eq!(m.argument, "x-delivery-limit");
    assert_eq!(m.ours, "20");
    assert_eq!(m.theirs.as_deref(), Some("5"));

    let m = Mismatch::parse(
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost \
         '/': received the value 't.dead' of type 'longstr' but current is none",
    )
    .unwrap();
    assert_eq!(m.theirs, None);
    assert!(Mismatch::parse("NOT_FOUND - no queue 'q'").is_none());

    let m = Mismatch::parse(
        "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost \
         '/': received '20' but current is '5'",
    )
    .unwrap();
    assert_eq!((m.ours.as_str(), m.theirs.as_deref()), ("20", Some("5")));
    assert_eq!(m.theirs_value(), Some(Some(AMQPValue::LongLongInt(5))));
    let m = Mismatch::parse(
        "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost \
         '/': received none but current is the value '5' of type 'long'",
    )
    .unwrap();
    assert_eq!(
        (m.ours.as_str(), m.theirs.as_deref()),
        ("nothing", Some("5"))
    );
}

//! Logging through `tracing`: human-readable or JSON, filtered by `log.filter` or `RUST_LOG`.
//! Handlers log ids and outcomes, never bodies, so no email, phone or secret reaches a log.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::configuration::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// W3C trace context (`traceparent: 00-<trace-id>-<parent-id>-<flags>`), carried from a
/// command to the events and replies it causes.
///
/// The worker's handling of a command is one span of the caller's trace: it keeps the trace
/// id and the flags and takes a fresh span id, so a tracing backend shows "command → worker →
/// events" as parent and child. A command without a valid `traceparent` starts a new trace,
/// so what it causes can still be followed.
pub fn child_traceparent(parent: Option<&str>) -> String {
    let span_id = loop {
        let id: u64 = rand::random();
        if id != 0 {
            break id;
        }
    };
    match parent.and_then(parse_traceparent) {
        Some((trace_id, _, flags)) => format!("00-{trace_id}-{span_id:016x}-{flags}"),
        None => {
            let trace_id = loop {
                let id: u128 = rand::random();
                if id != 0 {
                    break id;
                }
            };
            format!("00-{trace_id:032x}-{span_id:016x}-01")
        }
    }
}

/// The trace id of a valid `traceparent`, for log lines.
pub fn trace_id(traceparent: Option<&str>) -> Option<&str> {
    traceparent.and_then(parse_traceparent).map(|(t, _, _)| t)
}

/// `(trace-id, parent-id, flags)` of a valid header. Per the W3C spec: lowercase hex, ids not
/// all zeros, version `ff` invalid; later versions may append fields after the flags.
pub fn parse_traceparent(header: &str) -> Option<(&str, &str, &str)> {
    let header = header.trim();
    let mut parts = header.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some((trace_id, parent_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_child_keeps_the_trace_id_and_flags_and_gets_a_new_span_id() {
        let child = child_traceparent(Some(PARENT));
        let (trace, span, flags) = parse_traceparent(&child).expect("valid child");
        assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(span, "b7ad6b7169203331");
        assert_eq!(flags, "01");
        assert_ne!(child_traceparent(Some(PARENT)), child);
    }

    #[test]
    fn a_missing_or_invalid_parent_starts_a_new_valid_trace() {
        for bad in [
            None,
            Some(""),
            Some("garbage"),
            Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
            Some("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"),
            Some("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ] {
            let t = child_traceparent(bad);
            assert!(parse_traceparent(&t).is_some(), "{bad:?} -> {t}");
            assert_ne!(trace_id(Some(&t)), Some("0af7651916cd43dd8448eb211c80319c"));
        }
    }
}

//! Logging through `tracing`: human-readable or JSON, filtered by `log.filter` or `RUST_LOG`.
//! Handlers log ids and outcomes, never bodies, so no email, phone or secret reaches a log.
//!
//! Traces: with `telemetry.otlp_endpoint` set, the worker's spans go to an OpenTelemetry
//! collector over OTLP/HTTP, through `tracing-opentelemetry`. A command's trace is the one its
//! `traceparent` names: `receive <type>` (child of the caller's span) → `handle <type>` (the
//! batch transaction that decided it) → `saga <step>` for each saga step, with the Xendit
//! calls and the SMTP send inside → `publish <type>` for every event and reply. Without an
//! endpoint none of these spans is made ([`exporting`]), so tracing costs nothing when off.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use serde::Deserialize;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// A span that exists for the trace export alone: `tracing::info_span!(...)` when spans are
/// exported, else `Span::none()` (its fields are not even evaluated then).
#[macro_export]
macro_rules! export_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::exporting() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Whether spans are exported: the spans that exist only for the export are made only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What [`init`] set up; [`Telemetry::shutdown`] exports the spans still buffered.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (on its own thread: the OTLP client is a blocking one,
    /// which must not be dropped on the async runtime).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            EXPORTING.store(false, Ordering::Relaxed);
            let _ = std::thread::spawn(move || {
                if let Err(e) = provider.shutdown() {
                    eprintln!("telemetry: the last spans could not be exported: {e}");
                }
            })
            .join();
        }
    }
}

/// The OTLP traces URL of a configured endpoint: `<base>/v1/traces`, unless it is one already.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// Where spans go, if anywhere: `telemetry.otlp_endpoint`, else the OpenTelemetry variables
/// every SDK reads (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, `OTEL_EXPORTER_OTLP_ENDPOINT`
/// plus `/v1/traces`); `OTEL_SDK_DISABLED=true` turns export off whatever is set.
pub fn export_url(
    telemetry: &TelemetrySettings,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let set = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if set(env("OTEL_SDK_DISABLED")).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(endpoint) = set(telemetry.otlp_endpoint.clone()) {
        return Some(traces_url(&endpoint));
    }
    if let Some(url) = set(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        return Some(url);
    }
    set(env("OTEL_EXPORTER_OTLP_ENDPOINT")).map(|e| traces_url(&e))
}

/// Logs (and, when configured, trace export) for this process.
pub fn init(log: &LogSettings, telemetry: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match log.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt.compact().with_filter(filter).boxed(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let Some(url) = export_url(telemetry, env) else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(Telemetry { provider: None });
    };
    let mut telemetry = telemetry.clone();
    if let Some(name) = env("OTEL_SERVICE_NAME").filter(|n| !n.trim().is_empty()) {
        telemetry.service_name = name;
    }
    let provider = tracer_provider(&url, &telemetry)?;
    // Only the worker's own spans (and the log events inside them), whatever the log filter
    // says: a quiet log must not thin the traces.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("onboard"))
        .with_filter(Targets::new().with_target("onboard", tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %url, sample_ratio = telemetry.sample_ratio, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The exporter and its batch processor, built on a thread of their own (the blocking HTTP
/// client cannot be made on the async runtime).
fn tracer_provider(url: &str, telemetry: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let url = url.to_string();
    let settings = telemetry.clone();
    std::thread::spawn(move || -> anyhow::Result<SdkTracerProvider> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_millis(settings.export_timeout_ms))
            .with_headers(HashMap::new())
            .build()?;
        let ratio = settings.sample_ratio.clamp(0.0, 1.0);
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))?
}

/// Makes `span` a child of the span a `traceparent` names (a no-op when spans are not
/// exported, or the header is missing or invalid).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if !exporting() {
        return;
    }
    let Some(tp) = traceparent.filter(|t| parse_traceparent(t).is_some()) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The `traceparent` of the current span, for an outside call to carry (W3C propagation), when
/// spans are exported.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` naming `span`, when it is an exported span.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
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

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

/// OpenTelemetry spans over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`: spans are posted to
    /// `<it>/v1/traces` (a URL that already ends in `/v1/traces` is used as it is). Unset or
    /// empty: the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables, and without those no span
    /// is exported and none of the export's spans is even made.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry.
    pub service_name: String,
    /// The share of new traces kept (0.0-1.0). A command whose `traceparent` says sampled is
    /// always followed, one that says not sampled never (parent-based sampling).
    pub sample_ratio: f64,
    /// How long one export may take before it is given up (spans are then dropped, never
    /// waited for by the worker).
    pub export_timeout_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            service_name: "onboard".into(),
            sample_ratio: 1.0,
            export_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_export_url_comes_from_the_setting_then_the_standard_variables() {
        let with = |endpoint: Option<&str>| TelemetrySettings {
            otlp_endpoint: endpoint.map(str::to_string),
            ..TelemetrySettings::default()
        };
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(export_url(&with(None), vars(&[])), None);
        assert_eq!(export_url(&with(Some("  ")), vars(&[])), None);
        assert_eq!(
            export_url(&with(Some("http://c:4318/")), vars(&[])).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            export_url(&with(Some("http://c:4318/v1/traces")), vars(&[])).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        let standard = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o:4318")]);
        assert_eq!(
            export_url(&with(None), standard).as_deref(),
            Some("http://o:4318/v1/traces")
        );
        let both = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/traces"),
        ]);
        assert_eq!(
            export_url(&with(None), both).as_deref(),
            Some("http://t:9999/traces")
        );
        // The setting wins over the variables; OTEL_SDK_DISABLED over everything.
        assert_eq!(
            export_url(&with(Some("http://c:4318")), both).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        let disabled = vars(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://o:4318"),
        ]);
        assert_eq!(export_url(&with(Some("http://c:4318")), disabled), None);
    }

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

//! OpenTelemetry traces over OTLP/gRPC, off unless an endpoint is
//! configured (`[tracing] otlp_endpoint`, `--otlp-endpoint`).
//!
//! One server span per call (`Generate` on the gRPC listener, the HTTP
//! inference routes), child of the client's `traceparent` when it sent
//! one; it carries the model, the protocol, the policy and the worker, and
//! ends when the call does (the relayed stream's end, error or cancel). A
//! PD call has a child span per side. A worker that could not be reached
//! and was passed over is an event (`retry`) on the call's span. The
//! worker gets a `traceparent` naming the router's span (the PD sides:
//! their own spans), so a trace runs client → router → worker; a trace
//! the router started and did not sample is not announced to workers.
//!
//! Sampling: a client's `traceparent` decides for its calls; of the rest,
//! `sample_ratio` (default 0.01) are sampled, decided before any span is
//! made: an unsampled call without a client trace has no span and costs a
//! random draw. A sampled call costs about a quarter more router
//! instructions (see docs/BENCHMARKS.md).
//!
//! Spans are batched and exported from a background thread; when the
//! collector cannot keep up, the batch queue (2,048 spans) drops the
//! newest rather than grow. With tracing off, a call's [`CallSpan`] is
//! `None` and costs nothing.

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanKind, SpanRef, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use tonic::transport::ClientTlsConfig;

use crate::config::TracingConfig;
use crate::worker::Worker;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {message}")]
pub struct TracingError {
    endpoint: String,
    message: String,
}

/// The exporting side of tracing: flushed and stopped by [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts exporting to `config.otlp_endpoint`, if set: the pipeline and
    /// the tracer the routers start spans with. Must run inside the tokio
    /// runtime (the exporter's gRPC client lives on it).
    pub fn start(config: &TracingConfig) -> Result<(Option<Telemetry>, Tracer), TracingError> {
        let Some(endpoint) = config.otlp_endpoint.as_deref() else {
            return Ok((None, Tracer::default()));
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10));
        if endpoint.starts_with("https://") {
            // The system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured):
            // without them the exporter's TLS would trust nothing.
            exporter = exporter.with_tls_config(ClientTlsConfig::new().with_native_roots());
        }
        let exporter = exporter.build().map_err(|e| TracingError {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A client's sampling decision (its traceparent's flag) is kept;
            // a trace that starts here reaches the SDK only once
            // `Tracer::call` has sampled it at the configured ratio.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = Tracer(Some(Sdk {
            tracer: provider.tracer("switchyard"),
            ratio: config.sample_ratio,
        }));
        Ok((Some(Telemetry { provider }), tracer))
    }

    /// Exports the spans still queued and stops (on shutdown).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces not flushed at shutdown");
        }
    }
}

/// Starts calls' spans; the default is off.
#[derive(Debug, Clone, Default)]
pub struct Tracer(Option<Sdk>);

#[derive(Debug, Clone)]
struct Sdk {
    tracer: SdkTracer,
    /// The share of calls arriving without a trace that start one.
    ratio: f64,
}

impl Tracer {
    /// The span of one call named `name` (the method or route) with
    /// `attributes` known at its start, a child of the `traceparent` in the
    /// client's `headers` if any.
    pub fn call(
        &self,
        name: impl Into<Cow<'static, str>>,
        headers: &HeaderMap,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> CallSpan {
        let Some(Sdk { tracer, ratio }) = &self.0 else {
            return CallSpan::default();
        };
        let parent = if headers.contains_key(TRACEPARENT_HEADER) {
            TraceContextPropagator::new().extract(&Extract(headers))
        } else {
            Context::new()
        };
        // No client trace (none sent, or one that does not parse): sampled
        // here at the ratio, and if not, no span at all (a span the SDK
        // would not record costs as much to start as the rest of the call's
        // tracing, and there is no client decision to pass on).
        let sampled_here = || *ratio >= 1.0 || (*ratio > 0.0 && rand::random::<f64>() < *ratio);
        if !(parent.span().span_context().is_valid() || sampled_here()) {
            return CallSpan::default();
        }
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes())
            .start_with_context(tracer, &parent);
        CallSpan::new(tracer, parent.with_span(span))
    }
}

/// One call's span (or nothing, when tracing is off). The span ends when
/// the last clone is dropped.
#[derive(Debug, Clone, Default)]
pub struct CallSpan(Option<Box<Traced>>);

/// A span and what makes its children. Every span is passed on to
/// workers: it continues a client's trace (whose decision, sampled or not,
/// the worker must hear) or is one the router started and sampled.
#[derive(Debug, Clone)]
struct Traced {
    tracer: SdkTracer,
    /// The context whose span this is.
    cx: Context,
    /// Whether the span is sampled: attributes and events are kept only
    /// then, so an unsampled call skips making them.
    recording: bool,
}

impl CallSpan {
    fn new(tracer: &SdkTracer, cx: Context) -> CallSpan {
        let recording = cx.span().is_recording();
        CallSpan(Some(Box::new(Traced {
            tracer: tracer.clone(),
            cx,
            recording,
        })))
    }

    /// The span's context, for workers to hear of it.
    fn propagated(&self) -> Option<&Context> {
        self.0.as_ref().map(|inner| &inner.cx)
    }

    /// The span, if it is sampled.
    fn recorded(&self) -> Option<SpanRef<'_>> {
        self.0
            .as_ref()
            .filter(|inner| inner.recording)
            .map(|inner| inner.cx.span())
    }

    /// Whether this call is traced and sampled (what callers check before
    /// making attribute values).
    pub fn is_on(&self) -> bool {
        self.recorded().is_some()
    }

    /// Sets an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(span) = self.recorded() {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Names the worker that took the call.
    pub fn worker(&self, worker: &Worker) {
        if let Some(span) = self.recorded() {
            span.set_attribute(KeyValue::new("worker.id", worker.id().shared()));
            span.set_attribute(KeyValue::new("worker.url", worker.url().to_string()));
        }
    }

    /// Records an event named `name`.
    pub fn event(&self, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(span) = self.recorded() {
            span.add_event(name, attributes());
        }
    }

    /// Marks the call failed with `error` (its message).
    pub fn fail(&self, error: &impl std::fmt::Display) {
        if let Some(span) = self.recorded() {
            span.set_status(Status::error(error.to_string()));
        }
    }

    /// A child span named `name` (a PD side), a client span toward a worker.
    pub fn child(&self, name: &'static str) -> CallSpan {
        let Some(inner) = &self.0 else {
            return CallSpan::default();
        };
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .start_with_context(&inner.tracer, &inner.cx);
        CallSpan::new(&inner.tracer, inner.cx.with_span(span))
    }

    /// Writes this span's `traceparent` (and `tracestate`, if any) into
    /// `headers`, the request to a worker, replacing the client's. Nothing
    /// when off (the client's own, if any, goes through unchanged) or for
    /// an unsampled trace the router started.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let Some(cx) = self.propagated() else { return };
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        headers.insert(TRACEPARENT_HEADER, traceparent(context));
        let state = context.trace_state().header();
        match HeaderValue::try_from(state) {
            Ok(state) if !state.is_empty() => {
                headers.insert(TRACESTATE_HEADER, state);
            }
            _ => {
                headers.remove(TRACESTATE_HEADER);
            }
        }
    }

    /// This span's `traceparent` value, for a request built without a
    /// header map (`None` when off).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let span = self.propagated()?.span();
        let context = span.span_context();
        context.is_valid().then(|| traceparent(context))
    }
}

/// The W3C `traceparent` of `context`: `00-TRACE-SPAN-FLAGS` in lowercase
/// hex. Written here rather than by the SDK's propagator, whose `format!`
/// cost more than the rest of a span's start (measured with callgrind).
fn traceparent(context: &SpanContext) -> HeaderValue {
    fn hex(out: &mut [u8], bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
    }
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&mut out[3..35], &context.trace_id().to_bytes());
    hex(&mut out[36..52], &context.span_id().to_bytes());
    hex(&mut out[53..55], &[context.trace_flags().to_u8()]);
    // Only hex digits and dashes: always a valid header value. Unique per
    // call, so never indexed in HPACK (it would only evict useful entries).
    let mut value = HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
/// Its vendor companion.
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static("tracestate");

/// Reads trace context from an `http::HeaderMap`.
struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK propagator's writer, to compare ours with.
    struct Inject<'a>(&'a mut HeaderMap);

    impl opentelemetry::propagation::Injector for Inject<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(
                HeaderName::from_bytes(key.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
    }

    /// A tracer as `Telemetry::start` makes it, sampling at `ratio`.
    fn tracer(ratio: f64) -> Tracer {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .build();
        Tracer(Some(Sdk {
            tracer: provider.tracer("test"),
            ratio,
        }))
    }

    #[test]
    fn calls_without_a_trace_start_one_at_the_ratio() {
        let all = tracer(1.0).call("Generate", &HeaderMap::new(), Vec::new);
        assert!(all.is_on());
        assert!(all
            .traceparent()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-01"));
        let some = tracer(0.5);
        let sampled = (0..2_000)
            .filter(|_| some.call("Generate", &HeaderMap::new(), Vec::new).is_on())
            .count();
        assert!((800..1_200).contains(&sampled), "{sampled} of 2,000 at 0.5");
    }

    #[test]
    fn an_unsampled_trace_started_here_is_not_announced_but_a_clients_is_passed_on() {
        let tracer = tracer(0.0);
        let root = tracer.call("Generate", &HeaderMap::new(), Vec::new);
        assert!(!root.is_on());
        assert!(root.traceparent().is_none() && root.child("decode").traceparent().is_none());

        let mut client = HeaderMap::new();
        client.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
        );
        let continued = tracer.call("Generate", &client, Vec::new);
        assert!(!continued.is_on(), "the client did not sample it");
        // A traceparent that does not parse is no client decision: the
        // ratio decides, as for a call without one.
        let mut garbage = HeaderMap::new();
        garbage.insert(TRACEPARENT, HeaderValue::from_static("00-not-a-trace-01"));
        let unparsed = tracer.call("Generate", &garbage, Vec::new);
        assert!(!unparsed.is_on() && unparsed.traceparent().is_none());
        for sent in [
            continued.traceparent(),
            continued.child("prefill").traceparent(),
        ] {
            let sent = sent.expect("the client's decision reaches the worker");
            let sent = sent.to_str().unwrap();
            assert!(
                sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent.ends_with("-00")
            );
        }
    }

    #[test]
    fn off_costs_nothing_and_leaves_headers_alone() {
        let span = Tracer::default().call("Generate", &HeaderMap::new(), Vec::new);
        assert!(!span.is_on());
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-abc-def-01"));
        span.inject(&mut headers);
        assert_eq!(headers[TRACEPARENT], "00-abc-def-01");
        assert!(span.child("prefill").traceparent().is_none());
    }

    #[test]
    fn a_call_span_continues_the_clients_trace_and_names_itself_to_the_worker() {
        let tracer = tracer(0.0);
        let mut client = HeaderMap::new();
        client.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let span = tracer.call("Generate", &client, Vec::new);
        let mut upstream = client.clone();
        span.inject(&mut upstream);
        let sent = upstream[TRACEPARENT].to_str().unwrap().to_string();
        // What the SDK's own propagator writes, byte for byte.
        let mut expected = HeaderMap::new();
        TraceContextPropagator::new()
            .inject_context(&span.0.as_ref().unwrap().cx, &mut Inject(&mut expected));
        assert_eq!(sent, expected[TRACEPARENT]);
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
        assert_ne!(
            parts[2], "b7ad6b7169203331",
            "the router's span, not the client's"
        );
        assert_eq!(parts[3], "01", "the client's sampled flag is kept");
        let prefill = span.child("prefill").traceparent().unwrap();
        let prefill = prefill.to_str().unwrap();
        assert!(prefill.contains("0af7651916cd43dd8448eb211c80319c"));
        assert!(
            !prefill.contains(parts[2]),
            "the side has a span of its own"
        );
    }
}

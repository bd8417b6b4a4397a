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
//! their own spans), so a trace runs client → router → worker.
//!
//! Spans are batched and exported from a background thread; when the
//! collector cannot keep up, the batch queue (2,048 spans) drops the
//! newest rather than grow. With tracing off, a call's [`CallSpan`] is
//! `None` and costs nothing.

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

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
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TracingError {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A client's sampling decision (its traceparent's flag) is kept;
            // traces that start here are sampled at the configured ratio.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = Tracer(Some(provider.tracer("switchyard")));
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
pub struct Tracer(Option<SdkTracer>);

impl Tracer {
    /// The span of one call named `name` (the method or route), a child
    /// of the `traceparent` in the client's `headers` if any.
    pub fn call(&self, name: impl Into<Cow<'static, str>>, headers: &HeaderMap) -> CallSpan {
        let Some(tracer) = &self.0 else {
            return CallSpan::default();
        };
        let parent = TraceContextPropagator::new().extract(&Extract(headers));
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        CallSpan(Some(Box::new((tracer.clone(), parent.with_span(span)))))
    }
}

/// One call's span (or nothing, when tracing is off). The span ends when
/// the last clone is dropped.
#[derive(Debug, Clone, Default)]
pub struct CallSpan(Option<Box<(SdkTracer, Context)>>);

impl CallSpan {
    /// Whether tracing is on for this call.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Sets an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(inner) = &self.0 {
            inner.1.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Names the worker that took the call.
    pub fn worker(&self, worker: &Worker) {
        if let Some(inner) = &self.0 {
            let span = inner.1.span();
            span.set_attribute(KeyValue::new("worker.id", worker.id().to_string()));
            span.set_attribute(KeyValue::new("worker.url", worker.url().to_string()));
        }
    }

    /// Records an event named `name`.
    pub fn event(&self, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(inner) = &self.0 {
            inner.1.span().add_event(name, attributes());
        }
    }

    /// Marks the call failed with `error` (its message).
    pub fn fail(&self, error: &impl std::fmt::Display) {
        if let Some(inner) = &self.0 {
            inner.1.span().set_status(Status::error(error.to_string()));
        }
    }

    /// A child span named `name` (a PD side), a client span toward a worker.
    pub fn child(&self, name: &'static str) -> CallSpan {
        let Some(inner) = &self.0 else {
            return CallSpan::default();
        };
        let (tracer, cx) = &**inner;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .start_with_context(tracer, cx);
        CallSpan(Some(Box::new((tracer.clone(), cx.with_span(span)))))
    }

    /// Writes this span's `traceparent` (and `tracestate`) into `headers`,
    /// the request to a worker, replacing the client's. Nothing when off:
    /// the client's own, if any, goes through unchanged.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(inner) = &self.0 {
            TraceContextPropagator::new().inject_context(&inner.1, &mut Inject(headers));
        }
    }

    /// This span's `traceparent` value, for a request built without a
    /// header map (`None` when off).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let mut headers = HeaderMap::new();
        self.inject(&mut headers);
        headers.remove(TRACEPARENT)
    }
}

/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";

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

/// Writes trace context into an `http::HeaderMap`.
struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_costs_nothing_and_leaves_headers_alone() {
        let span = Tracer::default().call("Generate", &HeaderMap::new());
        assert!(!span.is_on());
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-abc-def-01"));
        span.inject(&mut headers);
        assert_eq!(headers[TRACEPARENT], "00-abc-def-01");
        assert!(span.child("prefill").traceparent().is_none());
    }

    #[test]
    fn a_call_span_continues_the_clients_trace_and_names_itself_to_the_worker() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = Tracer(Some(provider.tracer("test")));
        let mut client = HeaderMap::new();
        client.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let span = tracer.call("Generate", &client);
        let mut upstream = client.clone();
        span.inject(&mut upstream);
        let sent = upstream[TRACEPARENT].to_str().unwrap().to_string();
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

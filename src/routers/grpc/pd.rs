//! The gRPC prefill/decode (PD) router: one `Generate` call served by a
//! prefill worker and a decode worker together.
//!
//! Per call: resolve the model's prefill and decode candidates, let the
//! prefill policy (default cache_aware) and the decode policy (default
//! power_of_two) choose, and hand both workers the same bootstrap host, port
//! (the prefill worker's) and a room unique among calls in flight, so they
//! can rendezvous and move the KV cache. Both calls start at once; the client
//! receives the decode stream while a task drains the prefill stream.
//!
//! vLLM's PD is sequential instead: the prefill side runs to its end and
//! hands the decode side its KV transfer parameters.
//!
//! The dispatch itself (both sides at once or one after the other, failure
//! rules, cancellation, load) is the shared one in `routers::pd`; this file
//! says how the gRPC wire calls each side ([`GrpcPd`]).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use tokio::time::Instant;

use crate::engines::{self, EngineSeam, PdStyle};
use crate::policies::PolicyConfig;
use crate::routers::call::AbortOnDrop;
use crate::routers::grpc::{append_encoded, open, Inbound, Opened, Proxied};
use crate::routers::pd::{self, Pair, PdPolicies, PdWire};
use crate::routers::rooms::BootstrapRooms;
use crate::routers::{
    InflightCalls, RouteError, DECODE_WORKER_ID_HEADER, PREFILL_WORKER_ID_HEADER,
};
use crate::telemetry::CallSpan;
use crate::transport::grpc::codec::Deframer;
use crate::transport::Failure;
use crate::worker::registry::Snapshot;
use crate::worker::{stats, ConnectionMode, Worker, WorkerRegistry};

/// Routes `Generate` to prefill/decode pairs of gRPC workers.
#[derive(Debug)]
pub struct GrpcPdRouter {
    policies: PdPolicies,
    rooms: BootstrapRooms,
}

impl GrpcPdRouter {
    /// Its prefill and decode policies.
    pub fn policies(&self) -> &PdPolicies {
        &self.policies
    }

    /// A PD router over `registry` with the prefill and decode policies of
    /// `config` (each instance subscribed to the registry).
    pub fn new(
        registry: Arc<WorkerRegistry>,
        config: &PolicyConfig,
        rooms: BootstrapRooms,
    ) -> Self {
        GrpcPdRouter {
            policies: PdPolicies::build(config, &registry),
            rooms,
        }
    }

    /// Proxies one call for `model` to a prefill and a decode worker.
    pub async fn generate(
        &self,
        inbound: Inbound,
        model: &str,
        snapshot: &Snapshot,
        inflight: &Arc<InflightCalls>,
        trace: &CallSpan,
    ) -> Result<Proxied, RouteError> {
        let facts = inbound.facts(model, self.policies.reads_prompt(model));
        let pair = self
            .policies
            .choose(snapshot, ConnectionMode::Grpc, &facts)?;
        let Pair {
            prefill, decode, ..
        } = &pair;
        tracing::Span::current().record(
            "worker",
            tracing::field::display(format_args!("{}+{}", prefill.id(), decode.id())),
        );

        let sides = Sides::new(trace, &pair, self.policies.names(model));
        let seam = engines::seam(inbound.protocol);
        let (prefill_body, decode_body, sequential, room) = match seam.pd() {
            // vLLM's: the prefill side first, told to keep its KV cache for
            // a remote decode; the decode side then gets the transfer
            // parameters the prefill side returned.
            PdStyle::Sequential => (
                append_encoded(inbound.body.clone(), &seam.prefill_fields()),
                inbound.body.clone(),
                Some(seam),
                None,
            ),
            PdStyle::Bootstrap { rooms_below } => {
                // The router picks rooms (a duplicate room crashes SGLang's
                // schedulers) and replaces the client's.
                let room = match rooms_below {
                    Some(bound) => self.rooms.claim_below(bound),
                    None => self.rooms.claim(),
                };
                let fields = seam.bootstrap(
                    prefill.endpoint().bare_host(),
                    pair.bootstrap_port,
                    room.id(),
                );
                let body = append_encoded(inbound.body.clone(), &fields);
                (body.clone(), body, None, Some(room))
            }
            PdStyle::None => {
                return Err(RouteError::InvalidRequest(format!(
                    "{} workers have no prefill/decode disaggregation",
                    inbound.protocol
                )))
            }
        };
        self.policies.record(&pair, &facts);
        let entry = inflight.register(&inbound.request_id, vec![prefill.clone(), decode.clone()]);

        let wire = GrpcPd {
            headers: inbound.upstream_headers(),
            prefill_body,
            decode_body,
            sequential,
            deadline: inbound.deadline,
            request_id: &inbound.request_id,
            sides: &sides,
            received: inbound.received,
        };
        let started = pd::start(&wire, prefill, decode).await?;
        let (worker_headers, stream, timer) = started.decode;
        let mut headers = inbound.response_headers(worker_headers);
        headers.insert(PREFILL_WORKER_ID_HEADER, prefill.id_value().clone());
        headers.insert(DECODE_WORKER_ID_HEADER, decode.id_value().clone());
        let stream = started
            .decode_attempt
            .opened(
                decode.clone(),
                stream,
                timer,
                Box::new((entry, room, sides.decode)),
            )
            .with_companion(started.companion);
        Ok((headers, stream))
    }
}

/// Runs a sequential PD's prefill call to its end: the transfer
/// parameters its last message carried.
async fn run_prefill(
    seam: &dyn EngineSeam,
    worker: &Worker,
    headers: HeaderMap,
    body: &[u8],
) -> Result<String, RouteError> {
    let failed = |failure| RouteError::WorkerFailed {
        worker: worker.id().clone(),
        failure,
    };
    let (_, mut stream) = worker
        .upstream()
        .call(worker.engine().generate_path(), headers, body)
        .await
        .map_err(|e| RouteError::from_call(worker, e))?;
    let mut frames = Deframer::default();
    let mut params = None;
    while let Some(chunk) = stream.chunk().await.map_err(failed)? {
        frames.push(&chunk);
        while let Some(message) = frames
            .next_message()
            .map_err(|_| failed(Failure::Protocol))?
        {
            if let Some(found) = seam.transfer_params(message).map_err(failed)? {
                params = Some(found);
            }
        }
    }
    params.ok_or_else(|| {
        failed(Failure::BadReply(
            "prefill completion: it carries no KV transfer parameters (is the worker started with a KV connector?)",
        ))
    })
}

/// The spans of a PD call's two sides, children of the call's.
struct Sides {
    prefill: CallSpan,
    decode: CallSpan,
}

impl Sides {
    /// Spans for `pair`'s sides, chosen by the `policies` named.
    fn new(trace: &CallSpan, pair: &Pair, policies: (&'static str, &'static str)) -> Sides {
        let side = |name, worker: &Arc<Worker>, policy| {
            let span = trace.child(name);
            span.worker(worker);
            span.set("switchyard.policy", policy);
            span
        };
        Sides {
            prefill: side("prefill", &pair.prefill, policies.0),
            decode: side("decode", &pair.decode, policies.1),
        }
    }

    /// `headers` with `side`'s `traceparent`.
    fn with(mut headers: HeaderMap, side: &CallSpan) -> HeaderMap {
        side.inject(&mut headers);
        headers
    }
}

/// How a gRPC PD call reaches each side: the call's headers (but for each
/// side's `traceparent`) within its deadline, and each side's message (with
/// the bootstrap parameters to both; or, sequential, the prefill fields to
/// the prefill side and the transfer parameters it returns to the decode
/// side).
struct GrpcPd<'a> {
    headers: HeaderMap,
    prefill_body: Bytes,
    decode_body: Bytes,
    /// The engine, when its PD is sequential (its fields and parameters).
    sequential: Option<&'static dyn EngineSeam>,
    deadline: Instant,
    request_id: &'a str,
    sides: &'a Sides,
    received: Instant,
}

impl PdWire for GrpcPd<'_> {
    type Opened = Opened;
    /// The KV transfer parameters of a sequential prefill.
    type Handoff = Option<String>;

    fn sequential(&self) -> bool {
        self.sequential.is_some()
    }

    fn run_prefill(
        &self,
        worker: Arc<Worker>,
    ) -> impl Future<Output = Result<Option<String>, RouteError>> + Send + 'static {
        let headers = Sides::with(self.headers.clone(), &self.sides.prefill);
        let (body, span) = (self.prefill_body.clone(), self.sides.prefill.clone());
        let (sequential, deadline) = (self.sequential, self.deadline);
        async move {
            let failed = |failure| RouteError::WorkerFailed {
                worker: worker.id().clone(),
                failure,
            };
            let ran = async {
                if let Some(seam) = sequential {
                    // The decode side waits on it: bounded by the deadline.
                    let run = run_prefill(seam, &worker, headers, &body);
                    return match tokio::time::timeout_at(deadline, run).await {
                        Ok(params) => params.map(Some),
                        Err(_) => Err(RouteError::DeadlineExceeded {
                            worker: worker.id().clone(),
                            streaming: false,
                        }),
                    };
                }
                let (_, mut stream) = worker
                    .upstream()
                    .call(worker.engine().generate_path(), headers, &body)
                    .await
                    .map_err(|e| failed(e.failure))?;
                while stream.chunk().await.map_err(failed)?.is_some() {}
                Ok(None)
            };
            // The prefill side's span ends with it.
            ran.await.inspect_err(|error| span.fail(error))
        }
    }

    fn open_decode(
        &self,
        worker: &Arc<Worker>,
        handoff: Option<Option<String>>,
    ) -> impl Future<Output = Result<Opened, RouteError>> + Send {
        let headers = Sides::with(self.headers.clone(), &self.sides.decode);
        let body = match (self.sequential, handoff.flatten()) {
            (Some(seam), Some(params)) => {
                append_encoded(self.decode_body.clone(), &seam.decode_fields(params))
            }
            _ => self.decode_body.clone(),
        };
        let (worker, deadline) = (worker.clone(), self.deadline);
        async move { open(&worker, headers, &body, deadline).await }
    }

    fn received(&self) -> (stats::Route, Instant) {
        (stats::Route::Grpc, self.received)
    }

    fn abort_guard(&self, worker: &Arc<Worker>) -> Option<AbortOnDrop> {
        Some(AbortOnDrop::new(
            worker.clone(),
            self.request_id.to_string(),
        ))
    }
}

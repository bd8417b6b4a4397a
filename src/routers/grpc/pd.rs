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
//! The dispatch itself (both sides at once, failure rules, cancellation,
//! load) is the shared one in `routers::pd`; this file says how the gRPC
//! wire calls each side ([`GrpcPd`]).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use tokio::time::Instant;

use crate::pb;
use crate::policies::PolicyConfig;
use crate::routers::call::{AbortOnDrop, ProxyStream};
use crate::routers::grpc::{append_fields, open, Inbound, Opened, Proxied, GENERATE_PATH};
use crate::routers::pd::{self, Pair, PdPolicies, PdWire};
use crate::routers::rooms::BootstrapRooms;
use crate::routers::{
    InflightCalls, RouteError, DECODE_WORKER_ID_HEADER, PREFILL_WORKER_ID_HEADER,
};
use crate::worker::{ConnectionMode, Worker, WorkerRegistry};

/// Routes `Generate` to prefill/decode pairs of gRPC workers.
#[derive(Debug)]
pub struct GrpcPdRouter {
    registry: Arc<WorkerRegistry>,
    policies: PdPolicies,
    rooms: BootstrapRooms,
}

impl GrpcPdRouter {
    /// A PD router over `registry` with the prefill and decode policies of
    /// `config` (each instance subscribed to the registry).
    pub fn new(
        registry: Arc<WorkerRegistry>,
        config: &PolicyConfig,
        rooms: BootstrapRooms,
    ) -> Self {
        GrpcPdRouter {
            policies: PdPolicies::build(config, &registry),
            registry,
            rooms,
        }
    }

    /// Proxies one call for `model` to a prefill and a decode worker.
    pub async fn generate(
        &self,
        inbound: Inbound,
        model: &str,
        inflight: &Arc<InflightCalls>,
    ) -> Result<Proxied, RouteError> {
        let facts = inbound.facts(model);
        let pair = self
            .policies
            .choose(&self.registry, ConnectionMode::Grpc, &facts)?;
        let Pair {
            prefill, decode, ..
        } = &pair;
        tracing::Span::current().record(
            "worker",
            tracing::field::display(format_args!("{}+{}", prefill.id(), decode.id())),
        );

        let room = self.rooms.claim();
        let body = append_fields(
            inbound.body.clone(),
            &pb::GenerateRequest {
                disaggregated_params: Some(pb::DisaggregatedParams {
                    bootstrap_host: prefill.endpoint().bare_host().to_string(),
                    bootstrap_port: u32::from(pair.bootstrap_port),
                    bootstrap_room: room.id(),
                }),
                ..Default::default()
            },
        );
        self.policies.record(&pair, &facts);
        let entry = inflight.register(&inbound.request_id, vec![prefill.clone(), decode.clone()]);

        let wire = GrpcPd {
            headers: inbound.upstream_headers(),
            body,
            deadline: inbound.deadline,
            request_id: &inbound.request_id,
        };
        let started = pd::start(&wire, prefill, decode).await?;
        let (worker_headers, stream, timer) = started.decode;
        let mut headers = inbound.response_headers(worker_headers);
        headers.insert(PREFILL_WORKER_ID_HEADER, prefill.id_value().clone());
        headers.insert(DECODE_WORKER_ID_HEADER, decode.id_value().clone());
        let stream = ProxyStream::new(
            decode.clone(),
            stream,
            timer,
            started.decode_abort,
            Box::new((started.decode_load, entry, room)),
        )
        .with_companion(started.companion);
        Ok((headers, stream))
    }
}

/// How a gRPC PD call reaches each side: the same headers and message
/// (with bootstrap parameters) to both, within the call's deadline.
struct GrpcPd<'a> {
    headers: HeaderMap,
    body: Bytes,
    deadline: Instant,
    request_id: &'a str,
}

impl PdWire for GrpcPd<'_> {
    type Opened = Opened;

    fn run_prefill(
        &self,
        worker: Arc<Worker>,
    ) -> impl Future<Output = Result<(), RouteError>> + Send + 'static {
        let (headers, body) = (self.headers.clone(), self.body.clone());
        async move {
            let failed = |failure| RouteError::WorkerFailed {
                worker: worker.id().clone(),
                failure,
            };
            let (_, mut stream) = worker
                .upstream()
                .call(GENERATE_PATH, headers, &body)
                .await
                .map_err(|e| failed(e.failure))?;
            while stream.chunk().await.map_err(failed)?.is_some() {}
            Ok(())
        }
    }

    fn open_decode(
        &self,
        worker: &Arc<Worker>,
    ) -> impl Future<Output = Result<Opened, RouteError>> + Send {
        open(worker, self.headers.clone(), &self.body, self.deadline)
    }

    fn abort_guard(&self, worker: &Arc<Worker>) -> Option<AbortOnDrop> {
        Some(AbortOnDrop::new(
            worker.clone(),
            self.request_id.to_string(),
        ))
    }
}

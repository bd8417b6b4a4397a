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
//! Failure rules: prefill fails → the client gets that error and decode is
//! cancelled; decode fails (or the client cancels, or the deadline passes) →
//! prefill is cancelled. Every cancelled side is also sent `Abort`. Both
//! sides hold a load guard until their own stream ends.

use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::Status;

use crate::pb;
use crate::policies::{PolicyConfig, PolicySet};
use crate::proxy::{self, AbortOnDrop, Companion, ProxyStream, TaskGuard};
use crate::routers::grpc::{insert_worker_id, open, Inbound};
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::Candidates;
use crate::routers::{InflightCalls, RouteError};
use crate::worker::{ConnectionMode, LoadGuard, Worker, WorkerRegistry, WorkerRole};

/// Response metadata naming the prefill worker of a PD call.
pub const PREFILL_WORKER_ID_HEADER: &str = "x-switchyard-prefill-worker-id";
/// Response metadata naming the decode worker of a PD call.
pub const DECODE_WORKER_ID_HEADER: &str = "x-switchyard-decode-worker-id";

/// Routes `Generate` to prefill/decode pairs of gRPC workers.
#[derive(Debug)]
pub struct GrpcPdRouter {
    registry: Arc<WorkerRegistry>,
    prefill: PolicySet,
    decode: PolicySet,
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
            prefill: PolicySet::new(
                config.prefill,
                config.prefill_overrides(),
                config,
                &registry,
            ),
            decode: PolicySet::new(config.decode, config.decode_overrides(), config, &registry),
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
    ) -> Result<tonic::Response<ProxyStream>, RouteError> {
        let facts = inbound.facts(model);
        let prefill = Candidates::resolve(
            &self.registry,
            ConnectionMode::Grpc,
            WorkerRole::Prefill,
            model,
        )?
        .choose(&self.prefill, &facts)?;
        let decode = Candidates::resolve(
            &self.registry,
            ConnectionMode::Grpc,
            WorkerRole::Decode,
            model,
        )?
        .choose(&self.decode, &facts)?;
        let span = tracing::Span::current();
        span.record(
            "worker",
            tracing::field::display(format_args!("{}+{}", prefill.id(), decode.id())),
        );

        let room = self.rooms.claim();
        let params = bootstrap(&prefill, room.id())?;
        let body = proxy::append_fields(
            inbound.body.clone(),
            &pb::GenerateRequest {
                disaggregated_params: Some(params),
                ..Default::default()
            },
        );

        let prefill_load = LoadGuard::new(prefill.clone());
        let decode_load = LoadGuard::new(decode.clone());
        self.prefill.for_model(model).record(&prefill, &facts);
        self.decode.for_model(model).record(&decode, &facts);
        let entry = inflight.register(&inbound.request_id, vec![prefill.clone(), decode.clone()]);
        let prefill_abort = AbortOnDrop::new(prefill.clone(), inbound.request_id.clone());
        let mut decode_abort = AbortOnDrop::new(decode.clone(), inbound.request_id.clone());

        // The prefill side runs as its own task from the start, so that its
        // failure is noticed while we still wait for decode's first bytes.
        let (failed_tx, failed_rx) = oneshot::channel();
        let prefill_request = inbound.upstream(body.clone());
        let task = tokio::spawn(drain_prefill(
            prefill.clone(),
            prefill_request,
            prefill_load,
            prefill_abort,
            failed_tx,
        ));
        let prefill_task = TaskGuard::new(task.abort_handle());

        let decode_request = inbound.upstream(body);
        let decode_open = open(&decode, decode_request, inbound.deadline);
        tokio::pin!(decode_open);
        // `None` once the prefill side has finished well.
        let mut failed = Some(failed_rx);
        let opened = loop {
            tokio::select! {
                opened = &mut decode_open => break opened,
                outcome = async { failed.as_mut().expect("guarded by the branch condition").await }, if failed.is_some() => {
                    match outcome {
                        // Returning drops the decode call, which cancels it;
                        // its abort is armed.
                        Ok(status) => return Err(RouteError::WorkerFailed { worker: prefill.id().clone(), status }),
                        Err(_) => failed = None,
                    }
                }
            }
        };
        // On error, `prefill_task` drops and cancels the prefill side.
        let (worker_metadata, stream, first) = opened.inspect_err(|e| {
            if !matches!(e, RouteError::DeadlineExceeded { .. }) {
                decode_abort.disarm();
            }
        })?;

        let companion = Companion::new(failed, prefill_task);
        let stream = ProxyStream::new(
            first,
            stream,
            inbound.deadline,
            decode_abort,
            Box::new((decode_load, entry, room)),
        )
        .with_companion(companion);
        let mut response = tonic::Response::new(stream);
        *response.metadata_mut() = inbound.response_metadata(worker_metadata);
        insert_worker_id(response.metadata_mut(), PREFILL_WORKER_ID_HEADER, &prefill);
        insert_worker_id(response.metadata_mut(), DECODE_WORKER_ID_HEADER, &decode);
        Ok(response)
    }
}

/// The bootstrap parameters for a call whose prefill side is `prefill`.
fn bootstrap(prefill: &Worker, room: u64) -> Result<pb::DisaggregatedParams, RouteError> {
    let port = prefill.spec().bootstrap_port.ok_or_else(|| {
        // The registry refuses prefill workers without one; this is a bug.
        tracing::error!(worker = %prefill.id(), "prefill worker without a bootstrap port");
        RouteError::Internal(format!(
            "prefill worker {} has no bootstrap port",
            prefill.id()
        ))
    })?;
    Ok(pb::DisaggregatedParams {
        bootstrap_host: prefill.endpoint().bare_host().to_string(),
        bootstrap_port: u32::from(port),
        bootstrap_room: room,
    })
}

/// Runs the prefill call to its end, reading and discarding its body.
/// Reports a failure on `failed`; finishing normally drops it unsent.
async fn drain_prefill(
    worker: Arc<Worker>,
    request: tonic::Request<bytes::Bytes>,
    _load: LoadGuard,
    mut abort: AbortOnDrop,
    failed: oneshot::Sender<Status>,
) {
    let result = async {
        let (_, mut stream) = worker.upstream().generate(request).await?;
        while stream.chunk().await?.is_some() {}
        Ok::<_, Status>(())
    }
    .await;
    // The worker ended the call itself: nothing to abort.
    abort.disarm();
    if let Err(status) = result {
        tracing::debug!(worker = %worker.id(), %status, "prefill failed");
        let _ = failed.send(status);
    }
}

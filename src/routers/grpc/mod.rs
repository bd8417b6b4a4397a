//! gRPC routers: regular and prefill/decode (PD), behind one facade.
//!
//! [`GrpcRouter`] parses a call once ([`Inbound`]), resolves its model (empty
//! means the only gRPC model served), and hands it to the PD router when the
//! model's workers are prefill/decode workers, else to the regular router.
//! Both share [`open`]: start an upstream call and wait for the first bytes
//! of its response body, within the deadline.

mod inbound;
mod pd;
mod regular;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

pub use inbound::Inbound;
pub use pd::{GrpcPdRouter, DECODE_WORKER_ID_HEADER, PREFILL_WORKER_ID_HEADER};
pub use regular::GrpcRegularRouter;

use crate::policies::{PolicyConfig, PolicySet};
use crate::proxy::ProxyStream;
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::{is_disaggregated, resolve_model};
use crate::routers::{InflightCalls, RouteError};
use crate::worker::{ConnectionMode, ResponseStream, Worker, WorkerRegistry, WorkerRole};

/// Routes gRPC `Generate` calls to regular or PD workers.
#[derive(Debug)]
pub struct GrpcRouter {
    registry: Arc<WorkerRegistry>,
    regular: GrpcRegularRouter,
    pd: GrpcPdRouter,
    inflight: Arc<InflightCalls>,
    /// The deadline of a call that sets none.
    default_deadline: Duration,
}

impl GrpcRouter {
    /// Routers over `registry`, with policies built from `config` (and so
    /// subscribed to the registry's events); a call without a deadline gets
    /// `default_deadline`.
    pub fn new(
        registry: Arc<WorkerRegistry>,
        config: &PolicyConfig,
        rooms: BootstrapRooms,
        default_deadline: Duration,
    ) -> Self {
        GrpcRouter {
            regular: GrpcRegularRouter::new(registry.clone(), PolicySet::build(config, &registry)),
            pd: GrpcPdRouter::new(registry.clone(), config, rooms),
            registry,
            inflight: Arc::new(InflightCalls::default()),
            default_deadline,
        }
    }

    /// Calls currently proxied.
    pub fn inflight(&self) -> &Arc<InflightCalls> {
        &self.inflight
    }

    /// Proxies one `Generate` call; `request` carries the message bytes
    /// exactly as the client sent them.
    pub async fn generate(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<ProxyStream>, RouteError> {
        let inbound = Inbound::parse(request, self.default_deadline)?;
        tracing::Span::current().record("request_id", inbound.request_id.as_str());
        let model = resolve_model(
            &self.registry,
            ConnectionMode::Grpc,
            &[WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode],
            &inbound.view.model,
        )?
        .into_owned();
        tracing::Span::current().record("model", model.as_str());
        if is_disaggregated(&self.registry, ConnectionMode::Grpc, &model) {
            self.pd.generate(inbound, &model, &self.inflight).await
        } else {
            self.regular.generate(inbound, &model, &self.inflight).await
        }
    }

    /// Forwards `Abort(request_id)` to every worker serving it. Returns
    /// whether a running call was found and a worker acknowledged the abort.
    pub async fn abort(&self, request_id: &str) -> Result<bool, RouteError> {
        let Some(workers) = self.inflight.workers_for(request_id) else {
            return Ok(false);
        };
        let mut aborted = false;
        for worker in workers.iter() {
            aborted |= crate::proxy::abort(worker, request_id)
                .await
                .map_err(|status| RouteError::WorkerFailed {
                    worker: worker.id().clone(),
                    status,
                })?;
        }
        Ok(aborted)
    }
}

/// What [`open`] returns: the worker's response metadata, its stream, and
/// the first chunk of its body (`None` if the stream was empty).
pub type Opened = (MetadataMap, ResponseStream, Option<Bytes>);

/// Starts `request` on `worker` and waits for the first chunk of its
/// response body, all within `deadline`. A failure here is a failure before
/// any response; [`RouteError::WorkerUnreachable`] when none of the call
/// reached the worker.
pub async fn open(
    worker: &Worker,
    request: tonic::Request<Bytes>,
    deadline: Option<Instant>,
) -> Result<Opened, RouteError> {
    let failed = |status| RouteError::WorkerFailed {
        worker: worker.id().clone(),
        status,
    };
    let call = async {
        let (metadata, mut stream) =
            worker
                .upstream()
                .generate(request)
                .await
                .map_err(|e| match e.unsent {
                    true => RouteError::WorkerUnreachable {
                        worker: worker.id().clone(),
                        reason: e.status.message().to_string(),
                    },
                    false => failed(e.status),
                })?;
        let first = stream.chunk().await.map_err(failed)?;
        Ok((metadata, stream, first))
    };
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, call).await.map_err(|_| {
            RouteError::DeadlineExceeded {
                worker: worker.id().clone(),
            }
        })?,
        None => call.await,
    }
}

/// Names `worker` in response metadata under `header`.
pub(crate) fn insert_worker_id(metadata: &mut MetadataMap, header: &'static str, worker: &Worker) {
    metadata.insert(header, worker.id_value().clone());
}

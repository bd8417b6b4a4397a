//! The gRPC regular router: one `Generate` call to one regular worker.
//!
//! Per call: resolve `(Grpc, Regular, model)` from the registry, keep the
//! healthy workers, let the model's policy choose, take a load guard, call
//! the worker, and wait for its first bytes so that a worker failing
//! before it says anything becomes a clean `UNAVAILABLE`. The rest of the
//! stream is relayed by [`ProxyStream`].
//!
//! A worker that cannot be reached (connection refused or timed out, or
//! the stream refused unprocessed) has seen nothing of the call, so the
//! call is offered to another worker, chosen again by the policy from the
//! registry as it is then, up to [`MAX_ATTEMPTS`] workers and within the
//! call's deadline. A worker that may have seen the call is never retried:
//! generation is not free, and a second run would be a second answer. This
//! covers the seconds between a worker dying and the health checker
//! taking it out of rotation. No retry budget is kept: a retried call puts
//! no load on the worker that failed and still goes to only one worker.

use std::sync::Arc;

use crate::policies::PolicySet;
use crate::policies::RequestFacts;
use crate::proxy::{self, AbortOnDrop, ProxyStream};
use crate::routers::grpc::{insert_worker_id, open, Inbound};
use crate::routers::select::Candidates;
use crate::routers::{InflightCalls, RouteError};
use crate::worker::{ConnectionMode, LoadGuard, Worker, WorkerRegistry, WorkerRole};

/// The most workers one call is offered to when the first ones cannot be
/// reached.
pub const MAX_ATTEMPTS: usize = 3;

/// Routes `Generate` to regular gRPC workers.
#[derive(Debug)]
pub struct GrpcRegularRouter {
    registry: Arc<WorkerRegistry>,
    policies: PolicySet,
}

impl GrpcRegularRouter {
    /// A router over `registry` choosing with `policies`.
    pub fn new(registry: Arc<WorkerRegistry>, policies: PolicySet) -> Self {
        GrpcRegularRouter { registry, policies }
    }

    /// Proxies one call for `model`.
    pub async fn generate(
        &self,
        inbound: Inbound,
        model: &str,
        inflight: &Arc<InflightCalls>,
    ) -> Result<tonic::Response<ProxyStream>, RouteError> {
        let facts = inbound.facts(model);
        let mut tried: Vec<Arc<Worker>> = Vec::new();
        let mut last: Option<RouteError> = None;
        loop {
            let chosen = Candidates::resolve(
                &self.registry,
                ConnectionMode::Grpc,
                WorkerRole::Regular,
                model,
            )
            .and_then(|candidates| {
                let rest = candidates.without(&tried);
                rest.map(|rest| rest.choose(&self.policies, &facts))
                    .transpose()
            });
            let worker = match (chosen, last.take()) {
                (Ok(Some(worker)), _) => worker,
                // Every candidate has been tried (or the registry changed
                // under the call): the last failure is the answer.
                (_, Some(last)) => return Err(give_up(model, &tried, last)),
                (Err(error), None) => return Err(error),
                (Ok(None), None) => {
                    return Err(RouteError::NoWorkers {
                        model: model.into(),
                        role: WorkerRole::Regular,
                    })
                }
            };
            match self
                .attempt(&inbound, model, &facts, &worker, inflight)
                .await
            {
                Err(error) if error.is_retryable() => {
                    tried.push(worker);
                    if tried.len() == MAX_ATTEMPTS {
                        return Err(give_up(model, &tried, error));
                    }
                    tracing::debug!(%error, "worker unreachable; offering the call to another");
                    last = Some(error);
                }
                outcome => return outcome,
            }
        }
    }

    /// Offers the call to `worker`.
    async fn attempt(
        &self,
        inbound: &Inbound,
        model: &str,
        facts: &RequestFacts<'_>,
        worker: &Arc<Worker>,
        inflight: &Arc<InflightCalls>,
    ) -> Result<tonic::Response<ProxyStream>, RouteError> {
        tracing::Span::current().record("worker", tracing::field::display(worker.id()));
        let load = LoadGuard::new(worker.clone());
        self.policies.for_model(model).record(worker, facts);
        let entry = inflight.register(&inbound.request_id, vec![worker.clone()]);
        let mut abort = AbortOnDrop::new(worker.clone(), inbound.request_id.clone());

        let upstream = inbound.upstream(inbound.body.clone());
        let opened = open(worker, upstream, inbound.deadline).await;
        let (worker_metadata, stream, first) = opened.inspect_err(|e| {
            if !matches!(e, RouteError::DeadlineExceeded { .. }) {
                abort.disarm();
            }
        })?;

        let stream = ProxyStream::new(
            first,
            stream,
            inbound.deadline,
            abort,
            Box::new((load, entry)),
        );
        let mut response = tonic::Response::new(stream);
        *response.metadata_mut() = inbound.response_metadata(worker_metadata);
        insert_worker_id(response.metadata_mut(), proxy::WORKER_ID_HEADER, worker);
        Ok(response)
    }
}

/// The error for a call that no worker could be reached for: the worker's
/// own when only one was tried, else one naming every worker tried.
fn give_up(model: &str, tried: &[Arc<Worker>], last: RouteError) -> RouteError {
    match last {
        RouteError::WorkerUnreachable { status, .. } if tried.len() > 1 => {
            RouteError::NoReachableWorker {
                model: model.into(),
                tried: tried.iter().map(|w| w.id().clone()).collect(),
                status,
            }
        }
        last => last,
    }
}

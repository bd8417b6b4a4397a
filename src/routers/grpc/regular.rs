//! The gRPC regular router: one `Generate` call to one regular worker.
//!
//! Per call: resolve `(Grpc, Regular, model)` from the registry, keep the
//! healthy workers, let the model's policy choose, take a load guard, call
//! the worker, and wait for its first bytes so that a worker failing
//! before it says anything becomes a clean `UNAVAILABLE`. The rest of the
//! stream is relayed by [`crate::routers::call::ProxyStream`].
//!
//! A worker that cannot be reached (connection refused or timed out, or
//! the stream refused unprocessed) has seen nothing of the call, so the
//! call is offered to another worker ([`offer`]), within its deadline.

use std::sync::Arc;

use crate::policies::{PolicySet, RequestFacts};
use crate::routers::call::Attempt;
use crate::routers::grpc::{open, Inbound, Proxied};
use crate::routers::select::{offer, Retries};
use crate::routers::{InflightCalls, RouteError, WORKER_ID_HEADER};
use crate::telemetry::CallSpan;
use crate::worker::registry::Snapshot;
use crate::worker::{stats, ConnectionMode, Worker, WorkerRegistry, WorkerRole};

/// Routes `Generate` to regular gRPC workers.
#[derive(Debug)]
pub struct GrpcRegularRouter {
    registry: Arc<WorkerRegistry>,
    policies: PolicySet,
    retries: Arc<Retries>,
}

impl GrpcRegularRouter {
    /// Its policies.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// A router over `registry` choosing with `policies`, retrying within
    /// `retries`.
    pub fn new(registry: Arc<WorkerRegistry>, policies: PolicySet, retries: Arc<Retries>) -> Self {
        GrpcRegularRouter {
            registry,
            policies,
            retries,
        }
    }

    /// Proxies one call for `model`.
    pub async fn generate(
        &self,
        inbound: Inbound,
        model: &str,
        snapshot: &Snapshot,
        inflight: &Arc<InflightCalls>,
        trace: &CallSpan,
    ) -> Result<Proxied, RouteError> {
        let policy = self.policies.for_model(model);
        let reads_prompt = policy.reads_prompt();
        trace.set("switchyard.policy", policy.name());
        let facts = &inbound.facts(model, reads_prompt);
        let inbound = &inbound;
        offer(
            (snapshot, &self.registry),
            (ConnectionMode::Grpc, WorkerRole::Regular),
            (&self.policies, &self.retries),
            facts,
            trace,
            |worker| self.attempt(inbound, model, facts, worker, (inflight, trace)),
        )
        .await
    }

    /// Offers the call to `worker`: load guard, policy record, in-flight
    /// entry, the upstream call and its first bytes.
    async fn attempt(
        &self,
        inbound: &Inbound,
        model: &str,
        facts: &RequestFacts<'_>,
        worker: Arc<Worker>,
        (inflight, trace): (&Arc<InflightCalls>, &CallSpan),
    ) -> Result<Proxied, RouteError> {
        tracing::Span::current().record("worker", tracing::field::display(worker.id()));
        trace.worker(&worker);
        let mut attempt = Attempt::new(&worker, Some(&inbound.request_id));
        stats::overhead(stats::Route::Grpc, stats::Dispatch::Regular).observe(
            attempt
                .load
                .sent()
                .saturating_duration_since(inbound.received),
        );
        attempt.load.answer_by(inbound.deadline);
        self.policies.for_model(model).record(&worker, facts);
        let entry = inflight.register(&inbound.request_id, vec![worker.clone()]);

        let mut upstream_headers = inbound.upstream_headers();
        trace.inject(&mut upstream_headers);
        let opened = open(&worker, upstream_headers, &inbound.body, inbound.deadline).await;
        let (worker_headers, stream, timer) = opened.inspect_err(|e| attempt.failed(e))?;

        let mut headers = inbound.response_headers(worker_headers);
        headers.insert(WORKER_ID_HEADER, worker.id_value().clone());
        let stream = attempt.opened(worker, stream, timer, Box::new(entry));
        Ok((headers, stream))
    }
}

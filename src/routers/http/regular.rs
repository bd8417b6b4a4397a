//! The HTTP regular router: the body goes unchanged to one regular worker,
//! chosen by the model's policy; a worker that cannot be reached is passed
//! over for another ([`offer`]): nothing of the request got to it.

use bytes::Bytes;

use super::{HttpRouter, Relay, Request};
use crate::routers::select::offer;
use crate::routers::{RouteError, WORKER_ID_HEADER};
use crate::worker::{stats, ConnectionMode, LoadGuard, WorkerRole};

impl HttpRouter {
    pub(super) async fn forward_regular(
        &self,
        request: &Request<'_>,
        body: Bytes,
    ) -> Result<Relay, RouteError> {
        let facts = &request.facts;
        let trace = &request.trace;
        trace.set("switchyard.route", "regular");
        trace.set(
            "switchyard.policy",
            self.policies.for_model(facts.model).name(),
        );
        offer(
            (&request.snapshot, &self.registry),
            (ConnectionMode::Http, WorkerRole::Regular),
            (&self.policies, &self.retries),
            facts,
            trace,
            |worker| {
                let body = body.clone();
                async move {
                    let mut load = LoadGuard::new(worker.clone());
                    stats::overhead(stats::Route::Http, stats::Dispatch::Regular)
                        .observe(load.sent().saturating_duration_since(request.received));
                    self.policies.for_model(facts.model).record(&worker, facts);
                    trace.worker(&worker);
                    let response = self
                        .client
                        .post(
                            worker.origin(),
                            (request.path, request.request_id, trace.traceparent()),
                            body,
                        )
                        .await
                        .map_err(|e| RouteError::from_call(&worker, e))
                        .inspect_err(|e| load.settle(e.outcome()))?;
                    let mut relay = Relay::new(response, request.request_id, load, Box::new(()));
                    relay
                        .headers
                        .insert(WORKER_ID_HEADER, worker.id_value().clone());
                    Ok(relay)
                }
            },
        )
        .await
    }
}

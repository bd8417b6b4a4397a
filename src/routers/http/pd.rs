//! The HTTP PD router: the JSON body gains `bootstrap_host`,
//! `bootstrap_port` and `bootstrap_room` and goes to a prefill and a decode
//! worker at once (the shared dispatch in `routers::pd`); the client gets
//! the decode response while the prefill one is drained.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{HttpRouter, Relay, Request};
use crate::routers::call::AbortOnDrop;
use crate::routers::pd::{self, Pair, PdWire};
use crate::routers::{RouteError, DECODE_WORKER_ID_HEADER, PREFILL_WORKER_ID_HEADER};
use crate::telemetry::CallSpan;
use crate::transport::http1::{HttpClient, HttpResponse};
use crate::worker::{stats, ConnectionMode, Worker};

impl HttpRouter {
    pub(super) async fn forward_pd(
        &self,
        request: &Request<'_>,
        body: &[u8],
    ) -> Result<Relay, RouteError> {
        // PD writes into the body, so here it is parsed whole (already
        // checked to be a JSON object).
        let mut body: serde_json::Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| RouteError::InvalidRequest(format!("the body is not valid JSON: {e}")))?;
        let facts = &request.facts;
        let pair = self
            .pd_policies
            .choose(&request.snapshot, ConnectionMode::Http, facts)?;
        let Pair {
            prefill,
            decode,
            bootstrap_port: port,
        } = &pair;
        let room = self.rooms.claim();
        body.insert(
            "bootstrap_host".into(),
            Value::from(prefill.endpoint().bare_host()),
        );
        body.insert("bootstrap_port".into(), Value::from(*port));
        body.insert("bootstrap_room".into(), Value::from(room.id()));
        let body = Bytes::from(
            serde_json::to_vec(&Value::Object(body))
                .map_err(|e| RouteError::Internal(e.to_string()))?,
        );
        self.pd_policies.record(&pair, facts);
        request.trace.set("switchyard.route", "pd");
        let (prefill_policy, decode_policy) = self.pd_policies.names(facts.model);
        let side = |name, worker: &Arc<Worker>, policy| {
            let span = request.trace.child(name);
            span.worker(worker);
            span.set("switchyard.policy", policy);
            span
        };

        let wire = HttpPd {
            client: &self.client,
            path: request.path,
            request_id: request.request_id,
            body,
            prefill: side("prefill", prefill, prefill_policy),
            decode: side("decode", decode, decode_policy),
            received: request.received,
        };
        let started = pd::start(&wire, prefill, decode).await?;
        let mut relay = Relay::new(
            started.decode,
            request.request_id,
            started.decode_attempt.load,
            Box::new((room, wire.decode)),
        )
        .with_companion(started.companion);
        relay
            .headers
            .insert(PREFILL_WORKER_ID_HEADER, prefill.id_value().clone());
        relay
            .headers
            .insert(DECODE_WORKER_ID_HEADER, decode.id_value().clone());
        Ok(relay)
    }
}

/// How an HTTP PD request reaches each side: the same body to both; a
/// side that does not answer 2xx has failed.
struct HttpPd<'a> {
    client: &'a HttpClient,
    path: &'static str,
    request_id: &'a str,
    body: Bytes,
    /// The sides' spans.
    prefill: CallSpan,
    decode: CallSpan,
    received: tokio::time::Instant,
}

/// `response` if it is a success, else the failure it describes.
async fn success(worker: &Worker, response: HttpResponse) -> Result<HttpResponse, RouteError> {
    if response.status.is_success() {
        return Ok(response);
    }
    Err(RouteError::WorkerFailed {
        worker: worker.id().clone(),
        failure: response.into_failure().await,
    })
}

impl PdWire for HttpPd<'_> {
    type Opened = HttpResponse;
    type Handoff = ();

    fn run_prefill(
        &self,
        worker: Arc<Worker>,
    ) -> impl Future<Output = Result<(), RouteError>> + Send + 'static {
        let client = self.client.clone();
        let (path, request_id, body) = (self.path, self.request_id.to_string(), self.body.clone());
        let span = self.prefill.clone();
        async move {
            let ran = async {
                let response = client
                    .post(
                        worker.origin(),
                        (path, &request_id, span.traceparent()),
                        body,
                    )
                    .await
                    .map_err(|e| RouteError::from_call(&worker, e))?;
                let mut response = success(&worker, response).await?;
                while let Some(frame) = response.body.frame().await {
                    frame.map_err(|failure| RouteError::WorkerFailed {
                        worker: worker.id().clone(),
                        failure,
                    })?;
                }
                Ok(())
            };
            // The prefill side's span ends with it.
            ran.await.inspect_err(|error| span.fail(error))
        }
    }

    fn open_decode(
        &self,
        worker: &Arc<Worker>,
        _: Option<()>,
    ) -> impl Future<Output = Result<HttpResponse, RouteError>> + Send {
        let body = self.body.clone();
        async move {
            let response = self
                .client
                .post(
                    worker.origin(),
                    (self.path, self.request_id, self.decode.traceparent()),
                    body,
                )
                .await
                .map_err(|e| RouteError::from_call(worker, e))?;
            // The decode side's error answer is relayed to the client as is.
            Ok(response)
        }
    }

    fn received(&self) -> (stats::Route, tokio::time::Instant) {
        (stats::Route::Http, self.received)
    }

    fn abort_guard(&self, _: &Arc<Worker>) -> Option<AbortOnDrop> {
        None
    }
}

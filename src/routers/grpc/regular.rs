//! The gRPC regular router: one `Generate` call to one regular worker.
//!
//! Per call: decode the few fields routing needs (the bytes themselves are
//! forwarded untouched), resolve `(Grpc, Regular, model)` from the registry,
//! keep the healthy workers, let the policy choose, take a load guard, call
//! the worker, and wait for its first message so that a worker failing before
//! it says anything becomes a clean `UNAVAILABLE`. The rest of the stream is
//! relayed by [`ProxyStream`].

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;

use crate::pb;
use crate::pb::raw::inference_client::InferenceClient;
use crate::policies::{PolicySet, RequestFacts};
use crate::proxy::{self, AbortOnDrop, ProxyStream};
use crate::routers::select::{resolve_model, Candidates};
use crate::routers::{InflightCalls, RouteError};
use crate::worker::{ConnectionMode, LoadGuard, WorkerRegistry, WorkerRole};

/// Routes `Generate` to regular gRPC workers.
#[derive(Debug)]
pub struct GrpcRegularRouter {
    registry: Arc<WorkerRegistry>,
    policies: PolicySet,
    inflight: Arc<InflightCalls>,
}

impl GrpcRegularRouter {
    /// A router over `registry` choosing with `policies`.
    pub fn new(registry: Arc<WorkerRegistry>, policies: PolicySet) -> Self {
        GrpcRegularRouter {
            registry,
            policies,
            inflight: Arc::new(InflightCalls::default()),
        }
    }

    /// Calls currently proxied.
    pub fn inflight(&self) -> &Arc<InflightCalls> {
        &self.inflight
    }

    /// Proxies one `Generate` call. `request` carries the encoded
    /// `GenerateRequest` exactly as the client sent it.
    pub async fn generate(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<ProxyStream>, RouteError> {
        let (metadata, _, body) = request.into_parts();
        let view = pb::GenerateRequest::decode(body.clone()).map_err(|e| {
            RouteError::InvalidRequest(format!(
                "the message is not a valid switchyard.v1.GenerateRequest: {e}"
            ))
        })?;
        let deadline = match metadata.get("grpc-timeout") {
            Some(v) => {
                let timeout = v
                    .to_str()
                    .ok()
                    .and_then(proxy::parse_grpc_timeout)
                    .ok_or_else(|| {
                        RouteError::InvalidRequest(format!("malformed grpc-timeout {v:?}"))
                    })?;
                Some(Instant::now() + timeout)
            }
            None => None,
        };
        let model = resolve_model(
            &self.registry,
            ConnectionMode::Grpc,
            WorkerRole::Regular,
            &view.model,
        )?;
        let routing_key = metadata
            .get(proxy::ROUTING_KEY_HEADER)
            .and_then(|v| v.to_str().ok());
        let (text, token_ids) = match &view.input {
            Some(pb::generate_request::Input::Text(t)) => (Some(t.as_str()), None),
            Some(pb::generate_request::Input::TokenIds(t)) => (None, Some(t.ids.as_slice())),
            None => (None, None),
        };
        let facts = RequestFacts {
            model: &model,
            text,
            token_ids,
            routing_key,
        };
        let worker = Candidates::resolve(
            &self.registry,
            ConnectionMode::Grpc,
            WorkerRole::Regular,
            &model,
        )?
        .choose(&self.policies, &facts)?;
        tracing::Span::current().record("worker", tracing::field::display(worker.id()));

        // The request id: the client's field, else its x-request-id, else new.
        let header_id = metadata
            .get(proxy::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty());
        let (request_id, body) = if !view.request_id.is_empty() {
            (view.request_id.clone(), body)
        } else {
            let id = header_id.map_or_else(proxy::generate_request_id, str::to_string);
            let body = proxy::with_request_id(body, &id);
            (id, body)
        };
        tracing::Span::current().record("request_id", request_id.as_str());
        let request_id_value = MetadataValue::try_from(request_id.as_str())
            .map_err(|_| RouteError::InvalidRequest("request_id must be printable ASCII".into()))?;

        let mut upstream = tonic::Request::new(body);
        *upstream.metadata_mut() = proxy::forwardable(&metadata);
        upstream
            .metadata_mut()
            .insert(proxy::REQUEST_ID_HEADER, request_id_value.clone());
        if let Some(deadline) = deadline {
            upstream.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }

        let load = LoadGuard::new(worker.clone());
        self.policies.for_model(&model).record(&worker, &facts);
        let entry = self.inflight.register(&request_id, worker.clone());
        let mut abort = AbortOnDrop::new(worker.clone(), request_id);

        let mut client = InferenceClient::new(worker.channel());
        let call = async {
            let response = client.generate(upstream).await?;
            let (response_metadata, mut stream, _) = response.into_parts();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((response_metadata, stream, first))
        };
        let outcome = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, call).await.map_err(|_| {
                RouteError::DeadlineExceeded {
                    worker: worker.id().clone(),
                }
            })?,
            None => call.await,
        };
        let (response_metadata, stream, first) = outcome.map_err(|status| {
            abort.disarm();
            RouteError::WorkerFailed {
                worker: worker.id().clone(),
                status,
            }
        })?;

        let stream = ProxyStream::new(first, stream, deadline, abort, Box::new((load, entry)));
        let mut response = tonic::Response::new(stream);
        *response.metadata_mut() = proxy::forwardable(&response_metadata);
        response
            .metadata_mut()
            .insert(proxy::REQUEST_ID_HEADER, request_id_value);
        if let Ok(id) = MetadataValue::try_from(worker.id().as_str()) {
            response.metadata_mut().insert(proxy::WORKER_ID_HEADER, id);
        }
        Ok(response)
    }

    /// Forwards `Abort(request_id)` to the worker serving it. Returns whether
    /// a running call was found and the worker acknowledged the abort.
    pub async fn abort(&self, request_id: &str) -> Result<bool, RouteError> {
        let Some(worker) = self.inflight.worker_for(request_id) else {
            return Ok(false);
        };
        let mut client = pb::inference_client::InferenceClient::new(worker.channel());
        let response = client
            .abort(pb::AbortRequest {
                request_id: request_id.to_string(),
            })
            .await
            .map_err(|status| RouteError::WorkerFailed {
                worker: worker.id().clone(),
                status,
            })?;
        Ok(response.into_inner().aborted)
    }
}

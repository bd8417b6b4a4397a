//! One inbound `Generate` call, parsed once for every gRPC router.
//!
//! The message bytes stay as the client sent them; only the fields routing
//! needs are decoded (a prost view that drops unknown fields, used for
//! reading only). The request id is settled here: the message's, else the
//! client's `x-request-id`, else a new one appended to the bytes.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::pb;
use crate::policies::RequestFacts;
use crate::proxy;
use crate::routers::RouteError;

/// A parsed `Generate` call.
#[derive(Debug)]
pub struct Inbound {
    /// The client's metadata.
    pub metadata: MetadataMap,
    /// The message bytes, with the request id set.
    pub body: Bytes,
    /// The fields the router reads.
    pub view: pb::GenerateRequest,
    /// When the client stops waiting: its `grpc-timeout`, else the
    /// router's default deadline.
    pub deadline: Option<Instant>,
    /// The request id, as a metadata value.
    pub request_id: String,
    request_id_value: MetadataValue<tonic::metadata::Ascii>,
}

impl Inbound {
    /// Parses a call; bad bytes, a bad deadline or a bad request id are
    /// `INVALID_ARGUMENT`. A call without a deadline gets `default_deadline`.
    pub fn parse(
        request: tonic::Request<Bytes>,
        default_deadline: Duration,
    ) -> Result<Inbound, RouteError> {
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
            None => Some(Instant::now() + default_deadline),
        };
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
        let mut request_id_value = MetadataValue::try_from(request_id.as_str())
            .map_err(|_| RouteError::InvalidRequest("request_id must be printable ASCII".into()))?;
        // Unique per call: see `proxy::never_index`.
        request_id_value.set_sensitive(true);
        Ok(Inbound {
            metadata,
            body,
            view,
            deadline,
            request_id,
            request_id_value,
        })
    }

    /// What policies see of this call, for `model`.
    pub fn facts<'a>(&'a self, model: &'a str) -> RequestFacts<'a> {
        let (text, token_ids) = match &self.view.input {
            Some(pb::generate_request::Input::Text(t)) => (Some(t.as_str()), None),
            Some(pb::generate_request::Input::TokenIds(t)) => (None, Some(t.ids.as_slice())),
            None => (None, None),
        };
        RequestFacts {
            model,
            text,
            token_ids,
            routing_key: self
                .metadata
                .get(proxy::ROUTING_KEY_HEADER)
                .and_then(|v| v.to_str().ok()),
        }
    }

    /// The request to send a worker: `body`, the client's forwardable
    /// metadata, the request id and the remaining deadline.
    pub fn upstream(&self, body: Bytes) -> tonic::Request<Bytes> {
        let mut upstream = tonic::Request::new(body);
        let mut headers = proxy::forwardable(&self.metadata).into_headers();
        // Room for what is added here and by the upstream client (request
        // id, deadline, content-type, te, user-agent): growing a header map
        // rehashes it, measurably on every call.
        headers.reserve(5);
        *upstream.metadata_mut() = MetadataMap::from_headers(headers);
        upstream
            .metadata_mut()
            .insert(proxy::REQUEST_ID_HEADER, self.request_id_value.clone());
        if let Some(deadline) = self.deadline {
            upstream.set_timeout(deadline.saturating_duration_since(Instant::now()));
            proxy::never_index(upstream.metadata_mut(), "grpc-timeout");
        }
        upstream
    }

    /// The response metadata: the worker's forwardable metadata plus the
    /// request id.
    pub fn response_metadata(&self, worker_metadata: MetadataMap) -> MetadataMap {
        let mut headers = proxy::forward_owned(worker_metadata).into_headers();
        // Room for the request id, the worker id(s) and content-type.
        headers.reserve(4);
        let mut md = MetadataMap::from_headers(headers);
        md.insert(proxy::REQUEST_ID_HEADER, self.request_id_value.clone());
        md
    }
}

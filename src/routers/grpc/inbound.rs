//! One inbound `Generate` call, parsed once for every gRPC router, in any
//! of the protocols the router serves (`switchyard.v1`, SGLang's, vLLM's).
//!
//! The message bytes stay as the client sent them; only the fields routing
//! needs are read (model, request id, the prompt for cache-aware routing),
//! from a decode that is used for reading only. The request id is settled here: the message's, else the
//! client's `x-request-id`, else a new one appended to the bytes. So is the
//! deadline: the client's `grpc-timeout`, else the router's default.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use prost::Message;
use tokio::time::Instant;

use crate::engines::{self, tokenized_ids};
use crate::pb;
use crate::policies::RequestFacts;
use crate::routers::{
    generate_request_id, RouteError, MODEL_HEADER, REQUEST_ID_HEADER, ROUTING_KEY_HEADER,
};
use crate::transport::grpc::metadata::{
    forward_owned, forwardable, grpc_timeout, parse_grpc_timeout, GRPC_TIMEOUT,
};
use crate::worker::Engine;

/// `x-request-id`, parsed once.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

pub use crate::engines::Prompt;
use crate::engines::RequestView;

/// A parsed `Generate` call.
#[derive(Debug)]
pub struct Inbound {
    /// The client's metadata.
    pub headers: HeaderMap,
    /// The message bytes, with the request id set.
    pub body: Bytes,
    /// The protocol of the message: the `Generate` it was sent to.
    pub protocol: Engine,
    /// The model named: `switchyard.v1`'s `model` field, an engine
    /// call's `x-switchyard-model` metadata; empty if none.
    pub model: String,
    /// The prompt, for policies.
    pub prompt: Prompt,
    /// A [`Prompt::Tokenized`] prompt's ids, once a policy asked.
    decoded: std::sync::OnceLock<Vec<u32>>,
    /// When the call must end: the client's `grpc-timeout`, else the
    /// router's default deadline.
    pub deadline: Instant,
    /// The request id.
    pub request_id: String,
    /// When the request's message had been read and parsing began.
    pub received: Instant,
    /// The request id as a header value, never indexed in HPACK (it differs
    /// on every call).
    request_id_value: HeaderValue,
}

impl Inbound {
    /// Parses a call; bad bytes, a bad deadline or a bad request id are
    /// `INVALID_ARGUMENT`. A call without a deadline gets `default_deadline`.
    pub fn parse(
        protocol: Engine,
        headers: HeaderMap,
        body: Bytes,
        default_deadline: Duration,
    ) -> Result<Inbound, RouteError> {
        Inbound::parse_viewed(protocol, headers, body, default_deadline, None)
    }

    /// [`Inbound::parse`], with the message's view already read from it
    /// (by admission) if `view` is given.
    pub fn parse_viewed(
        protocol: Engine,
        headers: HeaderMap,
        body: Bytes,
        default_deadline: Duration,
        view: Option<RequestView>,
    ) -> Result<Inbound, RouteError> {
        let now = Instant::now();
        let (message_id, model, prompt) = read(protocol, &body, &headers, view)?;
        let timeout = match headers.get(GRPC_TIMEOUT) {
            Some(v) => v
                .to_str()
                .ok()
                .and_then(parse_grpc_timeout)
                .ok_or_else(|| {
                    RouteError::InvalidRequest(format!("malformed grpc-timeout {v:?}"))
                })?,
            None => default_deadline,
        };
        let header_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty());
        let (request_id, body) = if !message_id.is_empty() {
            (message_id, body)
        } else {
            let id = header_id.map_or_else(generate_request_id, str::to_string);
            let body = with_request_id(body, &id);
            (id, body)
        };
        let mut request_id_value = HeaderValue::try_from(request_id.as_str())
            .map_err(|_| RouteError::InvalidRequest("request_id must be printable ASCII".into()))?;
        request_id_value.set_sensitive(true);
        Ok(Inbound {
            headers,
            body,
            protocol,
            model,
            prompt,
            decoded: std::sync::OnceLock::new(),
            deadline: now + timeout,
            request_id,
            received: now,
            request_id_value,
        })
    }

    /// What policies see of this call, for `model`; the prompt only when
    /// `reads_prompt` (some policy of the call looks at it).
    pub fn facts<'a>(&'a self, model: &'a str, reads_prompt: bool) -> RequestFacts<'a> {
        let (text, token_ids) = match &self.prompt {
            _ if !reads_prompt => (None, None),
            Prompt::Text(t) => (Some(t.as_str()), None),
            Prompt::TokenIds(ids) => (None, Some(ids.as_slice())),
            Prompt::Tokenized(raw) => {
                let ids = self.decoded.get_or_init(|| tokenized_ids(raw));
                (None, Some(ids.as_slice()))
            }
            Prompt::None => (None, None),
        };
        RequestFacts {
            model,
            text,
            token_ids,
            routing_key: self
                .headers
                .get(ROUTING_KEY_HEADER)
                .and_then(|v| v.to_str().ok()),
        }
    }

    /// The headers to send a worker: the client's forwardable metadata, the
    /// request id and the remaining deadline.
    pub fn upstream_headers(&self) -> HeaderMap {
        // Room for what is added here and by the upstream client (request
        // id, deadline, traceparent, content-type, te, user-agent): growing
        // a header map rehashes it, measurably on every call.
        let mut headers = forwardable(&self.headers, 6);
        headers.insert(REQUEST_ID, self.request_id_value.clone());
        headers.insert(
            GRPC_TIMEOUT,
            grpc_timeout(self.deadline.saturating_duration_since(Instant::now())),
        );
        headers
    }

    /// The response headers: the worker's forwardable metadata plus the
    /// request id.
    pub fn response_headers(&self, worker_headers: HeaderMap) -> HeaderMap {
        // Room for the request id, the worker id(s) and content-type.
        let mut headers = forward_owned(worker_headers, 4);
        headers.insert(REQUEST_ID, self.request_id_value.clone());
        headers
    }
}

/// Reads the request id, model and prompt of a `protocol` message (the
/// model from `x-switchyard-model` when the protocol's message has none).
fn read(
    protocol: Engine,
    body: &Bytes,
    headers: &HeaderMap,
    view: Option<RequestView>,
) -> Result<(String, String, Prompt), RouteError> {
    let view = match view {
        Some(view) => Ok(view),
        None => engines::seam(protocol).view(body),
    };
    let view = view.map_err(|e| {
        RouteError::InvalidRequest(format!(
            "the message is not a valid {}.GenerateRequest: {e}",
            protocol
                .service()
                .rsplit_once('.')
                .map_or("", |(package, _)| package)
        ))
    })?;
    let model = view.model.unwrap_or_else(|| {
        headers
            .get(MODEL_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    });
    Ok((view.request_id, model, view.prompt))
}

/// Sets `request_id` on an encoded `GenerateRequest` without decoding the
/// rest: appending field 1 overrides it (protobuf: last value wins). Field
/// 1 is the request id in all three protocols.
pub fn with_request_id(body: Bytes, request_id: &str) -> Bytes {
    append_fields(
        body,
        &pb::GenerateRequest {
            request_id: request_id.to_string(),
            ..Default::default()
        },
    )
}

/// Appends the fields set in `extra` to an encoded `GenerateRequest`.
/// Protobuf merge semantics apply: set scalars override, messages merge (so
/// `disaggregated_params` keeps client fields the router does not set), and
/// the client's unknown fields stay as they were.
pub fn append_fields(body: Bytes, extra: &impl Message) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + extra.encoded_len());
    out.extend_from_slice(&body);
    extra.encode_raw(&mut out);
    out.freeze()
}

/// [`append_fields`] for fields already encoded (an engine seam's).
pub fn append_encoded(body: Bytes, fields: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + fields.len());
    out.extend_from_slice(&body);
    out.extend_from_slice(fields);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{sglang_scheduler as sglang, vllm_engine as vllm};

    #[test]
    fn the_views_read_what_the_published_types_encode() {
        let full = sglang::GenerateRequest {
            request_id: "s1".into(),
            tokenized: Some(sglang::TokenizedInput {
                original_text: "t".into(),
                input_ids: vec![1, 300, 70000],
            }),
            sampling_params: Some(sglang::SamplingParams {
                temperature: 0.5,
                ..Default::default()
            }),
            stream: true,
            ..Default::default()
        };
        let inbound = Inbound::parse(
            crate::engines::by_name("sglang").unwrap(),
            HeaderMap::new(),
            full.encode_to_vec().into(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(inbound.request_id, "s1");
        assert_eq!(
            inbound.facts("m", true).token_ids,
            Some(&[1, 300, 70000][..])
        );
        assert_eq!(inbound.facts("m", false).token_ids, None);

        for input in [
            vllm::generate_request::Input::Text("hello".into()),
            vllm::generate_request::Input::Tokenized(vllm::TokenizedInput {
                original_text: String::new(),
                input_ids: vec![5, 6],
            }),
        ] {
            let full = vllm::GenerateRequest {
                request_id: "v1".into(),
                input: Some(input.clone()),
                ..Default::default()
            };
            let inbound = Inbound::parse(
                crate::engines::by_name("vllm").unwrap(),
                HeaderMap::new(),
                full.encode_to_vec().into(),
                Duration::from_secs(1),
            )
            .unwrap();
            let facts = inbound.facts("m", true);
            match input {
                vllm::generate_request::Input::Text(_) => assert_eq!(facts.text, Some("hello")),
                vllm::generate_request::Input::Tokenized(_) => {
                    assert_eq!(facts.token_ids, Some(&[5, 6][..]))
                }
            }
        }
    }

    #[test]
    fn appended_request_id_overrides_and_keeps_other_fields() {
        let original = pb::GenerateRequest {
            model: "m".into(),
            input: Some(pb::generate_request::Input::Text("hi".into())),
            ..Default::default()
        };
        let body = with_request_id(Bytes::from(original.encode_to_vec()), "abc");
        let decoded = pb::GenerateRequest::decode(body).unwrap();
        assert_eq!(decoded.request_id, "abc");
        assert_eq!(decoded.model, "m");
        assert_eq!(decoded.input, original.input);
    }
}

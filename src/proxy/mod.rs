//! The faithful hop (DESIGN invariant 5): what passes between client and
//! worker, and the little the router adds.
//!
//! Messages travel as raw bytes, so fields unknown to Switchyard survive both
//! ways; responses are relayed as the worker framed them, chunk by chunk. The router adds only what it must: a request
//! id (appended as field 1, which protobuf merge semantics let override an
//! empty one), the remaining deadline, and its own response metadata.
//! Client metadata is forwarded except hop-by-hop and gRPC framing headers.

pub mod codec;
mod stream;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use prost::Message;
use tonic::metadata::MetadataMap;

pub use stream::{abort, aborts_in_flight, AbortOnDrop, Companion, ProxyStream, TaskGuard};

use crate::pb;

/// Request metadata naming the request; generated when absent.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Response metadata naming the worker that served a regular call.
pub const WORKER_ID_HEADER: &str = "x-switchyard-worker-id";
/// Request metadata for session affinity (consistent hashing).
pub const ROUTING_KEY_HEADER: &str = "x-switchyard-routing-key";

/// Headers that describe one HTTP/2 hop or gRPC framing, never forwarded.
fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "te" | "content-type"
            | "content-length"
            | "user-agent"
            | "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "x-request-id"
    ) || name.starts_with("grpc-")
        || name.starts_with("x-switchyard-")
}

/// The metadata to pass on across the hop.
pub fn forwardable(metadata: &MetadataMap) -> MetadataMap {
    forward_owned(metadata.clone())
}

/// [`forwardable`] for a map the caller no longer needs (no copy of it).
pub fn forward_owned(metadata: MetadataMap) -> MetadataMap {
    let headers = metadata.into_headers();
    if !headers.keys().any(|k| is_hop_header(k.as_str())) {
        return MetadataMap::from_headers(headers);
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut last = None;
    for (name, value) in headers {
        // `HeaderMap`'s owning iterator yields a name once per run of values.
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            if !is_hop_header(name.as_str()) {
                out.append(name.clone(), value);
            }
        }
    }
    MetadataMap::from_headers(out)
}

/// Parses a `grpc-timeout` value (e.g. `"250m"`, `"3S"`) per the gRPC spec.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Keeps a header that differs on every call (a request id, a remaining
/// deadline) out of HPACK's dynamic table. Indexed, each such value evicts
/// a reusable entry and lengthens h2's same-name lookup chain; measured with
/// callgrind, that lookup was 7% of the router's instructions per call.
pub fn never_index(metadata: &mut MetadataMap, key: &'static str) {
    if let Some(value) = metadata.get_mut(key) {
        value.set_sensitive(true);
    }
}

/// A fresh request id: 128 random bits in hex.
pub fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Sets `request_id` on an encoded `GenerateRequest` without decoding the
/// rest: appending field 1 overrides it (protobuf: last value wins).
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
pub fn append_fields(body: Bytes, extra: &pb::GenerateRequest) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + extra.encoded_len());
    out.extend_from_slice(&body);
    extra.encode_raw(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "10", "10x", "-1S", "1234567890S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
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

    #[test]
    fn hop_headers_are_not_forwarded() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "1S".parse().unwrap());
        md.insert("te", "trailers".parse().unwrap());
        md.insert("authorization", "Bearer x".parse().unwrap());
        md.append("x-tenant", "a".parse().unwrap());
        md.append("x-tenant", "b".parse().unwrap());
        let out = forwardable(&md);
        assert!(out.get("grpc-timeout").is_none());
        assert!(out.get("te").is_none());
        assert_eq!(out.get("authorization").unwrap(), "Bearer x");
        assert_eq!(out.get_all("x-tenant").iter().count(), 2);
    }
}

//! What the listeners refuse before any routing work: calls beyond the
//! router's limit in flight and its fair queue (`tenants::queue`), and
//! request metadata over its limit.

pub use crate::tenants::queue::{CallLimit, Overloaded, Permit, Place, Slot, RETRY_AFTER_SECS};

/// The size of a request's metadata as HTTP/2 counts a header list: each
/// name and value, plus 32 per field.
pub fn metadata_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// The header list the protocol layer (h2, hyper's HTTP/1 parser) lets
/// through to the router's own check, for a router whose limit is
/// `max_metadata` bytes: four times the limit, and at least 256 KiB. Lists
/// up to it are refused by [`check_metadata`], naming the limit, in a
/// status the client reads (gRPC's RESOURCE_EXHAUSTED, HTTP's 431 with a
/// message); the protocol layer answers a bare 431 only beyond it.
pub fn protocol_header_limit(max_metadata: usize) -> usize {
    max_metadata.saturating_mul(4).max(256 * 1024)
}

/// Why a request's metadata was refused, if it was: over `max` bytes.
pub fn check_metadata(headers: &http::HeaderMap, max: usize) -> Result<(), String> {
    let size = metadata_bytes(headers);
    if size > max {
        return Err(format!(
            "the request's metadata (headers) is {size} bytes, over the router's limit of {max} (limits.max_metadata_bytes; each field counts its name and value plus 32): send less"
        ));
    }
    Ok(())
}

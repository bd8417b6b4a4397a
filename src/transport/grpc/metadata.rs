//! gRPC metadata across the hop: which headers pass, and deadlines on the
//! wire (`grpc-timeout`).

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// `grpc-timeout`, parsed once.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Headers that describe one HTTP/2 hop or gRPC framing, never forwarded,
/// and those the router sets itself (`x-request-id`, `x-switchyard-*`).
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

/// The headers to pass on across the hop, leaving room for `extra` more.
pub fn forwardable(headers: &HeaderMap, extra: usize) -> HeaderMap {
    forward_owned(headers.clone(), extra)
}

/// [`forwardable`] for a map the caller no longer needs (no copy of it).
pub fn forward_owned(headers: HeaderMap, extra: usize) -> HeaderMap {
    if !headers.keys().any(|k| is_hop_header(k.as_str())) {
        let mut out = headers;
        out.reserve(extra);
        return out;
    }
    let mut out = HeaderMap::with_capacity(headers.len() + extra);
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
    out
}

/// Parses a `grpc-timeout` value (e.g. `"250m"`, `"3S"`) per the gRPC spec.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // ASCII only: the unit is the last byte, and must be a whole character.
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
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

/// `timeout` as a `grpc-timeout` value: at most 8 digits, in the finest
/// unit that fits (as tonic writes it). Never indexed in HPACK: see
/// [`never_index`].
pub fn grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (n, unit) = if nanos <= MAX {
        (nanos, 'n')
    } else if nanos / 1_000 <= MAX {
        (nanos / 1_000, 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos / 1_000_000, 'm')
    } else if timeout.as_secs() as u128 <= MAX {
        (timeout.as_secs() as u128, 'S')
    } else {
        ((timeout.as_secs() / 3600).min(MAX as u64) as u128, 'H')
    };
    // Digits and a unit letter: always a valid value; made from the
    // string's own buffer, without a second copy.
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("{n}{unit}")))
        .unwrap_or_else(|_| HeaderValue::from_static("99999999H"));
    value.set_sensitive(true);
    value
}

/// Marks `name`'s value so HPACK never indexes it. A header that differs on
/// every call (a request id, a remaining deadline), indexed, evicts a
/// reusable entry and lengthens h2's same-name lookup chain; measured with
/// callgrind, that lookup was 7% of the router's instructions per call.
pub fn never_index(headers: &mut HeaderMap, name: &HeaderName) {
    if let Some(value) = headers.get_mut(name) {
        value.set_sensitive(true);
    }
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
        // "٨" (found by the grpc_timeout fuzz target): two bytes, one
        // character; the unit must not be split out of it.
        for bad in ["", "m", "10", "10x", "-1S", "1234567890S", "٨", "1٨"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn written_timeouts_read_back_within_their_unit() {
        for d in [
            Duration::from_nanos(5),
            Duration::from_millis(250),
            Duration::from_secs(7),
            Duration::from_secs(300),
            Duration::from_secs(86_400 * 365),
        ] {
            let value = grpc_timeout(d);
            let back = parse_grpc_timeout(value.to_str().unwrap()).unwrap();
            assert!(
                back <= d && d - back < d / 1000 + Duration::from_secs(3600),
                "{d:?} -> {value:?}"
            );
        }
    }

    #[test]
    fn hop_headers_are_not_forwarded() {
        let mut md = HeaderMap::new();
        md.insert("grpc-timeout", "1S".parse().unwrap());
        md.insert("te", "trailers".parse().unwrap());
        md.insert("authorization", "Bearer x".parse().unwrap());
        md.append("x-tenant", "a".parse().unwrap());
        md.append("x-tenant", "b".parse().unwrap());
        for out in [forwardable(&md, 0), forward_owned(md.clone(), 2)] {
            assert!(out.get("grpc-timeout").is_none());
            assert!(out.get("te").is_none());
            assert_eq!(out.get("authorization").unwrap(), "Bearer x");
            assert_eq!(out.get_all("x-tenant").iter().count(), 2);
        }
    }
}

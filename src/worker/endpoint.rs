//! A worker's address: its URL parsed once (scheme, host, port) and
//! normalized, so that two spellings of one address are one worker, and the
//! connection mode and TLS that follow from the scheme.

use std::fmt;

/// How a worker is reached; follows from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionMode {
    /// `grpc://host:port`
    Grpc,
    /// `http://host:port`
    Http,
}

impl fmt::Display for ConnectionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionMode::Grpc => "grpc",
            ConnectionMode::Http => "http",
        })
    }
}

/// Why a worker URL was refused. Every message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL does not parse, or lacks a host or port.
    #[error("invalid worker url {url:?}: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is none of `grpc`, `grpcs`, `http` and `https`.
    #[error("unsupported scheme {scheme:?} in worker url {url:?}: use grpc://host:port or http://host:port (grpcs:// or https:// for TLS)")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
}

/// Refuses hosts no worker can have: names longer than DNS allows, numbers
/// that are not a dotted-quad IPv4 address (`2130706433`, `0x7f.1`, `127.1`
/// all mean 127.0.0.1 to some resolvers and something else to others), and
/// the unspecified address.
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        if ip.is_unspecified() {
            return Err("the unspecified address (0.0.0.0 or ::) is not a worker's address");
        }
        return Ok(());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(
            "the host has characters no host name has (letters, digits, '-', '.' and '_' only)",
        );
    }
    if host
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err("each part of a host name must have 1 to 63 characters");
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        return Err(
            "a numeric host must be a dotted-quad IPv4 address (a.b.c.d) or a bracketed IPv6 address",
        );
    }
    Ok(())
}

/// A worker's parsed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    mode: ConnectionMode,
    /// Reached over TLS (`grpcs://`, `https://`).
    secure: bool,
    host: String,
    port: u16,
    url: String,
}

impl Endpoint {
    /// Parses `grpc://host:port` or `http://host[:port]` (`grpcs://` and
    /// `https://` over TLS), normalizing case and a trailing slash away.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let bad = |reason: &str| UrlError::Invalid {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(bad("the url is empty"));
        }
        let uri: http::Uri = trimmed
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| bad("missing scheme, e.g. grpc://127.0.0.1:7001"))?;
        let (mode, secure) = match scheme.to_ascii_lowercase().as_str() {
            "grpc" => (ConnectionMode::Grpc, false),
            "grpcs" => (ConnectionMode::Grpc, true),
            "http" => (ConnectionMode::Http, false),
            "https" => (ConnectionMode::Http, true),
            other => {
                return Err(UrlError::UnsupportedScheme {
                    url: url.to_string(),
                    scheme: other.to_string(),
                })
            }
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the url are not supported"));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        check_host(&host).map_err(bad)?;
        // What follows the host is nothing or `:PORT`: `http::Uri` takes
        // the host up to the first colon and a port it cannot read as none.
        let rest = &authority.as_str()[authority.host().len()..];
        if !(rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok()))
        {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        let port = match (authority.port_u16(), mode) {
            (Some(0), _) => return Err(bad("port 0 is not a worker port")),
            (Some(p), _) => p,
            (None, ConnectionMode::Http) if secure => 443,
            (None, ConnectionMode::Http) => 80,
            (None, ConnectionMode::Grpc) => {
                return Err(bad(
                    "a grpc:// url needs a port, e.g. grpc://127.0.0.1:7001",
                ))
            }
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "a worker url is scheme://host:port with no path or query",
            ));
        }
        let tls = if secure { "s" } else { "" };
        let url = format!("{mode}{tls}://{host}:{port}");
        Ok(Endpoint {
            mode,
            secure,
            host,
            port,
            url,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// How the worker is reached.
    pub fn mode(&self) -> ConnectionMode {
        self.mode
    }

    /// Whether the worker is reached over TLS (`grpcs://`, `https://`).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Host name or address (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host without IPv6 brackets, as a peer would dial it.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Normalized url: `scheme://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`, for HTTP/2 `:authority` and connecting.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

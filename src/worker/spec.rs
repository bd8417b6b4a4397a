//! What an operator says about a worker, validated.
//!
//! [`WorkerSpec::new`] is the only way to make a spec, so every spec in the
//! registry has a parsed, normalized URL (two spellings of one address are one
//! worker) and a consistent role.

use std::collections::BTreeMap;
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

/// What a worker does.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    /// Serves whole requests.
    #[default]
    Regular,
    /// Prefill half of a disaggregated pair; has a bootstrap port.
    Prefill,
    /// Decode half of a disaggregated pair.
    Decode,
}

impl std::str::FromStr for WorkerRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "regular" => Ok(WorkerRole::Regular),
            "prefill" => Ok(WorkerRole::Prefill),
            "decode" => Ok(WorkerRole::Decode),
            other => Err(format!(
                "unknown role {other:?}: use regular, prefill or decode"
            )),
        }
    }
}

impl fmt::Display for WorkerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerRole::Regular => "regular",
            WorkerRole::Prefill => "prefill",
            WorkerRole::Decode => "decode",
        })
    }
}

/// The software a gRPC worker runs, which fixes the protocol it speaks: a
/// handle on one engine's [`EngineName`]. The domain knows an engine only by
/// its name and service; everything that differs by engine is asked of the
/// engine's own file (`engines::seam`), which defines its `EngineName`.
#[derive(Clone, Copy)]
pub struct Engine(&'static EngineName);

/// What names an engine: one `static` per engine, in the engine's file.
#[derive(Debug)]
pub struct EngineName {
    /// The name used in flags, configs and JSON.
    pub name: &'static str,
    /// The gRPC service the engine serves (also its `grpc.health.v1` name).
    pub service: &'static str,
    /// The path of the engine's `Generate` method.
    pub generate_path: &'static str,
}

/// `switchyard.v1.Inference`: the router's own protocol (the mock worker,
/// or a worker of one's own), and the engine of a worker registered
/// without one.
static SWITCHYARD: EngineName = EngineName {
    name: "switchyard",
    service: "switchyard.v1.Inference",
    generate_path: "/switchyard.v1.Inference/Generate",
};

impl Engine {
    /// The router's own protocol, `switchyard.v1.Inference`.
    pub const SWITCHYARD: Engine = Engine(&SWITCHYARD);

    /// The engine named by `name` (a `static` of the engine's file).
    pub const fn new(name: &'static EngineName) -> Engine {
        Engine(name)
    }

    /// The gRPC service the engine serves (also its `grpc.health.v1` name).
    pub fn service(self) -> &'static str {
        self.0.service
    }

    /// The path of the engine's `Generate` method.
    pub fn generate_path(self) -> &'static str {
        self.0.generate_path
    }

    /// The name used in flags, configs and JSON.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Whether this is the router's own protocol (no translation, no
    /// tokenizer, no engine calls).
    pub fn is_switchyard(self) -> bool {
        self == Engine::SWITCHYARD
    }
}

impl PartialEq for Engine {
    fn eq(&self, other: &Engine) -> bool {
        // One `static` per engine: its address is the engine.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Engine {}

impl std::hash::Hash for Engine {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state)
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a worker's engine says about the model it serves (empty when the
/// engine says nothing, as `switchyard` workers do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// The engine's served model name.
    pub served_model_name: String,
    /// The longest context the engine accepts, in tokens (0: unknown).
    pub max_context_length: u32,
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

/// Why a worker spec was refused. Every message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The URL does not parse, or lacks a host or port.
    #[error("invalid worker url {url:?}: {reason}")]
    InvalidUrl {
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
    /// The model id is empty, too long or has forbidden characters.
    #[error("invalid model_id {model:?}: {reason}")]
    InvalidModel {
        /// The model id as given.
        model: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A prefill worker without a bootstrap port, or another role with one.
    #[error("invalid bootstrap_port for a {role} worker: {reason}")]
    BootstrapPort {
        /// The worker's role.
        role: WorkerRole,
        /// What is wrong.
        reason: String,
    },
    /// A prefill or decode worker of an engine the router runs no PD over.
    #[error("{engine} workers cannot be {role} workers: the router runs no prefill/decode disaggregation over the {engine} protocol; register it as regular")]
    NoPd {
        /// The engine.
        engine: Engine,
        /// The role asked for.
        role: WorkerRole,
    },
    /// A role name that is none of the roles.
    #[error("{0}")]
    InvalidRole(String),
    /// A role number the proto does not define.
    #[error("unknown worker role value {0}: use REGULAR (0), PREFILL (1) or DECODE (2)")]
    UnknownRole(i32),
    /// Labels that are too many, too long or empty.
    #[error("invalid labels: {0}")]
    Labels(String),
    /// An engine value or name the router does not know; the message
    /// lists the ones it does.
    #[error("{0}")]
    UnknownEngine(String),
    /// An engine named for an HTTP worker: engines are gRPC protocols.
    #[error("engine {0} applies to grpc:// workers only; leave it unset for http:// workers")]
    EngineOnHttp(Engine),
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
    pub fn parse(url: &str) -> Result<Endpoint, SpecError> {
        let bad = |reason: &str| SpecError::InvalidUrl {
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
                return Err(SpecError::UnsupportedScheme {
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

/// A validated worker description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    endpoint: Endpoint,
    /// The model this worker serves.
    pub model_id: String,
    /// What the worker does.
    pub role: WorkerRole,
    /// Prefill workers' KV bootstrap port.
    pub bootstrap_port: Option<u16>,
    /// Free-form operator labels.
    pub labels: BTreeMap<String, String>,
    /// The engine of a gRPC worker (`None` for HTTP workers, and for a
    /// gRPC worker until it is identified: see `engines::identify`).
    pub engine: Option<Engine>,
    /// What the engine says about its model.
    pub facts: ModelFacts,
    /// The worker said it was not serving when it was added (an engine
    /// warming up): it starts out of rotation, until its health checks pass.
    pub starts_unhealthy: bool,
    /// Where the worker came from.
    pub source: Source,
}

/// Where a registered worker came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Source {
    /// The management APIs (or a shared registry): kept by the router's
    /// store (`store`), if it has one.
    #[default]
    Added,
    /// The config file or `--worker`: registered again at every start,
    /// never written to a state file.
    Startup,
    /// Found by discovery: this router's own, removed when its pod goes,
    /// never by hand.
    Discovered {
        /// The pod (`namespace/name`).
        pod: String,
    },
}

const MAX_MODEL_LEN: usize = 256;
const MAX_LABELS: usize = 64;
const MAX_LABEL_LEN: usize = 256;

impl WorkerSpec {
    /// Validates and normalizes a worker description.
    pub fn new(
        url: &str,
        model_id: &str,
        role: WorkerRole,
        bootstrap_port: Option<u32>,
        labels: BTreeMap<String, String>,
    ) -> Result<WorkerSpec, SpecError> {
        WorkerSpec::from_endpoint(
            Endpoint::parse(url)?,
            model_id,
            role,
            bootstrap_port,
            labels,
        )
    }

    /// [`WorkerSpec::new`] for an address already parsed.
    pub fn from_endpoint(
        endpoint: Endpoint,
        model_id: &str,
        role: WorkerRole,
        bootstrap_port: Option<u32>,
        labels: BTreeMap<String, String>,
    ) -> Result<WorkerSpec, SpecError> {
        let bad_model = |reason| SpecError::InvalidModel {
            model: model_id.to_string(),
            reason,
        };
        if model_id.is_empty() {
            return Err(bad_model("model_id is required"));
        }
        if model_id.len() > MAX_MODEL_LEN {
            return Err(bad_model("longer than 256 bytes"));
        }
        if model_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad_model(
                "must not contain whitespace or control characters",
            ));
        }
        let bootstrap_port = match (role, bootstrap_port) {
            (WorkerRole::Prefill, None) => {
                return Err(SpecError::BootstrapPort {
                    role,
                    reason: "a prefill worker needs one".into(),
                })
            }
            (WorkerRole::Prefill, Some(p)) => match u16::try_from(p) {
                Ok(p) if p != 0 => Some(p),
                _ => {
                    return Err(SpecError::BootstrapPort {
                        role,
                        reason: format!("{p} is not a port (1-65535)"),
                    })
                }
            },
            (_, Some(_)) => {
                return Err(SpecError::BootstrapPort {
                    role,
                    reason: "only prefill workers have one".into(),
                })
            }
            (_, None) => None,
        };
        if labels.len() > MAX_LABELS {
            return Err(SpecError::Labels(format!("at most {MAX_LABELS} labels")));
        }
        if let Some((k, _)) = labels
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
        {
            return Err(SpecError::Labels(format!(
                "label {k:?}: keys must be 1-{MAX_LABEL_LEN} bytes and values at most {MAX_LABEL_LEN}"
            )));
        }
        Ok(WorkerSpec {
            endpoint,
            model_id: model_id.to_string(),
            role,
            bootstrap_port,
            labels,
            engine: None,
            facts: ModelFacts::default(),
            starts_unhealthy: false,
            source: Source::Added,
        })
    }

    /// The same spec with its engine (and what the engine said) set;
    /// refused for HTTP workers.
    pub fn with_engine(mut self, engine: Engine, facts: ModelFacts) -> Result<Self, SpecError> {
        if self.endpoint.mode() == ConnectionMode::Http {
            return Err(SpecError::EngineOnHttp(engine));
        }
        self.engine = Some(engine);
        self.facts = facts;
        Ok(self)
    }

    /// The parsed, normalized address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The normalized url.
    pub fn url(&self) -> &str {
        self.endpoint.url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> Result<WorkerSpec, SpecError> {
        WorkerSpec::new(url, "m", WorkerRole::Regular, None, BTreeMap::new())
    }

    #[test]
    fn normalizes_urls() {
        assert_eq!(
            spec("grpc://LOCALHOST:7001/").unwrap().url(),
            "grpc://localhost:7001"
        );
        assert_eq!(spec("http://10.0.0.1").unwrap().url(), "http://10.0.0.1:80");
        assert_eq!(
            spec("grpc://[::1]:7001").unwrap().endpoint().host(),
            "[::1]"
        );
    }

    #[test]
    fn refuses_bad_urls_with_a_reason() {
        for (url, needle) in [
            ("", "empty"),
            ("127.0.0.1:7001", "scheme"),
            ("ftp://h:1", "unsupported scheme"),
            ("grpc://h", "needs a port"),
            ("grpc://h:0", "port 0"),
            ("grpc://h:1/v1", "no path"),
            ("grpc://u:p@h:1", "credentials"),
            ("grpc://h:99999", "invalid"),
            ("grpc://2130706433:1", "dotted-quad"),
            ("grpc://127.1:1", "dotted-quad"),
            ("grpc://0x7f000001:1", "dotted-quad"),
            ("grpc://0.0.0.0:1", "unspecified"),
            ("grpc://[::]:1", "unspecified"),
            // Found by the worker_url fuzz target: accepted, and normalized
            // to a URL that did not parse again.
            ("http://p[):.],.", "characters"),
        ] {
            let err = spec(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let long = format!("grpc://{}.example:1", "a".repeat(10_000));
        let err = spec(&long).unwrap_err().to_string();
        assert!(err.contains("longer than 253"), "{err}");
        // Over 63 characters in one part.
        let err = spec(&format!("grpc://{}.example:1", "a".repeat(64)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("63"), "{err}");
        for fine in [
            "grpc://[::1]:1",
            "grpc://10.0.0.7:1",
            "grpc://worker-3.svc:1",
        ] {
            spec(fine).unwrap();
        }
    }

    #[test]
    fn role_and_bootstrap_port_must_agree() {
        let mk = |role, port| WorkerSpec::new("grpc://h:1", "m", role, port, BTreeMap::new());
        assert!(mk(WorkerRole::Prefill, Some(9000)).is_ok());
        assert!(mk(WorkerRole::Prefill, None).is_err());
        assert!(mk(WorkerRole::Prefill, Some(70000)).is_err());
        assert!(mk(WorkerRole::Decode, Some(9000)).is_err());
        assert!(mk(WorkerRole::Regular, None).is_ok());
    }

    #[test]
    fn model_is_required() {
        let err = WorkerSpec::new("grpc://h:1", "", WorkerRole::Regular, None, BTreeMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("model_id is required"));
    }
}

//! What an operator says about a worker, validated.
//!
//! [`WorkerSpec::new`] is the only way to make a spec, so every spec in the
//! registry has a parsed, normalized URL (two spellings of one address are one
//! worker) and a consistent role.

use std::collections::BTreeMap;
use std::fmt;

use super::endpoint::{ConnectionMode, Endpoint, UrlError};
use super::engine::Engine;
use super::Health;

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

/// What a worker's engine says about the model it serves (empty when the
/// engine says nothing, as `switchyard` workers do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// The engine's served model name.
    pub served_model_name: String,
    /// The longest context the engine accepts, in tokens (0: unknown).
    pub max_context_length: u32,
}

/// Why a worker spec was refused. Every message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The URL does not parse, lacks a host or port, or has a scheme the
    /// router does not speak.
    #[error(transparent)]
    Url(#[from] UrlError),
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
    /// What the worker's health is when it joins the registry: `Healthy`
    /// (the default; admission found it serving), `Unhealthy` (it said it
    /// was not serving yet, an engine warming up) or `Unchecked` (nobody has
    /// contacted it): the last two stay out of rotation until a health check
    /// passes.
    pub starts: Health,
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
            starts: Health::Healthy,
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

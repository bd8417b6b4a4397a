//! The write side: a worker an operator (gRPC, HTTP, the command line, a
//! config file) or discovery asks for, checked, identified and handed to
//! the router's [`Store`].
//!
//! Its host is checked first ([`hosts`]), before anything contacts it; a
//! gRPC worker's engine is then detected when not given and its model facts
//! read ([`admit`], through the engine seam); an HTTP worker is asked
//! `/health`. The URL is parsed once, into the [`Endpoint`] every later
//! step reads. Nothing here is on a call's path.

pub mod hosts;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use crate::config::HealthCheckConfig;
use crate::engines::{self, Method, PdStyle, HEALTH_CHECK};
use crate::store::{Store, StoreError};
use crate::transport::grpc::{ChannelConfig, Upstream};
use crate::transport::http1::{HttpClient, Origin};
use crate::transport::{ConnectFailure, Failure};
use crate::worker::{
    ConnectionMode, Endpoint, Engine, Health, ModelFacts, RegistryError, Source, SpecError,
    UrlError, Worker, WorkerRegistry, WorkerRole, WorkerSpec,
};
use hosts::HostPolicy;

/// A worker as an operator asked for it (gRPC, HTTP or the command line),
/// before the router knows its engine or, perhaps, its model.
#[derive(Debug, Clone, Default)]
pub struct WorkerRequest {
    /// `grpc://host:port` or `http://host:port`.
    pub url: String,
    /// Empty: the engine's served model name.
    pub model_id: String,
    /// What the worker does.
    pub role: WorkerRole,
    /// Prefill workers only.
    pub bootstrap_port: Option<u32>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// `None`: detect (gRPC workers).
    pub engine: Option<Engine>,
}

/// Which worker a removal names.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Its id.
    Id(&'a str),
    /// Its URL (any spelling that normalizes to it).
    Url(&'a str),
}

/// Why a worker was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The request is invalid, or the registry refused the worker.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The worker could not be reached or identified.
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    /// The store of workers could not take the change (etcd unreachable,
    /// state file not writable).
    #[error(transparent)]
    Store(crate::store::StoreError),
    /// The worker's host is not one workers may have
    /// (`[worker_hosts]`).
    #[error("worker url {url:?} refused: {reason}")]
    HostRefused {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
}

impl From<crate::store::StoreError> for AddError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Registry(e) => AddError::Registry(e),
            e => AddError::Store(e),
        }
    }
}

impl From<SpecError> for AddError {
    fn from(e: SpecError) -> Self {
        AddError::Registry(e.into())
    }
}

/// Adds workers to a registry the way every front door does (gRPC, HTTP,
/// the command line): identified first ([`admit`]), then registered
/// through the router's [`Store`]; and removes them the same way.
#[derive(Debug, Clone)]
pub struct Admission {
    registry: Arc<WorkerRegistry>,
    store: Arc<Store>,
    timeout: Duration,
    hosts: Arc<HostPolicy>,
    /// Asks HTTP workers `GET /health` when they are added.
    http: HttpClient,
    /// `health_check.trust_unchecked`: a worker registered without being
    /// contacted is routable at once instead of after its first check.
    trust_unchecked: bool,
}

impl Admission {
    /// Adds to `registry` workers whose hosts `hosts` allows, waiting at
    /// most `timeout` for each call that identifies a worker; HTTP workers
    /// are asked with `http`.
    pub fn new(
        (registry, store): (Arc<WorkerRegistry>, Arc<Store>),
        health: &HealthCheckConfig,
        hosts: Arc<HostPolicy>,
        http: HttpClient,
    ) -> Self {
        Admission {
            registry,
            store,
            timeout: health.timeout(),
            trust_unchecked: health.trust_unchecked,
            hosts,
            http,
        }
    }

    /// Identifies and registers a worker; it is routable when this returns.
    /// Its host is checked before anything contacts it.
    pub async fn add(&self, request: WorkerRequest) -> Result<Arc<Worker>, AddError> {
        self.add_from(request, Source::Added).await
    }

    /// Adds a worker found by discovery in `pod` (this router's own; see
    /// `discovery`).
    pub async fn add_discovered(
        &self,
        request: WorkerRequest,
        pod: String,
    ) -> Result<Arc<Worker>, AddError> {
        self.add_from(request, Source::Discovered { pod }).await
    }

    /// Adds a worker of the config file or `--worker`.
    pub async fn add_startup(&self, request: WorkerRequest) -> Result<Arc<Worker>, AddError> {
        self.add_from(request, Source::Startup).await
    }

    /// Unregisters a worker; no new call on this router chooses it once
    /// this returns.
    pub async fn remove(&self, target: Target<'_>) -> Result<Arc<Worker>, StoreError> {
        let worker = match target {
            Target::Id(id) => self.registry.get(id)?,
            Target::Url(url) => self.registry.get_by_url(url)?,
        };
        self.store.remove(&self.registry, &worker).await?;
        Ok(worker)
    }

    async fn add_from(
        &self,
        request: WorkerRequest,
        source: Source,
    ) -> Result<Arc<Worker>, AddError> {
        let endpoint = Endpoint::parse(&request.url).map_err(SpecError::from)?;
        if let Err(reason) = self.hosts.check(&endpoint, self.timeout).await {
            return Err(AddError::HostRefused {
                url: request.url,
                reason,
            });
        }
        let mut spec = admit(
            request,
            endpoint,
            (self.registry.channel_config(), &self.http),
            self.timeout,
        )
        .await?;
        spec.source = source;
        if self.trust_unchecked && spec.starts == Health::Unchecked {
            spec.starts = Health::Healthy;
        }
        Ok(self.store.add(&self.registry, spec).await?)
    }
}

/// Why a worker's engine or model could not be found out.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// No answer from the worker.
    #[error("cannot reach {url} to identify it (tried {tried}): {failure}; start the worker first, or set both engine and model_id to register it without contacting it")]
    Unreachable {
        /// The worker.
        url: String,
        /// The call that failed.
        tried: &'static str,
        /// How it failed.
        failure: Failure,
    },
    /// The worker answered, but as none of the engines.
    #[error("cannot identify the engine of {url}: its grpc.health.v1 knows none of {services}, and GetModelInfo of SGLang and vLLM is not served ({detail}); set engine explicitly")]
    Unknown {
        /// The worker.
        url: String,
        /// The services asked about.
        services: String,
        /// What the last attempt answered.
        detail: Failure,
    },
    /// The worker answers in the other connection mode's protocol.
    #[error("{url} answers {found}, not {expected}: register it as {suggestion}")]
    WrongProtocol {
        /// The worker.
        url: String,
        /// What it answered.
        found: &'static str,
        /// What its scheme promised.
        expected: &'static str,
        /// The URL to use.
        suggestion: String,
    },
    /// The TLS connection to the worker failed (wrong CA, expired, ...).
    #[error("cannot reach {url} over TLS: {failure}")]
    Tls {
        /// The worker.
        url: String,
        /// Why.
        failure: Failure,
    },
    /// The engine did not say which model it serves.
    #[error("{url} is a {engine} worker, but {why}; set model_id")]
    NoModel {
        /// The worker.
        url: String,
        /// Its engine.
        engine: Engine,
        /// Why the model could not be read.
        why: String,
    },
}

/// Turns an operator's request into a spec the registry takes: a gRPC
/// worker's engine detected when not given (see [`engines::detect`]), its model
/// facts read with the engine's `GetModelInfo`, and its `model_id` taken
/// from them when the request leaves it empty. A gRPC worker whose engine
/// and model are both given is not contacted (it may be started later).
pub async fn admit(
    request: WorkerRequest,
    endpoint: Endpoint,
    (channel, http): (&ChannelConfig, &HttpClient),
    timeout: Duration,
) -> Result<WorkerSpec, AddError> {
    let spec = |model: &str| {
        WorkerSpec::from_endpoint(
            endpoint.clone(),
            model,
            request.role,
            request.bootstrap_port,
            request.labels.clone(),
        )
    };
    let authority: Authority = endpoint.authority().parse().map_err(|_| {
        SpecError::from(UrlError::Invalid {
            url: request.url.clone(),
            reason: "not a valid host:port".into(),
        })
    })?;
    let upstream = || {
        Upstream::new(
            authority.clone(),
            HEALTH_CHECK,
            channel.clone(),
            endpoint.is_secure(),
        )
    };
    let origin = Origin {
        scheme: if endpoint.is_secure() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        },
        authority: authority.clone(),
    };
    if endpoint.mode() == ConnectionMode::Http {
        if let Some(engine) = request.engine {
            return Err(SpecError::EngineOnHttp(engine).into());
        }
        let mut spec = spec(&request.model_id)?;
        spec.starts = match probe_http(http, &origin, &upstream(), &endpoint, timeout).await? {
            true => Health::Healthy,
            false => Health::Unhealthy,
        };
        return Ok(spec);
    }
    // Refuse what is wrong with the request before contacting anyone
    // (the model is checked again once known).
    spec(if request.model_id.is_empty() {
        "unknown"
    } else {
        &request.model_id
    })?;
    let pd_capable = |engine: Engine| match request.role {
        WorkerRole::Regular => Ok(()),
        role if engines::seam(engine).pd() == PdStyle::None => {
            Err(SpecError::NoPd { engine, role })
        }
        _ => Ok(()),
    };
    match request.engine {
        Some(engine) if engine.is_switchyard() || !request.model_id.is_empty() => {
            pd_capable(engine)?;
            // Nobody has contacted it: out of rotation until its first
            // health check (which runs at once) passes.
            let mut spec = spec(&request.model_id)?.with_engine(engine, ModelFacts::default())?;
            spec.starts = Health::Unchecked;
            return Ok(spec);
        }
        _ => {}
    }
    let upstream = upstream();
    let url = endpoint.url().to_string();
    let (engine, serving) = match request.engine {
        Some(engine) => (engine, None),
        None => match engines::detect(&upstream, timeout).await {
            Ok(found) => found,
            Err((failure, false))
                if matches!(failure, Failure::Connect(ConnectFailure::Tls(_))) =>
            {
                return Err(IdentifyError::Tls { url, failure }.into())
            }
            // Reached, but not as HTTP/2: an HTTP/1 server there?
            Err((failure, false)) => {
                let e = IdentifyError::Unreachable {
                    url: url.clone(),
                    tried: "grpc.health.v1/Check",
                    failure,
                };
                if http.get(&origin, "/health", timeout).await.is_ok() {
                    let tls = if endpoint.is_secure() { "s" } else { "" };
                    return Err(IdentifyError::WrongProtocol {
                        url: url.clone(),
                        found: "HTTP/1.1",
                        expected: "gRPC",
                        suggestion: format!("http{tls}://{}", endpoint.authority()),
                    }
                    .into());
                }
                return Err(e.into());
            }
            Err((detail, true)) => {
                return Err(IdentifyError::Unknown {
                    url,
                    services: engines::ALL
                        .iter()
                        .map(|s| s.engine().service())
                        .collect::<Vec<_>>()
                        .join(", "),
                    detail,
                }
                .into())
            }
        },
    };
    pd_capable(engine)?;
    let reports_model = engines::seam(engine).path(Method::GetModelInfo).is_some();
    let facts = match reports_model {
        false => ModelFacts::default(),
        true => engines::model_info(&upstream, engine, timeout)
            .await
            .map_err(|failure| match failure {
                Failure::Status(_) | Failure::BadReply(_) => IdentifyError::NoModel {
                    url: url.clone(),
                    engine,
                    why: format!("its GetModelInfo failed: {failure}"),
                },
                failure => IdentifyError::Unreachable {
                    url: url.clone(),
                    tried: "GetModelInfo",
                    failure,
                },
            })?,
    };
    let model = if request.model_id.is_empty() {
        if facts.served_model_name.is_empty() {
            return Err(IdentifyError::NoModel {
                url,
                engine,
                why: match reports_model {
                    false => format!("{engine} workers do not report their model"),
                    true => "its GetModelInfo has no served_model_name or model_path".into(),
                },
            }
            .into());
        }
        facts.served_model_name.clone()
    } else {
        request.model_id.clone()
    };
    let mut spec = spec(&model)?.with_engine(engine, facts)?;
    // An engine still warming up (or draining) says NOT_SERVING on its own
    // service: it joins out of rotation, and the health checker puts it in
    // once it serves, instead of taking calls it would refuse until enough
    // checks have failed.
    let serving = match serving {
        _ if engine.is_switchyard() => true,
        Some(serving) => serving,
        None => engines::health(&upstream, engine.service(), timeout)
            .await
            .unwrap_or(true),
    };
    if !serving {
        tracing::info!(url, "the worker is not serving yet: added out of rotation");
        spec.starts = Health::Unhealthy;
    }
    Ok(spec)
}

/// Asks an HTTP worker `GET /health`: whether it is healthy now. One that
/// cannot be reached yet joins out of rotation (its health checks bring it
/// in); one that answers gRPC, or fails its TLS handshake, is refused.
async fn probe_http(
    http: &HttpClient,
    origin: &Origin,
    grpc: &Upstream,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<bool, IdentifyError> {
    let url = endpoint.url().to_string();
    match http.get(origin, "/health", timeout).await {
        Ok(status) => Ok(status.is_success()),
        Err(failure @ Failure::Connect(ConnectFailure::Tls(_))) => {
            Err(IdentifyError::Tls { url, failure })
        }
        Err(failure @ (Failure::Connect(_) | Failure::TimedOut(_))) => {
            tracing::info!(url, %failure, "the worker does not answer yet: added out of rotation");
            Ok(false)
        }
        // Connected, but no HTTP/1 answer: a gRPC server there?
        Err(failure) => {
            if engines::health(grpc, "", timeout).await.is_ok() {
                let tls = if endpoint.is_secure() { "s" } else { "" };
                return Err(IdentifyError::WrongProtocol {
                    url,
                    found: "gRPC",
                    expected: "HTTP/1.1",
                    suggestion: format!("grpc{tls}://{}", endpoint.authority()),
                });
            }
            tracing::info!(url, %failure, "the worker's /health failed: added out of rotation");
            Ok(false)
        }
    }
}

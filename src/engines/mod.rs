//! The engines behind gRPC workers (SGLang, vLLM, Switchyard's own
//! protocol): how the router identifies a worker's engine when it is added,
//! and the few calls it makes in each engine's protocol (`Abort`,
//! `GetModelInfo`, health).
//!
//! The messages are the engines' published definitions (`proto/smg`,
//! generated into [`crate::pb::sglang_scheduler`] and
//! [`crate::pb::vllm_engine`]). Relaying an engine's `Generate` needs none
//! of this: it is bytes in, bytes out (`routers::grpc`).

pub mod hosts;
pub mod translate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::pb::{self, sglang_scheduler as sglang, vllm_engine as vllm};
use crate::store::{Store, StoreError};
use crate::transport::grpc::{ChannelConfig, Upstream};
use crate::transport::http1::{HttpClient, Origin};
use crate::transport::{ConnectFailure, Failure};
use crate::worker::{
    ConnectionMode, Endpoint, Engine, ModelFacts, RegistryError, Source, SpecError, Worker,
    WorkerRegistry, WorkerRole, WorkerSpec,
};
use hosts::HostPolicy;
use http::uri::{Authority, Scheme};

/// `grpc.health.v1/Check`.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

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
}

impl Admission {
    /// Adds to `registry` workers whose hosts `hosts` allows, waiting at
    /// most `timeout` for each call that identifies a worker; HTTP workers
    /// are asked with `http`.
    pub fn new(
        (registry, store): (Arc<WorkerRegistry>, Arc<Store>),
        timeout: Duration,
        hosts: Arc<HostPolicy>,
        http: HttpClient,
    ) -> Self {
        Admission {
            registry,
            store,
            timeout,
            hosts,
            http,
        }
    }

    /// Identifies and registers a worker; it is routable when this returns.
    /// Its host is checked before anything contacts it.
    pub async fn add(&self, request: WorkerRequest) -> Result<Arc<Worker>, AddError> {
        self.add_from(request, Source::Added).await
    }

    /// Adds a worker found by discovery (this router's own; see `discovery`).
    pub async fn add_discovered(&self, request: WorkerRequest) -> Result<Arc<Worker>, AddError> {
        self.add_from(request, Source::Discovered).await
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
        let endpoint = Endpoint::parse(&request.url)?;
        if let Err(reason) = self.hosts.check(&endpoint, self.timeout).await {
            return Err(AddError::HostRefused {
                url: request.url,
                reason,
            });
        }
        let mut spec = admit(
            request,
            (self.registry.channel_config(), &self.http),
            self.timeout,
        )
        .await?;
        spec.source = source;
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
    #[error("cannot identify the engine of {url}: its grpc.health.v1 knows none of {services}, and GetModelInfo of SGLang and vLLM is not served ({detail}); set engine explicitly (switchyard, sglang or vllm)")]
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
/// worker's engine detected when not given (see [`detect`]), its model
/// facts read with the engine's `GetModelInfo`, and its `model_id` taken
/// from them when the request leaves it empty. A gRPC worker whose engine
/// and model are both given is not contacted (it may be started later).
pub async fn admit(
    request: WorkerRequest,
    (channel, http): (&ChannelConfig, &HttpClient),
    timeout: Duration,
) -> Result<WorkerSpec, AddError> {
    let endpoint = Endpoint::parse(&request.url)?;
    let spec = |model: &str| {
        WorkerSpec::new(
            &request.url,
            model,
            request.role,
            request.bootstrap_port,
            request.labels.clone(),
        )
    };
    let authority: Authority = endpoint
        .authority()
        .parse()
        .map_err(|_| SpecError::InvalidUrl {
            url: request.url.clone(),
            reason: "not a valid host:port".into(),
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
        spec.starts_unhealthy = !probe_http(http, &origin, &upstream(), &endpoint, timeout).await?;
        return Ok(spec);
    }
    // Refuse what is wrong with the request before contacting anyone
    // (the model is checked again once known).
    spec(if request.model_id.is_empty() {
        "unknown"
    } else {
        &request.model_id
    })?;
    match request.engine {
        Some(engine) if engine == Engine::Switchyard || !request.model_id.is_empty() => {
            return Ok(spec(&request.model_id)?.with_engine(engine, ModelFacts::default())?);
        }
        _ => {}
    }
    let upstream = upstream();
    let url = endpoint.url().to_string();
    let (engine, serving) = match request.engine {
        Some(engine) => (engine, None),
        None => match detect(&upstream, &url, timeout).await {
            Ok(found) => found,
            Err(IdentifyError::Unreachable { failure, .. })
                if matches!(failure, Failure::Connect(ConnectFailure::Tls(_))) =>
            {
                return Err(IdentifyError::Tls { url, failure }.into())
            }
            // Reached, but not as HTTP/2: an HTTP/1 server there?
            Err(e @ IdentifyError::Unreachable { .. }) => {
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
            Err(e) => return Err(e.into()),
        },
    };
    let facts = match engine {
        Engine::Switchyard => ModelFacts::default(),
        _ => model_info(&upstream, engine, timeout)
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
                why: match engine {
                    Engine::Switchyard => "switchyard workers do not report their model".into(),
                    _ => "its GetModelInfo has no served_model_name or model_path".into(),
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
    let serving = match (engine, serving) {
        (Engine::Switchyard, _) => true,
        (_, Some(serving)) => serving,
        (_, None) => health(&upstream, engine.service(), timeout)
            .await
            .unwrap_or(true),
    };
    if !serving {
        tracing::info!(url, "the worker is not serving yet: added out of rotation");
        spec.starts_unhealthy = true;
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
        Err(Failure::Connect(_) | Failure::TimedOut(_)) => {
            tracing::info!(url, "the worker does not answer yet: added out of rotation");
            Ok(false)
        }
        // Connected, but no HTTP/1 answer: a gRPC server there?
        Err(failure) => {
            if health(grpc, "", timeout).await.is_ok() {
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

/// Finds a worker's engine: the first of SGLang, vLLM and Switchyard whose
/// service its `grpc.health.v1` knows (serving or not: a warming engine is
/// still that engine); failing that, whichever engine's `GetModelInfo` it
/// answers. A worker that does not answer at all is unreachable.
/// Also whether the engine's service said SERVING, when its health service
/// is what identified it.
pub async fn detect(
    upstream: &Upstream,
    url: &str,
    timeout: Duration,
) -> Result<(Engine, Option<bool>), IdentifyError> {
    let mut last = None;
    for engine in Engine::ALL {
        match health(upstream, engine.service(), timeout).await {
            Ok(serving) => return Ok((engine, Some(serving))),
            // NOT_FOUND: not this service; UNIMPLEMENTED: no health service.
            Err(Failure::Status(status)) if status.code == 5 => {
                last = Some(Failure::Status(status))
            }
            Err(Failure::Status(status)) if status.code == 12 => {
                last = Some(Failure::Status(status));
                break;
            }
            Err(failure) => {
                return Err(IdentifyError::Unreachable {
                    url: url.to_string(),
                    tried: "grpc.health.v1/Check",
                    failure,
                })
            }
        }
    }
    for engine in [Engine::Sglang, Engine::Vllm] {
        match model_info(upstream, engine, timeout).await {
            Ok(_) => return Ok((engine, None)),
            Err(failure) => last = Some(failure),
        }
    }
    Err(IdentifyError::Unknown {
        url: url.to_string(),
        services: Engine::ALL.map(Engine::service).join(", "),
        detail: last.unwrap_or(Failure::NoStatus),
    })
}

/// `grpc.health.v1/Check` of `service`: whether it is SERVING.
pub async fn health(
    upstream: &Upstream,
    service: &str,
    timeout: Duration,
) -> Result<bool, Failure> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let reply = upstream.unary(HEALTH_CHECK, &request, timeout).await?;
    let response = HealthCheckResponse::decode(reply)
        .map_err(|_| Failure::BadReply("grpc.health.v1.HealthCheckResponse"))?;
    Ok(response.status == ServingStatus::Serving as i32)
}

/// The service name a periodic health check asks a worker of `engine`
/// about, unless the operator configured one: the engine's own service
/// (SGLang reports NOT_SERVING there while warming up and draining), and
/// the whole server ("") for Switchyard workers.
pub fn health_service(engine: Engine) -> &'static str {
    match engine {
        Engine::Switchyard => "",
        engine => engine.service(),
    }
}

/// The engine's `GetModelInfo`: served model name (else the model path)
/// and maximum context length.
pub async fn model_info(
    upstream: &Upstream,
    engine: Engine,
    timeout: Duration,
) -> Result<ModelFacts, Failure> {
    let name = |served: String, path: String| if served.is_empty() { path } else { served };
    match engine {
        Engine::Switchyard => Ok(ModelFacts::default()),
        Engine::Sglang => {
            let reply = upstream
                .unary(SGLANG_MODEL_INFO, &sglang::GetModelInfoRequest {}, timeout)
                .await?;
            let info = sglang::GetModelInfoResponse::decode(reply)
                .map_err(|_| Failure::BadReply("sglang GetModelInfoResponse"))?;
            Ok(ModelFacts {
                served_model_name: name(info.served_model_name, info.model_path),
                max_context_length: u32::try_from(info.max_context_length).unwrap_or(0),
            })
        }
        Engine::Vllm => {
            let reply = upstream
                .unary(VLLM_MODEL_INFO, &vllm::GetModelInfoRequest {}, timeout)
                .await?;
            let info = vllm::GetModelInfoResponse::decode(reply)
                .map_err(|_| Failure::BadReply("vllm GetModelInfoResponse"))?;
            Ok(ModelFacts {
                served_model_name: name(info.served_model_name, info.model_path),
                max_context_length: info.max_context_length,
            })
        }
    }
}

const SGLANG_MODEL_INFO: &str = "/sglang.grpc.scheduler.SglangScheduler/GetModelInfo";
const VLLM_MODEL_INFO: &str = "/vllm.grpc.engine.VllmEngine/GetModelInfo";

/// The path of `method` in `engine`'s service, for the methods the router
/// forwards.
/// (`None`: Switchyard's protocol has no such method).
pub fn path(engine: Engine, method: Method) -> Option<&'static str> {
    use Method::*;
    Some(match (engine, method) {
        (engine, Abort) => abort_path(engine),
        (Engine::Switchyard, _) => return None,
        (Engine::Sglang, GetModelInfo) => SGLANG_MODEL_INFO,
        (Engine::Sglang, GetServerInfo) => "/sglang.grpc.scheduler.SglangScheduler/GetServerInfo",
        (Engine::Sglang, GetLoads) => "/sglang.grpc.scheduler.SglangScheduler/GetLoads",
        (Engine::Vllm, GetModelInfo) => VLLM_MODEL_INFO,
        (Engine::Vllm, GetServerInfo) => "/vllm.grpc.engine.VllmEngine/GetServerInfo",
        (Engine::Vllm, GetLoads) => "/vllm.grpc.engine.VllmEngine/GetLoads",
    })
}

/// Engine methods the router calls or forwards besides `Generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Stop a running request.
    Abort,
    /// Model facts.
    GetModelInfo,
    /// Server facts.
    GetServerInfo,
    /// Scheduler load.
    GetLoads,
}

/// The path of `engine`'s `Abort`.
fn abort_path(engine: Engine) -> &'static str {
    match engine {
        Engine::Switchyard => "/switchyard.v1.Inference/Abort",
        Engine::Sglang => "/sglang.grpc.scheduler.SglangScheduler/Abort",
        Engine::Vllm => "/vllm.grpc.engine.VllmEngine/Abort",
    }
}

/// How long the router waits for a worker to acknowledge an `Abort`.
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `worker` its engine's `Abort` for `request_id`, waiting at most
/// [`ABORT_TIMEOUT`]: whether the worker said it had the request (vLLM's
/// reply says nothing, so a delivered abort counts).
pub async fn abort(worker: &Worker, request_id: &str) -> Result<bool, Failure> {
    let engine = worker.engine();
    let path = abort_path(engine);
    let upstream = worker.control();
    match engine {
        Engine::Switchyard => {
            let request = pb::AbortRequest {
                request_id: request_id.to_string(),
            };
            let reply = upstream.unary(path, &request, ABORT_TIMEOUT).await?;
            let reply = pb::AbortResponse::decode(reply)
                .map_err(|_| Failure::BadReply("switchyard.v1.AbortResponse"))?;
            Ok(reply.aborted)
        }
        Engine::Sglang => {
            let request = sglang::AbortRequest {
                request_id: request_id.to_string(),
                reason: "cancelled by the client".into(),
            };
            let reply = upstream.unary(path, &request, ABORT_TIMEOUT).await?;
            let reply = sglang::AbortResponse::decode(reply)
                .map_err(|_| Failure::BadReply("sglang AbortResponse"))?;
            Ok(reply.success)
        }
        Engine::Vllm => {
            let request = vllm::AbortRequest {
                request_ids: vec![request_id.to_string()],
            };
            upstream.unary(path, &request, ABORT_TIMEOUT).await?;
            Ok(true)
        }
    }
}

/// Forwards a unary call's message bytes to `worker` as they are: the
/// reply's message bytes.
pub async fn forward(
    worker: &Worker,
    method: Method,
    message: Bytes,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    // Callers pass SGLang and vLLM workers; a switchyard worker would
    // answer UNIMPLEMENTED, so that is what it says.
    let path = path(worker.engine(), method).ok_or_else(|| {
        Failure::Status(Box::new(crate::transport::WorkerStatus {
            code: 12,
            message: format!("switchyard.v1 workers have no {method:?}"),
            trailers: http::HeaderMap::new(),
        }))
    })?;
    worker.control().unary_bytes(path, &message, timeout).await
}

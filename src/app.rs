//! Wiring: the registry, policy, router, services and health, built once
//! from a [`Config`] and then served on a listener until a shutdown signal.
//!
//! `App::build` does everything that can fail because of configuration
//! (including registering startup workers) before a socket is touched;
//! `App::serve` runs. Background tasks (health checker, serving reporter)
//! start in `serve` and stop when it returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::server::{HealthReporter, HealthService};

use crate::admission::hosts::HostPolicy;
use crate::admission::{AddError, Admission, WorkerRequest};
use crate::auth::Keys;
use crate::config::{Config, ConfigError, UpstreamConfig, WorkerTlsConfig};
use crate::engines;
use crate::health::{HealthChecker, LoadPoller, ServingReporter};
use crate::pb;
use crate::routers::grpc::GrpcRouter;
use crate::routers::http::HttpRouter;
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::Retries;
use crate::services::openai::EngineFront;
use crate::services::overload::CallLimit;
use crate::services::tls::{Accepting, Peer, Protocol, ServerTls};
use crate::services::{InferenceService, WorkerManagementService};
use crate::store::etcd::SharedRegistry;
use crate::store::file::StateFile;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::tokenizer::Tokenizers;
use crate::transport::grpc::ChannelConfig;
use crate::transport::http1::{HttpClient, HttpClientConfig};
use crate::transport::tls::WorkerTls;
use crate::worker::{RegistryError, SpecError, WorkerRegistry, WorkerRole};
use tokio_util::task::AbortOnDropHandle;

/// Why the router could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A startup worker could not be registered.
    #[error("startup worker {url}: {source}")]
    Worker {
        /// The worker's url.
        url: String,
        /// Why.
        source: AddError,
    },
    /// A TLS file of the listeners cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    /// The shared registry (etcd) cannot be used.
    #[error("registry: {0}")]
    Registry(String),
    /// The state file cannot be used.
    #[error(transparent)]
    StateFile(#[from] crate::store::file::StateFileError),
    /// Discovery cannot start.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// Traces cannot be exported as configured.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::TracingError),
    /// Reflection could not load the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The sockets `App::serve` serves on: gRPC always, HTTP if configured.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC: worker management, inference, health, reflection.
    pub grpc: TcpListener,
    /// HTTP: inference, models, health, readiness, worker management.
    pub http: Option<TcpListener>,
    /// Admin: metrics, liveness and readiness.
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Listeners {
            grpc,
            http: None,
            admin: None,
        }
    }
}

/// A built router, ready to serve.
#[derive(Debug)]
pub struct App {
    config: Config,
    registry: Arc<WorkerRegistry>,
    router: Arc<GrpcRouter>,
    http_router: Arc<HttpRouter>,
    tokenizers: Arc<Tokenizers>,
    health: HealthReporter,
    /// Which hosts may be added as workers.
    hosts: Arc<HostPolicy>,
    /// The listeners' TLS, if configured.
    server_tls: Option<Arc<ServerTls>>,
    /// TLS to `https://` workers, if configured.
    http_tls: Option<Arc<rustls::ClientConfig>>,
    /// The retry budget both routers share.
    retries: Arc<Retries>,
    /// What adding an HTTP worker asks it with.
    probes: HttpClient,
    /// Where runtime-added workers are kept.
    store: Arc<Store>,
    /// The etcd mirror, if the registry is shared; stops with the app.
    _mirror: Option<AbortOnDropHandle<()>>,
    /// Kubernetes discovery, if configured; stops with the app.
    _discovery: Option<AbortOnDropHandle<()>>,
    /// The trace exporter, if tracing is on; flushed when serving ends.
    telemetry: Option<Telemetry>,
}

impl App {
    /// Validates `config`, builds every component and registers the startup
    /// workers, so they are routable before the router reports SERVING.
    pub async fn build(config: Config) -> Result<App, AppError> {
        config.validate()?;
        let server_tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
        let worker_tls = worker_tls(&config.worker_tls)?;
        let mut channel = channel_config(&config.upstream);
        channel.tls = worker_tls.as_ref().map(|t| t.grpc.clone());
        let http_tls = worker_tls.map(|t| t.http);
        let registry = Arc::new(
            WorkerRegistry::new(channel)
                .with_circuit(config.breaker.clone())
                .with_max_workers(config.limits.max_workers)
                .with_max_in_flight_per_worker(config.limits.max_in_flight_per_worker),
        );
        let hosts = Arc::new(HostPolicy::new(&config.worker_hosts));
        // HTTP workers are asked `GET /health` when added.
        let probes = HttpClient::new(&HttpClientConfig {
            connect_timeout: config.health_check.timeout(),
            response_timeout: config.health_check.timeout(),
            pool_idle_per_worker: 0,
            tls: http_tls.clone(),
        });
        let store = Arc::new(match (&config.registry.url, &config.registry.state_file) {
            (Some(url), _) => Store::Etcd(
                SharedRegistry::connect(url, registry.clone(), config.registry.optional)
                    .await
                    .map_err(AppError::Registry)?,
            ),
            (None, Some(path)) => Store::File(StateFile::new(path.clone())),
            (None, None) => Store::Memory,
        });
        // Read (and refuse a bad file) before contacting any worker.
        let saved = match &*store {
            Store::File(file) => file.load()?,
            _ => Vec::new(),
        };
        let mirror = match &*store {
            Store::Etcd(shared) => Some(AbortOnDropHandle::new(tokio::spawn(
                shared.clone().mirror(),
            ))),
            _ => None,
        };
        let admission = Admission::new(
            (registry.clone(), store.clone()),
            config.health_check.timeout(),
            hosts.clone(),
            probes.clone(),
        );
        let tokenizers = Tokenizers::load(
            &config
                .tokenizers
                .iter()
                .map(|(m, p)| (m.clone(), p.clone()))
                .collect::<Vec<_>>(),
        );
        // Models without a configured tokenizer get their workers'.
        tokenizers.follow(&registry);
        for w in &config.workers {
            let engine = w
                .engine
                .as_deref()
                .map(engines::by_name)
                .transpose()
                .map_err(|reason| AppError::Worker {
                    url: w.url.clone(),
                    source: AddError::Registry(SpecError::UnknownEngine(reason).into()),
                })?;
            let request = WorkerRequest {
                url: w.url.clone(),
                model_id: w.model_id.clone(),
                role: match w.role.as_str() {
                    "" => Ok(WorkerRole::Regular),
                    role => role.parse(),
                }
                .map_err(|reason| AppError::Worker {
                    url: w.url.clone(),
                    source: AddError::Registry(SpecError::InvalidRole(reason).into()),
                })?,
                bootstrap_port: w.bootstrap_port,
                labels: w.labels.clone(),
                engine,
            };
            match admission.add_startup(request).await {
                Ok(_) => {}
                // Shared registry: another router (or this one, before a
                // restart) registered it already.
                Err(AddError::Registry(RegistryError::AlreadyExists { .. }))
                    if matches!(*store, Store::Etcd(_)) => {}
                Err(source) => {
                    return Err(AppError::Worker {
                        url: w.url.clone(),
                        source,
                    })
                }
            }
        }
        if let Store::File(file) = &*store {
            file.restore(&registry, saved)?;
        }
        let discovery = match config.discovery.kind {
            Some(crate::config::DiscoveryKind::Kubernetes) => {
                let discovery = crate::discovery::KubernetesDiscovery::new(
                    config.discovery.clone(),
                    admission.clone(),
                    registry.clone(),
                )
                .await?;
                Some(AbortOnDropHandle::new(tokio::spawn(
                    discovery.run(std::future::pending()),
                )))
            }
            None => None,
        };
        let rooms = BootstrapRooms::default();
        let retries = Arc::new(Retries::new(&config.retry));
        let (telemetry, tracer) = Telemetry::start(&config.tracing)?;
        if let Some(endpoint) = &config.tracing.otlp_endpoint {
            tracing::info!(%endpoint, sample_ratio = config.tracing.sample_ratio, "exporting traces over OTLP");
        }

        let router = Arc::new(
            GrpcRouter::new(
                registry.clone(),
                &config.policy,
                rooms.clone(),
                &config.limits,
                tokenizers.clone(),
                retries.clone(),
            )
            .traced(tracer.clone()),
        );
        let http_router = Arc::new(
            HttpRouter::new(
                registry.clone(),
                &config.policy,
                (&config.http, http_tls.clone()),
                rooms,
                retries.clone(),
            )
            .traced(tracer),
        );
        Ok(App {
            config,
            registry,
            router,
            http_router,
            tokenizers,
            health: HealthReporter::new(),
            hosts,
            server_tls,
            http_tls,
            retries,
            probes,
            store,
            _mirror: mirror,
            _discovery: discovery,
            telemetry,
        })
    }

    /// How workers are added: identified within the health-check timeout.
    fn admission(&self) -> Admission {
        Admission::new(
            (self.registry.clone(), self.store.clone()),
            self.config.health_check.timeout(),
            self.hosts.clone(),
            self.probes.clone(),
        )
    }

    /// The registry this app routes from.
    pub fn registry(&self) -> &Arc<WorkerRegistry> {
        &self.registry
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves gRPC (and HTTP, if given a listener for it) until `shutdown`
    /// resolves, then drains.
    pub async fn serve(
        self,
        listeners: impl Into<Listeners>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Listeners {
            grpc: listener,
            http,
            admin,
        } = listeners.into();
        // Two moments of a shutdown: NOT_SERVING (`stop`), then, a grace
        // later, no more connections (`close`).
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let (close_tx, close_rx) = watch::channel(false);
        let closed = move || {
            let mut rx = close_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let grace = self.config.shutdown.grace();
        let drain = self.config.shutdown.drain();

        let serving = ServingReporter::new(self.registry.clone(), self.health.clone());
        serving.refresh().await;
        let reporter_task = tokio::spawn(serving.run(stopped()));
        let checker = HealthChecker::new(
            self.registry.clone(),
            self.config.health_check.clone(),
            self.http_tls.clone(),
        );
        let checker_task = tokio::spawn(checker.run(stopped()));
        let loads_task = self.config.health_check.loads_interval().map(|interval| {
            let poller = LoadPoller::new(
                self.registry.clone(),
                interval,
                self.config.health_check.timeout(),
            );
            tokio::spawn(poller.run(stopped()))
        });
        let tls_task = self
            .server_tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(stopped())));
        let verifies_clients = self
            .server_tls
            .as_ref()
            .is_some_and(|tls| tls.verifies_clients());
        let keys = Arc::new(Keys::new(&self.config.auth).with_admin_cert(verifies_clients));
        let limit = Arc::new(CallLimit::from_config(&self.config.limits));
        tracing::info!("access: {}", keys.describe());
        // The admin listener stays up through the drain (metrics and
        // readiness show it) and closes last.
        let (admin_close, admin_closed) = tokio::sync::oneshot::channel::<()>();
        let admin_task = admin.map(|listener| {
            let mut policies = Vec::new();
            for (router, sets) in [
                ("grpc", self.router.policy_sets()),
                ("http", self.http_router.policy_sets()),
            ] {
                for (set, policy_set) in sets {
                    policies.extend(policy_set.all().map(|p| (router, set, p.clone())));
                }
            }
            let policies = Arc::new(policies);
            let metrics = crate::services::metrics::registry(
                self.registry.clone(),
                limit.clone(),
                self.retries.clone(),
                policies.clone(),
            );
            let routes = crate::services::admin::routes(
                Arc::new(metrics),
                (self.registry.clone(), limit.clone(), self.store.clone(), policies),
                stop_tx.subscribe(),
            );
            tracing::info!(addr = ?listener.local_addr().ok(), "serving admin (dashboard, metrics, livez, readyz)");
            let server = axum::serve(listener, routes).with_graceful_shutdown(async {
                let _ = admin_closed.await;
            });
            tokio::spawn(std::future::IntoFuture::into_future(server))
        });
        let http_task = http.map(|listener| {
            let routes = crate::services::http::routes(
                self.registry.clone(),
                self.admission(),
                self.http_router.clone(),
                EngineFront::new(
                    self.registry.clone(),
                    self.router.clone(),
                    self.tokenizers.clone(),
                ),
                (
                    self.config.limits.request_body_idle(),
                    self.config.limits.max_metadata_bytes,
                ),
                keys.clone(),
                limit.clone(),
            );
            let tls = self.server_tls.is_some();
            tracing::info!(addr = ?listener.local_addr().ok(), tls, "serving HTTP");
            let listener = Accepting::new(
                listener,
                self.server_tls.clone().map(|t| (t, Protocol::Http)),
            );
            if verifies_clients {
                // Admin calls look up whether their connection presented a
                // client certificate.
                let routes = routes.into_make_service_with_connect_info::<Peer>();
                let server = axum::serve(listener, routes).with_graceful_shutdown(closed());
                tokio::spawn(std::future::IntoFuture::into_future(server))
            } else {
                let server = axum::serve(listener, routes).with_graceful_shutdown(closed());
                tokio::spawn(std::future::IntoFuture::into_future(server))
            }
        });

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let health = tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(self.health.clone()),
        );
        let management = pb::worker_management_server::WorkerManagementServer::new(
            WorkerManagementService::new(self.registry.clone(), self.admission()),
        );
        let inference = InferenceService::new(
            self.router.clone(),
            self.config.limits.request_body_idle(),
            limit,
        );

        let routes = tonic::service::Routes::new(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(management);

        let local = listener.local_addr().ok();
        let tls = self.server_tls.is_some();
        let listener = Accepting::new(
            listener,
            self.server_tls.clone().map(|t| (t, Protocol::Grpc)),
        );
        tracing::info!(addr = ?local, tls, workers = self.registry.len(), policy = %self.config.policy.name, "serving gRPC");
        let stop_on_shutdown = stop_tx.clone();
        let grpc = crate::services::listener::serve(
            listener,
            inference,
            routes,
            (keys, self.config.limits.max_metadata_bytes),
            async move {
                shutdown.await;
                tracing::info!(
                    "shutting down: NOT_SERVING for {grace:?}, then draining calls for up to {drain:?}"
                );
                let _ = stop_on_shutdown.send(true);
                tokio::time::sleep(grace).await;
                let _ = close_tx.send(true);
            },
            drain,
        );
        let http = async {
            let Some(mut task) = http_task else { return };
            closed().await;
            match tokio::time::timeout(drain, &mut task).await {
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
                Ok(_) => {}
                // Its connections end with the process.
                Err(_) => task.abort(),
            }
        };
        tokio::join!(grpc, http);
        let _ = stop_tx.send(true);
        let _ = admin_close.send(());
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        let _ = reporter_task.await;
        let _ = checker_task.await;
        if let Some(task) = loads_task {
            let _ = task.await;
        }
        if let Some(task) = tls_task {
            let _ = task.await;
        }
        if let Some(telemetry) = self.telemetry {
            // Blocks on the exporter, which runs on this runtime: off it.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The channel settings of `[upstream]`.
fn channel_config(upstream: &UpstreamConfig) -> ChannelConfig {
    ChannelConfig {
        connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
        keep_alive_interval: Duration::from_millis(upstream.keep_alive_interval_ms),
        connections: upstream.connections_per_worker,
        stream_window: upstream.stream_window_bytes,
        tls: None,
    }
}

/// The client configs `[worker_tls]`'s files make (`None` when nothing is
/// set: the system's roots then, read only if a TLS worker appears).
fn worker_tls(config: &WorkerTlsConfig) -> Result<Option<WorkerTls>, ConfigError> {
    let identity = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    if config.ca.is_none() && identity.is_none() {
        return Ok(None);
    }
    WorkerTls::new(config.ca.as_deref(), identity)
        .map(Some)
        .map_err(|e| ConfigError::Invalid(format!("worker_tls: {e}")))
}

//! The mock worker's lifecycle: binding, serving gRPC or HTTP (and the
//! prefill side's rendezvous listener), health, and shutdown.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use super::tls::{tonic_tls, TlsListener};
use axum::serve::ListenerExt;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use super::MockEngine;
use super::{bootstrap, http, MockConfig, MockRole, MockService, MockStats};
use crate::pb::mlx_engine::mlx_engine_server::MlxEngineServer;
use crate::pb::raw::inference_server::InferenceServer;
use crate::pb::sglang_scheduler::sglang_scheduler_server::SglangSchedulerServer;
use crate::pb::trtllm::trtllm_service_server::TrtllmServiceServer;
use crate::pb::vllm_engine::vllm_engine_server::VllmEngineServer;

/// A running mock worker.
#[derive(Debug)]
pub struct MockWorker {
    addr: SocketAddr,
    /// Serves the HTTP API instead of gRPC.
    http: bool,
    /// Serves TLS.
    secure: bool,
    bootstrap_port: Option<u16>,
    bootstrap_task: Option<JoinHandle<()>>,
    config: Arc<ArcSwap<MockConfig>>,
    stats: Arc<MockStats>,
    health: HealthReporter,
    exit: Arc<Notify>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockWorker {
    /// Binds `listen` (port 0 for any) and serves until stopped.
    pub async fn start(listen: SocketAddr, config: MockConfig) -> std::io::Result<MockWorker> {
        Self::start_with(listen, config, false).await
    }

    /// Like [`MockWorker::start`], but serving the HTTP API (`http://` url).
    pub async fn start_http(listen: SocketAddr, config: MockConfig) -> std::io::Result<MockWorker> {
        Self::start_with(listen, config, true).await
    }

    async fn start_with(
        listen: SocketAddr,
        config: MockConfig,
        http: bool,
    ) -> std::io::Result<MockWorker> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let health = HealthReporter::new();
        let config = Arc::new(ArcSwap::from_pointee(config));
        let stats = Arc::new(MockStats::default());
        let exit = Arc::new(Notify::new());
        let rooms = Arc::new(bootstrap::Rooms::default());
        let (bootstrap_port, bootstrap_task) = match config.load().role {
            MockRole::Prefill { bootstrap_port } => {
                let listener =
                    TcpListener::bind(SocketAddr::new(addr.ip(), bootstrap_port)).await?;
                let port = listener.local_addr()?.port();
                let timeout = config.load().rendezvous_timeout;
                (
                    Some(port),
                    Some(bootstrap::serve(listener, rooms.clone(), timeout)),
                )
            }
            _ => (None, None),
        };
        let warmup = config.load().warmup;
        let service = MockService {
            config: config.clone(),
            stats: stats.clone(),
            running: Arc::default(),
            exit: exit.clone(),
            rooms,
            bootstrap_host: addr.ip(),
            bootstrap_port: bootstrap_port.unwrap_or(0),
            warm_at: tokio::time::Instant::now() + warmup,
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let tls = config.load().tls.clone();
        let task = if http {
            let routes = http::routes(service);
            let stop = async {
                let _ = shutdown_rx.await;
            };
            // One task serves, so aborting it stops the server.
            let served: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
                match &tls {
                    Some(files) => Box::pin(
                        axum::serve(TlsListener::new(listener, files)?, routes)
                            .with_graceful_shutdown(stop)
                            .into_future(),
                    ),
                    None => Box::pin(
                        axum::serve(listener.tap_io(nodelay), routes)
                            .with_graceful_shutdown(stop)
                            .into_future(),
                    ),
                };
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "mock worker server failed");
                }
            })
        } else {
            let tls = match &tls {
                Some(files) => Some(tonic_tls(files)?),
                None => None,
            };
            Self::serve_grpc(listener, service, health.clone(), (tls, shutdown_rx))
        };
        let worker = MockWorker {
            addr,
            http,
            secure: tls.is_some(),
            bootstrap_port,
            bootstrap_task,
            config,
            stats,
            health,
            exit,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        };
        let unhealthy = worker.config.load().unhealthy;
        if warmup.is_zero() {
            worker.set_healthy(!unhealthy).await;
        } else {
            // NOT_SERVING while warming up, then as configured.
            worker.report(false).await;
            let (health, config) = (worker.health.clone(), worker.config.clone());
            tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                let serving = !config.load().unhealthy;
                report(&health, config.load().engine, serving).await;
            });
        }
        Ok(worker)
    }

    fn serve_grpc(
        listener: TcpListener,
        service: MockService,
        health: HealthReporter,
        (tls, shutdown_rx): (
            Option<tonic::transport::ServerTlsConfig>,
            oneshot::Receiver<()>,
        ),
    ) -> JoinHandle<()> {
        let health_server = tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(health),
        );
        let engine = service.config.load().engine;
        tokio::spawn(async move {
            let mut server = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                server = match server.tls_config(tls) {
                    Ok(server) => server,
                    Err(e) => {
                        tracing::error!(error = %e, "mock worker TLS");
                        return;
                    }
                };
            }
            let router = server.add_service(health_server);
            let router = match engine {
                MockEngine::Switchyard => router.add_service(InferenceServer::new(service)),
                MockEngine::Sglang => router.add_service(SglangSchedulerServer::new(service)),
                MockEngine::Vllm => router.add_service(VllmEngineServer::new(service)),
                MockEngine::Trtllm => router.add_service(TrtllmServiceServer::new(service)),
                MockEngine::Mlx => router.add_service(MlxEngineServer::new(service)),
            };
            let result = router
                .serve_with_incoming_shutdown(
                    // serve_with_incoming ignores Server::tcp_nodelay; set it here,
                    // or Nagle holds back small response frames for ~40 ms.
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = shutdown_rx.await;
                    },
                )
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "mock worker server failed");
            }
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `grpc://addr` (or `http://addr`; `grpcs`, `https` over TLS), ready
    /// for `AddWorker`.
    pub fn url(&self) -> String {
        let scheme = if self.http { "http" } else { "grpc" };
        let tls = if self.secure { "s" } else { "" };
        format!("{scheme}{tls}://{}", self.addr)
    }

    /// The prefill side's rendezvous port (the one actually bound).
    pub fn bootstrap_port(&self) -> Option<u16> {
        self.bootstrap_port
    }

    /// Counters and records.
    pub fn stats(&self) -> &Arc<MockStats> {
        &self.stats
    }

    /// The current behaviour.
    pub fn config(&self) -> Arc<MockConfig> {
        self.config.load_full()
    }

    /// Changes behaviour for calls that start from now on.
    pub fn update(&self, change: impl FnOnce(&mut MockConfig)) {
        let mut next = (*self.config.load_full()).clone();
        change(&mut next);
        self.config.store(Arc::new(next));
    }

    /// Reports SERVING or NOT_SERVING on `grpc.health.v1` ("" and the
    /// engine's service).
    pub async fn set_healthy(&self, healthy: bool) {
        self.update(|c| c.unhealthy = !healthy);
        self.report(healthy).await;
    }

    async fn report(&self, serving: bool) {
        report(&self.health, self.config.load().engine, serving).await;
    }

    /// Resolves when `exit_after_calls` has been reached.
    pub async fn exit_requested(&self) {
        self.exit.notified().await
    }

    /// Stops accepting calls, lets running streams finish, and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.bootstrap_task.take() {
            task.abort();
        }
    }
}

/// Sets `grpc.health.v1` for "" and `engine`'s service.
async fn report(health: &HealthReporter, engine: MockEngine, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health.set_service_status(engine.service(), status).await;
}

impl Drop for MockWorker {
    fn drop(&mut self) {
        for task in [self.task.take(), self.bootstrap_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Without it, small responses wait for Nagle (~40 ms).
fn nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

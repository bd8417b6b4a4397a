//! Serving simulated engines: one per port, a whole fleet in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use super::sglang::SimSglang;
use super::{SimConfig, SimEngine};
use crate::pb::sglang_scheduler::sglang_scheduler_server::SglangSchedulerServer;

/// The SGLang service name, as `grpc.health.v1` reports it.
const SERVICE: &str = "sglang.grpc.scheduler.SglangScheduler";

/// A simulated SGLang engine serving on a port.
#[derive(Debug)]
pub struct SimWorker {
    addr: SocketAddr,
    engine: Arc<SimEngine>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimWorker {
    /// Serves one engine on `listen` (port 0 picks a free one).
    pub async fn start(listen: SocketAddr, config: SimConfig) -> std::io::Result<SimWorker> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let engine = SimEngine::new(config);
        let (shutdown, rx) = oneshot::channel::<()>();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let driver = tokio::spawn(engine.clone().drive(async move {
            let mut stop_rx = stop_rx;
            let _ = stop_rx.changed().await;
        }));
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        health
            .set_service_status(SERVICE, ServingStatus::Serving)
            .await;
        let service = SglangSchedulerServer::new(SimSglang(engine.clone()))
            .max_decoding_message_size(64 * 1024 * 1024);
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = rx.await;
                    },
                )
                .await;
            let _ = stop_tx.send(true);
            if let Err(e) = result {
                tracing::error!(error = %e, "simulated engine server failed");
            }
        });
        Ok(SimWorker {
            addr,
            engine,
            shutdown: Some(shutdown),
            tasks: vec![server, driver],
        })
    }

    /// `count` engines on consecutive ports from `first` (port 0: any free
    /// ports), each seeded with its index added to `config.seed`.
    pub async fn fleet(
        first: SocketAddr,
        count: usize,
        config: &SimConfig,
    ) -> std::io::Result<Vec<SimWorker>> {
        let mut fleet = Vec::with_capacity(count);
        for i in 0..count {
            let mut addr = first;
            if first.port() != 0 {
                let port = u16::try_from(usize::from(first.port()) + i).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "ports run past 65535")
                })?;
                addr.set_port(port);
            }
            let config = SimConfig {
                seed: config.seed.wrapping_add(i as u64),
                ..config.clone()
            };
            fleet.push(SimWorker::start(addr, config).await?);
        }
        Ok(fleet)
    }

    /// Its `grpc://` url.
    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// The engine, for its counters.
    pub fn engine(&self) -> &Arc<SimEngine> {
        &self.engine
    }

    /// Stops serving: streams end, connections close, the scheduler stops.
    pub async fn stop(mut self) {
        self.engine.stop();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut tasks = self.tasks.drain(..);
        if let Some(server) = tasks.next() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SimWorker {
    fn drop(&mut self) {
        self.engine.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

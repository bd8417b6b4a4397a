//! Keeps the router's `grpc.health.v1` statuses true.
//!
//! `""` and `switchyard.v1.WorkerManagement` are SERVING while the process
//! is up. `switchyard.v1.Inference` is SERVING only while at least one model
//! can be served over gRPC (a regular model with a healthy worker, or a PD
//! model with a healthy prefill and a healthy decode worker); SGLang's
//! `SglangScheduler` and vLLM's `VllmEngine` likewise, counting only models
//! whose workers run that engine (so a gateway health-checking the router by
//! the engine's service name sees what it would see of an engine). The
//! reporter recomputes these on every registry event (a pass over the index
//! groups).

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Mutex;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::engines;
use crate::pb::service_names;
use crate::worker::{ConnectionMode, Engine, WorkerRegistry, WorkerRole};

/// Whether any model can be served over gRPC: a regular model with a
/// healthy worker, or a PD model with a healthy prefill and a healthy decode
/// worker.
pub fn can_serve(registry: &WorkerRegistry) -> bool {
    can_serve_engine(registry, None)
}

/// [`can_serve`], counting only models whose workers run `engine` (`None`:
/// any).
pub fn can_serve_engine(registry: &WorkerRegistry, engine: Option<Engine>) -> bool {
    let snapshot = registry.snapshot();
    let healthy = |role, model: &str| {
        snapshot
            .group(ConnectionMode::Grpc, role, model)
            .is_some_and(|g| {
                g.iter().any(|w| w.is_healthy()) && engine.is_none_or(|e| g[0].engine() == e)
            })
    };
    let regular = snapshot
        .models(ConnectionMode::Grpc, WorkerRole::Regular)
        .any(|m| healthy(WorkerRole::Regular, m));
    regular
        || snapshot
            .models(ConnectionMode::Grpc, WorkerRole::Prefill)
            .any(|m| healthy(WorkerRole::Prefill, m) && healthy(WorkerRole::Decode, m))
}

/// The services whose status follows the registry, and the engine each
/// counts (`None`: any; `switchyard.v1` calls are translated to engines):
/// `switchyard.v1.Inference`, then every engine's own service.
fn inference_services() -> impl Iterator<Item = (&'static str, Option<Engine>)> {
    std::iter::once((service_names::INFERENCE, None)).chain(
        engines::ALL
            .iter()
            .map(|s| s.engine())
            .filter(|e| !e.is_switchyard())
            .map(|e| (e.service(), Some(e))),
    )
}

/// Publishes the router's serving status to tonic-health.
#[derive(Debug)]
pub struct ServingReporter {
    registry: Arc<WorkerRegistry>,
    reporter: HealthReporter,
    /// The statuses last published, per [`inference_services`]. tonic-health
    /// notifies `Watch` clients on every set, even an unchanged one, so only
    /// changes are set.
    last: Mutex<Vec<Option<ServingStatus>>>,
}

impl ServingReporter {
    /// A reporter for `registry` writing to `reporter`.
    pub fn new(registry: Arc<WorkerRegistry>, reporter: HealthReporter) -> Self {
        ServingReporter {
            registry,
            reporter,
            last: Mutex::new(vec![None; engines::ALL.len()]),
        }
    }

    /// Sets every status from the current registry.
    pub async fn refresh(&self) {
        self.reporter
            .set_service_status(service_names::WORKER_MANAGEMENT, ServingStatus::Serving)
            .await;
        self.update_inference().await;
    }

    async fn update_inference(&self) {
        let mut last = self.last.lock().await;
        for (i, (service, engine)) in inference_services().enumerate() {
            let status = if can_serve_engine(&self.registry, engine) {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last[i] != Some(status) {
                last[i] = Some(status);
                // Set under the lock so that two updates cannot publish out of order.
                self.reporter.set_service_status(service, status).await;
            }
        }
    }

    /// Follows registry events until `shutdown`, then reports NOT_SERVING
    /// for everything so that probes see the router going away.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (_, _, mut events) = self.registry.watch();
        self.refresh().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = events.recv() => match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.update_inference().await,
                    Err(RecvError::Closed) => break,
                },
            }
        }
        let names = ["", service_names::WORKER_MANAGEMENT]
            .into_iter()
            .chain(inference_services().map(|(name, _)| name));
        for name in names {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}

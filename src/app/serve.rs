//! Running the built router: the listeners served until a shutdown
//! signal, then NOT_SERVING for a grace, then draining.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tonic_health::server::HealthService;

use crate::auth::Keys;
use crate::health::{HealthChecker, LoadPoller, ServingReporter};
use crate::pb;
use crate::services::admit::Gates;
use crate::services::openai::EngineFront;
use crate::services::tls::{Accepting, Protocol};
use crate::services::{InferenceService, WorkerManagementService};

use super::{App, AppError, Listeners};

impl App {
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
        let tenants = self.tenants.clone();
        let gates = Gates::new(&self.config.limits, tenants.clone());
        let limit = gates.limit.clone();
        let reload_task = self.config.source.clone().map(|path| {
            tokio::spawn(crate::tenants::reload::watch(
                tenants.clone(),
                path,
                self.config.auth.clone(),
                stopped(),
            ))
        });
        tracing::info!("access: {}", keys.describe());
        if tenants.any() {
            tracing::info!(
                tenants = tenants.list().len(),
                "tenants configured: inference needs a tenant's key (or a client or admin key)"
            );
        }
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
                (policies.clone(), tenants.clone()),
            );
            let routes = crate::services::admin::routes(
                Arc::new(metrics),
                (
                    self.registry.clone(),
                    limit.clone(),
                    self.store.clone(),
                    policies,
                    tenants.clone(),
                ),
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
                )
                .with_formats(self.formats.clone()),
                (
                    self.config.limits.request_body_idle(),
                    self.config.limits.max_metadata_bytes,
                ),
                keys.clone(),
                gates.clone(),
            );
            let tls = self.server_tls.is_some();
            tracing::info!(addr = ?listener.local_addr().ok(), tls, "serving HTTP");
            let listener = Accepting::new(
                listener,
                self.server_tls.clone().map(|t| (t, Protocol::Http)),
            );
            // Admin calls look up whether their connection presented a
            // client certificate.
            tokio::spawn(crate::services::http_listener::serve(
                listener,
                routes,
                self.config.limits.max_metadata_bytes,
                verifies_clients,
                closed(),
            ))
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
            WorkerManagementService::new(self.registry.clone(), self.admission(), tenants.clone()),
        );
        let inference = InferenceService::new(
            self.router.clone(),
            self.config.limits.request_body_idle(),
            gates,
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
            (keys, tenants, self.config.limits.max_metadata_bytes),
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
        if let Some(task) = reload_task {
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

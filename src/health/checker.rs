//! Active health checks: `grpc.health.v1/Check` for gRPC workers (of the
//! engine's own service for SGLang and vLLM workers), `GET
//! /health` for HTTP workers, with the same thresholds and events.
//!
//! One task checks all workers each interval, concurrently, each probe with a
//! timeout. Consecutive-result counters live here, not on the worker, and are
//! forgotten when the worker leaves the registry. Verdicts go through
//! `WorkerRegistry::set_health`, which publishes them as events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::HealthCheckConfig;
use crate::transport::http1::{HttpClient, HttpClientConfig};
use crate::worker::{ConnectionMode, Health, Worker, WorkerEventKind, WorkerId, WorkerRegistry};
use tokio::sync::broadcast::error::RecvError;

/// Consecutive probe results for one worker.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    failures: u32,
    successes: u32,
}

/// Probes workers and records verdicts in the registry.
#[derive(Debug)]
pub struct HealthChecker {
    registry: Arc<WorkerRegistry>,
    config: HealthCheckConfig,
    streaks: HashMap<WorkerId, Streak>,
    /// For HTTP workers' `GET /health`; pooled, so probes reuse
    /// connections.
    http: HttpClient,
}

impl HealthChecker {
    /// A checker over `registry` (`tls` for `https://` workers: `None`, the
    /// system's roots).
    pub fn new(
        registry: Arc<WorkerRegistry>,
        config: HealthCheckConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        HealthChecker {
            registry,
            streaks: HashMap::new(),
            http: HttpClient::new(&HttpClientConfig {
                connect_timeout: config.timeout(),
                response_timeout: config.timeout(),
                pool_idle_per_worker: 1,
                tls,
            }),
            config,
        }
    }

    /// Checks every interval until `shutdown` resolves; a worker added
    /// without being checked is checked at once, not at the next round.
    /// First checks run beside the loop, which keeps reading events while
    /// they do: an event not yet read keeps its worker alive.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (_, _, mut events) = self.registry.watch();
        let mut first = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => self.check_all().await,
                event = events.recv() => match event {
                    Ok(event) if event.kind == WorkerEventKind::Added
                        && event.worker.health() == Health::Unchecked =>
                    {
                        first.spawn(self.probe(event.worker));
                    }
                    Ok(_) => {}
                    // Fell behind: the unchecked ones among all.
                    Err(RecvError::Lagged(_)) => {
                        for worker in self.registry.list() {
                            if worker.health() == Health::Unchecked {
                                first.spawn(self.probe(worker));
                            }
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                Some(done) = first.join_next(), if !first.is_empty() => {
                    if let Ok((worker, ok)) = done {
                        self.apply(&worker, ok);
                    }
                }
            }
        }
    }

    /// One round: probe every worker once and apply the thresholds.
    pub async fn check_all(&mut self) {
        let workers = self.registry.list();
        let ids: HashSet<&WorkerId> = workers.iter().map(|w| w.id()).collect();
        self.streaks.retain(|id, _| ids.contains(id));
        self.check(workers).await;
    }

    /// Probes `workers` once each, concurrently, and applies the results.
    async fn check(&mut self, workers: Vec<Arc<Worker>>) {
        let mut probes = JoinSet::new();
        for worker in workers {
            probes.spawn(self.probe(worker));
        }
        while let Some(result) = probes.join_next().await {
            let Ok((worker, ok)) = result else { continue };
            self.apply(&worker, ok);
        }
    }

    /// One probe of `worker`: whether it passed.
    fn probe(
        &self,
        worker: Arc<Worker>,
    ) -> impl std::future::Future<Output = (Arc<Worker>, bool)> + Send + 'static {
        let service = match self.config.service.as_str() {
            "" => crate::engines::health_service(worker.engine()).to_string(),
            configured => configured.to_string(),
        };
        let timeout = self.config.timeout();
        let http = self.http.clone();
        async move {
            let ok = match worker.mode() {
                ConnectionMode::Grpc => probe_grpc(&worker, service, timeout).await,
                ConnectionMode::Http => probe_http(&http, &worker, timeout).await,
            };
            (worker, ok)
        }
    }

    fn apply(&mut self, worker: &Worker, ok: bool) {
        let streak = self.streaks.entry(worker.id().clone()).or_default();
        if ok {
            streak.successes = streak.successes.saturating_add(1);
            streak.failures = 0;
        } else {
            streak.failures = streak.failures.saturating_add(1);
            streak.successes = 0;
            worker
                .stats()
                .check_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if worker.health() == Health::Unchecked {
            // The first check decides, whatever the thresholds.
            if self.registry.set_health(worker.id(), ok) {
                let verdict = if ok { "healthy" } else { "unhealthy" };
                tracing::info!(worker = %worker.id(), url = worker.url(), verdict, "worker checked for the first time");
            }
            return;
        }
        let healthy = worker.is_healthy();
        if healthy && streak.failures >= self.config.unhealthy_threshold {
            if self.registry.set_health(worker.id(), false) {
                tracing::warn!(worker = %worker.id(), url = worker.url(), failures = streak.failures, "worker is unhealthy");
            }
        } else if !healthy
            && streak.successes >= self.config.healthy_threshold
            && self.registry.set_health(worker.id(), true)
        {
            tracing::info!(worker = %worker.id(), url = worker.url(), "worker is healthy again");
        }
    }
}

/// `GET {url}/health`: any 2xx within the timeout is healthy.
async fn probe_http(client: &HttpClient, worker: &Worker, timeout: std::time::Duration) -> bool {
    match client.get(worker.origin(), "/health", timeout).await {
        Ok(status) => status.is_success(),
        Err(failure) => {
            tracing::debug!(worker = %worker.id(), %failure, "health check failed");
            false
        }
    }
}

/// `grpc.health.v1/Check` of `service`: SERVING within the timeout is
/// healthy.
async fn probe_grpc(worker: &Worker, service: String, timeout: std::time::Duration) -> bool {
    match crate::engines::health(worker.control(), &service, timeout).await {
        Ok(serving) => serving,
        Err(failure) => {
            tracing::debug!(worker = %worker.id(), %failure, "health check failed");
            false
        }
    }
}

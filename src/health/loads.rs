//! Engine load: every interval, each healthy SGLang and vLLM worker is
//! asked `GetLoads`, and its running and waiting requests and KV-cache
//! usage are recorded on the worker ([`Worker::set_engine_load`]) for the
//! load-balancing policies. Switchyard workers have no such call and are
//! balanced on the router's own count only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::engines::{self, Method};
use crate::transport::Failure;
use crate::worker::{ConnectionMode, Worker, WorkerRegistry};

/// Polls engines' loads into the registry's workers.
#[derive(Debug)]
pub struct LoadPoller {
    registry: Arc<WorkerRegistry>,
    interval: Duration,
    timeout: Duration,
}

impl LoadPoller {
    /// Polls every `interval`, each call bounded by `timeout`.
    pub fn new(registry: Arc<WorkerRegistry>, interval: Duration, timeout: Duration) -> Self {
        LoadPoller {
            registry,
            interval,
            timeout,
        }
    }

    /// Polls until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.poll_all().await,
                _ = &mut shutdown => return,
            }
        }
    }

    /// One round over every healthy engine worker.
    pub async fn poll_all(&self) {
        let mut polls = JoinSet::new();
        for worker in self.registry.list() {
            if worker.mode() != ConnectionMode::Grpc
                || engines::seam(worker.engine())
                    .path(Method::GetLoads)
                    .is_none()
                || !worker.is_healthy()
                || worker.load_pushed()
            {
                continue;
            }
            let timeout = self.timeout;
            polls.spawn(async move {
                match poll(&worker, timeout).await {
                    Ok((requests, usage)) => worker.set_engine_load(requests, usage),
                    Err(failure) => {
                        tracing::debug!(worker = %worker.id(), %failure, "GetLoads failed");
                        worker.clear_engine_load();
                    }
                }
            });
        }
        while polls.join_next().await.is_some() {}
    }
}

/// One worker's `GetLoads`: requests running and waiting over its ranks,
/// and its mean KV-cache usage.
async fn poll(worker: &Worker, timeout: Duration) -> Result<(u32, f64), Failure> {
    // Every engine's GetLoadsRequest asks for everything when empty.
    let reply = engines::forward(worker, Method::GetLoads, Bytes::new(), timeout).await?;
    let loads: Vec<(i32, i32, f64)> = engines::seam(worker.engine())
        .loads(reply)?
        .into_iter()
        .map(|l| (l.running, l.waiting, l.token_usage))
        .collect();
    let requests: i64 = loads
        .iter()
        .map(|(running, waiting, _)| i64::from(*running.max(&0)) + i64::from(*waiting.max(&0)))
        .sum();
    let usage = if loads.is_empty() {
        0.0
    } else {
        loads.iter().map(|(_, _, u)| u).sum::<f64>() / loads.len() as f64
    };
    Ok((u32::try_from(requests).unwrap_or(u32::MAX), usage))
}

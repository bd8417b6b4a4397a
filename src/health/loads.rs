//! Engine load: every interval, each healthy SGLang and vLLM worker is
//! asked `GetLoads`, and its running and waiting requests and KV-cache
//! usage are recorded on the worker ([`Worker::set_engine_load`]) for the
//! load-balancing policies. Switchyard workers have no such call and are
//! balanced on the router's own count only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::task::JoinSet;

use crate::engines::{self, Method};
use crate::pb::{sglang_scheduler as sglang, vllm_engine as vllm};
use crate::transport::Failure;
use crate::worker::{ConnectionMode, Engine, Worker, WorkerRegistry};

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
                || worker.engine() == Engine::Switchyard
                || !worker.is_healthy()
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
    let (request, bad): (Vec<u8>, &'static str) = match worker.engine() {
        Engine::Sglang => (
            sglang::GetLoadsRequest::default().encode_to_vec(),
            "sglang GetLoadsResponse",
        ),
        _ => (
            vllm::GetLoadsRequest::default().encode_to_vec(),
            "vllm GetLoadsResponse",
        ),
    };
    let reply = engines::forward(worker, Method::GetLoads, Bytes::from(request), timeout).await?;
    // Both engines' SchedulerLoad messages number these fields alike; each
    // is decoded with its own type all the same.
    let loads: Vec<(i32, i32, f64)> = match worker.engine() {
        Engine::Sglang => sglang::GetLoadsResponse::decode(reply)
            .map_err(|_| Failure::BadReply(bad))?
            .loads
            .into_iter()
            .map(|l| (l.num_running_reqs, l.num_waiting_reqs, l.token_usage))
            .collect(),
        _ => vllm::GetLoadsResponse::decode(reply)
            .map_err(|_| Failure::BadReply(bad))?
            .loads
            .into_iter()
            .map(|l| (l.num_running_reqs, l.num_waiting_reqs, l.token_usage))
            .collect(),
    };
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

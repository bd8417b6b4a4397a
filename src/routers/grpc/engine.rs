//! The engines' own services on the router, besides `Generate`: `Abort`
//! routed to the workers holding the request, `GetModelInfo` and
//! `GetServerInfo` answered by a healthy worker of the model, `GetLoads`
//! aggregated over the model's healthy workers, and `HealthCheck` answered
//! from the router's health view (SGLang's runs a one-token generation:
//! never fanned out).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use prost::Message;
use tokio::task::JoinSet;

use super::GrpcRouter;
use crate::engines::{self, Method};
use crate::pb::{sglang_scheduler as sglang, vllm_engine as vllm};
use crate::routers::select::{resolve_engine_model, served_elsewhere};
use crate::routers::{RouteError, MODEL_HEADER};
use crate::transport::Failure;
use crate::worker::{ConnectionMode, Engine, Worker, WorkerRole};

/// How long a forwarded control call may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

impl GrpcRouter {
    /// `engine`'s `Abort`: forwarded to the workers running each request
    /// id; the engine's reply.
    pub async fn engine_abort(&self, engine: Engine, message: Bytes) -> Result<Bytes, RouteError> {
        let invalid = |e: prost::DecodeError| {
            RouteError::InvalidRequest(format!("the message is not a valid AbortRequest: {e}"))
        };
        match engine {
            Engine::Sglang => {
                let request = sglang::AbortRequest::decode(message).map_err(invalid)?;
                if request.request_id.is_empty() {
                    return Err(RouteError::InvalidRequest(
                        "AbortRequest.request_id is required".into(),
                    ));
                }
                let success = self.abort(&request.request_id).await?;
                Ok(sglang::AbortResponse {
                    success,
                    message: if success {
                        "aborted".into()
                    } else {
                        format!("no call {:?} is running on the router", request.request_id)
                    },
                }
                .encode_to_vec()
                .into())
            }
            Engine::Vllm => {
                let request = vllm::AbortRequest::decode(message).map_err(invalid)?;
                for id in &request.request_ids {
                    self.abort(id).await?;
                }
                Ok(vllm::AbortResponse {}.encode_to_vec().into())
            }
            Engine::Switchyard => Err(RouteError::Internal(
                "engine_abort called for switchyard.v1".into(),
            )),
        }
    }

    /// `engine`'s `GetModelInfo` or `GetServerInfo`, answered by a healthy
    /// worker of the call's model.
    pub async fn engine_info(
        &self,
        engine: Engine,
        method: Method,
        headers: &HeaderMap,
        message: Bytes,
    ) -> Result<Bytes, RouteError> {
        let workers = self.engine_workers(engine, headers)?;
        let mut last = None;
        // The first that answers; a worker that cannot be reached is
        // passed over for the next.
        for worker in workers.iter().take(3) {
            match engines::forward(worker, method, message.clone(), CONTROL_TIMEOUT).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => last = Some((worker.clone(), failure)),
            }
        }
        let (worker, failure) =
            last.ok_or_else(|| RouteError::Internal("no worker tried".into()))?;
        Err(RouteError::WorkerFailed {
            worker: worker.id().clone(),
            failure,
        })
    }

    /// `engine`'s `GetLoads` over the model's healthy workers: each
    /// worker's scheduler loads in one list (ranks renumbered in worker
    /// order), with the aggregate recomputed (SGLang).
    pub async fn engine_loads(
        &self,
        engine: Engine,
        headers: &HeaderMap,
        message: Bytes,
    ) -> Result<Bytes, RouteError> {
        let workers = self.engine_workers(engine, headers)?;
        let mut calls = JoinSet::new();
        for (i, worker) in workers.iter().enumerate() {
            let (worker, message) = (worker.clone(), message.clone());
            calls.spawn(async move {
                let reply =
                    engines::forward(&worker, Method::GetLoads, message, CONTROL_TIMEOUT).await;
                (i, worker, reply)
            });
        }
        let mut replies = Vec::new();
        while let Some(joined) = calls.join_next().await {
            let Ok((i, worker, reply)) = joined else {
                continue;
            };
            match reply {
                Ok(bytes) => replies.push((i, bytes)),
                Err(failure) => {
                    tracing::debug!(worker = %worker.id(), %failure, "GetLoads failed; left out")
                }
            }
        }
        replies.sort_by_key(|(i, _)| *i);
        if replies.is_empty() {
            return Err(RouteError::WorkerFailed {
                worker: workers[0].id().clone(),
                failure: Failure::NoStatus,
            });
        }
        let bad = |_| RouteError::WorkerFailed {
            worker: workers[0].id().clone(),
            failure: Failure::BadReply("GetLoadsResponse"),
        };
        match engine {
            Engine::Sglang => {
                let mut merged = sglang::GetLoadsResponse::default();
                for (_, bytes) in replies {
                    let reply = sglang::GetLoadsResponse::decode(bytes).map_err(bad)?;
                    merged.timestamp = reply.timestamp;
                    merged.version = reply.version;
                    merged.loads.extend(reply.loads);
                }
                let mut aggregate = sglang::AggregateMetrics::default();
                let n = merged.loads.len().max(1) as f64;
                for (rank, load) in merged.loads.iter_mut().enumerate() {
                    load.dp_rank = i32::try_from(rank).unwrap_or(i32::MAX);
                    aggregate.total_running_reqs += load.num_running_reqs;
                    aggregate.total_waiting_reqs += load.num_waiting_reqs;
                    aggregate.total_reqs += load.num_total_reqs;
                    aggregate.avg_token_usage += load.token_usage / n;
                    aggregate.avg_throughput += load.gen_throughput / n;
                    aggregate.avg_utilization += load.utilization / n;
                }
                merged.dp_rank_count = i32::try_from(merged.loads.len()).unwrap_or(i32::MAX);
                merged.aggregate = Some(aggregate);
                Ok(merged.encode_to_vec().into())
            }
            Engine::Vllm => {
                let mut merged = vllm::GetLoadsResponse::default();
                for (_, bytes) in replies {
                    let reply = vllm::GetLoadsResponse::decode(bytes).map_err(bad)?;
                    merged.timestamp = reply.timestamp;
                    merged.version = reply.version;
                    merged.loads.extend(reply.loads);
                }
                for (rank, load) in merged.loads.iter_mut().enumerate() {
                    load.dp_rank = i32::try_from(rank).unwrap_or(i32::MAX);
                }
                merged.dp_rank_count = i32::try_from(merged.loads.len()).unwrap_or(i32::MAX);
                Ok(merged.encode_to_vec().into())
            }
            Engine::Switchyard => Err(RouteError::Internal(
                "engine_loads called for switchyard.v1".into(),
            )),
        }
    }

    /// `engine`'s `HealthCheck`, from the router's view: healthy when a
    /// healthy worker serves the call's model.
    pub fn engine_health(&self, engine: Engine, headers: &HeaderMap) -> Bytes {
        let (healthy, message) = match self.engine_workers(engine, headers) {
            Ok(workers) => (true, format!("{} healthy {engine} workers", workers.len())),
            Err(error) => (false, error.to_string()),
        };
        match engine {
            Engine::Vllm => vllm::HealthCheckResponse { healthy, message }.encode_to_vec(),
            _ => sglang::HealthCheckResponse { healthy, message }.encode_to_vec(),
        }
        .into()
    }

    /// The healthy workers of the call's model (`x-switchyard-model`, else
    /// the only model of `engine`), all roles, prefill and regular first.
    fn engine_workers(
        &self,
        engine: Engine,
        headers: &HeaderMap,
    ) -> Result<Vec<Arc<Worker>>, RouteError> {
        let requested = headers
            .get(MODEL_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let model = resolve_engine_model(&self.registry, engine, requested)?;
        let snapshot = self.registry.snapshot();
        let all: Vec<Arc<Worker>> = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
            .iter()
            .filter_map(|role| snapshot.group(ConnectionMode::Grpc, *role, &model))
            .flat_map(|g| g.iter().cloned())
            .collect();
        if all.is_empty() {
            return Err(RouteError::UnknownModel {
                elsewhere: served_elsewhere(&self.registry, ConnectionMode::Grpc, &model),
                model: model.into_owned(),
            });
        }
        if let Some(other) = all.iter().find(|w| w.engine() != engine) {
            return Err(RouteError::WrongEngine {
                model: model.into_owned(),
                served: other.engine(),
                hint: format!("call {} for it", other.engine().service()),
            });
        }
        let total = all.len();
        let ejected = all
            .iter()
            .filter(|w| w.is_healthy() && !w.is_available())
            .count();
        let healthy: Vec<_> = all.into_iter().filter(|w| w.is_routable()).collect();
        if healthy.is_empty() {
            return Err(RouteError::NoHealthyWorkers {
                model: model.into_owned(),
                role: WorkerRole::Regular,
                total,
                ejected,
            });
        }
        Ok(healthy)
    }
}

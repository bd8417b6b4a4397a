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
use tokio::task::JoinSet;

use super::GrpcRouter;
use crate::engines::{self, Method};
use crate::routers::select::{resolve_engine_model, served_elsewhere, unchecked};
use crate::routers::{RouteError, MODEL_HEADER};
use crate::transport::Failure;
use crate::worker::{ConnectionMode, Engine, Worker, WorkerRole};

/// How long a forwarded control call may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

impl GrpcRouter {
    /// `engine`'s `Abort`: forwarded to the workers running each request
    /// id; the engine's reply.
    pub async fn engine_abort(&self, engine: Engine, message: Bytes) -> Result<Bytes, RouteError> {
        let seam = engines::seam(engine);
        let ids = seam
            .abort_ids(message)
            .map_err(RouteError::InvalidRequest)?;
        let mut aborted = true;
        let mut missing = None;
        for id in ids {
            if !self.abort(&id).await? {
                aborted = false;
                missing.get_or_insert(id);
            }
        }
        let message = match missing {
            None => "aborted".into(),
            Some(id) => format!("no call {id:?} is running on the router"),
        };
        Ok(seam.abort_answer(aborted, message))
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
        let bad = |failure| RouteError::WorkerFailed {
            worker: workers[0].id().clone(),
            failure,
        };
        engines::seam(engine)
            .merge_loads(replies.into_iter().map(|(_, bytes)| bytes).collect())
            .map_err(bad)
    }

    /// `engine`'s `HealthCheck`, from the router's view: healthy when a
    /// healthy worker serves the call's model.
    pub fn engine_health(&self, engine: Engine, headers: &HeaderMap) -> Bytes {
        let (healthy, message) = match self.engine_workers(engine, headers) {
            Ok(workers) => (true, format!("{} healthy {engine} workers", workers.len())),
            Err(error) => (false, error.to_string()),
        };
        engines::seam(engine).health_answer(healthy, message)
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
        let snapshot = self.registry.snapshot();
        let model = resolve_engine_model(&snapshot, engine, requested)?;
        let all: Vec<Arc<Worker>> = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
            .iter()
            .filter_map(|role| snapshot.group(ConnectionMode::Grpc, *role, &model))
            .flat_map(|g| g.iter().cloned())
            .collect();
        if all.is_empty() {
            return Err(RouteError::UnknownModel {
                elsewhere: served_elsewhere(&snapshot, ConnectionMode::Grpc, &model),
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
        let all_workers = all.clone();
        let healthy: Vec<_> = all.into_iter().filter(|w| w.is_routable()).collect();
        if healthy.is_empty() {
            return Err(RouteError::NoHealthyWorkers {
                model: model.into_owned(),
                role: WorkerRole::Regular,
                total,
                ejected,
                unchecked: unchecked(&all_workers),
            });
        }
        Ok(healthy)
    }
}

//! `switchyard.v1.WorkerManagement`: the operator's API onto the registry.

use std::sync::Arc;

use crate::tenants::Tenants;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::admission::{self, Admission, WorkerRequest};
use crate::pb;
use crate::pb::worker_management_server::WorkerManagement;
use crate::worker::{Worker, WorkerRegistry};

/// Serves worker management over one registry.
#[derive(Debug, Clone)]
pub struct WorkerManagementService {
    registry: Arc<WorkerRegistry>,
    admission: Admission,
    tenants: Arc<Tenants>,
}

impl WorkerManagementService {
    /// A service over `registry`, adding workers through `admission`.
    pub fn new(registry: Arc<WorkerRegistry>, admission: Admission, tenants: Arc<Tenants>) -> Self {
        WorkerManagementService {
            registry,
            admission,
            tenants,
        }
    }

    fn find(&self, target: Option<pb::get_worker_request::Target>) -> Result<Arc<Worker>, Status> {
        use pb::get_worker_request::Target;
        match target {
            Some(Target::Id(id)) => Ok(self.registry.get(&id)?),
            Some(Target::Url(url)) => Ok(self.registry.get_by_url(&url)?),
            None => Err(Status::invalid_argument("set the worker's id or url")),
        }
    }
}

/// Buffer between the registry's event channel and one watcher's connection.
const WATCH_BUFFER: usize = 256;

#[tonic::async_trait]
impl WorkerManagement for WorkerManagementService {
    async fn list_tenants(
        &self,
        _: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let routers = self.tenants.share();
        let tenants = self
            .tenants
            .list()
            .iter()
            .map(|t| convert::tenant_info(t, routers))
            .collect();
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn add_worker(
        &self,
        request: Request<pb::AddWorkerRequest>,
    ) -> Result<Response<pb::AddWorkerResponse>, Status> {
        let spec = request
            .into_inner()
            .worker
            .ok_or_else(|| Status::invalid_argument("AddWorkerRequest.worker is required"))?;
        let request = WorkerRequest::try_from(spec).map_err(crate::worker::RegistryError::from)?;
        let worker = self.admission.add(request).await?;
        tracing::info!(worker = %worker.id(), url = worker.url(), model = %worker.model(), role = %worker.role(), engine = ?worker.spec().engine, "worker added");
        Ok(Response::new(pb::AddWorkerResponse {
            worker: Some(convert::worker_info(&worker)),
        }))
    }

    async fn remove_worker(
        &self,
        request: Request<pb::RemoveWorkerRequest>,
    ) -> Result<Response<pb::RemoveWorkerResponse>, Status> {
        use pb::remove_worker_request::Target;
        let worker = match request.into_inner().target {
            Some(Target::Id(id)) => self.admission.remove(admission::Target::Id(&id)).await?,
            Some(Target::Url(url)) => self.admission.remove(admission::Target::Url(&url)).await?,
            None => return Err(Status::invalid_argument("set the worker's id or url")),
        };
        tracing::info!(worker = %worker.id(), url = worker.url(), "worker removed");
        Ok(Response::new(pb::RemoveWorkerResponse {
            worker: Some(convert::worker_info(&worker)),
        }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let filter = request.into_inner();
        let role = filter
            .role
            .map(convert::role_from_proto)
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mode = match filter.connection_mode.map(pb::ConnectionMode::try_from) {
            None | Some(Ok(pb::ConnectionMode::Unspecified)) => None,
            Some(Ok(mode)) => Some(mode),
            Some(Err(_)) => return Err(Status::invalid_argument(
                "unknown connection_mode: use CONNECTION_MODE_GRPC (1) or CONNECTION_MODE_HTTP (2)",
            )),
        };
        let all = self.registry.list();
        let matching = all
            .iter()
            .filter(|w| {
                filter
                    .model_id
                    .as_deref()
                    .is_none_or(|m| w.model().as_ref() == m)
            })
            .filter(|w| role.is_none_or(|r| w.role() == r))
            .filter(|w| mode.is_none_or(|m| convert::mode_to_proto(w.mode()) == m));
        let (page, next_page_token) =
            convert::page(matching, filter.page_size as usize, &filter.page_token)
                .map_err(Status::invalid_argument)?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: page.into_iter().map(|w| convert::worker_info(w)).collect(),
            next_page_token,
        }))
    }

    async fn get_worker(
        &self,
        request: Request<pb::GetWorkerRequest>,
    ) -> Result<Response<pb::WorkerInfo>, Status> {
        let worker = self.find(request.into_inner().target)?;
        Ok(Response::new(convert::worker_info(&worker)))
    }

    type WatchWorkersStream = ReceiverStream<Result<pb::WorkerEvent, Status>>;

    async fn watch_workers(
        &self,
        _request: Request<pb::WatchWorkersRequest>,
    ) -> Result<Response<Self::WatchWorkersStream>, Status> {
        let (current, sequence, mut events) = self.registry.watch();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            for worker in &current {
                if tx
                    .send(Ok(convert::initial_event(worker, sequence)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                let item = tokio::select! {
                    event = events.recv() => event,
                    _ = tx.closed() => return,
                };
                let message = match item {
                    Ok(event) => Ok(convert::event(&event)),
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::aborted(format!(
                        "this watcher fell {n} events behind the registry; call WatchWorkers again to resync"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let stop = message.is_err();
                if tx.send(message).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

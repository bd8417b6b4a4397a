//! Where the workers added at runtime live beyond this process.
//!
//! The in-process [`WorkerRegistry`] is always what the hot path reads. A
//! [`Store`] decides what happens around a management call's change to it:
//! - [`Store::Memory`] (default): the change is the registry's only; a
//!   restart forgets the workers added at runtime.
//! - [`Store::File`] (`--state-file`): the registry changes, then the file
//!   is rewritten atomically; if the file cannot be written the change is
//!   undone and the call fails, so the file and the registry never differ.
//! - [`Store::Etcd`] (`--registry etcd://...`): the change is written to
//!   etcd, and the registry follows etcd through a watch ([`etcd`]); the
//!   call returns once this router's registry has it.

pub mod etcd;
pub mod file;
mod record;

pub use record::{StoreError, StoredWorker};

use std::sync::Arc;

use crate::worker::{Source, Worker, WorkerRegistry, WorkerSpec};

/// Where runtime changes to the workers are kept (see the module docs).
#[derive(Debug)]
pub enum Store {
    /// This process only.
    Memory,
    /// A state file, for one router.
    File(file::StateFile),
    /// etcd, shared by every router with the same URL.
    Etcd(Arc<etcd::SharedRegistry>),
}

impl Store {
    /// Registers `spec`; the worker is routable on this router when this
    /// returns. Startup workers are never written to a state file.
    pub async fn add(
        &self,
        registry: &Arc<WorkerRegistry>,
        spec: WorkerSpec,
    ) -> Result<Arc<Worker>, StoreError> {
        match (self, &spec.source) {
            // Discovered workers are each router's own.
            (Store::Memory, _)
            | (_, Source::Discovered { .. })
            | (Store::File(_), Source::Startup) => Ok(registry.add(spec)?),
            (Store::File(file), _) => file.add(registry, spec).await,
            (Store::Etcd(shared), _) => shared.add(spec).await,
        }
    }

    /// Unregisters `worker`: no new call on this router chooses it once
    /// this returns.
    pub async fn remove(
        &self,
        registry: &Arc<WorkerRegistry>,
        worker: &Arc<Worker>,
    ) -> Result<(), StoreError> {
        if let Source::Discovered { pod } = &worker.spec().source {
            return Err(StoreError::Discovered {
                id: worker.id().to_string(),
                url: worker.url().to_string(),
                pod: pod.clone(),
            });
        }
        match self {
            Store::Memory => {
                registry.remove(worker.id().as_str())?;
                Ok(())
            }
            Store::File(file) => file.remove(registry, worker).await,
            Store::Etcd(shared) => shared.remove(worker).await,
        }
    }

    /// What readiness shows about it.
    pub fn status(&self) -> serde_json::Value {
        match self {
            Store::Memory => serde_json::json!({"kind": "memory"}),
            Store::File(file) => {
                serde_json::json!({"kind": "state_file", "path": file.path().display().to_string()})
            }
            Store::Etcd(shared) => shared.status(),
        }
    }
}

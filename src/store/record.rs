//! What a store keeps: a worker as written ([`StoredWorker`]), and why a
//! change was not made ([`StoreError`]). Shared by every kind of store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engines;
use crate::worker::{Health, ModelFacts, RegistryError, WorkerId, WorkerRole, WorkerSpec};

/// Why a change to the workers was not made.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The registry refused it (duplicate URL, unknown id, role conflict...).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store cannot take changes now (etcd unreachable, the state file
    /// not writable); nothing was changed. Try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The worker was discovered and leaves only when its pod does.
    #[error("worker {id} ({url}) was discovered from Kubernetes (pod {pod}): it leaves when its pod does (deleted, not Ready, or no longer matching the selector); change the pod, not the router")]
    Discovered {
        /// The worker.
        id: String,
        /// Its URL.
        url: String,
        /// Its pod, `namespace/name`.
        pod: String,
    },
}

/// How a worker is written to a store: its id and the spec it was
/// registered with (engine and model facts included, so that reading it
/// back contacts nobody).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWorker {
    /// The worker's id, the same wherever it is read back.
    pub id: String,
    /// Normalized URL.
    pub url: String,
    /// The model it serves.
    pub model_id: String,
    /// What it does.
    pub role: WorkerRole,
    /// Prefill workers' bootstrap port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_port: Option<u16>,
    /// Operator labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// gRPC workers' engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The engine's served model name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub served_model_name: String,
    /// The engine's context length (0: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_context_length: u32,
    /// It was not serving when added: out of rotation until a health
    /// check passes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starts_unhealthy: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StoredWorker {
    /// The record of `spec` registered as `id`.
    pub fn new(id: &WorkerId, spec: &WorkerSpec) -> Self {
        StoredWorker {
            id: id.to_string(),
            url: spec.url().to_string(),
            model_id: spec.model_id.clone(),
            role: spec.role,
            bootstrap_port: spec.bootstrap_port,
            labels: spec.labels.clone(),
            engine: spec.engine.map(|e| e.name().to_string()),
            served_model_name: spec.facts.served_model_name.clone(),
            max_context_length: spec.facts.max_context_length,
            starts_unhealthy: spec.starts == Health::Unhealthy,
        }
    }

    /// The id and spec back, validated as a new spec is.
    pub fn into_spec(self) -> Result<(WorkerId, WorkerSpec), String> {
        let id = WorkerId::parse(&self.id)
            .ok_or_else(|| format!("{:?} is not a worker id (w- and 16 hex digits)", self.id))?;
        let mut spec = WorkerSpec::new(
            &self.url,
            &self.model_id,
            self.role,
            self.bootstrap_port.map(u32::from),
            self.labels,
        )
        .map_err(|e| e.to_string())?;
        if let Some(engine) = self.engine {
            let engine = engines::by_name(&engine)?;
            spec = spec
                .with_engine(
                    engine,
                    ModelFacts {
                        served_model_name: self.served_model_name,
                        max_context_length: self.max_context_length,
                    },
                )
                .map_err(|e| e.to_string())?;
        }
        // Read back, it was checked when it was added (by this router or
        // another): healthy unless it was not serving then.
        spec.starts = match self.starts_unhealthy {
            true => Health::Unhealthy,
            false => Health::Healthy,
        };
        Ok((id, spec))
    }
}

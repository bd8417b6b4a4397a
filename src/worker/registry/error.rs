//! Why a registry operation was refused.

use crate::worker::{Engine, SpecError, WorkerId, WorkerRole};

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The URL is already registered.
    #[error("a worker with url {url} is already registered as {id}")]
    AlreadyExists {
        /// The URL.
        url: String,
        /// The worker registered under it.
        id: WorkerId,
    },
    /// No worker with this id or URL.
    #[error("no worker with {what} {value:?}")]
    NotFound {
        /// "id" or "url".
        what: &'static str,
        /// The id or URL asked for.
        value: String,
    },
    /// The worker's role does not fit how its model is served.
    #[error("model {model:?} is served {served}; a {role} worker cannot join it ({hint})")]
    RoleConflict {
        /// The model.
        model: String,
        /// The refused worker's role.
        role: WorkerRole,
        /// How the model is served now.
        served: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The worker's engine differs from the engine of its model's other
    /// gRPC workers.
    #[error("model {model:?} is served by {served} workers; a {engine} worker cannot join it (one model, one engine: its requests are in that engine's protocol; use another model id)")]
    EngineConflict {
        /// The model.
        model: String,
        /// The refused worker's engine.
        engine: Engine,
        /// The engine of the model's workers.
        served: Engine,
    },
    /// The spec itself is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// As many workers as allowed are registered.
    #[error("{max} workers are registered, the most allowed (limits.max_workers): remove one first, or raise the limit")]
    Full {
        /// The limit.
        max: usize,
    },
}

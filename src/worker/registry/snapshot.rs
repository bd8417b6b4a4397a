//! What readers of the registry see: an immutable index of workers by
//! connection mode, role and model, replaced whole on every change.

use std::collections::HashMap;
use std::sync::Arc;

use crate::worker::{ConnectionMode, Worker, WorkerRole};

/// Index key: workers are resolved by connection mode, role and model.
pub(super) type GroupKey = (ConnectionMode, WorkerRole);
pub(super) type Group = Arc<[Arc<Worker>]>;

/// What readers see: an immutable index, replaced as a whole on change.
#[derive(Default)]
pub struct Snapshot {
    pub(super) groups: HashMap<GroupKey, HashMap<Arc<str>, Group>>,
}

impl Snapshot {
    /// Workers of one (mode, role, model), in registration order (which is
    /// ascending [`Worker::ordinal`] order; policies rely on it).
    pub fn group(&self, mode: ConnectionMode, role: WorkerRole, model: &str) -> Option<&Group> {
        self.groups.get(&(mode, role))?.get(model)
    }

    /// Models that have at least one worker of this mode and role.
    pub fn models(
        &self,
        mode: ConnectionMode,
        role: WorkerRole,
    ) -> impl Iterator<Item = &Arc<str>> {
        self.groups
            .get(&(mode, role))
            .into_iter()
            .flat_map(|m| m.keys())
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field(
                "groups",
                &self.groups.values().map(HashMap::len).sum::<usize>(),
            )
            .finish()
    }
}

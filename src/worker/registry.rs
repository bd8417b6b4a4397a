//! The `WorkerRegistry`: the one store of workers (DESIGN invariant 1).
//!
//! Writers (add, remove, health changes) take a short std mutex, update the
//! primary map, rebuild only the index group they touched, publish a new
//! [`Snapshot`] through `ArcSwap`, and announce the change as a [`WorkerEvent`]
//! in one total order. Readers on the hot path never lock: [`resolve`] loads
//! the snapshot and does two hash lookups, so its cost does not depend on how
//! many workers other models or modes have.
//!
//! Stateful policies implement [`RegistryListener`] and are called
//! synchronously under the write lock, so when `remove` returns every policy
//! has already forgotten the worker. Async consumers (`WatchWorkers`, the
//! health reporter) use [`WorkerRegistry::watch`], a broadcast channel.
//!
//! [`resolve`]: WorkerRegistry::resolve

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use super::{
    Announcer, CircuitConfig, ConnectionMode, RegistryListener, Worker, WorkerEvent,
    WorkerEventKind, WorkerId, WorkerRole, WorkerSpec,
};
use crate::transport::grpc::ChannelConfig;

mod error;
mod snapshot;

pub use error::RegistryError;
use snapshot::Group;
pub use snapshot::Snapshot;

/// Writer-side state; only touched under the mutex.
#[derive(Default)]
struct State {
    by_id: HashMap<WorkerId, Arc<Worker>>,
    by_url: HashMap<String, WorkerId>,
    /// Group members in registration order; the source the snapshot is built from.
    groups: HashMap<(ConnectionMode, WorkerRole, Arc<str>), Vec<Arc<Worker>>>,
    sequence: u64,
    next_ordinal: u64,
    listeners: Vec<Weak<dyn RegistryListener>>,
}

/// The registry. Share it as `Arc<WorkerRegistry>`.
pub struct WorkerRegistry {
    /// Serializes writers so that index rebuilds and the event order agree.
    /// A std mutex: it is never held across an `.await`. Shared with the
    /// workers' announcers.
    state: Arc<Mutex<State>>,
    /// Read on every call without locking; swapped by writers.
    snapshot: ArcSwap<Snapshot>,
    events: broadcast::Sender<WorkerEvent>,
    channel_config: ChannelConfig,
    circuit_config: Arc<CircuitConfig>,
    /// The most workers registered at once.
    max_workers: usize,
    /// Calls in flight to one worker beyond which it is passed over (0: none).
    max_in_flight_per_worker: u32,
    /// Told when a worker at that limit finishes a call.
    slot_freed: Arc<tokio::sync::Notify>,
}

/// How many events an async watcher may fall behind before it is told to resync.
const EVENT_BUFFER: usize = 4096;

impl WorkerRegistry {
    /// An empty registry whose workers connect with `channel_config`.
    pub fn new(channel_config: ChannelConfig) -> Self {
        WorkerRegistry {
            state: Arc::new(Mutex::new(State::default())),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            events: broadcast::channel(EVENT_BUFFER).0,
            channel_config,
            circuit_config: Arc::new(CircuitConfig::default()),
            max_workers: usize::MAX,
            max_in_flight_per_worker: 0,
            slot_freed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Calls in flight to one worker beyond which it is passed over (0: none).
    pub fn max_in_flight_per_worker(&self) -> u32 {
        self.max_in_flight_per_worker
    }

    /// Notified (every waiter) when a worker at its limit of calls in
    /// flight finishes one.
    pub fn slot_freed(&self) -> &tokio::sync::Notify {
        &self.slot_freed
    }

    /// The same registry, whose workers are passed over while `max` calls
    /// are in flight to them (0: no limit).
    pub fn with_max_in_flight_per_worker(mut self, max: u32) -> Self {
        self.max_in_flight_per_worker = max;
        self
    }

    /// The same registry, holding at most `max` workers at once.
    pub fn with_max_workers(mut self, max: usize) -> Self {
        self.max_workers = max;
        self
    }

    /// The same registry, whose workers' circuits use `config`.
    pub fn with_circuit(mut self, config: CircuitConfig) -> Self {
        self.circuit_config = Arc::new(config);
        self
    }

    /// How its workers connect.
    pub fn channel_config(&self) -> &ChannelConfig {
        &self.channel_config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves the maps consistent (every write is
        // completed before listeners run), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a worker. It is routable when this returns.
    pub fn add(&self, spec: WorkerSpec) -> Result<Arc<Worker>, RegistryError> {
        self.insert(spec, None)
    }

    /// Registers a worker under an id chosen elsewhere (a store's), so that
    /// it has the same id on every router and across restarts.
    pub fn add_with_id(
        &self,
        spec: WorkerSpec,
        id: WorkerId,
    ) -> Result<Arc<Worker>, RegistryError> {
        self.insert(spec, Some(id))
    }

    /// Whether [`add`](Self::add) would take `spec` now (its URL, role,
    /// engine and the worker limit), without adding it.
    pub fn check(&self, spec: &WorkerSpec) -> Result<(), RegistryError> {
        check_new(&self.lock(), spec, self.max_workers)
    }

    fn insert(&self, spec: WorkerSpec, id: Option<WorkerId>) -> Result<Arc<Worker>, RegistryError> {
        let mut state = self.lock();
        check_new(&state, &spec, self.max_workers)?;
        let id = match id {
            Some(id) => {
                if let Some(other) = state.by_id.get(&id) {
                    return Err(RegistryError::AlreadyExists {
                        url: other.url().to_string(),
                        id,
                    });
                }
                id
            }
            None => {
                let mut id = WorkerId::generate();
                while state.by_id.contains_key(&id) {
                    id = WorkerId::generate();
                }
                id
            }
        };
        state.next_ordinal += 1;
        let worker = Arc::new(Worker::new(
            id.clone(),
            state.next_ordinal,
            spec,
            self.channel_config.clone(),
            (self.circuit_config.clone(), self.announcer()),
            (
                self.max_in_flight_per_worker,
                (self.max_in_flight_per_worker > 0).then(|| self.slot_freed.clone()),
            ),
        ));
        state.by_url.insert(worker.url().to_string(), id.clone());
        state.by_id.insert(id, worker.clone());
        let key = group_key(&worker);
        state
            .groups
            .entry(key.clone())
            .or_default()
            .push(worker.clone());
        self.publish_group(&state, &key);
        self.emit(&mut state, WorkerEventKind::Added, &worker);
        Ok(worker)
    }

    /// Unregisters a worker by id. No new call chooses it once this returns.
    pub fn remove(&self, id: &str) -> Result<Arc<Worker>, RegistryError> {
        let mut state = self.lock();
        let worker = state
            .by_id
            .remove(id)
            .ok_or_else(|| RegistryError::NotFound {
                what: "id",
                value: id.to_string(),
            })?;
        state.by_url.remove(worker.url());
        let key = group_key(&worker);
        if let Some(members) = state.groups.get_mut(&key) {
            members.retain(|w| !Arc::ptr_eq(w, &worker));
            if members.is_empty() {
                state.groups.remove(&key);
            }
        }
        self.publish_group(&state, &key);
        self.emit(&mut state, WorkerEventKind::Removed, &worker);
        Ok(worker)
    }

    /// Unregisters a worker by URL (any spelling that normalizes to it).
    pub fn remove_by_url(&self, url: &str) -> Result<Arc<Worker>, RegistryError> {
        let id = self.id_of_url(url)?;
        self.remove(id.as_str())
    }

    /// Records a health check verdict; publishes an event if it changed.
    pub fn set_health(&self, id: &WorkerId, healthy: bool) -> bool {
        let mut state = self.lock();
        let Some(worker) = state.by_id.get(id).cloned() else {
            return false; // removed while being checked
        };
        if !worker.set_healthy(healthy) {
            return false;
        }
        self.emit(
            &mut state,
            WorkerEventKind::HealthChanged { healthy },
            &worker,
        );
        true
    }

    /// One worker by id.
    pub fn get(&self, id: &str) -> Result<Arc<Worker>, RegistryError> {
        self.lock()
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                what: "id",
                value: id.to_string(),
            })
    }

    /// One worker by URL (any spelling that normalizes to it).
    pub fn get_by_url(&self, url: &str) -> Result<Arc<Worker>, RegistryError> {
        let id = self.id_of_url(url)?;
        self.get(id.as_str())
    }

    fn id_of_url(&self, url: &str) -> Result<WorkerId, RegistryError> {
        let normalized = super::Endpoint::parse(url).map_err(super::SpecError::from)?;
        self.lock()
            .by_url
            .get(normalized.url())
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                what: "url",
                value: url.to_string(),
            })
    }

    /// Every worker, in id order.
    pub fn list(&self) -> Vec<Arc<Worker>> {
        let mut all: Vec<_> = self.lock().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }

    /// Number of registered workers.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// True when no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hot-path read: the workers of (mode, role, model) right now.
    /// Lock-free, and independent of the number of other models' workers.
    pub fn resolve(&self, mode: ConnectionMode, role: WorkerRole, model: &str) -> Option<Group> {
        self.snapshot.load().group(mode, role, model).cloned()
    }

    /// The current index snapshot, for reads that need several groups.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Registers a listener and returns the current workers, atomically: the
    /// listener hears every change after the returned set and none before it.
    /// The registry holds it weakly; it is dropped from the list once gone.
    pub fn subscribe(&self, listener: Weak<dyn RegistryListener>) -> Vec<Arc<Worker>> {
        let mut state = self.lock();
        state.listeners.push(listener);
        state.by_id.values().cloned().collect()
    }

    /// The current workers and a receiver of every later change, atomically.
    /// A receiver that falls more than a few thousand events behind gets
    /// `RecvError::Lagged` and must watch again to resync.
    pub fn watch(&self) -> (Vec<Arc<Worker>>, u64, broadcast::Receiver<WorkerEvent>) {
        let state = self.lock();
        let rx = self.events.subscribe();
        let mut all: Vec<_> = state.by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        (all, state.sequence, rx)
    }

    fn publish_group(&self, state: &State, key: &(ConnectionMode, WorkerRole, Arc<str>)) {
        let (mode, role, model) = key;
        let current = self.snapshot.load();
        // Copy the outer maps (one entry per group, not per worker) and
        // replace only the group that changed.
        let mut groups = current.groups.clone();
        let by_model = groups.entry((*mode, *role)).or_default();
        match state.groups.get(key) {
            Some(members) => {
                by_model.insert(model.clone(), members.iter().cloned().collect());
            }
            None => {
                by_model.remove(model);
                if by_model.is_empty() {
                    groups.remove(&(*mode, *role));
                }
            }
        }
        self.snapshot.store(Arc::new(Snapshot { groups }));
    }

    /// Lets a worker announce a change of its own (its circuit) in the
    /// registry's order of events, without holding the registry: published
    /// if both are still registered.
    fn announcer(&self) -> Announcer {
        let (state, events) = (Arc::downgrade(&self.state), self.events.clone());
        Box::new(move |kind, worker| {
            let Some(state) = state.upgrade() else {
                return;
            };
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            if state
                .by_id
                .get(worker.id())
                .is_some_and(|w| Arc::ptr_eq(w, worker))
            {
                emit(&mut state, &events, kind, worker);
            }
        })
    }

    fn emit(&self, state: &mut State, kind: WorkerEventKind, worker: &Arc<Worker>) {
        emit(state, &self.events, kind, worker);
    }
}

/// Numbers the change, tells the listeners, then the watchers.
fn emit(
    state: &mut State,
    events: &broadcast::Sender<WorkerEvent>,
    kind: WorkerEventKind,
    worker: &Arc<Worker>,
) {
    state.sequence += 1;
    let event = WorkerEvent {
        sequence: state.sequence,
        kind,
        worker: worker.clone(),
    };
    state.listeners.retain(|l| match l.upgrade() {
        Some(listener) => {
            listener.on_event(&event);
            true
        }
        None => false,
    });
    // No receivers is fine: nobody is watching.
    let _ = events.send(event);
}

/// A model is served either regularly or disaggregated (prefill + decode),
/// whatever the connection mode: mixing would split its traffic between two
/// kinds of serving with nothing to choose between them.
/// What a new worker must pass: a URL not yet registered, a role and an
/// engine that fit its model, and room under the limit.
fn check_new(state: &State, spec: &WorkerSpec, max_workers: usize) -> Result<(), RegistryError> {
    if let Some(id) = state.by_url.get(spec.url()) {
        return Err(RegistryError::AlreadyExists {
            url: spec.url().to_string(),
            id: id.clone(),
        });
    }
    check_roles(state, spec)?;
    check_engine(state, spec)?;
    if state.by_id.len() >= max_workers {
        return Err(RegistryError::Full { max: max_workers });
    }
    Ok(())
}

fn check_roles(state: &State, spec: &WorkerSpec) -> Result<(), RegistryError> {
    let model: &str = &spec.model_id;
    let has = |role: WorkerRole| {
        [ConnectionMode::Grpc, ConnectionMode::Http]
            .iter()
            .any(|mode| state.groups.contains_key(&(*mode, role, Arc::from(model))))
    };
    let conflict = |served, hint| RegistryError::RoleConflict {
        model: model.to_string(),
        role: spec.role,
        served,
        hint,
    };
    match spec.role {
        WorkerRole::Regular if has(WorkerRole::Prefill) || has(WorkerRole::Decode) => {
            Err(conflict(
                "disaggregated (prefill/decode workers)",
                "register it with role PREFILL or DECODE, or under another model id",
            ))
        }
        WorkerRole::Prefill | WorkerRole::Decode if has(WorkerRole::Regular) => Err(conflict(
            "regularly (regular workers)",
            "remove the model's regular workers first, or use another model id",
        )),
        _ => Ok(()),
    }
}

/// A model's gRPC workers all run one engine: a call in one engine's
/// protocol can then go to any of them.
fn check_engine(state: &State, spec: &WorkerSpec) -> Result<(), RegistryError> {
    let Some(engine) = spec.engine else {
        return Ok(());
    };
    let model: Arc<str> = Arc::from(spec.model_id.as_str());
    let served = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
        .iter()
        .filter_map(|role| {
            state
                .groups
                .get(&(ConnectionMode::Grpc, *role, model.clone()))
        })
        .flat_map(|group| group.first())
        .map(|w| w.engine())
        .find(|served| *served != engine);
    match served {
        Some(served) => Err(RegistryError::EngineConflict {
            model: spec.model_id.clone(),
            engine,
            served,
        }),
        None => Ok(()),
    }
}

fn group_key(worker: &Worker) -> (ConnectionMode, WorkerRole, Arc<str>) {
    (worker.mode(), worker.role(), worker.model().clone())
}

impl std::fmt::Debug for WorkerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRegistry")
            .field("workers", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;

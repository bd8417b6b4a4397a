//! Consistent hashing for session affinity, keyed by the request metadata
//! `x-switchyard-routing-key`.
//!
//! Karger et al., "Consistent Hashing and Random Trees" (1997), with virtual
//! nodes as in Dynamo/ketama: each worker owns `virtual_nodes` points on a
//! 64-bit ring (hashes of its URL), and a key goes to the owner of the first
//! point at or after the key's hash that belongs to a healthy worker. Adding
//! or removing a worker moves only the keys of that worker's arcs.
//!
//! The rings (one per model) are kept in sync by registry events: a point
//! appears when its worker is added and disappears before `RemoveWorker`
//! returns. Requests without a key go to the fallback policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::{ConsistentHashConfig, Policy, PolicyError, RequestFacts};
use crate::worker::{RegistryListener, Worker, WorkerEvent, WorkerEventKind};

/// 64-bit FNV-1a followed by the SplitMix64 finalizer, so that similar
/// inputs (`url#1`, `url#2`) land far apart. Stable across runs and builds.
pub(crate) fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

type Ring = BTreeMap<u64, Arc<Worker>>;

/// The consistent-hash policy.
#[derive(Debug)]
pub struct ConsistentHash {
    config: ConsistentHashConfig,
    fallback: Arc<dyn Policy>,
    /// Rings by model. Read on every keyed request, written only on registry
    /// events: a std `RwLock`, never held across an `.await`.
    rings: RwLock<HashMap<Arc<str>, Ring>>,
}

impl ConsistentHash {
    /// A policy with empty rings; `fallback` serves requests without a key.
    pub fn new(config: ConsistentHashConfig, fallback: Arc<dyn Policy>) -> Self {
        ConsistentHash {
            config,
            fallback,
            rings: RwLock::new(HashMap::new()),
        }
    }

    fn points(&self, worker: &Worker) -> impl Iterator<Item = u64> + '_ {
        let url = worker.url().as_bytes().to_vec();
        (0..self.config.virtual_nodes).map(move |i| hash64(&[&url, b"#", i.to_string().as_bytes()]))
    }

    /// Puts `worker`'s points on its model's ring.
    pub(super) fn add(&self, worker: &Arc<Worker>) {
        let mut rings = self.rings.write().unwrap_or_else(|p| p.into_inner());
        let ring = rings.entry(worker.model().clone()).or_default();
        for point in self.points(worker) {
            ring.insert(point, worker.clone());
        }
    }

    fn remove(&self, worker: &Worker) {
        let mut rings = self.rings.write().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = rings.get_mut(worker.model().as_ref()) else {
            return;
        };
        for point in self.points(worker) {
            if ring
                .get(&point)
                .is_some_and(|w| w.ordinal() == worker.ordinal())
            {
                ring.remove(&point);
            }
        }
        if ring.is_empty() {
            rings.remove(worker.model().as_ref());
        }
    }
}

impl Policy for ConsistentHash {
    fn name(&self) -> &'static str {
        "consistent_hash"
    }

    fn reads_prompt(&self) -> bool {
        self.fallback.reads_prompt()
    }

    fn select(
        &self,
        candidates: &[Arc<Worker>],
        request: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, PolicyError> {
        let Some(first) = candidates.first() else {
            return Err(PolicyError::NoCandidates);
        };
        let Some(key) = request.routing_key.filter(|k| !k.is_empty()) else {
            return self.fallback.select(candidates, request);
        };
        let h = hash64(&[key.as_bytes()]);
        let rings = self.rings.read().unwrap_or_else(|p| p.into_inner());
        if let Some(ring) = rings.get(request.model) {
            // The ring holds every registered worker of the model; the
            // candidates are the ones this call may use (routable, of its
            // mode and role, not yet tried).
            let usable = |w: &&Arc<Worker>| {
                w.mode() == first.mode()
                    && w.role() == first.role()
                    && candidates.iter().any(|c| Arc::ptr_eq(c, w))
            };
            let found = ring
                .range(h..)
                .chain(ring.range(..h))
                .map(|(_, w)| w)
                .find(usable);
            if let Some(worker) = found {
                return Ok(worker.clone());
            }
        }
        drop(rings);
        self.fallback.select(candidates, request)
    }

    fn record(&self, worker: &Arc<Worker>, request: &RequestFacts<'_>) {
        if request.routing_key.is_none_or(str::is_empty) {
            self.fallback.record(worker, request);
        }
    }

    /// Ring points owned by `worker`, plus what the fallback remembers.
    fn remembered(&self, worker: &Worker) -> usize {
        let rings = self.rings.read().unwrap_or_else(|p| p.into_inner());
        let points = rings.get(worker.model().as_ref()).map_or(0, |ring| {
            ring.values()
                .filter(|w| w.ordinal() == worker.ordinal())
                .count()
        });
        points + self.fallback.remembered(worker)
    }
}

impl RegistryListener for ConsistentHash {
    fn on_event(&self, event: &WorkerEvent) {
        match event.kind {
            WorkerEventKind::Added => self.add(&event.worker),
            WorkerEventKind::Removed => self.remove(&event.worker),
            WorkerEventKind::HealthChanged { .. } | WorkerEventKind::CircuitChanged { .. } => {}
        }
    }
}

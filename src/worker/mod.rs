//! Workers: the domain model of one inference server process.
//!
//! A [`Worker`] is created from a validated [`WorkerSpec`] by the registry and
//! shared as `Arc<Worker>`. Its identity and spec never change; its health and
//! in-flight count are atomics written by the health checker and load guards.
//! Its connections are made on first use and dropped with the last `Arc`,
//! so a removed worker's streams in flight finish on the connection they
//! started on.

pub mod circuit;
mod circuit_events;
mod endpoint;
mod engine;
mod kv_stream;
mod load;
pub mod registry;
mod spec;
pub mod stats;

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use http::uri::Scheme;
use http::HeaderValue;

pub use circuit::{CircuitConfig, CircuitState, Outcome};
pub use endpoint::{ConnectionMode, Endpoint, UrlError};
pub use engine::{Engine, EngineName};
pub use kv_stream::{KvStream, StreamState};
pub use load::LoadGuard;
pub use registry::{RegistryError, WorkerRegistry};
pub use spec::{ModelFacts, Source, SpecError, WorkerRole, WorkerSpec};

use crate::transport::grpc::{ChannelConfig, Upstream};
use crate::transport::http1::Origin;

/// A worker's stable identity in the registry (`w-<16 hex digits>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    pub(crate) fn generate() -> Self {
        WorkerId(format!("w-{:016x}", rand::random::<u64>()).into())
    }

    /// An id read back from a store: `w-` and 16 lowercase hex digits, as
    /// [`generate`](Self::generate) makes them.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("w-")?;
        (hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| WorkerId(s.into()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a shared string (a reference count, no copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for WorkerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What the health checks say of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Health {
    /// Passing: in rotation (circuit and limits permitting).
    #[default]
    Healthy = 0,
    /// Failing (or not serving yet): out of rotation until checks pass.
    Unhealthy = 1,
    /// Registered without being contacted, and not checked yet: out of
    /// rotation until its first check, which runs at once, passes.
    Unchecked = 2,
}

impl Health {
    fn from_u8(value: u8) -> Health {
        match value {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            _ => Health::Unchecked,
        }
    }

    /// Its name in JSON and the CLI: `healthy`, `unhealthy`, `unchecked`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unchecked => "unchecked",
        }
    }
}

/// What happened to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEventKind {
    /// Registered (and routable).
    Added,
    /// Unregistered: never chosen for a new call again.
    Removed,
    /// The health checker flipped its state.
    HealthChanged {
        /// The new state.
        healthy: bool,
    },
    /// Its circuit breaker opened, let a probe through, or closed
    /// (see [`circuit`]).
    CircuitChanged {
        /// The new state.
        state: CircuitState,
    },
}

/// One change, in the registry's total order.
#[derive(Debug, Clone)]
pub struct WorkerEvent {
    /// Strictly increasing position in the order of changes.
    pub sequence: u64,
    /// What happened.
    pub kind: WorkerEventKind,
    /// The worker it happened to.
    pub worker: Arc<Worker>,
}

/// Something that keeps state about workers and must hear every change as it
/// happens. Called under the registry's write lock: keep it short, never block.
pub trait RegistryListener: Send + Sync {
    /// Called once per change, in order.
    fn on_event(&self, event: &WorkerEvent);
}

/// Publishes a worker's own changes (its circuit) as registry events, in
/// the registry's order; made by the registry, which the worker never names.
pub(crate) type Announcer = Box<dyn Fn(WorkerEventKind, &Arc<Worker>) + Send + Sync>;

/// One inference server process as the router knows it.
pub struct Worker {
    id: WorkerId,
    /// The id as a response metadata value, made once: every proxied
    /// response names its worker.
    id_value: HeaderValue,
    /// A small number unique among the registry's workers, ever: policies key
    /// per-worker state by it (cheaper to store and compare than the id).
    ordinal: u64,
    spec: WorkerSpec,
    endpoint: Endpoint,
    /// Scheme and `host:port`, parsed once: every call's URI names them.
    origin: Origin,
    model: Arc<str>,
    /// Written by the health checker (through the registry, which publishes
    /// the change); read on every routing decision. An atomic, because reads
    /// vastly outnumber writes and no other state changes with it.
    /// A [`Health`], as its `u8`.
    health: AtomicU8,
    /// Requests dispatched to this worker and not yet finished; only
    /// [`LoadGuard`] changes it.
    in_flight: AtomicU32,
    /// What the worker's engine reported running or waiting beyond this
    /// router's own calls, at the last `GetLoads` poll (0 for Switchyard
    /// workers, and when polling is off or failing).
    engine_extra: AtomicU32,
    /// The engine's KV-cache usage at the last poll, in thousandths.
    token_usage: AtomicU32,
    /// The engine pushes its load on a live KV-event stream (no polling).
    load_pushed: std::sync::atomic::AtomicBool,
    /// Its KV-event stream, when followed.
    kv_stream: KvStream,
    /// The circuit state last announced (as `CircuitState as u8`).
    circuit_announced: std::sync::atomic::AtomicU8,
    /// The data path (proxied `Generate` calls): `connections_per_worker`
    /// HTTP/2 connections, each made on first use, so that their frame
    /// processing spreads over cores instead of queueing behind one
    /// connection task.
    upstreams: Box<[OnceLock<Upstream>]>,
    /// Which upstream connection the next call uses.
    next_upstream: AtomicU32,
    channel_config: ChannelConfig,
    /// The breaker fed by this worker's calls ([`circuit`]).
    circuit: circuit::Circuit,
    circuit_config: Arc<CircuitConfig>,
    /// Publishes the circuit's changes as registry events.
    announcer: Announcer,
    /// Calls in flight at which it is passed over (`u32::MAX`: no limit).
    max_in_flight: u32,
    /// Told when a call ends with the worker at that limit (with a limit).
    slot_freed: Option<Arc<tokio::sync::Notify>>,
    /// What its calls did, for metrics.
    stats: stats::WorkerStats,
}

impl Worker {
    pub(crate) fn new(
        id: WorkerId,
        ordinal: u64,
        spec: WorkerSpec,
        channel_config: ChannelConfig,
        (circuit_config, announcer): (Arc<CircuitConfig>, Announcer),
        (max_in_flight, slot_freed): (u32, Option<Arc<tokio::sync::Notify>>),
    ) -> Self {
        let endpoint = spec.endpoint().clone();
        let model = Arc::from(spec.model_id.as_str());
        let health = spec.starts;
        // Ids are `w-` and hex digits.
        let id_value = HeaderValue::from_str(id.as_str())
            .unwrap_or_else(|_| unreachable!("worker id {id} is printable ASCII"));
        let authority = endpoint
            .authority()
            .parse()
            .unwrap_or_else(|_| unreachable!("a validated endpoint has a valid authority"));
        Worker {
            id,
            id_value,
            ordinal,
            spec,
            origin: Origin {
                scheme: if endpoint.is_secure() {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                },
                authority,
            },
            endpoint,
            model,
            health: AtomicU8::new(health as u8),
            in_flight: AtomicU32::new(0),
            engine_extra: AtomicU32::new(0),
            load_pushed: std::sync::atomic::AtomicBool::new(false),
            kv_stream: KvStream::default(),
            circuit_announced: std::sync::atomic::AtomicU8::new(CircuitState::Closed as u8),
            token_usage: AtomicU32::new(0),
            upstreams: (0..channel_config.connections.max(1))
                .map(|_| OnceLock::new())
                .collect(),
            next_upstream: AtomicU32::new(0),
            channel_config,
            circuit: circuit::Circuit::default(),
            circuit_config,
            announcer,
            slot_freed,
            max_in_flight: if max_in_flight == 0 {
                u32::MAX
            } else {
                max_in_flight
            },
            stats: stats::WorkerStats::default(),
        }
    }

    /// What its calls did (counts and latencies, for metrics).
    pub fn stats(&self) -> &stats::WorkerStats {
        &self.stats
    }

    /// The worker's registry id.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// The id as a response header value.
    pub fn id_value(&self) -> &HeaderValue {
        &self.id_value
    }

    /// Unique among every worker this registry has ever held.
    pub fn ordinal(&self) -> u64 {
        self.ordinal
    }

    /// What the operator registered.
    pub fn spec(&self) -> &WorkerSpec {
        &self.spec
    }

    /// The (normalized) URL this worker was registered with.
    pub fn url(&self) -> &str {
        self.endpoint.url()
    }

    /// Host, port and scheme of the worker.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Scheme and `host:port`, as calls to the worker name it.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The model this worker serves.
    pub fn model(&self) -> &Arc<str> {
        &self.model
    }

    /// How the worker is reached.
    pub fn mode(&self) -> ConnectionMode {
        self.endpoint.mode()
    }

    /// The worker's role.
    pub fn role(&self) -> WorkerRole {
        self.spec.role
    }

    /// The engine of a gRPC worker; `switchyard` for one registered
    /// without (only code that builds specs by hand does that).
    pub fn engine(&self) -> Engine {
        self.spec.engine.unwrap_or(Engine::SWITCHYARD)
    }

    /// Whether the health checker currently considers the worker usable
    /// (a worker not yet checked is not).
    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    /// What the health checks say of it.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets health; returns true if it changed (a worker not yet checked
    /// always changes). Only the registry calls this, so that every change
    /// is published as an event.
    pub(crate) fn set_healthy(&self, healthy: bool) -> bool {
        let new = if healthy {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        self.health.swap(new as u8, Ordering::AcqRel) != new as u8
    }

    /// Whether a router may choose it now: healthy, its circuit closed or
    /// ready for a probe, and under its limit of calls in flight.
    pub fn is_routable(&self) -> bool {
        self.is_available() && !self.is_busy()
    }

    /// Healthy, and its circuit closed or ready for a probe.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && self.circuit.admits()
    }

    /// At its limit of calls in flight (`limits.max_in_flight_per_worker`).
    /// A call that finds it under the limit is counted only when its load
    /// guard is taken, so calls choosing it in the same instant may pass
    /// the limit by their number.
    pub fn is_busy(&self) -> bool {
        self.in_flight() >= self.max_in_flight
    }

    /// Where its circuit breaker stands.
    pub fn circuit_state(&self) -> CircuitState {
        self.circuit.state()
    }

    /// How much longer its circuit stays open (zero unless open).
    pub fn circuit_open_for(&self) -> std::time::Duration {
        self.circuit.open_for()
    }

    /// Requests currently dispatched to this worker.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The load policies balance on: this router's calls in flight, plus
    /// what the engine last reported running or waiting beyond them (other
    /// clients' requests, requests queued inside the engine).
    pub fn load(&self) -> u32 {
        self.in_flight()
            .saturating_add(self.engine_extra.load(Ordering::Relaxed))
    }

    /// The engine's last reported KV-cache usage, in thousandths (0 when
    /// unknown).
    pub fn token_usage_permille(&self) -> u32 {
        self.token_usage.load(Ordering::Relaxed)
    }

    /// Records an engine's reported load: `requests` running and waiting,
    /// KV-cache usage `token_usage` (0..=1). The part of `requests` beyond
    /// this router's calls in flight now is kept; the router's own calls
    /// are counted live by [`Self::in_flight`].
    pub fn set_engine_load(&self, requests: u32, token_usage: f64) {
        let extra = requests.saturating_sub(self.in_flight());
        self.engine_extra.store(extra, Ordering::Relaxed);
        let permille = (token_usage.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.token_usage.store(permille, Ordering::Relaxed);
    }

    /// Its KV-event stream as the router follows it.
    pub fn kv_stream(&self) -> &KvStream {
        &self.kv_stream
    }

    /// Whether the engine's load arrives on a live KV-event stream (the
    /// `GetLoads` poller then leaves it alone).
    pub fn load_pushed(&self) -> bool {
        self.load_pushed.load(Ordering::Relaxed)
    }

    /// Marks the engine's load as pushed (a KV-event stream is live) or not.
    pub fn set_load_pushed(&self, pushed: bool) {
        self.load_pushed.store(pushed, Ordering::Relaxed);
    }

    /// Forgets the engine's reported load (a poll failed).
    pub fn clear_engine_load(&self) {
        self.engine_extra.store(0, Ordering::Relaxed);
        self.token_usage.store(0, Ordering::Relaxed);
    }

    /// The connection for the next proxied call: calls rotate over
    /// `connections_per_worker` connections.
    pub fn upstream(&self) -> &Upstream {
        let i = self.next_upstream.fetch_add(1, Ordering::Relaxed) as usize % self.upstreams.len();
        self.upstream_at(i)
    }

    /// The first connection only, for control calls (health checks,
    /// `Abort`): a worker that only sees health checks holds one connection.
    pub fn control(&self) -> &Upstream {
        self.upstream_at(0)
    }

    fn upstream_at(&self, i: usize) -> &Upstream {
        self.upstreams[i].get_or_init(|| {
            Upstream::new(
                self.origin.authority.clone(),
                self.engine().generate_path(),
                self.channel_config.clone(),
                self.endpoint.is_secure(),
            )
        })
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("url", &self.url())
            .field("model", &self.model)
            .field("role", &self.spec.role)
            .field("health", &self.health())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

//! Prometheus metrics, read when scraped: every value comes from state the
//! router keeps anyway (the registry's workers and their counters, the
//! call limit, the retry budget), so serving calls costs no metric
//! bookkeeping beyond a worker's few relaxed atomic adds per call.
//!
//! Label cardinality is bounded by the registry: per-worker series are
//! labelled by worker id (and its model and role) and disappear when the
//! worker is removed; model labels are only models some worker serves. A
//! client's request never creates a label value.
//!
//! Encoded by `prometheus-client` (OpenMetrics text).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::families::{counter, gauge, histogram, Result};
use super::overload::CallLimit;
use crate::policies::Policy;
use crate::routers::select::Retries;
use crate::tenants::Tenants;
use crate::worker::stats::{self, Ending};
use crate::worker::{CircuitState, ConnectionMode, Worker, WorkerRegistry, WorkerRole};

/// What a scrape reads.
#[derive(Debug)]
struct RouterCollector {
    registry: Arc<WorkerRegistry>,
    limit: Arc<CallLimit>,
    retries: Arc<Retries>,
    policies: Policies,
    tenants: Arc<Tenants>,
}

/// Every policy instance of a router's routers (read at scrape time).
pub type Policies = Arc<Vec<PolicySource>>;

/// One policy instance and where it decides: its router (`grpc`, `http`)
/// and set (`regular`, `prefill`, `decode`).
pub type PolicySource = (&'static str, &'static str, Arc<dyn Policy>);

/// The metrics registry of a router: encode it with [`encode`].
pub fn registry(
    registry: Arc<WorkerRegistry>,
    limit: Arc<CallLimit>,
    retries: Arc<Retries>,
    (policies, tenants): (Policies, Arc<Tenants>),
) -> Registry {
    let mut metrics = Registry::with_prefix("switchyard");
    metrics.register_collector(Box::new(RouterCollector {
        registry,
        limit,
        retries,
        policies,
        tenants,
    }));
    metrics
}

/// The OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn mode_label(mode: ConnectionMode) -> &'static str {
    match mode {
        ConnectionMode::Grpc => "grpc",
        ConnectionMode::Http => "http",
    }
}

fn role_label(role: WorkerRole) -> &'static str {
    match role {
        WorkerRole::Regular => "regular",
        WorkerRole::Prefill => "prefill",
        WorkerRole::Decode => "decode",
    }
}

/// The labels of a worker's series.
fn worker_labels(w: &Worker) -> [(&'static str, String); 4] {
    [
        ("worker", w.id().to_string()),
        ("model", w.model().to_string()),
        ("mode", mode_label(w.mode()).to_string()),
        ("role", role_label(w.role()).to_string()),
    ]
}

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let workers = self.registry.list();
        let labelled = |w: &Arc<Worker>| worker_labels(w).to_vec();

        // The registry.
        let mut sizes = std::collections::BTreeMap::new();
        for w in &workers {
            *sizes.entry((w.mode(), w.role())).or_insert(0i64) += 1;
        }
        gauge(
            &mut encoder,
            "workers",
            "Workers registered, by connection mode and role.",
            sizes.into_iter().map(|((mode, role), n)| {
                (
                    vec![
                        ("mode", mode_label(mode).to_string()),
                        ("role", role_label(role).to_string()),
                    ],
                    n,
                )
            }),
        )?;
        gauge(
            &mut encoder,
            "worker_info",
            "One series per registered worker naming its url and engine (value 1).",
            workers.iter().map(|w| {
                let mut labels = labelled(w);
                labels.push(("url", w.url().to_string()));
                let engine = match w.mode() {
                    ConnectionMode::Grpc => w.engine().to_string(),
                    ConnectionMode::Http => "http".to_string(),
                };
                labels.push(("engine", engine));
                (labels, 1)
            }),
        )?;
        gauge(
            &mut encoder,
            "worker_healthy",
            "1 while the worker's health checks pass, else 0.",
            workers
                .iter()
                .map(|w| (labelled(w), i64::from(w.is_healthy()))),
        )?;
        gauge(
            &mut encoder,
            "worker_unchecked",
            "1 while the worker, registered without being contacted, waits for its first health check (out of rotation), else 0.",
            workers.iter().map(|w| {
                (
                    labelled(w),
                    i64::from(w.health() == crate::worker::Health::Unchecked),
                )
            }),
        )?;
        gauge(
            &mut encoder,
            "worker_circuit_state",
            "The worker's circuit breaker: 0 closed, 1 half-open (one probe call), 2 open (ejected).",
            workers.iter().map(|w| {
                let state = match w.circuit_state() {
                    CircuitState::Closed => 0,
                    CircuitState::HalfOpen => 1,
                    CircuitState::Open => 2,
                };
                (labelled(w), state)
            }),
        )?;
        gauge(
            &mut encoder,
            "worker_in_flight",
            "Calls in flight to the worker through this router.",
            workers
                .iter()
                .map(|w| (labelled(w), i64::from(w.in_flight()))),
        )?;
        gauge(
            &mut encoder,
            "worker_load",
            "The load the policies see: calls in flight plus what the engine reports waiting.",
            workers.iter().map(|w| (labelled(w), i64::from(w.load()))),
        )?;
        let followed: Vec<&Arc<Worker>> = workers
            .iter()
            .filter(|w| w.kv_stream().state() != crate::worker::StreamState::None)
            .collect();
        gauge(
            &mut encoder,
            "worker_kv_stream_live",
            "1 while the worker's KV-event stream (followed for kv_aware) is live, else 0.",
            followed.iter().map(|w| {
                (
                    labelled(w),
                    i64::from(w.kv_stream().state() == crate::worker::StreamState::Live),
                )
            }),
        )?;
        gauge(
            &mut encoder,
            "worker_kv_blocks",
            "KV blocks the router's index holds for the worker, from its events.",
            followed.iter().map(|w| {
                let n = crate::worker::KvStream::get(&w.kv_stream().blocks);
                (labelled(w), i64::try_from(n).unwrap_or(i64::MAX))
            }),
        )?;
        counter(
            &mut encoder,
            "worker_kv_events",
            "KV events from the worker applied to the router's index.",
            followed.iter().map(|w| {
                (
                    labelled(w),
                    crate::worker::KvStream::get(&w.kv_stream().events),
                )
            }),
        )?;
        counter(
            &mut encoder,
            "worker_kv_resyncs",
            "Times the router rebuilt the worker's KV blocks from nothing (a snapshot, a gap, an engine restart).",
            followed
                .iter()
                .map(|w| (labelled(w), crate::worker::KvStream::get(&w.kv_stream().resyncs))),
        )?;
        counter(
            &mut encoder,
            "worker_calls",
            "Calls to the worker that ended, by outcome: success, failure (the worker's fault; what its breaker counts), other (the request's fault), cancelled (the client went away).",
            workers.iter().flat_map(|w| {
                Ending::ALL.into_iter().map(move |ending| {
                    let mut labels = labelled(w);
                    labels.push(("outcome", ending.label().to_string()));
                    (labels, w.stats().calls(ending))
                })
            }),
        )?;
        counter(
            &mut encoder,
            "worker_health_check_failures",
            "Health checks of the worker that failed.",
            workers.iter().map(|w| {
                (
                    labelled(w),
                    w.stats()
                        .check_failures
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            }),
        )?;
        histogram(
            &mut encoder,
            "worker_call_duration_seconds",
            "From sending a call to the worker to its end.",
            workers
                .iter()
                .map(|w| (labelled(w), w.stats().duration.snapshot())),
        )?;
        histogram(
            &mut encoder,
            "worker_first_answer_seconds",
            "From sending a call to the worker's first answer (time to first chunk for gRPC, to response headers for HTTP).",
            workers
                .iter()
                .map(|w| (labelled(w), w.stats().first_answer.snapshot())),
        )?;

        counter(
            &mut encoder,
            "worker_chunks_relayed",
            "Chunks of the worker's gRPC streams relayed to clients (one read from the worker each), counted when each call ends.",
            workers.iter().map(|w| {
                (
                    labelled(w),
                    w.stats().chunks.load(std::sync::atomic::Ordering::Relaxed),
                )
            }),
        )?;

        // The router.
        histogram(
            &mut encoder,
            "router_overhead_seconds",
            "From a request read to its call sent to a worker (parsing, choosing, connecting; a retry's wait included; PD: both sides started), by listener and dispatch.",
            [
                (stats::Route::Grpc, "grpc"),
                (stats::Route::Http, "http"),
            ]
            .into_iter()
            .flat_map(|(route, listener)| {
                [
                    (stats::Dispatch::Regular, "regular"),
                    (stats::Dispatch::Pd, "pd"),
                ]
                .map(|(dispatch, name)| {
                    (
                        vec![
                            ("listener", listener.to_string()),
                            ("dispatch", name.to_string()),
                        ],
                        stats::overhead(route, dispatch).snapshot(),
                    )
                })
            }),
        )?;
        histogram(
            &mut encoder,
            "router_chunk_overhead_seconds",
            "From a worker's chunk waking its relayed gRPC stream to the router handing it to the client's connection; one wait on the worker in 16 is timed.",
            [(vec![], stats::chunk_overhead().snapshot())],
        )?;
        gauge(
            &mut encoder,
            "calls_in_flight",
            "Inference calls holding one of the router's permits (limits.max_in_flight).",
            [(vec![], self.limit.in_flight() as i64)],
        )?;
        gauge(
            &mut encoder,
            "calls_queued",
            "Inference calls waiting for a permit.",
            [(vec![], self.limit.waiting() as i64)],
        )?;
        counter(
            &mut encoder,
            "calls_refused_overload",
            "Inference calls refused because the router was at its limit (RESOURCE_EXHAUSTED / 429).",
            [(vec![], self.limit.refused())],
        )?;
        let (retried, refused) = self.retries.counts();
        counter(
            &mut encoder,
            "retries",
            "Calls that reached no worker, by what followed: retried (offered to another worker) or budget_spent (the retry budget refused).",
            [
                (vec![("result", "retried".to_string())], retried),
                (vec![("result", "budget_spent".to_string())], refused),
            ],
        )?;

        // Stateful policies: how they chose, and what they remember.
        let (mut decisions, mut trees) = (Vec::new(), Vec::new());
        for (router, set, policy) in self.policies.iter() {
            let Some(s) = policy.stats() else { continue };
            let place = |extra: (&'static str, String)| {
                vec![
                    ("router", router.to_string()),
                    ("set", set.to_string()),
                    ("policy", policy.name().to_string()),
                    extra,
                ]
            };
            decisions.extend(
                s.decisions
                    .iter()
                    .map(|(d, n)| (place(("decision", d.to_string())), *n)),
            );
            trees.extend(
                s.tree_symbols
                    .iter()
                    .map(|(m, n)| (place(("model", m.to_string())), *n as i64)),
            );
        }
        counter(
            &mut encoder,
            "policy_decisions",
            "Workers chosen, by router (grpc, http), policy set (regular, prefill, decode), policy and how: cache_aware's cache_hit (a worker holds enough of the prompt's prefix), cache_miss (none does: the least loaded), load_imbalance (load too uneven to follow the cache), single_worker.",
            decisions,
        )?;
        gauge(
            &mut encoder,
            "cache_aware_tree_symbols",
            "Prompt bytes and token ids a cache-aware tree remembers for a model, every worker's share summed (bounded by policy.cache_aware.max_tree_size per worker).",
            trees,
        )?;
        super::tenant_metrics::encode(&mut encoder, &self.tenants)
    }
}

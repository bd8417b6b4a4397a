//! The live dashboard on the admin listener: one static page
//! (`dashboard.html`, embedded) fed by server-sent events. Each event is a
//! snapshot of the fleet: every worker (model, engine, role, health,
//! circuit, in flight, load, recent error rate) and, per model, the recent
//! request rate and p50/p99 latency. "Recent" is the last
//! [`WINDOW`] of the connection's own snapshots, so it needs no state in
//! the router beyond the counters metrics read.
//!
//! A snapshot is sent every second and at once when the registry changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::metrics::Policies;
use super::overload::CallLimit;
use crate::tenants::Tenants;
use crate::worker::stats::{Ending, Snapshot as Histogram};
use crate::worker::{CircuitState, ConnectionMode, Worker, WorkerRegistry, WorkerRole};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// The page with `snapshot` in it, rendered before any event arrives.
pub fn page(snapshot: &Value) -> String {
    // `</` cannot end the script element from inside the JSON.
    let json = snapshot.to_string().replace("</", "<\\/");
    PAGE.replacen("/*SNAPSHOT*/null", &json, 1)
}

/// How far back "recent" reaches.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How often a snapshot is sent when nothing changes.
const EVERY: Duration = Duration::from_secs(1);

/// One worker's counters at one moment.
#[derive(Debug, Clone)]
struct Counts {
    success: u64,
    failure: u64,
    duration: Histogram,
}

/// One model's sums over its workers.
#[derive(Debug, Default)]
struct ModelTotals {
    /// Calls ended in the window, and of those failed.
    recent: u64,
    failed: u64,
    /// Call durations now, and at the window's start.
    now: Histogram,
    then: Histogram,
    workers: usize,
    healthy: usize,
    in_flight: u32,
}

/// Snapshots of one dashboard connection, for rates over the window.
#[derive(Debug, Default)]
pub struct History {
    past: VecDeque<(Instant, HashMap<String, Counts>)>,
}

fn counts(w: &Worker) -> Counts {
    Counts {
        success: w.stats().calls(Ending::Success),
        failure: w.stats().calls(Ending::Failure),
        duration: w.stats().duration.snapshot(),
    }
}

fn label<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}").to_lowercase()
}

/// The `q` quantile (0..1) of the observations between two cumulative
/// histograms, in milliseconds: linear within the bucket it falls in.
fn quantile(now: &Histogram, then: Option<&Histogram>, q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .enumerate()
        .map(|(i, (bound, n))| {
            let before = then.and_then(|t| t.buckets.get(i)).map_or(0, |b| b.1);
            (*bound, n.saturating_sub(before))
        })
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for (bound, cumulative) in delta {
        if cumulative as f64 >= rank {
            if !bound.is_finite() {
                return Some(lower.0 * 1000.0);
            }
            let within = (cumulative - lower.1).max(1) as f64;
            let share = (rank - lower.1 as f64) / within;
            return Some((lower.0 + (bound - lower.0) * share) * 1000.0);
        }
        lower = (bound, cumulative);
    }
    None
}

fn add(into: &mut Histogram, other: &Histogram) {
    if into.buckets.is_empty() {
        *into = other.clone();
        return;
    }
    into.count += other.count;
    into.sum += other.sum;
    for (a, b) in into.buckets.iter_mut().zip(&other.buckets) {
        a.1 += b.1;
    }
}

impl History {
    /// The fleet now, with rates against the oldest snapshot in the window.
    pub fn snapshot(
        &mut self,
        registry: &WorkerRegistry,
        (limit, tenants): (&CallLimit, &Tenants),
        policies: &Policies,
    ) -> Value {
        let now = Instant::now();
        // What cache-aware trees remember, per model (all routers' sets).
        let mut trees: HashMap<String, u64> = HashMap::new();
        for (_, _, policy) in policies.iter() {
            if let Some(stats) = policy.stats() {
                for (model, symbols) in stats.tree_symbols {
                    *trees.entry(model.to_string()).or_default() += symbols;
                }
            }
        }
        let workers = registry.list();
        let current: HashMap<String, Counts> = workers
            .iter()
            .map(|w| (w.id().to_string(), counts(w)))
            .collect();
        while self
            .past
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.past.pop_front();
        }
        let (since, then) = match self.past.front() {
            Some((at, then)) => (now.duration_since(*at).as_secs_f64(), Some(then)),
            None => (0.0, None),
        };
        let mut models: BTreeMap<String, ModelTotals> = BTreeMap::new();
        let mut rows = Vec::with_capacity(workers.len());
        for w in &workers {
            let c = &current[w.id().as_str()];
            let before = then.and_then(|t| t.get(w.id().as_str()));
            let ended = |c: &Counts| c.success + c.failure;
            let recent_ok = c.success - before.map_or(0, |b| b.success.min(c.success));
            let recent_failed = c.failure - before.map_or(0, |b| b.failure.min(c.failure));
            let recent = recent_ok + recent_failed;
            let error_rate = match recent {
                0 => 0.0,
                n => recent_failed as f64 / n as f64,
            };
            let engine = match w.mode() {
                ConnectionMode::Grpc => w.engine().to_string(),
                ConnectionMode::Http => "http".to_string(),
            };
            rows.push(json!({
                "id": w.id().as_str(),
                "url": w.url(),
                "model": w.model().as_ref(),
                "engine": engine,
                "role": label(w.role()),
                "healthy": w.is_healthy(),
                "health": w.health().name(),
                "circuit": match w.circuit_state() {
                    CircuitState::Closed => "closed",
                    CircuitState::HalfOpen => "half-open",
                    CircuitState::Open => "open",
                },
                "in_flight": w.in_flight(),
                "load": w.load(),
                "calls": ended(c),
                "error_rate": error_rate,
                "kv": match w.kv_stream().state() {
                    crate::worker::StreamState::None => None,
                    crate::worker::StreamState::Live => Some(format!(
                        "live · {} blocks · {} resyncs",
                        crate::worker::KvStream::get(&w.kv_stream().blocks),
                        crate::worker::KvStream::get(&w.kv_stream().resyncs)
                    )),
                    state => Some(state.name().to_string()),
                },
            }));
            let m = models.entry(w.model().to_string()).or_default();
            // Regular and decode workers end the calls clients see; a
            // prefill side's calls are half of a PD call.
            if w.role() != WorkerRole::Prefill {
                m.recent += recent;
                m.failed += recent_failed;
                add(&mut m.now, &c.duration);
                if let Some(b) = before {
                    add(&mut m.then, &b.duration);
                }
            }
            m.workers += 1;
            m.healthy += usize::from(w.is_healthy());
            m.in_flight += w.in_flight();
        }
        let models: Vec<Value> = models
            .into_iter()
            .map(|(model, m)| {
                let then_h = (!m.then.buckets.is_empty()).then_some(&m.then);
                let share = |n: u64| match m.recent {
                    0 => 0.0,
                    all => n as f64 / all as f64,
                };
                json!({
                    "model": model,
                    "workers": m.workers,
                    "healthy": m.healthy,
                    "in_flight": m.in_flight,
                    // Unknown until the connection has a past to compare.
                    "rate": (since > 0.0).then(|| m.recent as f64 / since),
                    "error_rate": share(m.failed),
                    "p50_ms": quantile(&m.now, then_h, 0.5),
                    "p99_ms": quantile(&m.now, then_h, 0.99),
                    "tree_symbols": trees.get(&model),
                })
            })
            .collect();
        self.past.push_back((now, current));
        let routers = tenants.share();
        let tenants: Vec<Value> = tenants
            .list()
            .iter()
            .map(|t| {
                let c = t.config();
                let (prompt, output) = t.stats.tokens();
                json!({
                    "name": t.name(),
                    "priority": c.priority.name(),
                    "weight": c.weight,
                    "in_flight": t.in_flight(),
                    "calls": t.stats.calls(),
                    "prompt_tokens": prompt,
                    "output_tokens": output,
                    "refused": t.stats.refusals().map(|(_, n)| n).sum::<u64>(),
                    "routers": routers,
                })
            })
            .collect();
        json!({
            "workers": rows,
            "models": models,
            "tenants": tenants,
            "router": {
                "in_flight": limit.in_flight(),
                "queued": limit.waiting(),
                "refused": limit.refused(),
            },
            "window_s": WINDOW.as_secs(),
        })
    }
}

/// The event stream of one dashboard: a snapshot now, every second, and
/// whenever the registry changes, until the page goes away.
pub fn events(
    registry: Arc<WorkerRegistry>,
    (limit, tenants): (Arc<CallLimit>, Arc<Tenants>),
    policies: Policies,
) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        let (_, _, mut changes) = registry.watch();
        let mut history = History::default();
        let mut ticker = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                change = changes.recv() => {
                    if matches!(change, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
            let snapshot = history.snapshot(&registry, (&limit, &tenants), &policies);
            let event = Event::default()
                .event("snapshot")
                .data(snapshot.to_string());
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_window_only() {
        let h = crate::worker::stats::Histogram::default();
        for _ in 0..90 {
            h.observe(Duration::from_millis(20));
        }
        let then = h.snapshot();
        for _ in 0..100 {
            h.observe(Duration::from_millis(200));
        }
        let now = h.snapshot();
        let p50 = quantile(&now, Some(&then), 0.5).unwrap();
        assert!((100.0..=250.0).contains(&p50), "{p50}");
        let all = quantile(&now, None, 0.3).unwrap();
        assert!(all <= 25.0, "{all}");
        assert_eq!(quantile(&then, Some(&then), 0.5), None);
    }
}

//! The selection core every router shares: resolve the candidates of a
//! (mode, role, model) from the registry at this moment, keep the healthy
//! ones, and ask the model's policy to choose. Routers differ in what they
//! do with the choice, not in how it is made.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use opentelemetry::KeyValue;

use super::RouteError;
use crate::config::RetryConfig;
use crate::policies::{PolicySet, RequestFacts};
use crate::telemetry::CallSpan;
use crate::worker::registry::Snapshot;
use crate::worker::{ConnectionMode, Engine, Health, Worker, WorkerRegistry, WorkerRole};

/// The retry budget and backoff every router's calls share.
pub struct Retries {
    budget: TpsBudget,
    max_attempts: usize,
    backoff: Duration,
    /// Calls offered to another worker.
    retried: AtomicU64,
    /// Calls that could have been retried but the budget was spent.
    refused: AtomicU64,
}

impl Retries {
    /// Retries as `config` allows them.
    pub fn new(config: &RetryConfig) -> Self {
        Retries {
            budget: TpsBudget::new(
                Duration::from_millis(config.budget_ttl_ms),
                config.min_per_second,
                config.budget_percent / 100.0,
            ),
            max_attempts: config.max_attempts.max(1) as usize,
            backoff: Duration::from_millis(config.backoff_ms),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Calls offered to another worker after one was unreachable, and
    /// calls that were not because the budget was spent.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.retried.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// The wait before retry number `n` (1, 2, ...): full jitter over
    /// `backoff * 2^(n-1)`, at most ten times `backoff`.
    fn backoff(&self, n: usize) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1 << (n - 1).min(16))
            .min(self.backoff.saturating_mul(10));
        ceiling.mul_f64(rand::random::<f64>())
    }
}

impl Default for Retries {
    fn default() -> Self {
        Retries::new(&RetryConfig::default())
    }
}

impl std::fmt::Debug for Retries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retries")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Lets the model's policy choose a worker of `role` for the call and runs
/// `attempt` on it. If that worker could not be reached (nothing of the
/// call got to it: [`RouteError::is_retryable`]), chooses again among the
/// workers not yet tried. The first choice is made from the call's
/// snapshot (the one its model, engine and PD were resolved from); a retry
/// reads the registry as it is then (a worker removed meanwhile, or whose
/// circuit opened, is not chosen), up to
/// `retry.max_attempts` workers, while the retry budget allows and after
/// a jittered backoff. Any other outcome, success or failure, is the
/// call's.
///
/// A worker that may have seen the call is never offered it again
/// elsewhere: generation is not free, and a second run would be a second
/// answer.
pub async fn offer<T, F, Fut>(
    (snapshot, registry): (&Snapshot, &WorkerRegistry),
    (mode, role): (ConnectionMode, WorkerRole),
    (policies, retries): (&PolicySet, &Retries),
    facts: &RequestFacts<'_>,
    trace: &CallSpan,
    mut attempt: F,
) -> Result<T, RouteError>
where
    F: FnMut(Arc<Worker>) -> Fut,
    Fut: Future<Output = Result<T, RouteError>>,
{
    retries.budget.deposit();
    let mut tried: Vec<Arc<Worker>> = Vec::new();
    let mut last: Option<RouteError> = None;
    loop {
        let now;
        let view = match tried.is_empty() {
            true => snapshot,
            false => {
                now = registry.snapshot();
                &now
            }
        };
        let chosen = Candidates::resolve(view, mode, role, facts.model).and_then(|all| {
            let rest = all.without(&tried);
            rest.map(|rest| rest.choose(policies, facts)).transpose()
        });
        let worker = match (chosen, last.take()) {
            (Ok(Some(worker)), _) => worker,
            // Every candidate has been tried (or the registry changed under
            // the call): the last failure is the answer.
            (_, Some(last)) => return Err(give_up(facts.model, &tried, last)),
            (Err(error), None) => return Err(error),
            (Ok(None), None) => {
                return Err(RouteError::NoWorkers {
                    model: facts.model.into(),
                    role,
                })
            }
        };
        match attempt(worker.clone()).await {
            Err(error) if error.is_retryable() => {
                tried.push(worker);
                if tried.len() >= retries.max_attempts {
                    return Err(give_up(facts.model, &tried, error));
                }
                if !retries.budget.withdraw() {
                    retries.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "worker unreachable; the retry budget is spent");
                    return Err(give_up(facts.model, &tried, error));
                }
                retries.retried.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "worker unreachable; offering the call to another");
                trace.event("retry", || {
                    vec![
                        KeyValue::new(
                            "worker.id",
                            tried.last().map(|w| w.id().to_string()).unwrap_or_default(),
                        ),
                        KeyValue::new("error", error.to_string()),
                    ]
                });
                tokio::time::sleep(retries.backoff(tried.len())).await;
                last = Some(error);
            }
            outcome => return outcome,
        }
    }
}

/// The error for a call that no worker could be reached for: the worker's
/// own when only one was tried, else one naming every worker tried.
fn give_up(model: &str, tried: &[Arc<Worker>], last: RouteError) -> RouteError {
    match last {
        RouteError::WorkerUnreachable { failure, .. } if tried.len() > 1 => {
            RouteError::NoReachableWorker {
                model: model.into(),
                tried: tried.iter().map(|w| w.id().clone()).collect(),
                last: failure,
            }
        }
        last => last,
    }
}

/// The healthy workers of one (mode, role, model), for one call.
pub enum Candidates {
    /// Every registered worker is healthy: the registry snapshot as is, no copy.
    All(Arc<[Arc<Worker>]>),
    /// A subset: the healthy ones, or those a call has not yet tried.
    Healthy(Vec<Arc<Worker>>),
}

impl Candidates {
    /// Resolves the candidates, or says why there are none.
    pub fn resolve(
        snapshot: &Snapshot,
        mode: ConnectionMode,
        role: WorkerRole,
        model: &str,
    ) -> Result<Candidates, RouteError> {
        let group =
            snapshot
                .group(mode, role, model)
                .cloned()
                .ok_or_else(|| RouteError::NoWorkers {
                    model: model.into(),
                    role,
                })?;
        if group.iter().all(|w| w.is_routable()) {
            return Ok(Candidates::All(group));
        }
        // One look at each worker: its health may change between two
        // (a first check passing), which must not turn "none is healthy"
        // into "all are busy".
        let (mut healthy, mut busy) = (Vec::new(), 0);
        for w in group.iter() {
            if !w.is_available() {
                continue;
            }
            match w.is_busy() {
                true => busy += 1,
                false => healthy.push(w.clone()),
            }
        }
        if healthy.is_empty() && busy > 0 {
            return Err(RouteError::WorkersBusy {
                model: model.into(),
                total: group.len(),
            });
        }
        if healthy.is_empty() {
            return Err(RouteError::NoHealthyWorkers {
                model: model.into(),
                role,
                total: group.len(),
                ejected: group
                    .iter()
                    .filter(|w| w.is_healthy() && !w.is_available())
                    .count(),
                unchecked: unchecked(&group),
            });
        }
        Ok(Candidates::Healthy(healthy))
    }

    /// The candidates other than `tried` (the workers a call was already
    /// offered to), in the same order; `None` if none is left.
    pub fn without(self, tried: &[Arc<Worker>]) -> Option<Candidates> {
        if tried.is_empty() {
            return Some(self);
        }
        let rest: Vec<_> = self
            .as_slice()
            .iter()
            .filter(|w| !tried.iter().any(|t| Arc::ptr_eq(t, w)))
            .cloned()
            .collect();
        (!rest.is_empty()).then_some(Candidates::Healthy(rest))
    }

    /// The workers.
    pub fn as_slice(&self) -> &[Arc<Worker>] {
        match self {
            Candidates::All(group) => group,
            Candidates::Healthy(list) => list,
        }
    }

    /// Lets the model's policy choose among them.
    pub fn choose(
        &self,
        policies: &PolicySet,
        facts: &RequestFacts<'_>,
    ) -> Result<Arc<Worker>, RouteError> {
        policies
            .for_model(facts.model)
            .select(self.as_slice(), facts)
            .map_err(|source| RouteError::Policy {
                model: facts.model.into(),
                source,
            })
    }
}

/// How many of `workers` wait for their first health check.
pub fn unchecked(workers: &[Arc<Worker>]) -> usize {
    workers
        .iter()
        .filter(|w| w.health() == Health::Unchecked)
        .count()
}

/// Resolves an empty model name to the only model that has workers of this
/// mode and any of these roles.
pub fn resolve_model<'a>(
    snapshot: &Snapshot,
    mode: ConnectionMode,
    roles: &[WorkerRole],
    requested: &'a str,
) -> Result<std::borrow::Cow<'a, str>, RouteError> {
    if !requested.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(requested));
    }
    let mut served = roles.iter().flat_map(|role| snapshot.models(mode, *role));
    let Some(only) = served.next() else {
        return Err(RouteError::NoModels);
    };
    if served.all(|m| m == only) {
        return Ok(std::borrow::Cow::Owned(only.to_string()));
    }
    let models: std::collections::BTreeSet<String> = roles
        .iter()
        .flat_map(|role| snapshot.models(mode, *role))
        .map(|m| m.to_string())
        .collect();
    Err(RouteError::ModelRequired {
        models: models.into_iter().collect(),
    })
}

/// Whether `model` is served disaggregated (has prefill or decode workers)
/// in this mode.
pub fn is_disaggregated(snapshot: &Snapshot, mode: ConnectionMode, model: &str) -> bool {
    [WorkerRole::Prefill, WorkerRole::Decode]
        .iter()
        .any(|role| snapshot.group(mode, *role, model).is_some())
}

/// What a call for `model` on the `mode` listener is told when only the
/// other listener's workers serve it.
pub fn served_elsewhere(
    snapshot: &Snapshot,
    mode: ConnectionMode,
    model: &str,
) -> Option<&'static str> {
    match mode {
        ConnectionMode::Grpc if is_known_model(snapshot, ConnectionMode::Http, model) => Some(
            "HTTP workers serve it: send it to the router's HTTP listener (POST /generate, /v1/completions or /v1/chat/completions)",
        ),
        ConnectionMode::Http if is_known_model(snapshot, ConnectionMode::Grpc, model) => Some(
            "gRPC workers serve it: call switchyard.v1.Inference/Generate on the router's gRPC listener",
        ),
        _ => None,
    }
}

/// Whether `model` has any worker of this mode.
pub fn is_known_model(snapshot: &Snapshot, mode: ConnectionMode, model: &str) -> bool {
    [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
        .iter()
        .any(|role| snapshot.group(mode, *role, model).is_some())
}

/// The roles a model's workers can have.
const ALL_ROLES: [WorkerRole; 3] = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode];

/// The engine of `model`'s gRPC workers (one per model: the registry
/// refuses a second), if it has any.
pub fn model_engine(snapshot: &Snapshot, model: &str) -> Option<Engine> {
    ALL_ROLES.iter().find_map(|role| {
        snapshot
            .group(ConnectionMode::Grpc, *role, model)
            .and_then(|g| g.first().map(|w| w.engine()))
    })
}

/// The smallest context length the gRPC workers of `model` report (0:
/// none reports one).
pub fn context_length(snapshot: &Snapshot, model: &str) -> u32 {
    ALL_ROLES
        .iter()
        .filter_map(|role| snapshot.group(ConnectionMode::Grpc, *role, model))
        .flat_map(|group| group.iter())
        .map(|w| w.spec().facts.max_context_length)
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0)
}

/// Resolves the model of a call in `engine`'s own protocol: the one named,
/// else the only model that workers of that engine serve.
pub fn resolve_engine_model<'a>(
    snapshot: &Snapshot,
    engine: Engine,
    requested: &'a str,
) -> Result<std::borrow::Cow<'a, str>, RouteError> {
    if !requested.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(requested));
    }
    let models: std::collections::BTreeSet<String> = ALL_ROLES
        .iter()
        .flat_map(|role| {
            snapshot
                .models(ConnectionMode::Grpc, *role)
                .filter(|m| {
                    snapshot
                        .group(ConnectionMode::Grpc, *role, m)
                        .and_then(|g| g.first().map(|w| w.engine() == engine))
                        .unwrap_or(false)
                })
                .map(|m| m.to_string())
        })
        .collect();
    let mut it = models.iter();
    match (it.next(), it.next()) {
        (Some(only), None) => Ok(std::borrow::Cow::Owned(only.clone())),
        (None, _) => Err(RouteError::NoEngineWorkers { engine }),
        _ => Err(RouteError::EngineModelRequired {
            engine,
            models: models.into_iter().collect(),
        }),
    }
}

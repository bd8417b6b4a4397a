//! The selection core every router shares: resolve the candidates of a
//! (mode, role, model) from the registry at this moment, keep the healthy
//! ones, and ask the model's policy to choose. Routers differ in what they
//! do with the choice, not in how it is made.

use std::sync::Arc;

use super::RouteError;
use crate::policies::{PolicySet, RequestFacts};
use crate::worker::{ConnectionMode, Worker, WorkerRegistry, WorkerRole};

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
        registry: &WorkerRegistry,
        mode: ConnectionMode,
        role: WorkerRole,
        model: &str,
    ) -> Result<Candidates, RouteError> {
        let group = registry
            .resolve(mode, role, model)
            .ok_or_else(|| RouteError::NoWorkers {
                model: model.into(),
                role,
            })?;
        if group.iter().all(|w| w.is_healthy()) {
            return Ok(Candidates::All(group));
        }
        let healthy: Vec<_> = group.iter().filter(|w| w.is_healthy()).cloned().collect();
        if healthy.is_empty() {
            return Err(RouteError::NoHealthyWorkers {
                model: model.into(),
                role,
                total: group.len(),
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

/// Resolves an empty model name to the only model that has workers of this
/// mode and any of these roles.
pub fn resolve_model<'a>(
    registry: &WorkerRegistry,
    mode: ConnectionMode,
    roles: &[WorkerRole],
    requested: &'a str,
) -> Result<std::borrow::Cow<'a, str>, RouteError> {
    if !requested.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(requested));
    }
    let snapshot = registry.snapshot();
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
pub fn is_disaggregated(registry: &WorkerRegistry, mode: ConnectionMode, model: &str) -> bool {
    let snapshot = registry.snapshot();
    [WorkerRole::Prefill, WorkerRole::Decode]
        .iter()
        .any(|role| snapshot.group(mode, *role, model).is_some())
}

/// Whether `model` has any worker of this mode.
pub fn is_known_model(registry: &WorkerRegistry, mode: ConnectionMode, model: &str) -> bool {
    let snapshot = registry.snapshot();
    [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
        .iter()
        .any(|role| snapshot.group(mode, *role, model).is_some())
}

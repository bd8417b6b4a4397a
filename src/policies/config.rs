//! Policy configuration: which policy, its knobs, and per-model overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{CacheAwareConfig, ConsistentHashConfig};

/// The policies Switchyard ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Uniformly at random.
    Random,
    /// Each healthy worker in turn.
    #[default]
    RoundRobin,
    /// The less loaded of two random workers.
    PowerOfTwo,
    /// The worker most likely to hold the prompt's prefix in KV cache.
    CacheAware,
    /// Session affinity by `x-switchyard-routing-key`.
    ConsistentHash,
}

impl PolicyKind {
    /// Every name accepted by `--policy` and the config.
    pub const NAMES: &'static [&'static str] = &[
        "random",
        "round_robin",
        "power_of_two",
        "cache_aware",
        "consistent_hash",
    ];

    /// The name used on the command line and in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Random => "random",
            PolicyKind::RoundRobin => "round_robin",
            PolicyKind::PowerOfTwo => "power_of_two",
            PolicyKind::CacheAware => "cache_aware",
            PolicyKind::ConsistentHash => "consistent_hash",
        }
    }
}

impl FromStr for PolicyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(PolicyKind::Random),
            "round_robin" => Ok(PolicyKind::RoundRobin),
            "power_of_two" => Ok(PolicyKind::PowerOfTwo),
            "cache_aware" => Ok(PolicyKind::CacheAware),
            "consistent_hash" => Ok(PolicyKind::ConsistentHash),
            other => Err(format!(
                "unknown policy {other:?}; known policies: {}",
                PolicyKind::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-model prefill and decode policies of a PD model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PdPolicyOverride {
    /// Replaces `policy.prefill` for this model.
    pub prefill: Option<PolicyKind>,
    /// Replaces `policy.decode` for this model.
    pub decode: Option<PolicyKind>,
}

/// Which policy routes which model, and every policy's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The policy for models without an override.
    pub name: PolicyKind,
    /// Overrides by model id, e.g. `"llama-3-70b" = "cache_aware"`.
    pub models: BTreeMap<String, PolicyKind>,
    /// The policy choosing prefill workers for disaggregated (PD) models.
    /// cache_aware: prefill is where a cached prefix saves work.
    pub prefill: PolicyKind,
    /// The policy choosing decode workers for PD models. power_of_two:
    /// decode time is dominated by load, and there is no prefix to reuse.
    pub decode: PolicyKind,
    /// Prefill/decode overrides by model id.
    pub pd_models: BTreeMap<String, PdPolicyOverride>,
    /// Knobs of `cache_aware`.
    pub cache_aware: CacheAwareConfig,
    /// Knobs of `consistent_hash`.
    pub consistent_hash: ConsistentHashConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            name: PolicyKind::default(),
            models: BTreeMap::new(),
            prefill: PolicyKind::CacheAware,
            decode: PolicyKind::PowerOfTwo,
            pd_models: BTreeMap::new(),
            cache_aware: CacheAwareConfig::default(),
            consistent_hash: ConsistentHashConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// Per-model prefill policies.
    pub fn prefill_overrides(&self) -> impl Iterator<Item = (String, PolicyKind)> + '_ {
        self.pd_models
            .iter()
            .filter_map(|(m, o)| o.prefill.map(|k| (m.clone(), k)))
    }

    /// Per-model decode policies.
    pub fn decode_overrides(&self) -> impl Iterator<Item = (String, PolicyKind)> + '_ {
        self.pd_models
            .iter()
            .filter_map(|(m, o)| o.decode.map(|k| (m.clone(), k)))
    }

    /// What `consistent_hash` uses for requests without a routing key: its
    /// configured fallback, else the default policy, else round-robin.
    pub fn consistent_hash_fallback(&self) -> PolicyKind {
        match (self.consistent_hash.fallback, self.name) {
            (Some(kind), _) => kind,
            (None, PolicyKind::ConsistentHash) => PolicyKind::RoundRobin,
            (None, default) => default,
        }
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.cache_aware.validate()?;
        self.consistent_hash.validate()?;
        if self.consistent_hash.fallback == Some(PolicyKind::ConsistentHash) {
            return Err("policy.consistent_hash.fallback cannot be consistent_hash itself".into());
        }
        Ok(())
    }
}

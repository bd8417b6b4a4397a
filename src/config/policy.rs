//! Policy configuration (`[policy]`): which policy, its knobs, and
//! per-model overrides. `policies` builds the policies from it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// The least estimated prefill work: the engines' own KV events (what
    /// each worker really caches) and load records, plus what this router
    /// sent and the engines have not yet confirmed.
    KvAware,
}

impl PolicyKind {
    /// Every name accepted by `--policy` and the config.
    pub const NAMES: &'static [&'static str] = &[
        "random",
        "round_robin",
        "power_of_two",
        "cache_aware",
        "consistent_hash",
        "kv_aware",
    ];

    /// The name used on the command line and in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Random => "random",
            PolicyKind::RoundRobin => "round_robin",
            PolicyKind::PowerOfTwo => "power_of_two",
            PolicyKind::CacheAware => "cache_aware",
            PolicyKind::ConsistentHash => "consistent_hash",
            PolicyKind::KvAware => "kv_aware",
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
            "kv_aware" => Ok(PolicyKind::KvAware),
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
    /// Knobs of `kv_aware`.
    pub kv_aware: KvAwareConfig,
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
            kv_aware: KvAwareConfig::default(),
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
        self.kv_aware.validate()?;
        if self.consistent_hash.fallback == Some(PolicyKind::ConsistentHash) {
            return Err("policy.consistent_hash.fallback cannot be consistent_hash itself".into());
        }
        Ok(())
    }
}

/// Knobs of the cache-aware policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheAwareConfig {
    /// Minimum fraction of the input that must match a worker's tree for the
    /// match to decide. 0.5: below half, the cached part saves less than an
    /// uneven load costs.
    pub cache_threshold: f64,
    /// Load is imbalanced only if max − min in-flight exceeds this. 32: a
    /// few dozen requests of skew is normal for a worker serving a hot prefix
    /// and is worth it for the cache hits.
    pub balance_abs_threshold: u32,
    /// ...and max exceeds min × this. 1.5: a worker half again as busy as the
    /// idlest one is queueing, not just batching.
    pub balance_rel_threshold: f64,
    /// Symbols (bytes of text, or token ids) remembered per worker. 262,144:
    /// about the KV capacity of a large-model worker in tokens; remembering
    /// more than a worker can cache predicts nothing. Between eviction passes
    /// a worker may hold up to twice this; inserts beyond that evict inline.
    pub max_tree_size: usize,
    /// How often trees are trimmed to `max_tree_size` (least recently used
    /// first). 30 s: eviction is cheap, but there is no need to run it on
    /// the request path.
    pub eviction_interval_secs: u64,
}

impl Default for CacheAwareConfig {
    fn default() -> Self {
        CacheAwareConfig {
            cache_threshold: 0.5,
            balance_abs_threshold: 32,
            balance_rel_threshold: 1.5,
            max_tree_size: 1 << 18,
            eviction_interval_secs: 30,
        }
    }
}

impl CacheAwareConfig {
    /// What is wrong with these values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.cache_threshold) {
            return Err(format!(
                "policy.cache_aware.cache_threshold must be in [0, 1], got {}",
                self.cache_threshold
            ));
        }
        if self.balance_rel_threshold.is_nan() || self.balance_rel_threshold < 1.0 {
            return Err(format!(
                "policy.cache_aware.balance_rel_threshold must be at least 1, got {}",
                self.balance_rel_threshold
            ));
        }
        if self.max_tree_size == 0 {
            return Err("policy.cache_aware.max_tree_size must be at least 1".into());
        }
        if self.eviction_interval_secs == 0 {
            return Err("policy.cache_aware.eviction_interval_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Knobs of the KV-event policy. A candidate's cost, in prompt tokens of
/// prefill work ahead of the request's first token:
/// `uncached + queue_weight × queued + running_weight × running`, where
/// `uncached` is the prompt's tokens the worker does not hold (its events'
/// blocks and this router's pending ones), `queued` the uncached prompt
/// tokens its engine last reported waiting plus those this router sent
/// since, and `running` its running requests; a worker whose KV held by
/// running requests is above `usage_limit` costs `usage_penalty` more. The
/// least cost wins; ties go to the least loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvAwareConfig {
    /// Weight of the work queued ahead, against the prompt's own uncached
    /// tokens. 0.15, measured (docs/BENCHMARKS.md): a cache hit saves its
    /// tokens for every request behind it too, so a worker holding the
    /// prefix is worth several times its extra queue; on a replayed trace
    /// 1 got 87% of the reachable hits, 0.25 91–96%, 0.15 96–97%, all with
    /// about the same TTFT.
    pub queue_weight: f64,
    /// Tokens of cost per running request. 2.4 (16 × `queue_weight`): a
    /// running decode slows each step a little (its KV is read every
    /// step); small beside prefill.
    pub running_weight: f64,
    /// Above this share of KV held by running requests, the engine is near
    /// preempting. 0.9.
    pub usage_limit: f64,
    /// Tokens of cost added above `usage_limit`. 65,536.
    pub usage_penalty: f64,
    /// How long a block this router sent stays pending without the engine
    /// confirming it, in ms. 30,000: longer than a prompt waits in a
    /// queue on a loaded engine.
    pub pending_ttl_ms: u64,
}

impl Default for KvAwareConfig {
    fn default() -> Self {
        KvAwareConfig {
            queue_weight: 0.15,
            running_weight: 2.4,
            usage_limit: 0.9,
            usage_penalty: 65_536.0,
            pending_ttl_ms: 30_000,
        }
    }
}

impl KvAwareConfig {
    /// What is wrong with these values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("queue_weight", self.queue_weight),
            ("running_weight", self.running_weight),
            ("usage_penalty", self.usage_penalty),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "policy.kv_aware.{name} must be a number at least 0, got {v}"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.usage_limit) {
            return Err(format!(
                "policy.kv_aware.usage_limit must be in [0, 1], got {}",
                self.usage_limit
            ));
        }
        Ok(())
    }
}

/// Knobs of the consistent-hash policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsistentHashConfig {
    /// Points per worker on the ring. 160 (as ketama): each worker's share
    /// of keys stays within about ±8% of fair at a few KiB per worker.
    pub virtual_nodes: u32,
    /// Policy for requests without a routing key; unset means the default
    /// policy (or round_robin when the default is consistent_hash).
    pub fallback: Option<PolicyKind>,
}

impl Default for ConsistentHashConfig {
    fn default() -> Self {
        ConsistentHashConfig {
            virtual_nodes: 160,
            fallback: None,
        }
    }
}

impl ConsistentHashConfig {
    /// What is wrong with these values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.virtual_nodes) {
            return Err(format!(
                "policy.consistent_hash.virtual_nodes must be between 1 and 4096, got {}",
                self.virtual_nodes
            ));
        }
        Ok(())
    }
}

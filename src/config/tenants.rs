//! Tenants (`[[tenants]]`): who sends inference calls, with which keys,
//! how much each may send and in which order they wait; `tenants` builds
//! the runtime limits and the fair queue's classes from them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::auth::MIN_KEY_LEN;

/// A tenant's place in the queue: every waiting call of a higher class is
/// admitted before any of a lower one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// People waiting on an answer: first.
    Interactive,
    /// Everything else (and calls of no tenant).
    #[default]
    Standard,
    /// Offline work: last.
    Batch,
}

impl Priority {
    /// Its name in the config, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Standard => "standard",
            Priority::Batch => "batch",
        }
    }
}

/// One `[[tenants]]` entry. A limit left out is no limit.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Its name, in metrics, logs and refusals.
    pub name: String,
    /// Its API keys (sent as `authorization: Bearer KEY` or `x-api-key`):
    /// inference only, like client keys.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Calls admitted per second (a bucket holding one second's worth).
    pub requests_per_second: Option<f64>,
    /// Prompt tokens admitted per minute (a bucket holding one minute's).
    pub prompt_tokens_per_minute: Option<u64>,
    /// Generated tokens per minute: a call is charged the tokens it asks
    /// for, and given back what it did not generate when it ends.
    pub output_tokens_per_minute: Option<u64>,
    /// Calls of this tenant in flight at once.
    pub max_concurrent: Option<usize>,
    /// Its class in the queue.
    #[serde(default)]
    pub priority: Priority,
    /// Its share of the queue within its class, against the other tenants
    /// there: 1 to 1000, default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Its calls that may wait in the queue at once (default: the queue's
    /// whole size, `limits.queue_size`).
    pub max_queued: Option<usize>,
}

fn one() -> u32 {
    1
}

/// No name, no keys, no limits, standard class, weight 1.
impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            name: String::new(),
            keys: Vec::new(),
            requests_per_second: None,
            prompt_tokens_per_minute: None,
            output_tokens_per_minute: None,
            max_concurrent: None,
            priority: Priority::Standard,
            weight: one(),
            max_queued: None,
        }
    }
}

/// Keys are never printed.
impl fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantConfig")
            .field("name", &self.name)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("requests_per_second", &self.requests_per_second)
            .field("prompt_tokens_per_minute", &self.prompt_tokens_per_minute)
            .field("output_tokens_per_minute", &self.output_tokens_per_minute)
            .field("max_concurrent", &self.max_concurrent)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .field("max_queued", &self.max_queued)
            .finish()
    }
}

/// The most tenants one router takes.
pub const MAX_TENANTS: usize = 10_000;

/// What is wrong with `tenants`, given the role keys of `[auth]`, if
/// anything (never quoting a key). Names the tenant, and the line of its
/// `name` in `text` when the file's text is given.
pub fn validate(
    tenants: &[TenantConfig],
    role_keys: &[&String],
    text: Option<&str>,
) -> Result<(), String> {
    if tenants.len() > MAX_TENANTS {
        return Err(format!(
            "tenants: {} configured, at most {MAX_TENANTS}",
            tenants.len()
        ));
    }
    let mut names = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    keys.extend(role_keys.iter().map(|k| k.as_str()));
    for (i, t) in tenants.iter().enumerate() {
        let at = || {
            let line = text.and_then(|text| entry_line(text, i));
            match line {
                Some(line) => format!("tenants[{i}] {:?} (line {line})", t.name),
                None => format!("tenants[{i}] {:?}", t.name),
            }
        };
        if t.name.is_empty()
            || t.name.len() > 64
            || !t
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "{}: a tenant's name is 1 to 64 letters, digits, '-', '_' or '.'",
                at()
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(format!("{}: the name is used twice", at()));
        }
        for (k, key) in t.keys.iter().enumerate() {
            if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{}: key #{} must be at least {MIN_KEY_LEN} printable ASCII characters without spaces",
                    at(),
                    k + 1
                ));
            }
            if !keys.insert(key.as_str()) {
                return Err(format!(
                    "{}: key #{} is already another tenant's or an auth key; a key names one caller",
                    at(),
                    k + 1
                ));
            }
        }
        if let Some(rps) = t.requests_per_second {
            if !(rps.is_finite() && rps > 0.0) {
                return Err(format!("{}: requests_per_second must be above 0", at()));
            }
        }
        if t.prompt_tokens_per_minute == Some(0) || t.output_tokens_per_minute == Some(0) {
            return Err(format!(
                "{}: prompt_tokens_per_minute and output_tokens_per_minute must be at least 1 (leave one out for no limit)",
                at()
            ));
        }
        if t.max_concurrent == Some(0) {
            return Err(format!("{}: max_concurrent must be at least 1", at()));
        }
        if !(1..=1000).contains(&t.weight) {
            return Err(format!(
                "{}: weight must be between 1 and 1000, got {}",
                at(),
                t.weight
            ));
        }
    }
    Ok(())
}

/// The 1-based line of the `index`th `[[tenants]]` header in a TOML text.
fn entry_line(text: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[tenants]]")
        .nth(index)
        .map(|(i, _)| i + 1)
}

//! Tenants: who sends inference calls, how much each may send, and in
//! which order they wait when the fleet is full.
//!
//! A tenant (`[[tenants]]` in the config) has keys, limits (calls a second,
//! prompt and generated tokens a minute, calls in flight) and a place in
//! the queue (a priority class and a weight). A call presenting one of its
//! keys is the tenant's: it is admitted against the tenant's buckets before
//! anything is sent to a worker ([`Tenant::admit`]), charged its prompt
//! tokens and the tokens it asks to generate, and the charge is settled
//! with what it really used when it ends ([`Ticket`]). Calls with any
//! other key (or none, where none is needed) are of no tenant and keep
//! today's meaning. The roster is replaced whole on a reload; a tenant that
//! stays keeps what it has used.
//!
//! With several routers on one etcd registry, each enforces `1/N` of every
//! rate, `N` the routers live in the registry (an approximation: it
//! assumes a tenant's calls are spread evenly over the routers).

pub mod bucket;
pub mod queue;
pub mod reload;
mod stats;
mod ticket;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderMap;

use crate::auth::{presented_key, same, Denied, Keys, Role};
use crate::config::{Priority, TenantConfig};
use bucket::Bucket;
pub use queue::{CallLimit, Overloaded, Permit, Place, Slot};
pub use stats::{TenantStats, WAIT_BUCKETS};
pub use ticket::{Meter, Ticket};

/// What a call is charged at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Its prompt's tokens (counted, or estimated from bytes).
    pub prompt: u64,
    /// The tokens it asks to generate (0 when it does not say: it is then
    /// charged what it generated when it ends).
    pub output: u64,
}

impl Cost {
    /// Its weight in the fair queue: all its tokens, at least 1.
    pub fn tokens(&self) -> u64 {
        (self.prompt + self.output).max(1)
    }
}

/// Bytes of text per token, for prompts the router has not tokenized: the
/// usual figure for English text in BPE vocabularies.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Why a tenant's call was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Over `requests_per_second`.
    #[error("tenant {tenant:?} is over its limit of {limit} requests per second (requests_per_second); retry after {retry:?}")]
    Requests {
        /// The tenant.
        tenant: String,
        /// Its limit.
        limit: f64,
        /// When it will be under.
        retry: Duration,
    },
    /// Over `prompt_tokens_per_minute`.
    #[error("tenant {tenant:?} is over its limit of {limit} prompt tokens per minute (prompt_tokens_per_minute; this call's prompt: {asked} tokens); retry after {retry:?}")]
    PromptTokens {
        /// The tenant.
        tenant: String,
        /// Its limit.
        limit: u64,
        /// What the call needed.
        asked: u64,
        /// When it will be under.
        retry: Duration,
    },
    /// Over `output_tokens_per_minute`.
    #[error("tenant {tenant:?} is over its limit of {limit} generated tokens per minute (output_tokens_per_minute; this call asks for {asked}); retry after {retry:?}")]
    OutputTokens {
        /// The tenant.
        tenant: String,
        /// Its limit.
        limit: u64,
        /// What the call asked for.
        asked: u64,
        /// When it will be under.
        retry: Duration,
    },
    /// At `max_concurrent`.
    #[error("tenant {tenant:?} has {limit} calls in flight, its limit (max_concurrent); retry when one ends")]
    Concurrent {
        /// The tenant.
        tenant: String,
        /// Its limit.
        limit: usize,
    },
}

impl Refusal {
    /// How long the client should wait (at least a millisecond).
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::Requests { retry, .. }
            | Refusal::PromptTokens { retry, .. }
            | Refusal::OutputTokens { retry, .. } => (*retry).max(Duration::from_millis(1)),
            Refusal::Concurrent { .. } => Duration::from_secs(1),
        }
    }

    /// Its reason, as metrics label it.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Requests { .. } => "requests_per_second",
            Refusal::PromptTokens { .. } => "prompt_tokens_per_minute",
            Refusal::OutputTokens { .. } => "output_tokens_per_minute",
            Refusal::Concurrent { .. } => "max_concurrent",
        }
    }
}

/// One tenant: its limits, what it has used, and its counts.
#[derive(Debug)]
pub struct Tenant {
    name: String,
    /// Its flow in the fair queue (never 0: calls of no tenant).
    flow: u64,
    config: Mutex<TenantConfig>,
    requests: Bucket,
    prompt: Bucket,
    output: Bucket,
    max_concurrent: AtomicUsize,
    in_flight: AtomicUsize,
    priority: AtomicU32,
    weight: AtomicU32,
    max_queued: AtomicUsize,
    /// Its counts, for metrics and the CLI.
    pub stats: TenantStats,
    /// When it was made (the time unlimited buckets are read at).
    created: Instant,
}

/// A rate a second and a bucket capacity for a per-minute limit, this
/// router's `1/share` of it.
fn per_minute(limit: Option<u64>, share: u32) -> (Option<f64>, f64) {
    let limit = limit.map(|l| l as f64 / f64::from(share.max(1)));
    (limit.map(|l| l / 60.0), limit.unwrap_or(0.0))
}

fn per_second(limit: Option<f64>, share: u32) -> (Option<f64>, f64) {
    let limit = limit.map(|l| l / f64::from(share.max(1)));
    // A second's worth, and room for at least one call.
    (limit, limit.map_or(0.0, |l| l.max(1.0)))
}

impl Tenant {
    fn new(config: TenantConfig, flow: u64, share: u32, now: Instant) -> Self {
        let (rps, rps_cap) = per_second(config.requests_per_second, share);
        let (pps, pps_cap) = per_minute(config.prompt_tokens_per_minute, share);
        let (ops, ops_cap) = per_minute(config.output_tokens_per_minute, share);
        let tenant = Tenant {
            name: config.name.clone(),
            flow,
            requests: Bucket::new(rps, rps_cap, now),
            prompt: Bucket::new(pps, pps_cap, now),
            output: Bucket::new(ops, ops_cap, now),
            max_concurrent: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            priority: AtomicU32::new(0),
            weight: AtomicU32::new(1),
            max_queued: AtomicUsize::new(0),
            config: Mutex::new(config.clone()),
            stats: TenantStats::default(),
            created: now,
        };
        tenant.set_scalars(&config);
        tenant
    }

    fn set_scalars(&self, c: &TenantConfig) {
        self.max_concurrent
            .store(c.max_concurrent.unwrap_or(0), Ordering::Relaxed);
        self.priority.store(c.priority as u32, Ordering::Relaxed);
        self.weight.store(c.weight.max(1), Ordering::Relaxed);
        self.max_queued
            .store(c.max_queued.unwrap_or(0), Ordering::Relaxed);
    }

    /// New limits (a reload, or a change in the routers sharing them);
    /// what it has used is kept.
    fn reconfigure(&self, c: TenantConfig, share: u32, now: Instant) {
        let (rps, cap) = per_second(c.requests_per_second, share);
        self.requests.set(rps, cap, now);
        let (pps, cap) = per_minute(c.prompt_tokens_per_minute, share);
        self.prompt.set(pps, cap, now);
        let (ops, cap) = per_minute(c.output_tokens_per_minute, share);
        self.output.set(ops, cap, now);
        self.set_scalars(&c);
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration now.
    pub fn config(&self) -> TenantConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Its class in the queue.
    pub fn priority(&self) -> Priority {
        match self.priority.load(Ordering::Relaxed) {
            0 => Priority::Interactive,
            1 => Priority::Standard,
            _ => Priority::Batch,
        }
    }

    /// Its calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Where a call of this tenant costing `cost` waits.
    pub fn place(&self, cost: Cost, deadline: Option<Instant>) -> Place {
        Place {
            flow: self.flow,
            class: self.priority(),
            weight: self.weight.load(Ordering::Relaxed),
            cost: cost.tokens(),
            max_queued: self.max_queued.load(Ordering::Relaxed),
            deadline,
        }
    }

    /// Admits a call costing `cost`, or says which limit it is over. The
    /// buckets are charged only when every one has room.
    pub fn admit(self: &Arc<Self>, cost: Cost) -> Result<Ticket, Refusal> {
        let refused = |r: Refusal| {
            self.stats.refused(r.reason());
            Err(r)
        };
        let max = self.max_concurrent.load(Ordering::Relaxed);
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if max > 0 && in_flight >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return refused(Refusal::Concurrent {
                tenant: self.name.clone(),
                limit: max,
            });
        }
        // From here the ticket gives back the call in flight, and what was
        // charged, if a later bucket refuses.
        let mut ticket = Ticket {
            tenant: self.clone(),
            charged: Cost::default(),
            requests: 0.0,
            used: None,
            meter: None,
        };
        // One clock read, and none when no bucket is limited.
        let limited =
            self.requests.is_limited() || self.prompt.is_limited() || self.output.is_limited();
        let now = match limited {
            true => Instant::now(),
            false => self.created,
        };
        let config = || self.config();
        if let Err(retry) = self.requests.take(1.0, now) {
            return refused(Refusal::Requests {
                tenant: self.name.clone(),
                limit: config().requests_per_second.unwrap_or(0.0),
                retry,
            });
        }
        ticket.requests = 1.0;
        if let Err(retry) = self.prompt.take(cost.prompt as f64, now) {
            ticket.give_back();
            return refused(Refusal::PromptTokens {
                tenant: self.name.clone(),
                limit: config().prompt_tokens_per_minute.unwrap_or(0),
                asked: cost.prompt,
                retry,
            });
        }
        ticket.charged.prompt = cost.prompt;
        if let Err(retry) = self.output.take(cost.output as f64, now) {
            ticket.give_back();
            return refused(Refusal::OutputTokens {
                tenant: self.name.clone(),
                limit: config().output_tokens_per_minute.unwrap_or(0),
                asked: cost.output,
                retry,
            });
        }
        ticket.charged.output = cost.output;
        self.stats.admitted();
        Ok(ticket)
    }
}

/// The tenants of the running config, by key.
#[derive(Debug)]
pub struct Tenants {
    roster: ArcSwap<Roster>,
    /// Routers sharing the tenants' limits (1: this one alone).
    share: AtomicU32,
    next_flow: AtomicU64,
}

#[derive(Debug, Default)]
struct Roster {
    tenants: Vec<Arc<Tenant>>,
    /// Every tenant's keys, with the tenant's index.
    keys: Vec<(Box<[u8]>, usize)>,
}

impl Tenants {
    /// The tenants of `configs` (validated).
    pub fn new(configs: &[TenantConfig]) -> Self {
        let tenants = Tenants {
            roster: ArcSwap::from_pointee(Roster::default()),
            share: AtomicU32::new(1),
            next_flow: AtomicU64::new(1),
        };
        tenants.replace(configs);
        tenants
    }

    /// Replaces the roster (a reload): tenants that stay keep their state
    /// and counts; new ones start with full buckets; the rest are gone
    /// (their calls in flight finish).
    pub fn replace(&self, configs: &[TenantConfig]) {
        let old = self.roster.load();
        let share = self.share.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut roster = Roster::default();
        for c in configs {
            let tenant = match old.tenants.iter().find(|t| t.name == c.name) {
                Some(t) => {
                    t.reconfigure(c.clone(), share, now);
                    t.clone()
                }
                None => Arc::new(Tenant::new(
                    c.clone(),
                    self.next_flow.fetch_add(1, Ordering::Relaxed),
                    share,
                    now,
                )),
            };
            let index = roster.tenants.len();
            roster
                .keys
                .extend(c.keys.iter().map(|k| (Box::from(k.as_bytes()), index)));
            roster.tenants.push(tenant);
        }
        self.roster.store(Arc::new(roster));
    }

    /// Each router enforces `1/routers` of every limit.
    pub fn set_share(&self, routers: u32) {
        let routers = routers.max(1);
        if self.share.swap(routers, Ordering::Relaxed) == routers {
            return;
        }
        let now = Instant::now();
        for t in &self.roster.load().tenants {
            t.reconfigure(t.config(), routers, now);
        }
    }

    /// Routers sharing the limits now.
    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// Every tenant, in config order.
    pub fn list(&self) -> Vec<Arc<Tenant>> {
        self.roster.load().tenants.clone()
    }

    /// Whether any tenant is configured.
    pub fn any(&self) -> bool {
        !self.roster.load().tenants.is_empty()
    }

    /// Whether an inference call with `headers` may go ahead, and whose it
    /// is: a tenant's key makes it the tenant's; any other is checked by
    /// `keys` as before. With tenant keys configured, inference needs a
    /// key even when no client key is configured.
    pub fn check(&self, keys: &Keys, headers: &HeaderMap) -> Result<Option<Arc<Tenant>>, Denied> {
        let roster = self.roster.load();
        if roster.keys.is_empty() {
            return keys.check(headers, Role::Client).map(|()| None);
        }
        let presented = presented_key(headers).ok_or(Denied::Missing)?;
        // Every key is compared, whichever matches.
        let found =
            roster
                .keys
                .iter()
                .fold(None, |found, (key, index)| match same(key, presented) {
                    true => Some(*index),
                    false => found,
                });
        match found {
            Some(index) => Ok(Some(roster.tenants[index].clone())),
            None => keys.check_key(presented, Role::Client).map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests;

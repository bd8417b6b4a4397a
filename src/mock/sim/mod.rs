//! A simulated engine: a paged KV cache with prefix reuse and eviction
//! ([`cache`]), a continuous-batching scheduler ([`sched`]) whose steps take
//! the time a stated model of one GPU says ([`physics`]), divided by a
//! speed-up; reporting `cached_tokens`, `GetLoads` and `SubscribeKvEvents`
//! ([`events`]) from that state, over SGLang's protocol ([`sglang`]).
//!
//! NVIDIA Dynamo's mocker simulates the same things; the knobs keep the
//! names vLLM users know (`block_size`, `num_gpu_blocks`, `max_num_seqs`,
//! `max_num_batched_tokens`, `enable_prefix_caching`,
//! `enable_chunked_prefill`, `speedup_ratio`). What is not simulated: the
//! blocks of generated tokens are not cached (a replayed trace's next turn
//! cannot share them: its token ids are made up), and sampling ignores EOS
//! (every request generates its `max_new_tokens`).

pub mod cache;
pub mod events;
pub mod physics;
pub mod sched;
mod server;
mod sglang;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::pb::smg::grpc::common as smg;
pub use physics::Physics;
pub use sched::SchedConfig;
pub use server::SimWorker;

/// A simulated engine's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scheduler and cache.
    pub sched: SchedConfig,
    /// The model and GPU.
    pub physics: Physics,
    /// Every simulated duration is divided by this.
    pub speedup_ratio: f64,
    /// Tokens per streamed message after the first (SGLang's
    /// `stream_interval`).
    pub stream_interval: u32,
    /// Tokens generated when a request sets no `max_new_tokens`.
    pub default_max_tokens: u32,
    /// The served model name.
    pub model: String,
    /// A tokenizer directory served by `GetTokenizer` and named by
    /// `GetModelInfo`.
    pub tokenizer: Option<std::path::PathBuf>,
    /// Seeds the generated token ids.
    pub seed: u64,
    /// The token ids generated, cycled (the tokens of a reply text, so a
    /// gateway with the tokenizer detokenizes real text); `None`: made up
    /// from the seed.
    pub reply_ids: Option<Arc<Vec<u32>>>,
    /// How often an idle engine sends a load record.
    pub heartbeat: Duration,
    /// Event batches kept for subscribers resuming from a sequence number.
    pub event_history: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            sched: SchedConfig::default(),
            physics: Physics::default(),
            speedup_ratio: 1.0,
            stream_interval: 1,
            default_max_tokens: 128,
            model: "meta-llama/Llama-3.1-8B-Instruct".into(),
            tokenizer: None,
            seed: 0,
            reply_ids: None,
            heartbeat: Duration::from_secs(1),
            event_history: events::HISTORY,
        }
    }
}

/// The least wall time between two load records without events.
const LOAD_EVERY: Duration = Duration::from_millis(10);

/// What a request's stream is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Tokens generated so far, and prompt tokens found cached.
    Tokens {
        /// Generated so far.
        n: u32,
        /// Prompt tokens served from the cache.
        cached: u32,
    },
    /// Done.
    Finished,
}

#[derive(Debug, Default)]
struct Counters {
    prompt_tokens: u64,
    cached_tokens: u64,
    generated: u64,
    /// Tokens generated in the last second, for `gen_throughput`.
    rate: f64,
}

#[derive(Debug)]
struct Inner {
    sched: sched::Scheduler,
    streams: HashMap<u64, mpsc::UnboundedSender<Progress>>,
    ids: HashMap<String, u64>,
    next: u64,
    counters: Counters,
    sample: u64,
    /// When the last load record went out (event batches carry one too).
    last_record: Option<std::time::Instant>,
}

/// How far behind its own clock a busy engine may run and catch up (the
/// timer wakes a millisecond or so late; a longer stall is not made up).
const MAX_LAG: Duration = Duration::from_millis(5);

/// One simulated engine: its state, driven by its own task.
#[derive(Debug)]
pub struct SimEngine {
    config: SimConfig,
    inner: Mutex<Inner>,
    wake: Notify,
    events: events::Publisher,
    /// Cancelled when the engine stops: its streams end.
    stopped: tokio_util::sync::CancellationToken,
}

impl SimEngine {
    /// An idle engine (not yet driven: see [`SimEngine::drive`]).
    pub fn new(config: SimConfig) -> Arc<Self> {
        let sched = sched::Scheduler::new(config.sched.clone(), config.physics);
        let events = events::Publisher::new(config.event_history);
        Arc::new(SimEngine {
            config,
            inner: Mutex::new(Inner {
                sched,
                streams: HashMap::new(),
                ids: HashMap::new(),
                next: 1,
                counters: Counters::default(),
                sample: 0,
                last_record: None,
            }),
            wake: Notify::new(),
            events,
            stopped: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request; its progress arrives on the returned channel.
    pub fn submit(
        &self,
        request_id: &str,
        prompt: Arc<[u32]>,
        max_new: u32,
    ) -> mpsc::UnboundedReceiver<Progress> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.counters.prompt_tokens += prompt.len() as u64;
        inner.sched.add(id, prompt, max_new);
        inner.streams.insert(id, tx);
        if !request_id.is_empty() {
            inner.ids.insert(request_id.to_string(), id);
        }
        drop(inner);
        self.wake.notify_one();
        rx
    }

    /// Drops a request by its id; whether it was there.
    pub fn abort(&self, request_id: &str) -> bool {
        let mut inner = self.lock();
        let Some(id) = inner.ids.remove(request_id) else {
            return false;
        };
        inner.streams.remove(&id);
        inner.sched.abort(id)
    }

    /// The engine's load record, as `GetLoads` and the event stream report it.
    pub fn load(&self) -> smg::EngineLoad {
        let mut inner = self.lock();
        Self::load_of(&mut inner)
    }

    fn load_of(inner: &mut Inner) -> smg::EngineLoad {
        let (running, waiting) = inner.sched.counts();
        let waiting_uncached = inner.sched.waiting_uncached_tokens();
        let max_seqs = inner.sched.config().max_num_seqs;
        let cache = inner.sched.cache();
        let usage = cache.used_blocks() as f64 / cache.capacity() as f64;
        let capacity = cache.capacity() * cache.block_size();
        let used = cache.used_blocks() * cache.block_size();
        inner.sample += 1;
        let hit_rate = match inner.counters.prompt_tokens {
            0 => 0.0,
            p => inner.counters.cached_tokens as f64 / p as f64,
        };
        smg::EngineLoad {
            running_requests: running as u32,
            waiting_requests: waiting as u32,
            waiting_uncached_tokens: Some(waiting_uncached.min(u32::MAX as usize) as u32),
            token_usage: usage,
            active_token_usage: Some(usage),
            gen_throughput: inner.counters.rate,
            max_running_requests: max_seqs as u32,
            sample: inner.sample,
            cache_hit_rate: Some(hit_rate),
            num_used_tokens: Some(used as i32),
            max_total_num_tokens: Some(capacity as i32),
            ..Default::default()
        }
    }

    /// Prompt tokens and cached prompt tokens of every request admitted.
    pub fn hit_counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.counters.prompt_tokens, inner.counters.cached_tokens)
    }

    /// Flushes the cache; refused while requests run.
    pub fn flush(&self) -> bool {
        let mut inner = self.lock();
        if !inner.sched.is_idle() {
            return false;
        }
        let flushed = inner.sched.cache().clear();
        let events = inner.sched.cache().drain_events();
        let load = Self::load_of(&mut inner);
        drop(inner);
        self.events.publish(events, load);
        flushed
    }

    /// Ends every stream (the engine is stopping).
    pub fn stop(&self) {
        self.stopped.cancel();
    }

    /// Resolves when the engine stops.
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.stopped.clone().cancelled_owned()
    }

    /// The event publisher.
    pub fn events(&self) -> &events::Publisher {
        &self.events
    }

    /// A snapshot of the cached blocks.
    pub fn snapshot(&self) -> Vec<cache::CacheEvent> {
        self.lock().sched.cache().snapshot()
    }

    /// Runs the scheduler: a step, its duration (divided by the speed-up),
    /// then its outputs and events; a load record while idle every
    /// heartbeat. Ends when `stop` resolves.
    ///
    /// Steps end on a clock of their own: each ends its duration after the
    /// previous one's end (not after the wake-up that followed it), so the
    /// timer's millisecond granularity delays a step's outputs by less
    /// than a millisecond of wall time but never adds up. (Sleeping each
    /// duration from the wake-up made every step about a millisecond
    /// longer: at a speed-up of 10, a 7 ms decode step took some 15 ms of
    /// simulated time, and the whole fleet ran slower than its physics.)
    pub async fn drive(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut window = (tokio::time::Instant::now(), 0u64);
        // When the last step ended, as the engine's clock has it (`None`
        // while idle: the next step starts when work arrives).
        let mut clock: Option<tokio::time::Instant> = None;
        loop {
            let step = {
                let mut inner = self.lock();
                if inner.sched.is_idle() {
                    None
                } else {
                    Some(inner.sched.step())
                }
            };
            let Some(step) = step else {
                clock = None;
                let load = self.load();
                self.events.publish_load(load);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.heartbeat) => {}
                    _ = &mut stop => return,
                }
                continue;
            };
            let pause = Duration::from_secs_f64(step.seconds / self.config.speedup_ratio.max(1e-9));
            let now = tokio::time::Instant::now();
            // A step starts when the last ended, or when its work arrived
            // after an idle spell; an engine behind its clock by more than
            // `MAX_LAG` (a stalled process) drops the rest rather than
            // racing through a burst of steps.
            let floor = now.checked_sub(MAX_LAG).unwrap_or(now);
            let start = clock.map_or(now, |c| c.max(floor));
            let end = start + pause;
            clock = Some(end);
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                _ = &mut stop => return,
            }
            self.deliver(step, &mut window);
        }
    }

    fn deliver(&self, step: sched::Step, window: &mut (tokio::time::Instant, u64)) {
        let mut inner = self.lock();
        let mut gone = Vec::new();
        for out in step.outputs {
            match out {
                sched::Output::Token { id, n, cached } => {
                    inner.counters.generated += 1;
                    window.1 += 1;
                    if n == 1 {
                        inner.counters.cached_tokens += u64::from(cached);
                    }
                    let sent = inner
                        .streams
                        .get(&id)
                        .map(|tx| tx.send(Progress::Tokens { n, cached }).is_ok());
                    if sent == Some(false) {
                        gone.push(id);
                    }
                }
                sched::Output::Finished { id } => {
                    if let Some(tx) = inner.streams.remove(&id) {
                        let _ = tx.send(Progress::Finished);
                    }
                }
            }
        }
        // A client that went away: its request stops, as engines abort it.
        for id in gone {
            inner.streams.remove(&id);
            inner.sched.abort(id);
        }
        let Inner { ids, streams, .. } = &mut *inner;
        ids.retain(|_, id| streams.contains_key(id));
        let elapsed = window.0.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            inner.counters.rate = window.1 as f64 / elapsed * self.config.speedup_ratio;
            *window = (tokio::time::Instant::now(), 0);
        }
        let events = inner.sched.cache().drain_events();
        // Load records between event batches are coalesced: one per
        // LOAD_EVERY of wall time at most.
        let now = std::time::Instant::now();
        let due = inner
            .last_record
            .is_none_or(|at| now.duration_since(at) >= LOAD_EVERY);
        if events.is_empty() && !due {
            return;
        }
        inner.last_record = Some(now);
        let load = Self::load_of(&mut inner);
        drop(inner);
        if events.is_empty() {
            self.events.publish_load(load);
        } else {
            self.events.publish(events, load);
        }
    }
}

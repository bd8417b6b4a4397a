//! A configurable fake inference worker, for tests, demos and benchmarks.
//!
//! It serves `switchyard.v1.Inference` (over raw bytes, like the router, so
//! it can see and echo fields unknown to Switchyard's proto), or SGLang's or
//! vLLM's own service (`engines`), and `grpc.health.v1`. Each generated token's text names the worker. Failure
//! knobs: a failure rate, failing after K tokens, hanging, reporting
//! unhealthy, and asking its host process to exit after N calls. It counts
//! calls, aborts and cancellations, and records what it received, through
//! [`MockStats`]. The server task lives until [`MockWorker::stop`] or drop.

mod bootstrap;
mod engine;
mod engines;
mod http;
mod inference;
mod server;
pub mod sim;
mod tls;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::pb;
use crate::pb::raw::inference_server::Inference;

pub use engine::MockEngine;
pub use server::MockWorker;
pub use tls::MockTls;

/// The reply an engine mock with a tokenizer generates (cycled), naming the
/// worker, with multi-byte characters.
pub fn reply_text(name: &str) -> String {
    format!("Hello from {name}! Café, 日本語, 🚂. ")
}
pub use wire::unknown_fields;

/// Field numbers of `GenerateRequest` that Switchyard's proto knows.
const KNOWN_REQUEST_FIELDS: &[u32] = &[1, 2, 3, 4, 5, 6, 7];
/// How many received requests the stats remember.
const SEEN_LIMIT: usize = 1024;

/// How the mock behaves. Changeable while it runs ([`MockWorker::update`]).
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Appears in the text of every token.
    pub name: String,
    /// Tokens per request, unless the request sets `max_new_tokens`.
    pub tokens: u32,
    /// Pause before each token.
    pub token_delay: Duration,
    /// Probability (0..=1) of failing a call with UNAVAILABLE before any response.
    pub fail_rate: f64,
    /// Fail with INTERNAL after sending this many tokens.
    pub fail_after: Option<u32>,
    /// Accept calls and never answer them.
    pub hang: bool,
    /// Report NOT_SERVING on `grpc.health.v1`.
    pub unhealthy: bool,
    /// Ask the host process to exit when this many calls have arrived.
    pub exit_after_calls: Option<u64>,
    /// Regular, or one side of a prefill/decode pair.
    pub role: MockRole,
    /// How long the PD rendezvous waits for the other side.
    pub rendezvous_timeout: Duration,
    /// The protocol served over gRPC: Switchyard's or an engine's.
    pub engine: MockEngine,
    /// The served model name the engine protocols report.
    pub model: String,
    /// The token ids an engine mock generates, cycled (`None`: 1000, 1001,
    /// ...): the tokens of a reply text, so that a router with the model's
    /// tokenizer detokenizes real text.
    pub reply_ids: Option<Arc<Vec<u32>>>,
    /// A reply that ends by itself: a call that generates all its tokens
    /// finishes with `stop` (as at the model's end of turn), not `length`.
    pub reply_ends: bool,
    /// The model path `GetModelInfo` reports (default `/models/NAME`); the
    /// tokenizer directory when the mock has one, as an engine reports the
    /// directory it loaded.
    pub model_path: Option<String>,
    /// Serve TLS with these files (`grpcs://` and `https://` urls); with a
    /// client CA, the gRPC mock requires a client certificate signed by it.
    pub tls: Option<MockTls>,
    /// Requests an engine reports waiting in `GetLoads` on top of its own
    /// (other clients' work, as a shared engine has).
    pub reported_waiting: u32,
    /// How long after start an engine reports NOT_SERVING and refuses
    /// calls, as a warming engine does.
    pub warmup: Duration,
}

/// Which part the mock plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MockRole {
    /// Serves whole requests.
    #[default]
    Regular,
    /// Listens for decode workers on `bootstrap_port` (0 picks a free one)
    /// and records the rooms it is sent.
    Prefill {
        /// Port of the rendezvous listener.
        bootstrap_port: u16,
    },
    /// Asks the prefill side named in each request for its room before
    /// generating, and fails the call if it cannot.
    Decode,
}

impl MockConfig {
    /// The `i`th generated token id of an engine mock.
    pub fn token_id(&self, i: u32) -> u32 {
        match &self.reply_ids {
            Some(ids) if !ids.is_empty() => ids[i as usize % ids.len()],
            _ => 1000 + i,
        }
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            name: "mock".into(),
            tokens: 8,
            token_delay: Duration::ZERO,
            fail_rate: 0.0,
            fail_after: None,
            hang: false,
            unhealthy: false,
            exit_after_calls: None,
            role: MockRole::Regular,
            rendezvous_timeout: Duration::from_secs(2),
            engine: MockEngine::Switchyard,
            model: "mock-model".into(),
            warmup: Duration::ZERO,
            reported_waiting: 0,
            reply_ids: None,
            reply_ends: false,
            model_path: None,
            tls: None,
        }
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GenerateRequest.request_id`.
    pub request_id: String,
    /// `GenerateRequest.model`.
    pub model: String,
    /// The `x-request-id` metadata.
    pub x_request_id: Option<String>,
    /// The `grpc-timeout` the caller set, if any.
    pub timeout: Option<Duration>,
    /// Raw bytes of the fields Switchyard's proto does not know.
    pub unknown_fields: Bytes,
    /// Every metadata entry, as `(name, value)`, ASCII ones only.
    pub metadata: Vec<(String, String)>,
    /// `disaggregated_params`, if the request carried them (for vLLM's
    /// protocol: the bootstrap address its KV-transfer parameters name).
    pub disaggregated: Option<pb::DisaggregatedParams>,
    /// The prompt's token ids (engine protocols).
    pub token_ids: Vec<u32>,
    /// vLLM's `kv_transfer_params_json`, if set.
    pub kv_transfer_params: Option<String>,
    /// The engine's own `SamplingParams` as received, encoded (SGLang's and
    /// vLLM's protocols), for tests to decode in the engine's types.
    pub sampling: Option<Bytes>,
}

/// Counters and records, shared with whoever started the mock.
#[derive(Debug, Default)]
pub struct MockStats {
    calls: AtomicU64,
    aborts: AtomicU64,
    cancelled: AtomicU64,
    aborted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    paired: AtomicU64,
    tokens: AtomicU64,
    health_generations: AtomicU64,
    health_probes: AtomicU64,
    seen: Mutex<VecDeque<SeenRequest>>,
    abort_ids: Mutex<Vec<String>>,
}

impl MockStats {
    /// `Generate` calls received.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    /// `Abort` calls received.
    pub fn aborts(&self) -> u64 {
        self.aborts.load(Ordering::SeqCst)
    }
    /// Streams whose caller went away before they finished.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
    /// Streams stopped by an `Abort` call.
    pub fn aborted_streams(&self) -> u64 {
        self.aborted.load(Ordering::SeqCst)
    }
    /// Decode side: rendezvous that succeeded.
    pub fn paired(&self) -> u64 {
        self.paired.load(Ordering::SeqCst)
    }
    /// The request ids of the `Abort` calls received, in order.
    pub fn abort_ids(&self) -> Vec<String> {
        self.abort_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    /// Engine `HealthCheck` RPCs received (each a one-token generation on
    /// a real SGLang).
    pub fn health_generations(&self) -> u64 {
        self.health_generations.load(Ordering::SeqCst)
    }
    /// `GET /health` requests answered (the HTTP mock).
    pub fn health_probes(&self) -> u64 {
        self.health_probes.load(Ordering::SeqCst)
    }
    /// Tokens handed to the transport, over all streams.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::SeqCst)
    }
    /// Streams that ran to their end.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    /// The most recent requests received (up to 1024), oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[derive(Clone)]
struct MockService {
    config: Arc<ArcSwap<MockConfig>>,
    stats: Arc<MockStats>,
    /// Running requests by id, so `Abort` can stop them.
    running: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    exit: Arc<Notify>,
    /// Prefill side: rooms received, awaiting their decode side.
    rooms: Arc<bootstrap::Rooms>,
    /// Prefill side: where decode workers reach the rendezvous.
    bootstrap_host: std::net::IpAddr,
    bootstrap_port: u16,
    /// When the engine is warm (`MockConfig::warmup` after start).
    warm_at: tokio::time::Instant,
}

impl MockService {
    /// The PD part of a call: the prefill side records its room, the decode
    /// side pairs with the prefill side before generating.
    async fn rendezvous(
        &self,
        config: &MockConfig,
        params: Option<&pb::DisaggregatedParams>,
    ) -> Result<(), Status> {
        let needs = || {
            Status::failed_precondition(format!(
                "mock worker {} is a {:?} worker: the request needs disaggregated_params with a bootstrap room",
                config.name, config.role
            ))
        };
        match config.role {
            MockRole::Regular => Ok(()),
            MockRole::Prefill { .. } => {
                let room = params
                    .map(|p| p.bootstrap_room)
                    .filter(|r| *r != 0)
                    .ok_or_else(needs)?;
                self.rooms.record(room);
                Ok(())
            }
            MockRole::Decode => {
                let p = params.filter(|p| p.bootstrap_room != 0).ok_or_else(needs)?;
                bootstrap::ask(
                    &p.bootstrap_host,
                    p.bootstrap_port,
                    p.bootstrap_room,
                    config.rendezvous_timeout,
                )
                .await
                .map_err(|e| match e {
                    bootstrap::RendezvousError::Unreachable { .. } => {
                        Status::unavailable(e.to_string())
                    }
                    bootstrap::RendezvousError::UnknownRoom { .. } => {
                        Status::failed_precondition(e.to_string())
                    }
                })?;
                self.stats.paired.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// Everything a call goes through before generating: it is recorded and
    /// counted, may trigger the exit or an injected failure, and PD calls
    /// rendezvous. Returns the config the call runs with.
    pub(crate) async fn admit(
        &self,
        seen: SeenRequest,
        params: Option<&pb::DisaggregatedParams>,
    ) -> Result<Arc<MockConfig>, Status> {
        {
            let mut log = self.stats.seen.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() == SEEN_LIMIT {
                log.pop_front();
            }
            log.push_back(seen);
        }
        let calls = self.stats.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let config = self.config.load_full();
        if config.exit_after_calls.is_some_and(|n| calls >= n) {
            self.exit.notify_one();
        }
        if config.fail_rate > 0.0 && rand::random::<f64>() < config.fail_rate {
            return Err(Status::unavailable(format!(
                "mock worker {}: injected failure",
                config.name
            )));
        }
        self.rendezvous(&config, params).await?;
        Ok(config)
    }

    /// Runs one generation on its own task, registered for `Abort` under
    /// `request_id`, counting how it ended. Returns its output channel.
    pub(crate) fn spawn_generation<T: Send + 'static>(
        &self,
        config: Arc<MockConfig>,
        request_id: String,
        tokens: u32,
        encode: impl Fn(Piece) -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        let abort = Arc::new(Notify::new());
        if !request_id.is_empty() {
            self.running().insert(request_id.clone(), abort.clone());
        }
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let outcome =
                stream_tokens(&config, tokens, &tx, &abort, &this.stats.tokens, encode).await;
            let counter = match outcome {
                Outcome::Completed => &this.stats.completed,
                Outcome::Cancelled => &this.stats.cancelled,
                Outcome::Aborted => &this.stats.aborted,
                Outcome::Failed => &this.stats.failed,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut running = this.running();
            if running
                .get(&request_id)
                .is_some_and(|n| Arc::ptr_eq(n, &abort))
            {
                running.remove(&request_id);
            }
        });
        rx
    }

    /// Whether the engine is still warming up.
    fn warming(&self) -> bool {
        tokio::time::Instant::now() < self.warm_at
    }

    /// Stops the running request `request_id`: whether there was one.
    fn abort_request(&self, request_id: &str) -> bool {
        self.stats
            .abort_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request_id.to_string());
        self.stats.aborts.fetch_add(1, Ordering::SeqCst);
        let found = self.running().remove(request_id);
        tracing::info!(request_id, running = found.is_some(), "Abort received");
        if let Some(notify) = &found {
            notify.notify_one();
        }
        found.is_some()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Outcome {
    Completed,
    Cancelled,
    Aborted,
    Failed,
}

/// One step of a mock generation, before a protocol encodes it.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Token `index`, whose text names the worker.
    Token(u32, String),
    /// The end: why, and how many tokens were generated.
    Finish(&'static str, u32),
    /// An injected failure mid-stream.
    Fail(String),
}

/// Generates `tokens` pieces into `tx` as `config` says, encoding each with
/// `encode`; stops early if the receiver goes away or `abort` fires.
async fn stream_tokens<T>(
    config: &MockConfig,
    tokens: u32,
    tx: &mpsc::Sender<T>,
    abort: &Notify,
    sent: &AtomicU64,
    encode: impl Fn(Piece) -> T,
) -> Outcome {
    if config.hang {
        return tokio::select! {
            _ = tx.closed() => Outcome::Cancelled,
            _ = abort.notified() => Outcome::Aborted,
        };
    }
    for i in 0..tokens {
        if config.fail_after == Some(i) {
            let message = format!(
                "mock worker {}: injected failure after {i} tokens",
                config.name
            );
            let _ = tx.send(encode(Piece::Fail(message))).await;
            return Outcome::Failed;
        }
        if !config.token_delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(config.token_delay) => {}
                _ = tx.closed() => return Outcome::Cancelled,
                _ = abort.notified() => {
                    let _ = tx.send(encode(Piece::Finish("abort", i))).await;
                    return Outcome::Aborted;
                }
            }
        }
        let text = format!("{}:{} ", config.name, i);
        if tx.send(encode(Piece::Token(i, text))).await.is_err() {
            return Outcome::Cancelled;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    if tx
        .send(encode(Piece::Finish(
            // The whole reply: its end of turn; fewer: cut at the limit.
            if config.reply_ends && tokens == config.tokens {
                "stop"
            } else {
                "length"
            },
            tokens,
        )))
        .await
        .is_err()
    {
        return Outcome::Cancelled;
    }
    Outcome::Completed
}

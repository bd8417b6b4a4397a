//! The one prefill/decode dispatch, shared by the gRPC and HTTP PD routers.
//!
//! Both workers are called at once: the prefill side runs as its own task
//! from the start (so its failure is noticed while the decode side is still
//! opening), the decode side is opened here and relayed by the caller.
//! Failure rules: prefill fails → the call gets that error and decode is
//! cancelled; decode fails (or the client cancels, or the deadline passes)
//! → prefill is cancelled ([`Companion`]). Each side holds its load guard
//! until its own stream ends, and a cancelled side is told to abort where
//! its wire can say so ([`PdWire::abort_guard`]).
//!
//! What differs per wire is a [`PdWire`]: how each side is called and
//! drained. Bootstrap parameters are already in the request it carries.

use std::future::{poll_fn, Future};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::call::{AbortOnDrop, Attempt, Companion, TaskGuard};
use super::select::Candidates;
use super::RouteError;
use crate::policies::{PolicyConfig, PolicySet, RequestFacts};
use crate::worker::registry::Snapshot;
use crate::worker::{stats, ConnectionMode, LoadGuard, Worker, WorkerRegistry, WorkerRole};

/// The prefill and decode policies of one wire's PD router (each instance
/// subscribed to the registry when built).
#[derive(Debug)]
pub struct PdPolicies {
    prefill: PolicySet,
    decode: PolicySet,
}

/// The two workers chosen for a PD call.
#[derive(Debug)]
pub struct Pair {
    /// The prefill side.
    pub prefill: Arc<Worker>,
    /// The decode side.
    pub decode: Arc<Worker>,
    /// The prefill worker's bootstrap port, for both sides' requests.
    pub bootstrap_port: u16,
}

impl PdPolicies {
    /// The prefill and decode policies `config` names, over `registry`.
    pub fn build(config: &PolicyConfig, registry: &Arc<WorkerRegistry>) -> Self {
        PdPolicies {
            prefill: PolicySet::new(config.prefill, config.prefill_overrides(), config, registry),
            decode: PolicySet::new(config.decode, config.decode_overrides(), config, registry),
        }
    }

    /// The prefill and the decode set, named.
    pub fn sets(&self) -> [(&'static str, &PolicySet); 2] {
        [("prefill", &self.prefill), ("decode", &self.decode)]
    }

    /// Chooses a prefill and a decode worker of `mode` for the call (the
    /// choice only: [`Self::record`] records it).
    pub fn choose(
        &self,
        snapshot: &Snapshot,
        mode: ConnectionMode,
        facts: &RequestFacts<'_>,
    ) -> Result<Pair, RouteError> {
        let prefill = Candidates::resolve(snapshot, mode, WorkerRole::Prefill, facts.model)?
            .choose(&self.prefill, facts)?;
        let decode = Candidates::resolve(snapshot, mode, WorkerRole::Decode, facts.model)?
            .choose(&self.decode, facts)?;
        // The registry refuses prefill workers without one; this is a bug.
        let bootstrap_port = prefill.spec().bootstrap_port.ok_or_else(|| {
            RouteError::Internal(format!(
                "prefill worker {} has no bootstrap port",
                prefill.id()
            ))
        })?;
        Ok(Pair {
            prefill,
            decode,
            bootstrap_port,
        })
    }

    /// The names of the prefill and the decode policy for `model`.
    pub fn names(&self, model: &str) -> (&'static str, &'static str) {
        (
            self.prefill.for_model(model).name(),
            self.decode.for_model(model).name(),
        )
    }

    /// Whether either side's policy for `model` reads the prompt.
    pub fn reads_prompt(&self, model: &str) -> bool {
        self.prefill.for_model(model).reads_prompt() || self.decode.for_model(model).reads_prompt()
    }

    /// Records the chosen pair with both policies.
    pub fn record(&self, pair: &Pair, facts: &RequestFacts<'_>) {
        self.prefill
            .for_model(facts.model)
            .record(&pair.prefill, facts);
        self.decode
            .for_model(facts.model)
            .record(&pair.decode, facts);
    }
}

/// How one wire calls the two sides of a PD call.
pub trait PdWire {
    /// The decode side once opened (response head, and for gRPC its first
    /// bytes), for the caller to relay.
    type Opened: Send;

    /// What the prefill side's end hands the decode side (vLLM's KV
    /// transfer parameters), for a wire whose sides run one after the other.
    type Handoff: Send + 'static;

    /// The prefill side must end before the decode side opens, with its
    /// handoff (vLLM's sequential PD); otherwise both run at once.
    fn sequential(&self) -> bool {
        false
    }

    /// Runs the prefill call on `worker` to its end, discarding its body
    /// but for the handoff.
    fn run_prefill(
        &self,
        worker: Arc<Worker>,
    ) -> impl Future<Output = Result<Self::Handoff, RouteError>> + Send + 'static;

    /// Opens the decode call on `worker`, up to what the client gets first
    /// (with the prefill side's handoff when sequential).
    fn open_decode(
        &self,
        worker: &Arc<Worker>,
        handoff: Option<Self::Handoff>,
    ) -> impl Future<Output = Result<Self::Opened, RouteError>> + Send;

    /// The listener the call came in on, and when routing it began (for
    /// the router-overhead histogram).
    fn received(&self) -> (stats::Route, Instant);

    /// A guard that tells `worker` to abort the request if dropped armed,
    /// where the wire has such a call (gRPC `Abort`); HTTP workers stop
    /// when the connection closes.
    fn abort_guard(&self, worker: &Arc<Worker>) -> Option<AbortOnDrop>;
}

/// A PD call whose decode side has opened: what the caller relays and
/// holds until the relayed stream ends.
#[derive(Debug)]
pub struct Started<O> {
    /// The decode side, opened.
    pub decode: O,
    /// The prefill side, running (`None`: it ended before the decode side
    /// opened, as sequential PD's does).
    pub companion: Option<Companion>,
    /// The decode side's attempt: its load and its abort, armed.
    pub decode_attempt: Attempt,
}

/// Starts both sides of a PD call on `prefill` and `decode`: at once, or
/// (a sequential wire) the prefill side to its end and then the decode side
/// with its handoff.
pub async fn start<W: PdWire>(
    wire: &W,
    prefill: &Arc<Worker>,
    decode: &Arc<Worker>,
) -> Result<Started<W::Opened>, RouteError> {
    let mut prefill_attempt = Attempt {
        load: LoadGuard::new(prefill.clone()),
        abort: wire.abort_guard(prefill),
    };
    if wire.sequential() {
        let (route, received) = wire.received();
        stats::overhead(route, stats::Dispatch::Pd).observe(
            prefill_attempt
                .load
                .sent()
                .saturating_duration_since(received),
        );
        let ran = wire.run_prefill(prefill.clone()).await;
        match &ran {
            // The worker ended the call itself: nothing to abort.
            Ok(_) => prefill_attempt.ended(&ran),
            // Unless the deadline cut it short, the worker ended it too.
            Err(error) => prefill_attempt.failed(error),
        }
        let handoff = ran?;
        let mut decode_attempt = Attempt {
            load: LoadGuard::new(decode.clone()),
            abort: wire.abort_guard(decode),
        };
        let opened = wire.open_decode(decode, Some(handoff)).await;
        let decode = opened.inspect_err(|e| decode_attempt.failed(e))?;
        return Ok(Started {
            decode,
            companion: None,
            decode_attempt,
        });
    }
    let mut decode_attempt = Attempt {
        load: LoadGuard::new(decode.clone()),
        abort: wire.abort_guard(decode),
    };
    let (route, received) = wire.received();
    stats::overhead(route, stats::Dispatch::Pd).observe(
        decode_attempt
            .load
            .sent()
            .saturating_duration_since(received),
    );

    let (failed_tx, failed_rx) = oneshot::channel();
    let run = wire.run_prefill(prefill.clone());
    let worker = prefill.id().clone();
    let task = tokio::spawn(async move {
        let result = run.await;
        // The worker ended the call itself: nothing to abort.
        prefill_attempt.ended(&result);
        if let Err(error) = result {
            tracing::debug!(%worker, %error, "prefill failed");
            let _ = failed_tx.send(error);
        }
    });
    let mut companion = Companion::new(Some(failed_rx), TaskGuard::new(task.abort_handle()));

    let open = wire.open_decode(decode, None);
    tokio::pin!(open);
    let opened = tokio::select! {
        opened = &mut open => opened,
        // Returning drops the decode call, which cancels it; its abort is
        // armed.
        error = poll_fn(|cx| companion.poll_failed(cx)) => return Err(error),
    };
    // On error, `companion` drops and cancels the prefill side.
    let decode_opened = opened.inspect_err(|e| decode_attempt.failed(e))?;
    Ok(Started {
        decode: decode_opened,
        companion: Some(companion),
        decode_attempt,
    })
}

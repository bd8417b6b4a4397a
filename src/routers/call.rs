//! What one proxied call holds while it runs, released in `Drop` whatever
//! ends it: [`ProxyStream`] (a gRPC worker's stream being relayed, with the
//! load guard, in-flight entry and deadline; it takes an [`Attempt`]'s load
//! and abort), [`Companion`] (the prefill side of a PD call, on either
//! wire) and [`TaskGuard`].
//!
//! The worker finishing, failing, the deadline, or the client going away
//! (the listener dropping the stream) all end the call in one place.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Sleep;
use tokio_stream::Stream;

pub use super::attempt::{abort, aborts_in_flight, AbortOnDrop, Attempt};
use super::chunk_clock::ChunkClock;
use super::RouteError;
use crate::routers::translate::Responses;
use crate::telemetry::CallSpan;
use crate::tenants::{Meter, Slot, Ticket};
use crate::transport::grpc::ResponseStream;
use crate::worker::{LoadGuard, Outcome, Worker};

/// Aborts a spawned task when dropped, unless detached first.
#[derive(Debug)]
pub struct TaskGuard(Option<AbortHandle>);

impl TaskGuard {
    /// Guards the task behind `handle`.
    pub fn new(handle: AbortHandle) -> Self {
        TaskGuard(Some(handle))
    }

    /// Lets the task run to its own end.
    pub fn detach(&mut self) {
        self.0 = None;
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// A second upstream call that lives alongside the relayed one (the prefill
/// side of a PD call): its failure ends the relayed stream with that error,
/// and the relayed stream ending badly cancels it.
#[derive(Debug)]
pub struct Companion {
    /// Fires with the companion's error; closed unsent when it finished
    /// well. `None` once either is known.
    failed: Option<oneshot::Receiver<RouteError>>,
    task: TaskGuard,
}

impl Companion {
    /// `failed` fires with the companion's error (`None`: already known to
    /// have finished well); `task` runs it.
    pub fn new(failed: Option<oneshot::Receiver<RouteError>>, task: TaskGuard) -> Self {
        Companion { failed, task }
    }

    /// The companion's failure, once it has failed.
    pub fn poll_failed(&mut self, cx: &mut Context<'_>) -> Poll<RouteError> {
        let Some(failed) = self.failed.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(failed).poll(cx) {
            Poll::Ready(Ok(error)) => {
                self.failed = None;
                Poll::Ready(error)
            }
            Poll::Ready(Err(_)) => {
                // It finished well; stop watching.
                self.failed = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The relayed side ended well: let the companion finish on its own.
    pub fn detach(&mut self) {
        self.task.detach();
    }
}

/// The idle check of a relayed stream. Its timer is made the first time
/// the worker has nothing ready (a stream that arrives whole, as a one-token
/// answer does, never makes one).
struct Idle {
    interval: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The worker sent something since the timer was last set.
    heard: bool,
}

impl Idle {
    /// Ready when a whole interval passed without a chunk.
    fn poll_silent(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        let interval = self.interval;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        while timer.as_mut().poll(cx).is_ready() {
            if !std::mem::take(&mut self.heard) {
                return Poll::Ready(interval);
            }
            timer.as_mut().reset(tokio::time::Instant::now() + interval);
        }
        Poll::Pending
    }
}

impl Attempt {
    /// The response opened: the stream relaying it takes the load and the
    /// abort, and `held` (in-flight entry, spans) until it ends.
    pub fn opened(
        self,
        worker: Arc<Worker>,
        response: (Option<Bytes>, ResponseStream),
        deadline: Pin<Box<Sleep>>,
        held: Box<dyn Send + Sync>,
    ) -> ProxyStream {
        ProxyStream::new(worker, response, deadline, self.abort, self.load, held)
    }
}

/// Relays a worker's response body to the client as it arrives: gRPC-framed
/// messages, in the chunks the worker's frames carried.
pub struct ProxyStream {
    first: Option<Bytes>,
    upstream: Option<ResponseStream>,
    /// The worker, to name in errors.
    worker: Arc<Worker>,
    deadline: Option<Pin<Box<Sleep>>>,
    abort: Option<AbortOnDrop>,
    companion: Option<Companion>,
    /// Fails the stream when the worker has sent nothing for an interval
    /// (see [`Self::idle_after`]).
    idle: Option<Idle>,
    /// The router's slot for the call (its limit on calls in flight).
    _slot: Option<Slot>,
    /// The call's tenant's ticket, settled (after the stream's drop has
    /// counted on `meter`) when dropped.
    _ticket: Option<Ticket>,
    /// Where the stream counts its tokens as it ends.
    meter: Option<Arc<Meter>>,
    /// Rewrites the worker's messages for the client (a `switchyard.v1`
    /// call served by an engine); `None` relays them as they are.
    translate: Option<Box<Responses>>,
    /// The worker's load guard, told how the call ended.
    load: LoadGuard,
    /// Everything else the call holds until it ends (in-flight
    /// registration, a PD room); released on drop.
    _held: Box<dyn Send + Sync>,
    /// The call's span: marked failed by an error, ended on drop.
    trace: CallSpan,
    /// Samples the router's delay per relayed chunk.
    clock: ChunkClock,
    /// Chunks relayed so far, added to the worker's count at the end.
    chunks: u64,
    /// Chunks relayed in all.
    relayed: u64,
}

impl ProxyStream {
    /// A stream that yields `first` (the chunk already read to confirm the
    /// worker answered), then the rest of `upstream` from `worker`, until
    /// `deadline`.
    pub fn new(
        worker: Arc<Worker>,
        (first, upstream): (Option<Bytes>, ResponseStream),
        deadline: Pin<Box<Sleep>>,
        abort: Option<AbortOnDrop>,
        mut load: LoadGuard,
        held: Box<dyn Send + Sync>,
    ) -> Self {
        // Its first chunk is here.
        load.answered();
        if first.is_some() {
            load.proven();
        }
        ProxyStream {
            load,
            first,
            upstream: Some(upstream),
            worker,
            deadline: Some(deadline),
            abort,
            companion: None,
            idle: None,
            _slot: None,
            _ticket: None,
            meter: None,
            translate: None,
            _held: held,
            trace: CallSpan::default(),
            clock: ChunkClock::default(),
            chunks: 0,
            relayed: 0,
        }
    }

    /// Ends `trace` (the call's span) with the stream, marked failed if
    /// the stream ends in an error or before its end (a client gone).
    pub fn traced(mut self, trace: CallSpan) -> Self {
        self.trace = trace;
        self
    }

    /// Translates every message of the worker's with `responses`.
    pub fn translated(mut self, responses: Responses) -> Self {
        self.translate = Some(Box::new(responses));
        self
    }

    /// Fails the stream (UNAVAILABLE, the worker told to abort) when the
    /// worker sends nothing for `interval`. Checked once per interval (a
    /// chunk only sets a flag: no timer is touched per chunk), so silence
    /// is caught after one to two intervals.
    pub fn idle_after(mut self, interval: Duration) -> Self {
        self.idle = Some(Idle {
            interval,
            timer: None,
            heard: false,
        });
        self
    }

    /// Holds the router's `slot` and the tenant's `ticket` for the call
    /// until the stream ends; the ticket is settled with the tokens the
    /// stream counted.
    pub fn hold(&mut self, slot: Option<Slot>, ticket: Option<Ticket>) {
        self._slot = slot;
        if let Some(mut ticket) = ticket {
            if self.trace.is_on() {
                self.trace
                    .set("switchyard.tenant", ticket.tenant().name().to_string());
            }
            self.meter = Some(ticket.meter());
            self._ticket = Some(ticket);
        }
    }

    /// Counts the stream's tokens on `meter` when it ends.
    pub fn metered(mut self, meter: Option<Arc<Meter>>) -> Self {
        self.meter = meter;
        self
    }

    /// Ties a companion call to this stream's fate (see [`Companion`]).
    pub fn with_companion(mut self, companion: Option<Companion>) -> Self {
        self.companion = companion;
        self
    }

    fn finish(&mut self) {
        // Dropping the upstream stream resets the call on the worker.
        self.upstream = None;
        self.deadline = None;
        // Counted before the client hears the end.
        self.count_chunks();
    }

    /// Adds the chunks relayed so far to the worker's count.
    fn count_chunks(&mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        self.relayed += chunks;
        if chunks > 0 {
            self.worker
                .stats()
                .chunks
                .fetch_add(chunks, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `chunk` as the client gets it: translated, if this stream translates
    /// (`None`: no whole message yet).
    fn outgoing(&mut self, chunk: Bytes) -> Result<Option<Bytes>, RouteError> {
        let Some(translate) = self.translate.as_mut() else {
            return Ok(Some(chunk));
        };
        match translate.chunk(&chunk) {
            Ok(translated) => {
                if translated.done {
                    // A stop string ended the output: the worker's stream is
                    // dropped with its abort still armed, so the engine is
                    // told to stop.
                    self.load.settle(Outcome::Success);
                    self.first = None;
                    self.finish();
                }
                Ok(translated.bytes)
            }
            Err(failure) => {
                if let Some(abort) = self.abort.as_mut() {
                    abort.disarm();
                }
                self.finish();
                let error = RouteError::WorkerFailed {
                    worker: self.worker.id().clone(),
                    failure,
                };
                self.load.settle(error.outcome());
                Err(error)
            }
        }
    }
}

impl Stream for ProxyStream {
    type Item = Result<Bytes, RouteError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.poll_relay(cx);
        if let Poll::Ready(Some(Err(error))) = &polled {
            self.trace.fail(error);
        }
        polled
    }
}

impl Drop for ProxyStream {
    fn drop(&mut self) {
        self.count_chunks();
        if let Some(meter) = self.meter.take() {
            // Translated: the engine's counts. Relayed as they are: the
            // messages relayed, one token each as engines stream them (a
            // call answered whole counts one).
            match self.translate.as_ref().map(|t| t.tokens()) {
                Some((prompt, output)) => {
                    meter.add((prompt > 0).then_some(u64::from(prompt)), u64::from(output))
                }
                None => meter.add(None, self.relayed),
            }
        }
        if self.upstream.is_some() && self.trace.is_on() {
            self.trace.event("cancelled", Vec::new);
            self.trace
                .fail(&"the client went away before the stream ended");
        }
    }
}

impl ProxyStream {
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RouteError>>> {
        let this = self;
        if let Some(first) = this.first.take() {
            this.chunks += 1;
            match this.outgoing(first) {
                Ok(Some(out)) => return Poll::Ready(Some(Ok(out))),
                Ok(None) => {}
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
        }
        loop {
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = match this.clock.waker(cx) {
                Some(timed) => Pin::new(upstream).poll_next(&mut Context::from_waker(timed)),
                None => Pin::new(upstream).poll_next(cx),
            };
            let chunk = matches!(polled, Poll::Ready(Some(Ok(_))));
            this.chunks += u64::from(chunk);
            this.clock.polled(polled.is_pending(), chunk);
            if let (Poll::Ready(Some(Ok(_))), Some(idle)) = (&polled, this.idle.as_mut()) {
                idle.heard = true;
            }
            return match polled {
                Poll::Ready(Some(Ok(chunk))) if this.translate.is_none() => {
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Ok(chunk))) => match this.outgoing(chunk) {
                    Ok(Some(out)) => Poll::Ready(Some(Ok(out))),
                    // Part of a message: read on.
                    Ok(None) => continue,
                    Err(error) => Poll::Ready(Some(Err(error))),
                },
                Poll::Ready(Some(Err(failure))) => {
                    // The worker's own error after a partial stream: passed on.
                    if let Some(abort) = this.abort.as_mut() {
                        abort.disarm();
                    }
                    this.finish();
                    let error = RouteError::WorkerFailed {
                        worker: this.worker.id().clone(),
                        failure,
                    };
                    this.load.settle(error.outcome());
                    Poll::Ready(Some(Err(error)))
                }
                Poll::Ready(None) => {
                    if let Some(abort) = this.abort.as_mut() {
                        abort.disarm();
                    }
                    // A clean end: a companion still running may finish too.
                    if let Some(c) = this.companion.as_mut() {
                        c.detach();
                    }
                    this.load.settle(Outcome::Success);
                    this.finish();
                    Poll::Ready(None)
                }
                // The deadline and the companion are looked at only while the
                // worker has nothing ready: a chunk that is there goes out
                // without a timer poll first (a timer poll per chunk measured
                // as a tenth of a streamed call's instructions).
                Poll::Pending => {
                    if let Some(companion) = this.companion.as_mut() {
                        if let Poll::Ready(error) = companion.poll_failed(cx) {
                            // The companion failed: pass its error on and stop;
                            // our own upstream is cancelled and told to abort
                            // on drop.
                            this.finish();
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    if let Some(idle) = this.idle.as_mut() {
                        if let Poll::Ready(silent) = idle.poll_silent(cx) {
                            // Still armed: the worker is told to stop when we drop.
                            this.finish();
                            let error = RouteError::WorkerIdle {
                                worker: this.worker.id().clone(),
                                silent,
                            };
                            this.load.settle(error.outcome());
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    if let Some(deadline) = this.deadline.as_mut() {
                        if deadline.as_mut().poll(cx).is_ready() {
                            // Still armed: the worker is told to stop when we drop.
                            this.finish();
                            return Poll::Ready(Some(Err(RouteError::DeadlineExceeded {
                                worker: this.worker.id().clone(),
                                streaming: true,
                            })));
                        }
                    }
                    Poll::Pending
                }
            };
        }
    }
}

impl std::fmt::Debug for ProxyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyStream")
            .field("open", &self.upstream.is_some())
            .field("abort", &self.abort)
            .finish()
    }
}

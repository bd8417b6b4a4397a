//! The router's delay per relayed chunk, sampled: from the moment a worker's
//! chunk wakes the call's stream (the worker's connection task has read it)
//! to the moment the stream hands it on to the client's connection. That
//! is the router's own share of a token's way (the task waiting to be run,
//! and the relay's work); the write to the client's socket that follows is
//! the client connection's.
//!
//! One wait on the worker in [`SAMPLE_EVERY`] is timed: after that many
//! polls found nothing, the next polls are made with a waker that notes
//! when it is woken, until one of them finds nothing and leaves that waker
//! with the worker's connection; the poll after its wake times the chunk.
//! Every other poll pays a branch (and a wait a counter). A stream whose
//! chunks are always there when polled never waits and is never timed.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};
use std::time::Instant;

use crate::worker::stats;

/// One wait on a worker's stream in this many is timed.
pub const SAMPLE_EVERY: u32 = 16;

/// What a sampled poll left: the waker the worker's connection holds.
#[derive(Debug, Default)]
struct Stamp {
    inner: Mutex<StampState>,
}

#[derive(Debug, Default)]
struct StampState {
    /// The stream task's own waker, woken in turn.
    waker: Option<Waker>,
    /// When the worker's connection woke the stream.
    woken: Option<Instant>,
}

impl Wake for Stamp {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = {
            let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            state.woken.get_or_insert_with(Instant::now);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A relayed stream's sampler (see the module's documentation). Used as
/// `clock.waker(cx)` to choose the waker for one poll of the worker's
/// stream, then `clock.polled(..)` with what that poll found.
#[derive(Debug, Default)]
pub struct ChunkClock {
    /// Polls that found nothing.
    waits: u32,
    /// The next polls are made with the stamp's waker.
    armed: bool,
    /// This poll is made with the stamp's waker.
    armed_poll: bool,
    /// Made at the first timed wait and reused by the next ones.
    stamp: Option<(Arc<Stamp>, Waker)>,
    /// The worker's connection holds the stamp's waker: the next poll
    /// that finds a chunk times it.
    timing: bool,
}

impl ChunkClock {
    /// The waker to poll the worker's stream with this time: the stamp's,
    /// when armed; `None`, the task's own.
    #[inline]
    pub fn waker(&mut self, cx: &Context<'_>) -> Option<&Waker> {
        if !self.armed {
            return None;
        }
        Some(self.arm(cx))
    }

    #[cold]
    fn arm(&mut self, cx: &Context<'_>) -> &Waker {
        self.armed_poll = true;
        let (stamp, waker) = self.stamp.get_or_insert_with(|| {
            let stamp = Arc::new(Stamp::default());
            let waker = Waker::from(stamp.clone());
            (stamp, waker)
        });
        let mut state = stamp.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.woken = None;
        match &state.waker {
            Some(held) if held.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        waker
    }

    /// What the poll found: nothing (`pending`), or a `chunk` (not the
    /// stream's end or an error), whose delay is counted if a timed wait
    /// ends with it.
    #[inline]
    pub fn polled(&mut self, pending: bool, chunk: bool) {
        if std::mem::take(&mut self.armed_poll) {
            if pending {
                // The worker's connection holds the stamp's waker now.
                self.armed = false;
                self.timing = true;
            }
        } else if pending {
            self.waits = self.waits.wrapping_add(1);
            self.armed = self.waits % SAMPLE_EVERY == 0;
            self.timing = false;
        } else if std::mem::take(&mut self.timing) && chunk {
            self.observe();
        }
    }

    /// Counts the time since the stamp was woken, if it was.
    #[cold]
    fn observe(&self) {
        let Some((stamp, _)) = &self.stamp else {
            return;
        };
        let woken = stamp
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .woken
            .take();
        if let Some(woken) = woken {
            stats::chunk_overhead().observe(woken.elapsed());
        }
    }
}

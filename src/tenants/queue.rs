//! The router's limit on inference calls in flight, over both listeners,
//! and the fair queue in front of it.
//!
//! A call holds a [`Slot`] until its response ends (finished, failed or
//! cancelled: the slot is dropped with the response body). When every slot
//! is taken, calls wait, each for at most `limits.queue_timeout_ms` (or its
//! own deadline, if sooner: a call whose deadline passes while waiting is
//! refused, never sent). A freed slot goes to the waiting call of the
//! highest priority class; within a class, to the one with the earliest
//! virtual start in start-time fair queueing (Goyal, Vin and Cheng, 1996)
//! over flows (a tenant each; calls of no tenant are one flow), each
//! call's cost its tokens and each flow's share its weight: a flow that
//! floods the queue gets its weight's share of the slots, and no more.
//! The queue is bounded overall and per flow; beyond it a call is refused
//! at once with `RESOURCE_EXHAUSTED` (HTTP 429) and a `retry-after`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::{LimitsConfig, Priority};

/// Seconds a refused client is told to wait (`retry-after`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// The limit is reached and the queue is full.
    #[error("the router is at its limit of {limit} calls in flight and {queue} waiting (limits.max_in_flight, limits.queue_size); retry after {RETRY_AFTER_SECS} s")]
    Full {
        /// Calls in flight allowed.
        limit: usize,
        /// Calls allowed to wait.
        queue: usize,
    },
    /// The call's flow (its tenant) has as many calls waiting as it may.
    #[error("the router is at its limit of {limit} calls in flight and this tenant already has {queued} calls waiting, its max_queued; retry after {RETRY_AFTER_SECS} s")]
    FlowFull {
        /// Calls in flight allowed.
        limit: usize,
        /// The flow's calls waiting.
        queued: usize,
    },
    /// The call waited for a slot as long as allowed.
    #[error("the router is at its limit of {limit} calls in flight and no call finished within {waited:?} (limits.queue_timeout_ms); retry after {RETRY_AFTER_SECS} s")]
    TimedOut {
        /// Calls in flight allowed.
        limit: usize,
        /// How long it waited.
        waited: Duration,
    },
    /// The call's own deadline passed while it waited.
    #[error("the call's deadline passed after {waited:?} waiting for one of the router's {limit} calls in flight to finish; it was not sent")]
    DeadlinePassed {
        /// Calls in flight allowed.
        limit: usize,
        /// How long it waited.
        waited: Duration,
    },
}

impl Overloaded {
    /// Its reason, as metrics label it.
    pub fn reason(&self) -> &'static str {
        match self {
            Overloaded::Full { .. } => "queue_full",
            Overloaded::FlowFull { .. } => "tenant_queue_full",
            Overloaded::TimedOut { .. } => "queue_timeout",
            Overloaded::DeadlinePassed { .. } => "deadline",
        }
    }
}

/// Where a call waits: its flow, class, weight and cost.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// Its flow (a tenant's id; 0 for calls of no tenant).
    pub flow: u64,
    /// Its class: all of a higher class go first.
    pub class: Priority,
    /// Its flow's share within the class (at least 1).
    pub weight: u32,
    /// What it costs (its tokens; at least 1).
    pub cost: u64,
    /// The flow's calls that may wait at once (0: the queue's size).
    pub max_queued: usize,
    /// When the call must have started, if it says.
    pub deadline: Option<Instant>,
}

impl Default for Place {
    fn default() -> Self {
        Place {
            flow: 0,
            class: Priority::Standard,
            weight: 1,
            cost: 1,
            max_queued: 0,
            deadline: None,
        }
    }
}

/// Waiting calls ordered by class, then virtual start, then arrival.
type Key = (Priority, u64, u64);

/// The limit (none when `max_in_flight` is 0).
#[derive(Debug)]
pub struct CallLimit {
    limit: usize,
    queue: usize,
    timeout: Duration,
    state: Mutex<State>,
    /// Mirrors of the state's counts, for metrics without the lock.
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
    /// Calls refused (queue full, wait timed out, deadline passed).
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    /// Each waiting call's flow and the sender that grants its slot.
    waiting: BTreeMap<Key, (u64, oneshot::Sender<()>)>,
    flows: HashMap<u64, Flow>,
    /// Each class's virtual time: the virtual start of its call last given
    /// a slot. One clock per class: a class served ahead of the others must
    /// not move the others' clock past their flows' finishes, which would
    /// erase their weights.
    now: [u64; 3],
    arrivals: u64,
}

#[derive(Debug, Default)]
struct Flow {
    /// The virtual finish of its last call queued.
    finish: u64,
    queued: usize,
    /// The class its calls wait in.
    class: Priority,
}

impl State {
    /// A call of `flow` left the queue; a flow with nothing queued whose
    /// last call has started is forgotten.
    fn left_queue(&mut self, flow: u64) {
        let now = self.now;
        if let Some(f) = self.flows.get_mut(&flow) {
            f.queued -= 1;
            if f.queued == 0 && f.finish <= now[f.class as usize] {
                self.flows.remove(&flow);
            }
        }
    }
}

/// A call waiting in the queue; it leaves the queue however the wait ends,
/// its caller going away (the future dropped) included.
struct Waiting<'a> {
    limit: &'a CallLimit,
    key: Key,
    flow: u64,
    /// Fires when the call is given a slot. Kept here, alive until the
    /// call has left the queue, so a slot handed over is never lost: while
    /// the call's entry is in the queue, a send to it succeeds.
    granted: oneshot::Receiver<()>,
    /// Still in the queue, as far as this call knows.
    queued: bool,
}

impl Waiting<'_> {
    /// Leaves the queue: true if it was still waiting, false if it had
    /// been given a slot (which is then the caller's).
    fn leave(&mut self) -> bool {
        if !std::mem::take(&mut self.queued) {
            return false;
        }
        let mut s = self.limit.lock();
        let waiting = s.waiting.remove(&self.key).is_some();
        if waiting {
            s.left_queue(self.flow);
            self.limit.mirror(&s);
            return true;
        }
        // Out of the queue without this call removing it: the slot was
        // sent (under the lock, before it was taken here).
        drop(s);
        self.granted.try_recv().is_err()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.queued && !self.leave() {
            // Given a slot as it went away: the next call takes it.
            self.limit.release();
        }
    }
}

/// A call's place among those in flight, given to the next waiting call
/// when dropped.
#[derive(Debug)]
pub struct Slot(Arc<CallLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A call's slot; `None` when there is no limit.
pub type Permit = Option<Slot>;

/// Virtual time per unit of cost at weight 1 (weights go to 1000).
const SCALE: u64 = 1000;

impl CallLimit {
    /// At most `limit` calls in flight (0: no limit), `queue` more waiting
    /// up to `timeout` each.
    pub fn new(limit: usize, queue: usize, timeout: Duration) -> Self {
        CallLimit {
            limit,
            queue,
            timeout,
            state: Mutex::new(State::default()),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The limit `[limits]` describes.
    pub fn from_config(limits: &LimitsConfig) -> Self {
        CallLimit::new(
            limits.max_in_flight,
            limits.queue_size,
            Duration::from_millis(limits.queue_timeout_ms),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock leaves the state whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mirror(&self, s: &State) {
        self.in_flight.store(s.in_flight, Ordering::Relaxed);
        self.waiting.store(s.waiting.len(), Ordering::Relaxed);
    }

    fn refuse<T>(&self, why: Overloaded) -> Result<T, Overloaded> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(why)
    }

    /// A slot for one call at `place`, waiting in the queue if there is room.
    pub async fn acquire(self: &Arc<Self>, place: &Place) -> Result<Permit, Overloaded> {
        self.acquire_timed(place).await.map(|(permit, _)| permit)
    }

    /// [`CallLimit::acquire`], and how long the call waited (zero, read
    /// from no clock, when it did not queue).
    pub async fn acquire_timed(
        self: &Arc<Self>,
        place: &Place,
    ) -> Result<(Permit, Duration), Overloaded> {
        if self.limit == 0 {
            return Ok((None, Duration::ZERO));
        }
        let (key, granted) = {
            let mut s = self.lock();
            if s.in_flight < self.limit && s.waiting.is_empty() {
                s.in_flight += 1;
                self.mirror(&s);
                return Ok((Some(Slot(self.clone())), Duration::ZERO));
            }
            if s.waiting.len() >= self.queue {
                drop(s);
                return self.refuse(Overloaded::Full {
                    limit: self.limit,
                    queue: self.queue,
                });
            }
            let now = s.now[place.class as usize];
            let flow = s.flows.entry(place.flow).or_default();
            flow.class = place.class;
            if place.max_queued > 0 && flow.queued >= place.max_queued {
                let queued = flow.queued;
                drop(s);
                return self.refuse(Overloaded::FlowFull {
                    limit: self.limit,
                    queued,
                });
            }
            let start = now.max(flow.finish);
            flow.finish = start.saturating_add(
                place.cost.max(1).saturating_mul(SCALE) / u64::from(place.weight.max(1)),
            );
            flow.queued += 1;
            s.arrivals += 1;
            let key = (place.class, start, s.arrivals);
            let (tx, rx) = oneshot::channel();
            s.waiting.insert(key, (place.flow, tx));
            self.mirror(&s);
            (key, rx)
        };
        let mut waiting = Waiting {
            limit: self,
            key,
            flow: place.flow,
            granted,
            queued: true,
        };
        let began = Instant::now();
        let until = place.deadline.map_or(self.timeout, |d| {
            d.saturating_duration_since(began).min(self.timeout)
        });
        let deadline_first = place.deadline.is_some_and(|d| d <= began + self.timeout);
        if let Ok(Ok(())) = tokio::time::timeout(until, &mut waiting.granted).await {
            waiting.queued = false;
            return Ok((Some(Slot(self.clone())), began.elapsed()));
        }
        // Given a slot just as the wait ended: take it.
        if !waiting.leave() {
            return Ok((Some(Slot(self.clone())), began.elapsed()));
        }
        let waited = began.elapsed();
        self.refuse(match deadline_first {
            true => Overloaded::DeadlinePassed {
                limit: self.limit,
                waited,
            },
            false => Overloaded::TimedOut {
                limit: self.limit,
                waited: self.timeout,
            },
        })
    }

    /// A slot freed: to the first waiting call still there, else back.
    fn release(&self) {
        let mut s = self.lock();
        while let Some(((class, start, _), (flow, tx))) = s.waiting.pop_first() {
            let now = &mut s.now[class as usize];
            *now = (*now).max(start);
            s.left_queue(flow);
            if tx.send(()).is_ok() {
                self.mirror(&s);
                return;
            }
        }
        debug_assert!(s.in_flight > 0, "a slot released twice");
        s.in_flight = s.in_flight.saturating_sub(1);
        self.mirror(&s);
    }

    /// How long a call may wait for a slot.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Calls refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Calls in flight now (0 without a limit).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;

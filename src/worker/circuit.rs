//! A circuit breaker per worker, fed by real traffic.
//!
//! Health checks see only whether a worker answers its health service; a
//! worker can pass them and still fail its calls (a broken GPU, a model
//! that errors on every request, a half-dead process). The circuit watches
//! the calls themselves: [`Circuit::record`] hears the outcome of every call
//! that reached a decision, and the circuit **opens** (the worker is passed
//! over by every router) when either
//!
//! - `consecutive_failures` calls in a row failed, or
//! - at least `min_calls` calls finished in the last `window_ms` and at
//!   least `failure_rate` of them failed.
//!
//! It stays open for a backoff that doubles with every opening in a row
//! (from `base_ejection_ms` up to `max_ejection_ms`), jittered to between
//! half and all of it so that workers ejected together do not return
//! together. Then it is **half-open**: the next call chosen for the worker
//! is its one probe ([`Circuit::take_probe`]), and no other call is let
//! through while the probe runs. (Two calls that chose the worker in the
//! same instant both go to it; only the first is the probe, and the other's
//! outcome is not counted.) A probe succeeds at the worker's first good
//! answer (`LoadGuard::proven`), not at the end of a long stream.
//! `close_after` probe successes in a row close it; a probe failure opens
//! it again, for longer. A probe the
//! client cancels decides nothing: the next call probes instead.
//!
//! Only failures that are the worker's count: no connection, a lost
//! connection or stream, a protocol error, gRPC `UNKNOWN`, `INTERNAL`,
//! `UNAVAILABLE`, `DATA_LOSS`, HTTP 5xx, or no answer before the call's
//! deadline. A client's error (`INVALID_ARGUMENT`, HTTP 4xx, ...) or a
//! cancelled call counts neither way.
//!
//! The routing read ([`Circuit::admits`]) is one atomic load while the
//! circuit is closed; the window is a small mutex taken once per finished
//! call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

pub use crate::config::{CircuitConfig, BREAKER_BUCKETS};
use tokio::time::Instant;

/// Where a worker's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls pass the worker over until the instant given.
    Open,
    /// The backoff has passed: the next call is a probe (or one is running).
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// How one call ended, as far as the worker's circuit is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker served it.
    Success,
    /// The worker failed it.
    Failure,
    /// Neither: the client's error, or the client went away.
    Neutral,
}

/// The gate value of a closed circuit.
const CLOSED: u64 = 0;
/// The gate value while a probe runs.
const PROBING: u64 = u64::MAX;
/// Milliseconds since the process's first look at the clock (never 0, the
/// closed gate, nor [`PROBING`]); tokio's clock, so paused-time tests
/// drive it.
fn now_ms() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    let epoch = *EPOCH;
    Instant::now().duration_since(epoch).as_millis() as u64 + 1
}

/// One worker's breaker.
#[derive(Debug)]
pub struct Circuit {
    /// [`CLOSED`], [`PROBING`], or the millisecond from which a probe may go.
    gate: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Calls and failures per bucket of `window_ms / BREAKER_BUCKETS`.
    buckets: [(u32, u32); BREAKER_BUCKETS],
    /// The bucket number (time / bucket width) of `buckets[0]`'s slot
    /// rotation: the newest bucket written.
    newest: u64,
    consecutive: u32,
    /// Openings in a row (reset when the circuit closes).
    openings: u32,
    /// Probe successes in a row.
    probe_successes: u32,
}

/// A transition the caller announces.
pub type Transition = Option<CircuitState>;

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            gate: AtomicU64::new(CLOSED),
            window: Mutex::new(Window::default()),
        }
    }
}

impl Circuit {
    /// Whether a router may choose the worker now: closed, or half-open
    /// with no probe running. One atomic load while closed.
    pub fn admits(&self) -> bool {
        match self.gate.load(Ordering::Acquire) {
            CLOSED => true,
            PROBING => false,
            from => now_ms() >= from,
        }
    }

    /// Where the circuit stands now.
    pub fn state(&self) -> CircuitState {
        match self.gate.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            PROBING => CircuitState::HalfOpen,
            from if now_ms() >= from => CircuitState::HalfOpen,
            _ => CircuitState::Open,
        }
    }

    /// Makes the call being dispatched the probe, if the circuit is
    /// half-open and no probe runs: `(is the probe, transition)`.
    pub fn take_probe(&self) -> (bool, Transition) {
        let gate = self.gate.load(Ordering::Acquire);
        if gate == CLOSED || gate == PROBING || now_ms() < gate {
            return (false, None);
        }
        let taken = self
            .gate
            .compare_exchange(gate, PROBING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        (taken, taken.then_some(CircuitState::HalfOpen))
    }

    /// The probe ended deciding nothing (cancelled, or the client's
    /// error): the next call probes instead.
    pub fn release_probe(&self) {
        let _ = self
            .gate
            .compare_exchange(PROBING, now_ms(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// Records how a call ended (`probe`: it was the half-open probe);
    /// returns the state the circuit moved to, if it moved.
    pub fn record(&self, config: &CircuitConfig, probe: bool, outcome: Outcome) -> Transition {
        if !config.enabled {
            return None;
        }
        if probe {
            return self.record_probe(config, outcome);
        }
        if outcome == Outcome::Neutral {
            return None;
        }
        let now = now_ms();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if self.gate.load(Ordering::Acquire) != CLOSED {
            // A call that started before the circuit opened: the opening
            // already accounted for the worker's state.
            return None;
        }
        w.advance(now, config.window_ms);
        let failed = outcome == Outcome::Failure;
        let slot = (w.newest % BREAKER_BUCKETS as u64) as usize;
        let newest = &mut w.buckets[slot];
        newest.0 += 1;
        newest.1 += u32::from(failed);
        if !failed {
            w.consecutive = 0;
            return None;
        }
        w.consecutive += 1;
        let (calls, failures) = w
            .buckets
            .iter()
            .fold((0u32, 0u32), |(c, f), b| (c + b.0, f + b.1));
        let by_rate = calls >= config.min_calls
            && f64::from(failures) >= config.failure_rate * f64::from(calls);
        if w.consecutive >= config.consecutive_failures || by_rate {
            self.open(config, &mut w, now);
            return Some(CircuitState::Open);
        }
        None
    }

    fn record_probe(&self, config: &CircuitConfig, outcome: Outcome) -> Transition {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Outcome::Neutral => {
                drop(w);
                self.release_probe();
                None
            }
            Outcome::Failure => {
                w.probe_successes = 0;
                self.open(config, &mut w, now_ms());
                Some(CircuitState::Open)
            }
            Outcome::Success => {
                w.probe_successes += 1;
                if w.probe_successes >= config.close_after {
                    *w = Window::default();
                    self.gate.store(CLOSED, Ordering::Release);
                    return Some(CircuitState::Closed);
                }
                // Still half-open: the next call probes again.
                self.gate.store(now_ms(), Ordering::Release);
                None
            }
        }
    }

    /// Opens for the next backoff: `base * 2^openings`, capped, jittered
    /// to between half and all of it.
    fn open(&self, config: &CircuitConfig, w: &mut Window, now: u64) {
        let doubled = config
            .base_ejection_ms
            .saturating_mul(1u64 << w.openings.min(20));
        let full = doubled.min(config.max_ejection_ms);
        let backoff = full / 2 + rand::random_range(0..=full - full / 2);
        w.openings = w.openings.saturating_add(1);
        w.consecutive = 0;
        w.buckets = Default::default();
        self.gate.store(now + backoff.max(1), Ordering::Release);
    }

    /// How long the circuit stays open from now (zero unless open).
    pub fn open_for(&self) -> Duration {
        match self.gate.load(Ordering::Acquire) {
            CLOSED | PROBING => Duration::ZERO,
            from => Duration::from_millis(from.saturating_sub(now_ms())),
        }
    }
}

impl Window {
    /// Moves the window to `now`, emptying the buckets that fell out.
    fn advance(&mut self, now: u64, window_ms: u64) {
        let width = (window_ms / BREAKER_BUCKETS as u64).max(1);
        let bucket = now / width;
        if bucket <= self.newest {
            return;
        }
        let stale = (bucket - self.newest).min(BREAKER_BUCKETS as u64);
        for i in 1..=stale {
            self.buckets[((self.newest + i) % BREAKER_BUCKETS as u64) as usize] = (0, 0);
        }
        self.newest = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CircuitConfig {
        CircuitConfig {
            base_ejection_ms: 1_000,
            max_ejection_ms: 8_000,
            ..CircuitConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_then_one_probe_closes() {
        let c = Circuit::default();
        let cfg = config();
        for _ in 0..4 {
            assert_eq!(c.record(&cfg, false, Outcome::Failure), None);
        }
        assert_eq!(
            c.record(&cfg, false, Outcome::Failure),
            Some(CircuitState::Open)
        );
        assert!(!c.admits());
        assert_eq!(c.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert!(c.admits());
        assert_eq!(c.take_probe(), (true, Some(CircuitState::HalfOpen)));
        // One probe at a time.
        assert!(!c.admits());
        assert_eq!(c.take_probe(), (false, None));
        assert_eq!(
            c.record(&cfg, true, Outcome::Success),
            Some(CircuitState::Closed)
        );
        assert!(c.admits());
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_and_a_cancelled_one_frees_the_turn() {
        let c = Circuit::default();
        let cfg = CircuitConfig {
            consecutive_failures: 1,
            ..config()
        };
        c.record(&cfg, false, Outcome::Failure);
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert!(c.take_probe().0);
        c.release_probe();
        assert!(c.admits(), "a cancelled probe lets the next call probe");
        assert!(c.take_probe().0);
        assert_eq!(
            c.record(&cfg, true, Outcome::Failure),
            Some(CircuitState::Open)
        );
        // Second opening: between 1 and 2 s.
        let open = c.open_for();
        assert!(open >= Duration::from_millis(999) && open <= Duration::from_millis(2_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_opens_without_failures_in_a_row() {
        let c = Circuit::default();
        let cfg = config();
        let mut opened = None;
        for i in 0..40 {
            let outcome = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            if let Some(state) = c.record(&cfg, false, outcome) {
                opened = Some((i, state));
                break;
            }
        }
        assert_eq!(opened, Some((10, CircuitState::Open)));
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_and_old_failures_do_not_count() {
        let c = Circuit::default();
        let cfg = config();
        for _ in 0..100 {
            assert_eq!(c.record(&cfg, false, Outcome::Neutral), None);
        }
        for _ in 0..4 {
            c.record(&cfg, false, Outcome::Failure);
            for _ in 0..4 {
                c.record(&cfg, false, Outcome::Success);
            }
        }
        // 4 of 20 is 20%: under the 30% rate.
        assert!(c.admits());
        tokio::time::advance(Duration::from_secs(11)).await;
        // The window moved on: 3 failures of 4 calls is under min_calls.
        for _ in 0..3 {
            c.record(&cfg, false, Outcome::Failure);
            c.record(&cfg, false, Outcome::Success);
        }
        assert!(c.admits());
    }
}

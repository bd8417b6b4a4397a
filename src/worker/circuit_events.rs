//! A worker's circuit as the registry hears it: every change announced
//! once as a registry event, and the end of an ejection announced when it
//! comes (a timer set when the circuit opens), so `WatchWorkers` and the
//! listings agree.

use std::sync::atomic::Ordering;

use super::{CircuitState, Outcome};

/// A worker's circuit as the registry hears it: each change announced
/// once, and the end of an ejection announced when it comes.
impl super::Worker {
    /// Makes the call being dispatched the circuit's probe, if it is
    /// half-open and none runs (announcing the change).
    pub(crate) fn take_probe(self: &std::sync::Arc<Self>) -> bool {
        let (probe, moved) = self.circuit.take_probe();
        self.announce_circuit(moved);
        probe
    }

    /// Feeds a finished call's outcome to the circuit.
    pub(crate) fn record_outcome(self: &std::sync::Arc<Self>, probe: bool, outcome: Outcome) {
        let moved = self.circuit.record(&self.circuit_config, probe, outcome);
        self.announce_circuit(moved);
    }

    fn announce_circuit(self: &std::sync::Arc<Self>, moved: super::circuit::Transition) {
        if let Some(state) = moved {
            // Each change once: the ejection's end is announced by a timer,
            // and the probe taken later moves to the same state.
            if self.circuit_announced.swap(state as u8, Ordering::Relaxed) == state as u8 {
                return;
            }
            match state {
                CircuitState::Open => tracing::warn!(
                    worker = %self.id, url = %self.url(),
                    open_for_ms = self.circuit.open_for().as_millis() as u64,
                    "circuit opened: the worker fails its calls; passed over until a probe succeeds"
                ),
                CircuitState::HalfOpen => {
                    tracing::debug!(worker = %self.id, "circuit half-open: probing")
                }
                CircuitState::Closed => {
                    tracing::info!(worker = %self.id, "circuit closed: the probe succeeded")
                }
            }
            (self.announcer)(super::WorkerEventKind::CircuitChanged { state }, self);
            if state == CircuitState::Open {
                self.announce_half_open_when_due();
            }
        }
    }

    /// The circuit turns half-open when its ejection runs out, whether or
    /// not a call comes: watchers hear it then, as listings show it.
    fn announce_half_open_when_due(self: &std::sync::Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let worker = std::sync::Arc::downgrade(self);
        let wait = self.circuit.open_for();
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(worker) = worker.upgrade() {
                if worker.circuit.state() == CircuitState::HalfOpen {
                    worker.announce_circuit(Some(CircuitState::HalfOpen));
                }
            }
        });
    }
}

//! Each worker's circuit breaker (`[breaker]`), fed by its calls
//! (`worker::circuit`).

use serde::{Deserialize, Serialize};

/// The buckets of a circuit's sliding window (`window_ms` is at least this
/// many milliseconds).
pub const BREAKER_BUCKETS: usize = 10;

/// The thresholds of every worker's circuit (config section `[breaker]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Off: workers are taken out by health checks only.
    pub enabled: bool,
    /// Calls failed in a row that open the circuit: 5.
    pub consecutive_failures: u32,
    /// The share of failed calls in the window that opens it: 0.3.
    pub failure_rate: f64,
    /// Fewest calls in the window for the rate to count: 10.
    pub min_calls: u32,
    /// The sliding window of the rate: 10 s.
    pub window_ms: u64,
    /// The first opening lasts up to this: 1 s.
    pub base_ejection_ms: u64,
    /// No opening lasts longer: 30 s.
    pub max_ejection_ms: u64,
    /// Probe successes in a row that close it: 1.
    pub close_after: u32,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.3,
            min_calls: 10,
            window_ms: 10_000,
            base_ejection_ms: 1_000,
            max_ejection_ms: 30_000,
            close_after: 1,
        }
    }
}

impl CircuitConfig {
    /// What is wrong with these values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.consecutive_failures == 0 || self.min_calls == 0 || self.close_after == 0 {
            return Err(
                "breaker.consecutive_failures, min_calls and close_after must be at least 1".into(),
            );
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(format!(
                "breaker.failure_rate must be in (0, 1], got {}",
                self.failure_rate
            ));
        }
        if self.window_ms < BREAKER_BUCKETS as u64 {
            return Err(format!(
                "breaker.window_ms must be at least {BREAKER_BUCKETS}, got {}",
                self.window_ms
            ));
        }
        if self.base_ejection_ms == 0 || self.max_ejection_ms < self.base_ejection_ms {
            return Err(format!(
                "breaker.base_ejection_ms must be at least 1 and at most max_ejection_ms ({}), got {}",
                self.max_ejection_ms, self.base_ejection_ms
            ));
        }
        Ok(())
    }
}

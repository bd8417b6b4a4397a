//! A token bucket: `rate` units a second flow in, up to `capacity`; a call
//! takes what it is charged, and a settled call gives back (or takes more
//! of) the difference. A bucket may go below empty (a call that used more
//! than it was charged): it then admits nothing until it has refilled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One limit's bucket; no limit when its rate is `None`.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<State>,
    /// Whether there is a limit: an unlimited bucket is not locked.
    limited: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Units a second; `None`: no limit.
    rate: Option<f64>,
    capacity: f64,
    level: f64,
    at: Instant,
}

impl State {
    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
            self.level = (self.level + elapsed * rate).min(self.capacity);
        }
        self.at = now;
    }
}

impl Bucket {
    /// A full bucket of `rate` a second holding `capacity` (`None`: no limit).
    pub fn new(rate: Option<f64>, capacity: f64, now: Instant) -> Self {
        Bucket {
            state: Mutex::new(State {
                rate,
                capacity,
                level: capacity,
                at: now,
            }),
            limited: AtomicBool::new(rate.is_some()),
        }
    }

    /// A new rate and capacity (a reload): what the bucket holds is kept,
    /// up to the new capacity; a bucket that had no limit starts full.
    pub fn set(&self, rate: Option<f64>, capacity: f64, now: Instant) {
        let mut s = self.lock();
        s.refill(now);
        if s.rate.is_none() {
            s.level = capacity;
        }
        s.rate = rate;
        s.capacity = capacity;
        s.level = s.level.min(capacity);
        self.limited.store(rate.is_some(), Ordering::Relaxed);
    }

    /// Whether there is a limit.
    pub fn is_limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }

    /// Takes `n` if the bucket holds it (and is not below empty); else how
    /// long until it will. A charge larger than the whole bucket is taken
    /// from a full one (it could never be admitted otherwise).
    pub fn take(&self, n: f64, now: Instant) -> Result<(), Duration> {
        if !self.is_limited() {
            return Ok(());
        }
        let mut s = self.lock();
        let Some(rate) = s.rate else {
            return Ok(());
        };
        s.refill(now);
        let need = n.min(s.capacity);
        if s.level > 0.0 && s.level >= need {
            s.level -= n;
            return Ok(());
        }
        let short = (need - s.level).max(f64::MIN_POSITIVE);
        Err(Duration::from_secs_f64((short / rate).min(3600.0)))
    }

    /// Gives back `n` (a negative `n` takes more): a settled call's
    /// difference from its charge.
    pub fn give(&self, n: f64) {
        if !self.is_limited() || n == 0.0 {
            return;
        }
        let mut s = self.lock();
        if s.rate.is_some() {
            s.level = (s.level + n).min(s.capacity);
        }
    }

    /// What it holds now (for the CLI and tests).
    pub fn level(&self, now: Instant) -> Option<f64> {
        let mut s = self.lock();
        s.refill(now);
        s.rate.map(|_| s.level)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves consistent numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_it_holds_and_says_when_it_will_hold_more() {
        let t0 = Instant::now();
        let b = Bucket::new(Some(10.0), 10.0, t0);
        assert!(b.take(6.0, t0).is_ok());
        assert!(b.take(4.0, t0).is_ok());
        // Empty: 3 more come in 0.3 s.
        let wait = b.take(3.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.3).abs() < 1e-6, "{wait:?}");
        assert!(b.take(3.0, t0 + Duration::from_millis(300)).is_ok());
        // Never more than its capacity.
        assert_eq!(b.level(t0 + Duration::from_secs(100)), Some(10.0));
    }

    #[test]
    fn a_settled_overrun_is_a_debt_paid_before_anything_is_admitted() {
        let t0 = Instant::now();
        let b = Bucket::new(Some(1.0), 10.0, t0);
        b.take(5.0, t0).unwrap();
        // The call used 12, not 5.
        b.give(-7.0);
        assert_eq!(b.level(t0), Some(-2.0));
        assert!(b.take(0.0, t0).is_err(), "a bucket in debt admits nothing");
        assert!(b.take(0.0, t0 + Duration::from_millis(2_100)).is_ok());
    }

    #[test]
    fn a_charge_over_the_capacity_passes_a_full_bucket_only() {
        let t0 = Instant::now();
        let b = Bucket::new(Some(1.0), 10.0, t0);
        assert!(b.take(50.0, t0).is_ok());
        assert!(b.take(50.0, t0 + Duration::from_secs(30)).is_err());
        let unlimited = Bucket::new(None, 0.0, t0);
        assert!(unlimited.take(1e12, t0).is_ok());
        assert_eq!(unlimited.level(t0), None);
    }

    #[test]
    fn a_reload_keeps_what_was_used() {
        let t0 = Instant::now();
        let b = Bucket::new(Some(1.0), 10.0, t0);
        b.take(8.0, t0).unwrap();
        b.set(Some(2.0), 100.0, t0);
        assert_eq!(b.level(t0), Some(2.0));
        b.set(None, 0.0, t0);
        b.set(Some(1.0), 5.0, t0);
        assert_eq!(b.level(t0), Some(5.0), "a limit newly set starts full");
    }
}

//! The router's own limit on inference calls in flight, over both
//! listeners: a semaphore whose permit each call holds until its response
//! ends (finished, failed or cancelled: the permit is dropped with the
//! response body), and a bounded queue of calls waiting for a permit, each
//! for at most `limits.queue_timeout_ms`. Beyond that a call is refused at
//! once, before any routing work, with `RESOURCE_EXHAUSTED` (HTTP 429) and a
//! `retry-after`.

use crate::config::LimitsConfig;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// The call waited for a permit as long as allowed.
    #[error("the router is at its limit of {limit} calls in flight and no call finished within {waited:?} (limits.queue_timeout_ms); retry after {RETRY_AFTER_SECS} s")]
    TimedOut {
        /// Calls in flight allowed.
        limit: usize,
        /// How long it waited.
        waited: Duration,
    },
}

/// The limit (none when `max_in_flight` is 0).
#[derive(Debug)]
pub struct CallLimit {
    limit: usize,
    permits: Arc<Semaphore>,
    queue: usize,
    waiting: AtomicUsize,
    timeout: Duration,
    /// Calls refused (queue full or wait timed out).
    refused: AtomicU64,
}

/// A call's permit; `None` when there is no limit.
pub type Permit = Option<OwnedSemaphorePermit>;

impl CallLimit {
    /// At most `limit` calls in flight (0: no limit), `queue` more waiting
    /// up to `timeout` each.
    pub fn new(limit: usize, queue: usize, timeout: Duration) -> Self {
        CallLimit {
            limit,
            permits: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            queue,
            waiting: AtomicUsize::new(0),
            timeout,
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

    /// A permit for one call, waiting in the queue if there is room.
    pub async fn acquire(&self) -> Result<Permit, Overloaded> {
        if self.limit == 0 {
            return Ok(None);
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let full = Overloaded::Full {
            limit: self.limit,
            queue: self.queue,
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(full);
        }
        // Out of the queue however the wait ends, the caller's going away
        // (the future dropped) included.
        let _queued = Queued(&self.waiting);
        let waited = tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned()).await;
        match waited {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(full),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Overloaded::TimedOut {
                    limit: self.limit,
                    waited: self.timeout,
                })
            }
        }
    }

    /// Calls waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Calls refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Calls in flight now (0 without a limit).
    pub fn in_flight(&self) -> usize {
        match self.limit {
            0 => 0,
            limit => limit - self.permits.available_permits(),
        }
    }
}

/// A place in the queue, given up when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The size of a request's metadata as HTTP/2 counts a header list: each
/// name and value, plus 32 per field.
pub fn metadata_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// The header list the protocol layer (h2, hyper's HTTP/1 parser) lets
/// through to the router's own check, for a router whose limit is
/// `max_metadata` bytes: four times the limit, and at least 256 KiB. Lists
/// up to it are refused by [`check_metadata`], naming the limit, in a
/// status the client reads (gRPC's RESOURCE_EXHAUSTED, HTTP's 431 with a
/// message); the protocol layer answers a bare 431 only beyond it.
pub fn protocol_header_limit(max_metadata: usize) -> usize {
    max_metadata.saturating_mul(4).max(256 * 1024)
}

/// Why a request's metadata was refused, if it was: over `max` bytes.
pub fn check_metadata(headers: &http::HeaderMap, max: usize) -> Result<(), String> {
    let size = metadata_bytes(headers);
    if size > max {
        return Err(format!(
            "the request's metadata (headers) is {size} bytes, over the router's limit of {max} (limits.max_metadata_bytes; each field counts its name and value plus 32): send less"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn permits_queue_time_out_and_come_back() {
        let limit = CallLimit::new(2, 1, Duration::from_millis(100));
        let a = limit.acquire().await.unwrap();
        let _b = limit.acquire().await.unwrap();
        assert_eq!(limit.in_flight(), 2);
        // One may wait; it times out.
        assert!(matches!(
            limit.acquire().await,
            Err(Overloaded::TimedOut { .. })
        ));
        // A waiting call gets the permit a finished one returns.
        let waiter = tokio::spawn(async move {
            let got = limit.acquire().await;
            (got.is_ok(), limit)
        });
        tokio::task::yield_now().await;
        drop(a);
        let (got, limit) = waiter.await.unwrap();
        assert!(got);
        assert_eq!(
            limit.in_flight(),
            1,
            "the waiter's permit was dropped with it"
        );
    }

    #[tokio::test]
    async fn a_caller_that_leaves_the_queue_gives_up_its_place() {
        let limit = Arc::new(CallLimit::new(1, 1, Duration::from_secs(60)));
        let _held = limit.acquire().await.unwrap();
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire().await.map(|_| ()) })
        };
        while limit.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // The client went away while queued.
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(limit.waiting(), 0, "the place was given up");
        // So the next call may wait in the queue, not refused as if it
        // were full.
        let next = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire().await.map(|_| ()) })
        };
        while limit.waiting() == 0 && !next.is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(!next.is_finished(), "queued, not refused");
        next.abort();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let limit = Arc::new(CallLimit::new(1, 0, Duration::from_secs(60)));
        let _held = limit.acquire().await.unwrap();
        assert!(matches!(
            limit.acquire().await,
            Err(Overloaded::Full { .. })
        ));
        let unlimited = CallLimit::new(0, 0, Duration::ZERO);
        assert!(unlimited.acquire().await.unwrap().is_none());
    }
}

//! One attempt of a call on one worker: its load and the `Abort` armed for
//! it ([`Attempt`]), settled in one place when the attempt fails or the
//! worker ends the call; [`AbortOnDrop`] tells a gRPC worker to stop a
//! request the client gave up on.

use std::sync::{Arc, LazyLock};

use tokio_util::task::TaskTracker;

use super::RouteError;
use crate::transport::Failure;
use crate::worker::{LoadGuard, Outcome, Worker};

/// Tells a worker to abort a request if dropped while still armed.
///
/// Armed from dispatch until the worker ends the stream itself (success or
/// error). Dropped armed means the client cancelled, disconnected or ran out
/// of deadline: the upstream call is reset by dropping it, and the worker is
/// additionally sent `Abort(request_id)` so engines that keep generating after
/// a reset free their slot.
#[derive(Debug)]
pub struct AbortOnDrop {
    target: Option<(Arc<Worker>, String)>,
}

impl AbortOnDrop {
    /// Arms an abort of `request_id` on `worker`.
    pub fn new(worker: Arc<Worker>, request_id: String) -> Self {
        AbortOnDrop {
            target: Some((worker, request_id)),
        }
    }

    /// The worker finished the request on its own; nothing to abort.
    pub fn disarm(&mut self) {
        self.target = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some((worker, request_id)) = self.target.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        ABORTS.spawn(async move {
            match abort(&worker, &request_id).await {
                Ok(_) => tracing::debug!(worker = %worker.id(), %request_id, "upstream aborted"),
                Err(failure) => {
                    tracing::debug!(worker = %worker.id(), %request_id, %failure, "abort not acknowledged")
                }
            }
        });
    }
}

/// The `Abort` calls sent by dropped [`AbortOnDrop`]s and not yet answered.
/// A process-wide tracker, because a `Drop` has nowhere else to put them; a
/// shutting-down router waits on it so that cancelled calls' aborts reach
/// their workers before the process exits.
static ABORTS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// The `Abort` calls in flight (see [`ABORTS`]). Closed on return, so
/// `wait` returns once they are answered or time out (two seconds at most).
pub fn aborts_in_flight() -> &'static TaskTracker {
    ABORTS.close();
    &ABORTS
}

/// Sends `worker` its engine's `Abort(request_id)`, waiting at most two
/// seconds: whether the worker had the request running.
pub async fn abort(worker: &Worker, request_id: &str) -> Result<bool, Failure> {
    crate::engines::abort(worker, request_id).await
}

/// What one attempt of a call on one worker holds until its response
/// opens: the worker's load and the abort armed for it. One method for an
/// attempt that failed, one for a call the worker ran to its end, and the
/// relayed stream (or the HTTP relay) takes both once the response opens.
#[derive(Debug)]
pub struct Attempt {
    /// The worker's load, counted from now.
    pub load: LoadGuard,
    /// Armed until the worker ends the call itself (`None`: the wire has no
    /// abort).
    pub abort: Option<AbortOnDrop>,
}

impl Attempt {
    /// An attempt on `worker`, its abort of `request_id` armed (`None`:
    /// none to arm).
    pub fn new(worker: &Arc<Worker>, request_id: Option<&str>) -> Self {
        Attempt {
            load: LoadGuard::new(worker.clone()),
            abort: request_id.map(|id| AbortOnDrop::new(worker.clone(), id.to_string())),
        }
    }

    /// The response never opened: the load is settled with the failure's
    /// outcome. Unless the deadline cut the attempt short (the worker may
    /// still be running the call, so the abort stays armed), the worker
    /// ended the call itself and there is nothing to abort.
    pub fn failed(&mut self, error: &RouteError) {
        self.load.settle(error.outcome());
        if !matches!(error, RouteError::DeadlineExceeded { .. }) {
            self.disarm();
        }
    }

    /// The worker ran the call to its end (a prefill side): the load is
    /// settled with how it ended; nothing to abort.
    pub fn ended<T>(&mut self, result: &Result<T, RouteError>) {
        self.load.settle(match result {
            Ok(_) => Outcome::Success,
            Err(error) => error.outcome(),
        });
        self.disarm();
    }

    fn disarm(&mut self) {
        if let Some(abort) = self.abort.as_mut() {
            abort.disarm();
        }
    }
}

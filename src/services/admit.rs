//! Admitting an inference call, on either listener: its tenant's limits
//! (`tenants`), then a slot among the router's calls in flight, waiting in
//! the fair queue if need be. A refusal is `RESOURCE_EXHAUSTED` (gRPC, with
//! `grpc-retry-pushback-ms`) or HTTP 429 (with `retry-after`), naming the
//! limit; nothing is sent to a worker.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::config::LimitsConfig;
use crate::services::http_error::HttpError;

use crate::tenants::{
    CallLimit, Cost, Overloaded, Place, Refusal, Slot, Tenant, Tenants, Ticket, BYTES_PER_TOKEN,
};

/// What admission checks, shared by both listeners: the router's limit on
/// calls in flight, the turn of calls waiting for a worker under
/// `limits.max_in_flight_per_worker`, and the tenants.
#[derive(Debug, Clone)]
pub struct Gates {
    /// The router's limit on calls in flight, and its fair queue.
    pub limit: Arc<CallLimit>,
    /// One call at a time tries again for a busy model's workers, in the
    /// same fair order (see [`until_not_busy`]).
    pub busy: Arc<CallLimit>,
    /// The tenants, by key.
    pub tenants: Arc<Tenants>,
}

impl Gates {
    /// The gates `[limits]` describes, for `tenants`.
    pub fn new(limits: &LimitsConfig, tenants: Arc<Tenants>) -> Self {
        Gates {
            limit: Arc::new(CallLimit::from_config(limits)),
            busy: Arc::new(CallLimit::new(
                1,
                limits.queue_size,
                Duration::from_millis(limits.queue_timeout_ms),
            )),
            tenants,
        }
    }
}

/// How often a call whose turn it is tries a busy model's workers again
/// when no worker has said it finished a call (a wake-up can be missed
/// between a try and the wait).
const BUSY_POLL: Duration = Duration::from_millis(50);

/// Routes a call with `attempt` until its answer is not `busy` (refused
/// because every worker of its model is at
/// `limits.max_in_flight_per_worker`). Such a call
/// waits its turn in `busy` (one call at a time tries again, taken in the
/// fair queue's order: class, then tenant weight and cost, at `place`),
/// then tries whenever a worker at its limit finishes a call (`freed`),
/// for at most `busy`'s timeout or the call's deadline. It is then
/// answered as it was refused.
pub async fn until_not_busy<T, F, Fut>(
    (busy, place, freed): (&Arc<CallLimit>, &Place, &Notify),
    is_busy: impl Fn(&T) -> bool,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    // Calls already waiting for the model's workers go first: a new call
    // tries at once only when none is.
    let waiters = busy.in_flight() > 0 || busy.waiting() > 0;
    let mut last = match waiters {
        true => None,
        false => Some(attempt().await),
    };
    if let Some(answer) = last.take_if(|a| !is_busy(a)) {
        return answer;
    }
    let give_up = tokio::time::Instant::now()
        + place.deadline.map_or(busy.timeout(), |d| {
            d.saturating_duration_since(Instant::now())
                .min(busy.timeout())
        });
    // The queue's own refusal (full, timed out) leaves the call refused as
    // it was (or as it is now, if it did not try yet).
    let Ok(_turn) = busy.acquire(place).await else {
        return match last {
            Some(answer) => answer,
            None => attempt().await,
        };
    };
    loop {
        let notified = freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let answer = attempt().await;
        if !is_busy(&answer) {
            return answer;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(BUSY_POLL) => {}
            () = tokio::time::sleep_until(give_up) => return answer,
        }
    }
}

/// What an admitted call holds until its response ends.
#[derive(Debug)]
pub struct Admitted {
    /// Its slot (`None`: the router has no limit).
    pub slot: Option<Slot>,
    /// Its tenant's charge (`None`: a call of no tenant).
    pub ticket: Option<Ticket>,
}

/// A response body that holds the call's slot and ticket until it is
/// dropped (the body first: its streams count on the ticket's meter).
pub struct Holding {
    body: axum::body::Body,
    _held: (Option<Slot>, Option<Ticket>),
}

impl Holding {
    /// `body`, holding `held` until it is dropped.
    pub fn body(body: axum::body::Body, held: (Option<Slot>, Option<Ticket>)) -> axum::body::Body {
        axum::body::Body::new(Holding { body, _held: held })
    }
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum NotAdmitted {
    /// Over one of its tenant's limits.
    #[error(transparent)]
    Tenant(#[from] Refusal),
    /// The router's queue refused it.
    #[error(transparent)]
    Queue(#[from] Overloaded),
}

impl NotAdmitted {
    /// How long the client should wait before it retries.
    pub fn retry_after(&self) -> Duration {
        match self {
            NotAdmitted::Tenant(r) => r.retry_after(),
            NotAdmitted::Queue(_) => Duration::from_secs(crate::tenants::queue::RETRY_AFTER_SECS),
        }
    }

    /// As gRPC answers it: `RESOURCE_EXHAUSTED`, or `DEADLINE_EXCEEDED` for
    /// a deadline that passed in the queue; the wait as
    /// `grpc-retry-pushback-ms` (gRFC A6) and `retry-after`.
    pub fn status(&self) -> tonic::Status {
        let mut status = match self {
            NotAdmitted::Queue(Overloaded::DeadlinePassed { .. }) => {
                return tonic::Status::deadline_exceeded(self.to_string())
            }
            _ => tonic::Status::resource_exhausted(self.to_string()),
        };
        let wait = self.retry_after();
        let metadata = status.metadata_mut();
        metadata.insert("retry-after", wait.as_secs().max(1).into());
        metadata.insert("grpc-retry-pushback-ms", (wait.as_millis() as u64).into());
        status
    }

    /// As HTTP answers it: 429 with `retry-after` in whole seconds (504 for
    /// a deadline that passed in the queue).
    pub fn http(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let code = match self {
            NotAdmitted::Queue(Overloaded::DeadlinePassed { .. }) => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            _ => http::StatusCode::TOO_MANY_REQUESTS,
        };
        let mut response = HttpError::new(code, self.to_string()).into_response();
        let secs = self.retry_after().as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, secs.into());
        response
    }
}

/// Where a call of `tenant` (if any) costing `cost` waits.
pub fn place_of(tenant: Option<&Arc<Tenant>>, cost: Cost, deadline: Option<Instant>) -> Place {
    match tenant {
        Some(tenant) => tenant.place(cost, deadline),
        None => Place {
            cost: cost.tokens(),
            deadline,
            ..Place::default()
        },
    }
}

/// Admits a call of `tenant` (if any) costing `cost`, which must start
/// before `deadline` (if it says).
pub async fn admit(
    limit: &Arc<CallLimit>,
    tenant: Option<&Arc<Tenant>>,
    cost: Cost,
    deadline: Option<Instant>,
) -> Result<Admitted, NotAdmitted> {
    let Some(tenant) = tenant else {
        let slot = limit.acquire(&place_of(None, cost, deadline)).await?;
        return Ok(Admitted { slot, ticket: None });
    };
    let ticket = tenant.admit(cost)?;
    match limit.acquire_timed(&tenant.place(cost, deadline)).await {
        Ok((slot, waited)) => {
            tenant.stats.waited(waited);
            Ok(Admitted {
                slot,
                ticket: Some(ticket),
            })
        }
        Err(overloaded) => {
            tenant.stats.refused(overloaded.reason());
            ticket.refused();
            Err(overloaded.into())
        }
    }
}

/// What an HTTP inference request costs its tenant: its `input_ids`, or its
/// body's bytes at [`BYTES_PER_TOKEN`] (settled with the engine's count
/// when the router tokenizes), and the tokens it asks for, times `n`.
pub fn cost_of(body: &[u8]) -> Cost {
    #[derive(Deserialize, Default)]
    struct Asked {
        input_ids: Option<Vec<serde::de::IgnoredAny>>,
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        max_output_tokens: Option<u64>,
        max_new_tokens: Option<u64>,
        sampling_params: Option<Sampling>,
        n: Option<u64>,
    }
    #[derive(Deserialize, Default)]
    struct Sampling {
        max_new_tokens: Option<u64>,
    }
    let asked: Asked = serde_json::from_slice(body).unwrap_or_default();
    let prompt = asked.input_ids.as_ref().map_or_else(
        || (body.len() as u64).div_ceil(BYTES_PER_TOKEN),
        |ids| ids.len() as u64,
    );
    let output = asked
        .max_completion_tokens
        .or(asked.max_tokens)
        .or(asked.max_output_tokens)
        .or(asked.max_new_tokens)
        .or(asked.sampling_params.and_then(|s| s.max_new_tokens))
        .unwrap_or(0);
    Cost {
        prompt,
        output: output.saturating_mul(asked.n.unwrap_or(1).clamp(1, 128)),
    }
}

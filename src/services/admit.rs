//! Admitting an inference call, on either listener: its tenant's limits
//! (`tenants`), then a slot among the router's calls in flight, waiting in
//! the fair queue if need be. A refusal is `RESOURCE_EXHAUSTED` (gRPC, with
//! `grpc-retry-pushback-ms`) or HTTP 429 (with `retry-after`), naming the
//! limit; nothing is sent to a worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::services::http_error::HttpError;
use serde::Deserialize;

use crate::tenants::{
    CallLimit, Cost, Overloaded, Place, Refusal, Slot, Tenant, Ticket, BYTES_PER_TOKEN,
};

/// What an admitted call holds until its response ends.
#[derive(Debug)]
pub struct Admitted {
    /// Its slot (`None`: the router has no limit).
    pub slot: Option<Slot>,
    /// Its tenant's charge (`None`: a call of no tenant).
    pub ticket: Option<Ticket>,
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

/// Admits a call of `tenant` (if any) costing `cost`, which must start
/// before `deadline` (if it says).
pub async fn admit(
    limit: &Arc<CallLimit>,
    tenant: Option<&Arc<Tenant>>,
    cost: Cost,
    deadline: Option<Instant>,
) -> Result<Admitted, NotAdmitted> {
    let Some(tenant) = tenant else {
        let place = Place {
            cost: cost.tokens(),
            deadline,
            ..Place::default()
        };
        let slot = limit.acquire(&place).await?;
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

//! Wire ↔ domain conversions, at the service boundary only: proto
//! messages for the gRPC services, JSON shapes for the HTTP API.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::admission::WorkerRequest;
use crate::engines;
use crate::pb;
use crate::worker::{
    CircuitState, ConnectionMode, Engine, Health, SpecError, Worker, WorkerEvent, WorkerEventKind,
    WorkerRole,
};

pub fn role_from_proto(value: i32) -> Result<WorkerRole, SpecError> {
    match pb::WorkerRole::try_from(value) {
        Ok(pb::WorkerRole::Regular) => Ok(WorkerRole::Regular),
        Ok(pb::WorkerRole::Prefill) => Ok(WorkerRole::Prefill),
        Ok(pb::WorkerRole::Decode) => Ok(WorkerRole::Decode),
        Err(_) => Err(SpecError::UnknownRole(value)),
    }
}

pub fn role_to_proto(role: WorkerRole) -> pb::WorkerRole {
    match role {
        WorkerRole::Regular => pb::WorkerRole::Regular,
        WorkerRole::Prefill => pb::WorkerRole::Prefill,
        WorkerRole::Decode => pb::WorkerRole::Decode,
    }
}

pub fn mode_to_proto(mode: ConnectionMode) -> pb::ConnectionMode {
    match mode {
        ConnectionMode::Grpc => pb::ConnectionMode::Grpc,
        ConnectionMode::Http => pb::ConnectionMode::Http,
    }
}

pub fn health_to_proto(health: Health) -> pb::HealthStatus {
    match health {
        Health::Healthy => pb::HealthStatus::Healthy,
        Health::Unhealthy => pb::HealthStatus::Unhealthy,
        Health::Unchecked => pb::HealthStatus::Unchecked,
    }
}

pub fn engine_from_proto(value: i32) -> Result<Option<Engine>, SpecError> {
    engines::from_wire(value).map_err(SpecError::UnknownEngine)
}

pub fn engine_to_proto(engine: Option<Engine>) -> pb::Engine {
    engines::to_wire(engine)
}

impl TryFrom<pb::WorkerSpec> for WorkerRequest {
    type Error = SpecError;

    fn try_from(spec: pb::WorkerSpec) -> Result<Self, SpecError> {
        Ok(WorkerRequest {
            role: role_from_proto(spec.role)?,
            engine: engine_from_proto(spec.engine)?,
            url: spec.url,
            model_id: spec.model_id,
            bootstrap_port: spec.bootstrap_port,
            labels: spec.labels.into_iter().collect(),
        })
    }
}

pub fn worker_info(worker: &Worker) -> pb::WorkerInfo {
    let spec = worker.spec();
    pb::WorkerInfo {
        id: worker.id().to_string(),
        spec: Some(pb::WorkerSpec {
            url: worker.url().to_string(),
            model_id: spec.model_id.clone(),
            role: role_to_proto(spec.role) as i32,
            bootstrap_port: spec.bootstrap_port.map(u32::from),
            labels: spec.labels.clone().into_iter().collect(),
            engine: engine_to_proto(spec.engine) as i32,
        }),
        connection_mode: mode_to_proto(worker.mode()) as i32,
        health: health_to_proto(worker.health()) as i32,
        in_flight: worker.in_flight(),
        load: worker.load(),
        circuit: circuit_to_proto(worker.circuit_state()) as i32,
        circuit_open_ms: worker.circuit_open_for().as_millis() as u64,
        kv_events: kv_events(worker),
        model_info: Some(pb::ModelInfo {
            served_model_name: spec.facts.served_model_name.clone(),
            max_context_length: spec.facts.max_context_length,
        }),
    }
}

fn kv_events(worker: &Worker) -> Option<pb::KvEventStream> {
    use crate::worker::{KvStream, StreamState};
    let stream = worker.kv_stream();
    match stream.state() {
        StreamState::None => None,
        state => Some(pb::KvEventStream {
            state: state.name().into(),
            events: KvStream::get(&stream.events),
            resyncs: KvStream::get(&stream.resyncs),
            reconnects: KvStream::get(&stream.reconnects),
            sequence: KvStream::get(&stream.sequence),
            blocks: KvStream::get(&stream.blocks),
        }),
    }
}

pub fn initial_event(worker: &Arc<Worker>, sequence: u64) -> pb::WorkerEvent {
    pb::WorkerEvent {
        kind: pb::worker_event::Kind::Added as i32,
        worker: Some(worker_info(worker)),
        sequence,
        initial: true,
    }
}

pub fn event(event: &WorkerEvent) -> pb::WorkerEvent {
    use pb::worker_event::Kind;
    let mut info = worker_info(&event.worker);
    let kind = match event.kind {
        WorkerEventKind::Added => Kind::Added,
        WorkerEventKind::Removed => Kind::Removed,
        WorkerEventKind::HealthChanged { healthy } => {
            // The state at the time of the event, not whatever it is now.
            info.health = if healthy {
                pb::HealthStatus::Healthy
            } else {
                pb::HealthStatus::Unhealthy
            } as i32;
            Kind::HealthChanged
        }
        WorkerEventKind::CircuitChanged { state } => {
            info.circuit = circuit_to_proto(state) as i32;
            Kind::CircuitChanged
        }
    };
    pb::WorkerEvent {
        kind: kind as i32,
        worker: Some(info),
        sequence: event.sequence,
        initial: false,
    }
}

fn circuit_to_proto(state: CircuitState) -> pb::CircuitState {
    match state {
        CircuitState::Closed => pb::CircuitState::Closed,
        CircuitState::Open => pb::CircuitState::Open,
        CircuitState::HalfOpen => pb::CircuitState::HalfOpen,
    }
}

/// The most workers one `ListWorkers` answer holds (and the default).
pub const MAX_PAGE: usize = 1000;

/// One page of `workers` (in id order): those after `token` (a worker id,
/// the previous page's last; empty for the first page), at most `size`
/// (0: [`MAX_PAGE`]), and the next page's token (empty on the last page).
pub fn page<'a>(
    workers: impl Iterator<Item = &'a Arc<Worker>>,
    size: usize,
    token: &str,
) -> Result<(Vec<&'a Arc<Worker>>, String), String> {
    let valid = token.is_empty()
        || (token.len() == 18
            && token.starts_with("w-")
            && token[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(format!(
            "invalid page_token {token:?}: pass the next_page_token of the previous answer"
        ));
    }
    let size = if size == 0 {
        MAX_PAGE
    } else {
        size.min(MAX_PAGE)
    };
    let mut rest = workers.skip_while(|w| !token.is_empty() && w.id().as_str() <= token);
    let page: Vec<_> = rest.by_ref().take(size).collect();
    let next = match (rest.next(), page.last()) {
        (Some(_), Some(last)) => last.id().to_string(),
        _ => String::new(),
    };
    Ok((page, next))
}

/// `POST /workers` body (HTTP API): the gRPC `WorkerSpec`, as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSpecJson {
    url: String,
    #[serde(default)]
    model_id: String,
    #[serde(default, deserialize_with = "engine_by_name")]
    engine: Option<Engine>,
    #[serde(default)]
    role: WorkerRole,
    #[serde(default)]
    bootstrap_port: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A worker as the HTTP API shows it (the gRPC `WorkerInfo`, as JSON).
#[derive(Debug, Serialize)]
pub struct WorkerJson {
    id: String,
    url: String,
    model_id: String,
    role: WorkerRole,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_port: Option<u16>,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    served_model_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    max_context_length: u32,
    connection_mode: &'static str,
    health: &'static str,
    in_flight: u32,
    load: u32,
    circuit: &'static str,
    #[serde(skip_serializing_if = "is_zero_u64")]
    circuit_open_ms: u64,
}

/// `w` as the HTTP API shows it.
pub fn worker_json(w: &Worker) -> WorkerJson {
    WorkerJson {
        id: w.id().to_string(),
        url: w.url().to_string(),
        model_id: w.model().to_string(),
        role: w.role(),
        bootstrap_port: w.spec().bootstrap_port,
        labels: w.spec().labels.clone(),
        engine: w.spec().engine.map(Engine::name),
        served_model_name: w.spec().facts.served_model_name.clone(),
        max_context_length: w.spec().facts.max_context_length,
        connection_mode: match w.mode() {
            ConnectionMode::Grpc => "grpc",
            ConnectionMode::Http => "http",
        },
        health: w.health().name(),
        in_flight: w.in_flight(),
        load: w.load(),
        circuit: w.circuit_state().name(),
        circuit_open_ms: w.circuit_open_for().as_millis() as u64,
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// An engine's name in JSON, checked against the engines the router has.
fn engine_by_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Engine>, D::Error> {
    let name = String::deserialize(d)?;
    engines::by_name(&name)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl From<WorkerSpecJson> for WorkerRequest {
    fn from(spec: WorkerSpecJson) -> Self {
        WorkerRequest {
            url: spec.url,
            model_id: spec.model_id,
            role: spec.role,
            bootstrap_port: spec.bootstrap_port,
            labels: spec.labels,
            engine: spec.engine,
        }
    }
}

/// A tenant as `ListTenants` describes it (never its keys).
pub fn tenant_info(t: &crate::tenants::Tenant, routers: u32) -> pb::TenantInfo {
    let c = t.config();
    let (prompt_tokens, output_tokens) = t.stats.tokens();
    pb::TenantInfo {
        name: t.name().to_string(),
        priority: c.priority.name().to_string(),
        weight: c.weight,
        requests_per_second: c.requests_per_second,
        prompt_tokens_per_minute: c.prompt_tokens_per_minute,
        output_tokens_per_minute: c.output_tokens_per_minute,
        max_concurrent: c.max_concurrent.map(|m| m as u64),
        routers,
        in_flight: t.in_flight() as u64,
        calls: t.stats.calls(),
        prompt_tokens,
        output_tokens,
        refused: t
            .stats
            .refusals()
            .map(|(reason, n)| (reason.to_string(), n))
            .collect(),
    }
}

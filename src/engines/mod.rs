//! The engines behind gRPC workers, one file each behind one seam
//! ([`EngineSeam`]): Switchyard's own protocol, SGLang, vLLM, TensorRT-LLM
//! and MLX.
//!
//! Everything that differs by engine is asked of its seam: the service and
//! its paths, the routing view of a `Generate` message, PD, `Abort`,
//! `GetLoads`, `GetModelInfo`, `GetTokenizer`, health, and the translation
//! to and from `switchyard.v1`. Nothing outside this folder matches on an
//! engine. This file lists the engines ([`ALL`]) and makes the few calls
//! the router makes in any engine's protocol (identify, model info,
//! health, abort, forward), through the seam.
//!
//! Adding an engine: its proto in `proto/smg`, its file here, one line in
//! [`ALL`], its value in `switchyard.v1.Engine`.

pub mod mlx;
mod seam;
pub mod sglang;
pub mod switchyard;
pub mod translate;
pub mod trtllm;
pub mod vllm;

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

pub use seam::{tokenized_ids, EngineSeam, Method, PdStyle, Prompt, RankLoad, RequestView};

use crate::pb;
use crate::transport::grpc::Upstream;
use crate::transport::Failure;
use crate::worker::{Engine, ModelFacts, Worker};

/// Every engine, in detection order (the router's own protocol last: a
/// worker that serves an engine's service is that engine).
pub static ALL: [&dyn EngineSeam; 5] = [
    &sglang::Sglang,
    &vllm::Vllm,
    &trtllm::Trtllm,
    &mlx::Mlx,
    &switchyard::Switchyard,
];

/// The seam of `engine`.
pub fn seam(engine: Engine) -> &'static dyn EngineSeam {
    ALL.iter()
        .copied()
        .find(|s| s.engine() == engine)
        .unwrap_or(&switchyard::Switchyard)
}

/// The engine named `name` (any case), or a message listing the names.
pub fn by_name(name: &str) -> Result<Engine, String> {
    ALL.iter()
        .map(|s| s.engine())
        .find(|e| e.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("unknown engine {name:?}: use {}", names(" or ")))
}

/// The engines' names, joined: "switchyard, sglang or vllm" for `" or "`.
pub fn names(last: &str) -> String {
    let mut names: Vec<&str> = ALL.iter().map(|s| s.engine().name()).collect();
    names.rotate_right(1);
    match names.split_last() {
        Some((tail, head)) if !head.is_empty() => format!("{}{last}{tail}", head.join(", ")),
        _ => names.join(""),
    }
}

/// The engine whose service is `service`.
pub fn by_service(service: &str) -> Option<&'static dyn EngineSeam> {
    ALL.iter()
        .copied()
        .find(|s| s.engine().service() == service)
}

/// The engine of a `switchyard.v1.Engine` value (`Ok(None)`: unspecified,
/// detect it), or the message for a value no engine has.
pub fn from_wire(value: i32) -> Result<Option<Engine>, String> {
    if value == pb::Engine::Unspecified as i32 {
        return Ok(None);
    }
    ALL.iter()
        .find(|s| s.wire() as i32 == value)
        .map(|s| Some(s.engine()))
        .ok_or_else(|| {
            let known: Vec<String> = ALL
                .iter()
                .map(|s| format!("{} ({})", s.wire().as_str_name(), s.wire() as i32))
                .collect();
            format!(
                "unknown engine value {value}: use ENGINE_UNSPECIFIED (0, detect), {}",
                known.join(", ")
            )
        })
}

/// The `switchyard.v1.Engine` value of `engine` (`None`: unspecified).
pub fn to_wire(engine: Option<Engine>) -> pb::Engine {
    engine.map_or(pb::Engine::Unspecified, |e| seam(e).wire())
}

/// `grpc.health.v1/Check`.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// Finds a worker's engine: the first of [`ALL`] whose service its
/// `grpc.health.v1` knows (serving or not: a warming engine is still that
/// engine); failing that, whichever engine's `GetModelInfo` it answers.
/// Also whether the engine's service said SERVING, when its health service
/// is what identified it. `Err`: the last failure, and whether the worker
/// answered at all (`false`: unreachable, nothing else was tried).
pub async fn detect(
    upstream: &Upstream,
    timeout: Duration,
) -> Result<(Engine, Option<bool>), (Failure, bool)> {
    let mut last = None;
    for seam in ALL {
        match health(upstream, seam.engine().service(), timeout).await {
            Ok(serving) => return Ok((seam.engine(), Some(serving))),
            // NOT_FOUND: not this service; UNIMPLEMENTED: no health service.
            Err(Failure::Status(status)) if status.code == 5 => {
                last = Some(Failure::Status(status))
            }
            Err(Failure::Status(status)) if status.code == 12 => {
                last = Some(Failure::Status(status));
                break;
            }
            Err(failure) => return Err((failure, false)),
        }
    }
    for seam in ALL {
        if seam.path(Method::GetModelInfo).is_none() {
            continue;
        }
        match model_info(upstream, seam.engine(), timeout).await {
            Ok(_) => return Ok((seam.engine(), None)),
            Err(failure) => last = Some(failure),
        }
    }
    Err((last.unwrap_or(Failure::NoStatus), true))
}

/// `grpc.health.v1/Check` of `service`: whether it is SERVING.
pub async fn health(
    upstream: &Upstream,
    service: &str,
    timeout: Duration,
) -> Result<bool, Failure> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let reply = upstream.unary(HEALTH_CHECK, &request, timeout).await?;
    let response = HealthCheckResponse::decode(reply)
        .map_err(|_| Failure::BadReply("grpc.health.v1.HealthCheckResponse"))?;
    Ok(response.status == ServingStatus::Serving as i32)
}

/// The service name a periodic health check asks a worker of `engine`
/// about, unless the operator configured one.
pub fn health_service(engine: Engine) -> &'static str {
    seam(engine).health_service()
}

/// The engine's `GetModelInfo`: served model name (else the model path)
/// and maximum context length (nothing, for a protocol without it).
pub async fn model_info(
    upstream: &Upstream,
    engine: Engine,
    timeout: Duration,
) -> Result<ModelFacts, Failure> {
    let seam = seam(engine);
    let Some(path) = seam.path(Method::GetModelInfo) else {
        return Ok(ModelFacts::default());
    };
    // Every engine's GetModelInfoRequest is the empty message.
    let reply = upstream.unary_bytes(path, &[], timeout).await?;
    seam.model_info(reply)
}

/// How long the router waits for a worker to acknowledge an `Abort`.
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `worker` its engine's `Abort` for `request_id`, waiting at most
/// [`ABORT_TIMEOUT`]: whether the worker said it had the request (an
/// engine whose reply says nothing counts a delivered abort).
pub async fn abort(worker: &Worker, request_id: &str) -> Result<bool, Failure> {
    let seam = seam(worker.engine());
    let path = seam.path(Method::Abort).ok_or(Failure::NoStatus)?;
    let request = seam.abort_request(request_id);
    let reply = worker
        .control()
        .unary_bytes(path, &request, ABORT_TIMEOUT)
        .await?;
    seam.abort_reply(reply)
}

/// Forwards a unary call's message bytes to `worker` as they are: the
/// reply's message bytes.
pub async fn forward(
    worker: &Worker,
    method: Method,
    message: Bytes,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let engine = worker.engine();
    // A protocol without the method: what its server would answer.
    let path = seam(engine).path(method).ok_or_else(|| {
        Failure::Status(Box::new(crate::transport::WorkerStatus {
            code: 12,
            message: format!("{} workers have no {method:?}", engine.service()),
            trailers: http::HeaderMap::new(),
        }))
    })?;
    worker.control().unary_bytes(path, &message, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_is_found_by_its_name_service_and_wire_value() {
        for s in ALL {
            let e = s.engine();
            assert_eq!(by_name(e.name()).unwrap(), e);
            assert_eq!(by_name(&e.name().to_uppercase()).unwrap(), e);
            assert_eq!(by_service(e.service()).unwrap().engine(), e);
            assert_eq!(from_wire(s.wire() as i32).unwrap(), Some(e));
            assert_eq!(to_wire(Some(e)), s.wire());
            assert_eq!(seam(e).engine(), e);
            assert!(e.generate_path().starts_with(&format!("/{}/", e.service())));
        }
        assert_eq!(from_wire(0).unwrap(), None);
        let err = from_wire(99).unwrap_err();
        assert!(err.contains("ENGINE_SGLANG (2)"), "{err}");
        let err = by_name("tgi").unwrap_err();
        assert!(
            err.contains("switchyard, sglang, vllm, trtllm or mlx"),
            "{err}"
        );
    }

    #[test]
    fn paths_name_the_engines_own_service() {
        for s in ALL {
            for method in [
                Method::Abort,
                Method::GetModelInfo,
                Method::GetServerInfo,
                Method::GetLoads,
                Method::GetTokenizer,
                Method::SubscribeKvEvents,
            ] {
                if let Some(path) = s.path(method) {
                    let service = s.engine().service();
                    assert!(path.starts_with(&format!("/{service}/")), "{path}");
                    assert!(path.ends_with(&format!("{method:?}")), "{path}");
                }
            }
        }
    }
}

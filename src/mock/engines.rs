//! The mock as an SGLang or a vLLM worker: their own gRPC services
//! (`SglangScheduler`, `VllmEngine`) from the published definitions, with
//! the mock's pacing and failure knobs, `Abort`, model and server info,
//! loads, and the PD roles.
//!
//! PD as each engine does it. SGLang: both sides carry the same
//! `disaggregated_params` and rendezvous as the Switchyard mock does.
//! vLLM: the prefill side runs first and its `GenerateComplete` returns
//! `kv_transfer_params_json` naming its bootstrap address and a room it
//! opened; the decode side, sent those parameters, pairs with that room.

use std::sync::atomic::Ordering;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{MockConfig, MockRole, MockService, Piece, SeenRequest};
use crate::pb::smg::grpc::common as smg;
use crate::pb::{self, sglang_scheduler as sgl, vllm_engine as vllm};

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// What every engine's `Generate` records about a call.
fn seen(
    metadata: &tonic::metadata::MetadataMap,
    request_id: &str,
    token_ids: Vec<u32>,
    disaggregated: Option<pb::DisaggregatedParams>,
    kv_transfer_params: Option<String>,
) -> SeenRequest {
    SeenRequest {
        request_id: request_id.to_string(),
        model: String::new(),
        x_request_id: metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        timeout: metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::transport::grpc::metadata::parse_grpc_timeout),
        unknown_fields: bytes::Bytes::new(),
        metadata: metadata
            .clone()
            .into_headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        disaggregated,
        token_ids,
        kv_transfer_params,
    }
}

impl MockService {
    /// Refuses calls while the engine is warming up, as engines do.
    fn warm(&self) -> Result<(), Status> {
        if self.warming() {
            return Err(Status::unavailable(
                "mock engine is warming up: not serving yet",
            ));
        }
        Ok(())
    }

    fn max_tokens(config: &MockConfig, requested: Option<u32>) -> u32 {
        requested.filter(|n| *n > 0).unwrap_or(config.tokens)
    }

    /// Model facts, the same for both engines.
    fn model_name(&self) -> String {
        self.config.load().model.clone()
    }

    fn model_path(&self) -> String {
        let config = self.config.load();
        config
            .model_path
            .clone()
            .unwrap_or_else(|| format!("/models/{}", config.model))
    }

    /// `GetTokenizer`: the tokenizer directory (the model path, when it is
    /// one) zipped, in 16 KiB chunks, the last with the SHA-256.
    fn tokenizer_chunks(&self) -> Result<Stream<smg::GetTokenizerChunk>, Status> {
        let dir = std::path::PathBuf::from(self.model_path());
        if !dir.is_dir() {
            return Err(Status::unimplemented(
                "this mock has no tokenizer (start it with --tokenizer DIR)",
            ));
        }
        let (zip, digest) =
            crate::tokenizer::fetch::pack(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let pieces: Vec<Vec<u8>> = zip.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
        let last = pieces.len().saturating_sub(1);
        let chunks: Vec<Result<smg::GetTokenizerChunk, Status>> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                Ok(smg::GetTokenizerChunk {
                    data,
                    sha256: if i == last {
                        digest.clone()
                    } else {
                        String::new()
                    },
                })
            })
            .collect();
        Ok(Box::pin(tokio_stream::iter(chunks)))
    }

    fn scheduler_load(&self) -> (i32, i32) {
        let running = i32::try_from(self.running().len()).unwrap_or(i32::MAX);
        let waiting = i32::try_from(self.config.load().reported_waiting).unwrap_or(i32::MAX);
        (running, waiting)
    }
}

#[tonic::async_trait]
impl sgl::sglang_scheduler_server::SglangScheduler for MockService {
    async fn generate(
        &self,
        request: Request<sgl::GenerateRequest>,
    ) -> Result<Response<Stream<sgl::GenerateResponse>>, Status> {
        self.warm()?;
        let (metadata, _, request) = request.into_parts();
        let token_ids = request
            .tokenized
            .as_ref()
            .map(|t| t.input_ids.clone())
            .unwrap_or_default();
        let prompt_tokens = token_ids.len() as u32;
        let params = request
            .disaggregated_params
            .as_ref()
            .map(|p| pb::DisaggregatedParams {
                bootstrap_host: p.bootstrap_host.clone(),
                bootstrap_port: u32::try_from(p.bootstrap_port).unwrap_or(0),
                bootstrap_room: u64::try_from(p.bootstrap_room).unwrap_or(0),
            });
        let record = seen(
            &metadata,
            &request.request_id,
            token_ids,
            params.clone(),
            None,
        );
        let config = self.admit(record, params.as_ref()).await?;
        let tokens = Self::max_tokens(
            &config,
            request
                .sampling_params
                .as_ref()
                .and_then(|s| s.max_new_tokens),
        );
        let request_id = request.request_id.clone();
        let ids = config.clone();
        let encode = move |piece: Piece| {
            use sgl::generate_response::Response as R;
            let response = match piece {
                Piece::Token(i, _) => R::Chunk(sgl::GenerateStreamChunk {
                    token_ids: vec![ids.token_id(i)],
                    prompt_tokens,
                    completion_tokens: i + 1,
                    ..Default::default()
                }),
                Piece::Finish(reason, completion) => R::Complete(sgl::GenerateComplete {
                    output_ids: (0..completion).map(|i| ids.token_id(i)).collect(),
                    finish_reason: reason.into(),
                    prompt_tokens,
                    completion_tokens: completion,
                    ..Default::default()
                }),
                Piece::Fail(message) => return Err(Status::internal(message)),
            };
            Ok(sgl::GenerateResponse {
                request_id: request_id.clone(),
                response: Some(response),
            })
        };
        let rx = self.spawn_generation(config, request.request_id, tokens, encode);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn health_check(
        &self,
        _: Request<sgl::HealthCheckRequest>,
    ) -> Result<Response<sgl::HealthCheckResponse>, Status> {
        // SGLang's runs a one-token generation: count it as a call.
        self.stats.health_generations.fetch_add(1, Ordering::SeqCst);
        let healthy = !self.warming() && !self.config.load().unhealthy;
        Ok(Response::new(sgl::HealthCheckResponse {
            healthy,
            message: if healthy { "ok" } else { "not serving" }.into(),
        }))
    }

    async fn abort(
        &self,
        request: Request<sgl::AbortRequest>,
    ) -> Result<Response<sgl::AbortResponse>, Status> {
        let found = self.abort_request(&request.into_inner().request_id);
        Ok(Response::new(sgl::AbortResponse {
            success: found,
            message: if found { "aborted" } else { "no such request" }.into(),
        }))
    }

    async fn get_model_info(
        &self,
        _: Request<sgl::GetModelInfoRequest>,
    ) -> Result<Response<sgl::GetModelInfoResponse>, Status> {
        Ok(Response::new(sgl::GetModelInfoResponse {
            model_path: self.model_path(),
            tokenizer_path: self.model_path(),
            served_model_name: self.model_name(),
            is_generation: true,
            max_context_length: 8192,
            vocab_size: 32000,
            ..Default::default()
        }))
    }

    async fn get_tokenizer(
        &self,
        _: Request<smg::GetTokenizerRequest>,
    ) -> Result<Response<Stream<smg::GetTokenizerChunk>>, Status> {
        self.tokenizer_chunks().map(Response::new)
    }

    async fn get_server_info(
        &self,
        _: Request<sgl::GetServerInfoRequest>,
    ) -> Result<Response<sgl::GetServerInfoResponse>, Status> {
        Ok(Response::new(sgl::GetServerInfoResponse {
            active_requests: self.scheduler_load().0,
            sglang_version: format!("mock-{}", self.config.load().name),
            server_type: "grpc".into(),
            ..Default::default()
        }))
    }

    async fn get_loads(
        &self,
        _: Request<sgl::GetLoadsRequest>,
    ) -> Result<Response<sgl::GetLoadsResponse>, Status> {
        let (running, waiting) = self.scheduler_load();
        Ok(Response::new(sgl::GetLoadsResponse {
            version: format!("mock-{}", self.config.load().name),
            dp_rank_count: 1,
            loads: vec![sgl::SchedulerLoad {
                num_running_reqs: running,
                num_waiting_reqs: waiting,
                num_total_reqs: running + waiting,
                ..Default::default()
            }],
            aggregate: Some(sgl::AggregateMetrics {
                total_running_reqs: running,
                total_waiting_reqs: waiting,
                total_reqs: running + waiting,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl vllm::vllm_engine_server::VllmEngine for MockService {
    async fn generate(
        &self,
        request: Request<vllm::GenerateRequest>,
    ) -> Result<Response<Stream<vllm::GenerateResponse>>, Status> {
        self.warm()?;
        let (metadata, _, request) = request.into_parts();
        let token_ids = match &request.input {
            Some(vllm::generate_request::Input::Tokenized(t)) => t.input_ids.clone(),
            _ => Vec::new(),
        };
        let prompt_tokens = match &request.input {
            Some(vllm::generate_request::Input::Text(t)) => t.split_whitespace().count() as u32,
            _ => token_ids.len() as u32,
        };
        let kv = request.kv_transfer_params_json.clone();
        let config = self.config.load_full();
        // vLLM's PD: the decode side is sent what the prefill side
        // returned; the prefill side opens a room on its bootstrap port.
        let (params, prefill_room) = match (config.role, &kv) {
            (MockRole::Decode, Some(json)) => (Some(parse_kv_params(json)?), None),
            (MockRole::Prefill { .. }, _) => {
                let room = u64::from(rand::random::<u32>()) + 1;
                (
                    Some(pb::DisaggregatedParams {
                        bootstrap_room: room,
                        ..Default::default()
                    }),
                    Some(room),
                )
            }
            _ => (None, None),
        };
        let record = seen(
            &metadata,
            &request.request_id,
            token_ids,
            params.clone(),
            kv,
        );
        let config = self.admit(record, params.as_ref()).await?;
        let mut tokens = Self::max_tokens(
            &config,
            request.sampling_params.as_ref().and_then(|s| s.max_tokens),
        );
        let kv_out = prefill_room.map(|room| {
            // The prefill side computes the prompt and one token.
            tokens = 1;
            serde_json::json!({
                "remote_host": self.bootstrap_host.to_string(),
                "remote_port": self.bootstrap_port,
                "remote_room": room,
            })
            .to_string()
        });
        let ids = config.clone();
        let encode = move |piece: Piece| {
            use vllm::generate_response::Response as R;
            let response = match piece {
                Piece::Token(i, _) => R::Chunk(vllm::GenerateStreamChunk {
                    token_ids: vec![ids.token_id(i)],
                    prompt_tokens,
                    completion_tokens: i + 1,
                    ..Default::default()
                }),
                Piece::Finish(reason, completion) => R::Complete(vllm::GenerateComplete {
                    output_ids: (0..completion).map(|i| ids.token_id(i)).collect(),
                    finish_reason: reason.into(),
                    prompt_tokens,
                    completion_tokens: completion,
                    kv_transfer_params_json: kv_out.clone(),
                    ..Default::default()
                }),
                Piece::Fail(message) => return Err(Status::internal(message)),
            };
            Ok(vllm::GenerateResponse {
                response: Some(response),
            })
        };
        let rx = self.spawn_generation(config, request.request_id, tokens, encode);
        let stream = ReceiverStream::new(rx);
        if request.stream {
            return Ok(Response::new(Box::pin(stream)));
        }
        // Not streaming: the completion only.
        Ok(Response::new(Box::pin(stream.filter(|r| {
            !matches!(
                r,
                Ok(vllm::GenerateResponse {
                    response: Some(vllm::generate_response::Response::Chunk(_))
                })
            )
        }))))
    }

    async fn health_check(
        &self,
        _: Request<vllm::HealthCheckRequest>,
    ) -> Result<Response<vllm::HealthCheckResponse>, Status> {
        self.stats.health_generations.fetch_add(1, Ordering::SeqCst);
        let healthy = !self.warming() && !self.config.load().unhealthy;
        Ok(Response::new(vllm::HealthCheckResponse {
            healthy,
            message: if healthy { "ok" } else { "not serving" }.into(),
        }))
    }

    async fn abort(
        &self,
        request: Request<vllm::AbortRequest>,
    ) -> Result<Response<vllm::AbortResponse>, Status> {
        for id in request.into_inner().request_ids {
            self.abort_request(&id);
        }
        Ok(Response::new(vllm::AbortResponse {}))
    }

    async fn get_model_info(
        &self,
        _: Request<vllm::GetModelInfoRequest>,
    ) -> Result<Response<vllm::GetModelInfoResponse>, Status> {
        Ok(Response::new(vllm::GetModelInfoResponse {
            model_path: self.model_path(),
            tokenizer_path: self.model_path(),
            served_model_name: self.model_name(),
            is_generation: true,
            max_context_length: 4096,
            vocab_size: 32000,
            ..Default::default()
        }))
    }

    async fn get_tokenizer(
        &self,
        _: Request<smg::GetTokenizerRequest>,
    ) -> Result<Response<Stream<smg::GetTokenizerChunk>>, Status> {
        self.tokenizer_chunks().map(Response::new)
    }

    async fn get_server_info(
        &self,
        _: Request<vllm::GetServerInfoRequest>,
    ) -> Result<Response<vllm::GetServerInfoResponse>, Status> {
        Ok(Response::new(vllm::GetServerInfoResponse {
            active_requests: u32::try_from(self.scheduler_load().0).unwrap_or(0),
            server_type: "vllm-grpc".into(),
            ..Default::default()
        }))
    }

    async fn get_loads(
        &self,
        _: Request<vllm::GetLoadsRequest>,
    ) -> Result<Response<vllm::GetLoadsResponse>, Status> {
        let (running, waiting) = self.scheduler_load();
        Ok(Response::new(vllm::GetLoadsResponse {
            version: format!("mock-{}", self.config.load().name),
            dp_rank_count: 1,
            loads: vec![vllm::SchedulerLoad {
                num_running_reqs: running,
                num_waiting_reqs: waiting,
                ..Default::default()
            }],
            ..Default::default()
        }))
    }
}

/// The decode side's bootstrap parameters from vLLM-style KV-transfer JSON.
fn parse_kv_params(json: &str) -> Result<pb::DisaggregatedParams, Status> {
    let bad = |why: &str| {
        Status::invalid_argument(format!(
            "kv_transfer_params_json {json:?}: {why} (expected remote_host, remote_port, remote_room)"
        ))
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| bad("not JSON"))?;
    Ok(pb::DisaggregatedParams {
        bootstrap_host: value["remote_host"]
            .as_str()
            .ok_or_else(|| bad("no remote_host"))?
            .to_string(),
        bootstrap_port: value["remote_port"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| bad("no remote_port"))?,
        bootstrap_room: value["remote_room"]
            .as_u64()
            .ok_or_else(|| bad("no remote_room"))?,
    })
}

//! The mock as vLLM (`VllmEngine`). PD: the prefill side runs first and
//! its `GenerateComplete` returns `kv_transfer_params_json` naming its
//! bootstrap address and a room it opened; the decode side, sent those
//! parameters, pairs with that room.

use std::sync::atomic::Ordering;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{seen, Stream};
use crate::mock::{MockRole, MockService, Piece};
use crate::pb::smg::grpc::common as smg;
use crate::pb::{self, vllm_engine as vllm};

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
        let mut record = seen(
            &metadata,
            &request.request_id,
            token_ids,
            params.clone(),
            kv,
        );
        record.sampling = request
            .sampling_params
            .as_ref()
            .map(|p| prost::Message::encode_to_vec(p).into());
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
        // Log probabilities, when asked: how many alternatives.
        let logprobs = request
            .sampling_params
            .as_ref()
            .and_then(|s| s.logprobs)
            .map(|n| u32::try_from(n).unwrap_or(0));
        let ids = config.clone();
        let encode = move |piece: Piece| {
            use vllm::generate_response::Response as R;
            let response = match piece {
                Piece::Token(i, _) => R::Chunk(vllm::GenerateStreamChunk {
                    token_ids: vec![ids.token_id(i)],
                    prompt_tokens,
                    completion_tokens: i + 1,
                    output_logprobs: logprobs.map(|top| {
                        let id = ids.token_id(i);
                        let (own, alternatives) = super::mock_logprobs(id, i, top);
                        vllm::OutputLogProbs {
                            token_logprobs: vec![own],
                            token_ids: vec![id],
                            top_logprobs: vec![vllm::TopLogProbs {
                                values: alternatives.iter().map(|a| a.0).collect(),
                                token_ids: alternatives.iter().map(|a| a.1).collect(),
                            }],
                        }
                    }),
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

//! The mock as TensorRT-LLM (`trtllm.TrtllmService`): token ids in, a
//! stream of token-id deltas out, `max_tokens` as the call sets it, each
//! token's log probabilities when `output_config.logprobs` asks.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{seen, Stream};
use crate::mock::{MockService, Piece};
use crate::pb::smg::grpc::common as smg;
use crate::pb::trtllm;

#[tonic::async_trait]
impl trtllm::trtllm_service_server::TrtllmService for MockService {
    async fn generate(
        &self,
        request: Request<trtllm::GenerateRequest>,
    ) -> Result<Response<Stream<trtllm::GenerateResponse>>, Status> {
        self.warm()?;
        let (metadata, _, request) = request.into_parts();
        let token_ids = request
            .tokenized
            .as_ref()
            .map(|t| t.input_token_ids.clone())
            .unwrap_or_default();
        let prompt_tokens = token_ids.len() as u32;
        let record = seen(&metadata, &request.request_id, token_ids, None, None);
        let config = self.admit(record, None).await?;
        let tokens = Self::max_tokens(&config, Some(request.max_tokens));
        let logprobs = request
            .output_config
            .as_ref()
            .and_then(|o| o.logprobs)
            .map(|top| u32::try_from(top).unwrap_or(0));
        let request_id = request.request_id.clone();
        let ids = config.clone();
        let encode = move |piece: Piece| {
            use trtllm::generate_response::Response as R;
            let response = match piece {
                Piece::Token(i, _) => {
                    let id = ids.token_id(i);
                    R::Chunk(trtllm::GenerateStreamChunk {
                        token_ids: vec![id],
                        prompt_tokens,
                        completion_tokens: i + 1,
                        logprobs: logprobs
                            .map(|top| {
                                let (own, alternatives) = super::mock_logprobs(id, i, top);
                                vec![trtllm::TokenLogprob {
                                    token_id: id,
                                    logprob: own,
                                    top_logprobs: alternatives
                                        .into_iter()
                                        .map(|(logprob, token_id)| trtllm::TopLogprob {
                                            token_id,
                                            logprob,
                                        })
                                        .collect(),
                                }]
                            })
                            .unwrap_or_default(),
                        ..Default::default()
                    })
                }
                Piece::Finish(reason, completion) => R::Complete(trtllm::GenerateComplete {
                    output_token_ids: (0..completion).map(|i| ids.token_id(i)).collect(),
                    finish_reason: reason.into(),
                    prompt_tokens,
                    completion_tokens: completion,
                    ..Default::default()
                }),
                Piece::Fail(message) => return Err(Status::internal(message)),
            };
            Ok(trtllm::GenerateResponse {
                request_id: request_id.clone(),
                response: Some(response),
            })
        };
        let rx = self.spawn_generation(config, request.request_id, tokens, encode);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn health_check(
        &self,
        _: Request<trtllm::HealthCheckRequest>,
    ) -> Result<Response<trtllm::HealthCheckResponse>, Status> {
        let healthy = !self.warming() && !self.config.load().unhealthy;
        Ok(Response::new(trtllm::HealthCheckResponse {
            status: if healthy { "OK" } else { "not serving" }.into(),
        }))
    }

    async fn abort(
        &self,
        request: Request<trtllm::AbortRequest>,
    ) -> Result<Response<trtllm::AbortResponse>, Status> {
        let found = self.abort_request(&request.into_inner().request_id);
        Ok(Response::new(trtllm::AbortResponse {
            success: found,
            message: if found { "aborted" } else { "no such request" }.into(),
        }))
    }

    async fn get_model_info(
        &self,
        _: Request<trtllm::GetModelInfoRequest>,
    ) -> Result<Response<trtllm::GetModelInfoResponse>, Status> {
        Ok(Response::new(trtllm::GetModelInfoResponse {
            model_id: self.model_name(),
            max_input_len: 4096,
            max_seq_len: 8192,
            max_batch_size: 64,
            vocab_size: 32000,
            ..Default::default()
        }))
    }

    async fn get_server_info(
        &self,
        _: Request<trtllm::GetServerInfoRequest>,
    ) -> Result<Response<trtllm::GetServerInfoResponse>, Status> {
        Ok(Response::new(trtllm::GetServerInfoResponse {
            version: format!("mock-{}", self.config.load().name),
            backend: "pytorch".into(),
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            context_parallel_size: 1,
            world_size: 1,
        }))
    }

    async fn get_tokenizer(
        &self,
        _: Request<smg::GetTokenizerRequest>,
    ) -> Result<Response<Stream<smg::GetTokenizerChunk>>, Status> {
        self.tokenizer_chunks().map(Response::new)
    }
}

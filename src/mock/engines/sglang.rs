//! The mock as SGLang (`SglangScheduler`). PD: both sides carry the same
//! `disaggregated_params` and rendezvous as the Switchyard mock does.

use std::sync::atomic::Ordering;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{seen, Stream};
use crate::mock::{MockService, Piece};
use crate::pb::smg::grpc::common as smg;
use crate::pb::{self, sglang_scheduler as sgl};

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
        let mut record = seen(
            &metadata,
            &request.request_id,
            token_ids,
            params.clone(),
            None,
        );
        record.sampling = request
            .sampling_params
            .as_ref()
            .map(|p| prost::Message::encode_to_vec(p).into());
        let config = self.admit(record, params.as_ref()).await?;
        let tokens = Self::max_tokens(
            &config,
            request
                .sampling_params
                .as_ref()
                .and_then(|s| s.max_new_tokens),
        );
        let request_id = request.request_id.clone();
        // Log probabilities, when asked: how many alternatives.
        let logprobs = request
            .return_logprob
            .then(|| u32::try_from(request.top_logprobs_num).unwrap_or(0));
        let ids = config.clone();
        let encode = move |piece: Piece| {
            use sgl::generate_response::Response as R;
            let response = match piece {
                Piece::Token(i, _) => R::Chunk(sgl::GenerateStreamChunk {
                    token_ids: vec![ids.token_id(i)],
                    prompt_tokens,
                    completion_tokens: i + 1,
                    output_logprobs: logprobs.map(|top| {
                        let id = ids.token_id(i);
                        let (own, alternatives) = super::mock_logprobs(id, i, top);
                        sgl::OutputLogProbs {
                            token_logprobs: vec![own],
                            token_ids: vec![id],
                            top_logprobs: vec![sgl::TopLogProbs {
                                values: alternatives.iter().map(|a| a.0).collect(),
                                token_ids: alternatives.iter().map(|a| a.1).collect(),
                            }],
                            ..Default::default()
                        }
                    }),
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

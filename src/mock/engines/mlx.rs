//! The mock as MLX (`mlx.grpc.engine.MlxEngine`): token ids or text in, a
//! stream of token ids out (its responses carry no request id).

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{seen, Stream};
use crate::mock::{MockService, Piece};
use crate::pb::mlx_engine as mlx;
use crate::pb::smg::grpc::common as smg;

#[tonic::async_trait]
impl mlx::mlx_engine_server::MlxEngine for MockService {
    async fn generate(
        &self,
        request: Request<mlx::GenerateRequest>,
    ) -> Result<Response<Stream<mlx::GenerateResponse>>, Status> {
        self.warm()?;
        let (metadata, _, request) = request.into_parts();
        let token_ids = match &request.input {
            Some(mlx::generate_request::Input::Tokenized(t)) => t.input_ids.clone(),
            _ => Vec::new(),
        };
        let prompt_tokens = match &request.input {
            Some(mlx::generate_request::Input::Text(t)) => t.split_whitespace().count() as u32,
            _ => token_ids.len() as u32,
        };
        let record = seen(&metadata, &request.request_id, token_ids, None, None);
        let config = self.admit(record, None).await?;
        let tokens = Self::max_tokens(
            &config,
            request.sampling_params.as_ref().and_then(|s| s.max_tokens),
        );
        let ids = config.clone();
        let encode = move |piece: Piece| {
            use mlx::generate_response::Response as R;
            let response = match piece {
                Piece::Token(i, _) => R::Chunk(mlx::GenerateStreamChunk {
                    token_ids: vec![ids.token_id(i)],
                    prompt_tokens,
                    completion_tokens: i + 1,
                    ..Default::default()
                }),
                Piece::Finish(reason, completion) => R::Complete(mlx::GenerateComplete {
                    output_ids: (0..completion).map(|i| ids.token_id(i)).collect(),
                    finish_reason: reason.into(),
                    prompt_tokens,
                    completion_tokens: completion,
                    ..Default::default()
                }),
                Piece::Fail(message) => return Err(Status::internal(message)),
            };
            Ok(mlx::GenerateResponse {
                response: Some(response),
            })
        };
        let rx = self.spawn_generation(config, request.request_id, tokens, encode);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn health_check(
        &self,
        _: Request<mlx::HealthCheckRequest>,
    ) -> Result<Response<mlx::HealthCheckResponse>, Status> {
        let healthy = !self.warming() && !self.config.load().unhealthy;
        Ok(Response::new(mlx::HealthCheckResponse {
            healthy,
            message: if healthy { "ok" } else { "not serving" }.into(),
        }))
    }

    async fn abort(
        &self,
        request: Request<mlx::AbortRequest>,
    ) -> Result<Response<mlx::AbortResponse>, Status> {
        for id in request.into_inner().request_ids {
            self.abort_request(&id);
        }
        Ok(Response::new(mlx::AbortResponse {}))
    }

    async fn get_model_info(
        &self,
        _: Request<mlx::GetModelInfoRequest>,
    ) -> Result<Response<mlx::GetModelInfoResponse>, Status> {
        Ok(Response::new(mlx::GetModelInfoResponse {
            model_path: self.model_path(),
            served_model_name: self.model_name(),
            is_generation: true,
            max_context_length: 4096,
            vocab_size: 32000,
            ..Default::default()
        }))
    }

    async fn get_server_info(
        &self,
        _: Request<mlx::GetServerInfoRequest>,
    ) -> Result<Response<mlx::GetServerInfoResponse>, Status> {
        Ok(Response::new(mlx::GetServerInfoResponse {
            server_type: "mlx-grpc".into(),
            active_requests: u32::try_from(self.scheduler_load().0).unwrap_or(0),
            uptime_seconds: 0.0,
        }))
    }

    async fn get_tokenizer(
        &self,
        _: Request<smg::GetTokenizerRequest>,
    ) -> Result<Response<Stream<smg::GetTokenizerChunk>>, Status> {
        self.tokenizer_chunks().map(Response::new)
    }
}

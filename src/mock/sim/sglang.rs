//! The simulated engine over SGLang's protocol (`SglangScheduler`):
//! `Generate` on token ids (streamed every `stream_interval` tokens, with
//! `cached_tokens`), `Abort`, `HealthCheck`, `GetModelInfo`,
//! `GetServerInfo`, `GetLoads` and `FlushCache` from the simulated state,
//! `GetTokenizer`, and `SubscribeKvEvents`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{Progress, SimEngine};
use crate::pb::sglang_scheduler as sgl;
use crate::pb::smg::grpc::common as smg;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The service: a handle on one engine.
#[derive(Debug, Clone)]
pub struct SimSglang(pub Arc<SimEngine>);

impl SimSglang {
    /// The `i`th generated token id (deterministic in the seed).
    fn token(&self, i: u32) -> u32 {
        if let Some(ids) = self
            .0
            .config
            .reply_ids
            .as_ref()
            .filter(|ids| !ids.is_empty())
        {
            return ids[i as usize % ids.len()];
        }
        let x = (self.0.config.seed ^ u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        1000 + (x >> 40) as u32 % 30_000
    }
}

#[tonic::async_trait]
impl sgl::sglang_scheduler_server::SglangScheduler for SimSglang {
    async fn generate(
        &self,
        request: Request<sgl::GenerateRequest>,
    ) -> Result<Response<Out<sgl::GenerateResponse>>, Status> {
        let request = request.into_inner();
        let ids = request
            .tokenized
            .map(|t| t.input_ids)
            .filter(|ids| !ids.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(
                    "the simulated engine takes token ids (tokenized.input_ids); it has no tokenizer of its own",
                )
            })?;
        let max_new = request
            .sampling_params
            .and_then(|s| s.max_new_tokens)
            .filter(|n| *n > 0)
            .unwrap_or(self.0.config.default_max_tokens);
        let prompt_tokens = ids.len() as u32;
        let mut rx = self.0.submit(&request.request_id, ids.into(), max_new);
        let interval = self.0.config.stream_interval.max(1);
        let this = self.clone();
        let request_id = request.request_id;
        let stopped = self.0.stopped();
        let stream = async_stream(move |tx| async move {
            tokio::pin!(stopped);
            let mut sent = 0u32;
            let mut cached_tokens = 0;
            loop {
                let progress = tokio::select! {
                    p = rx.recv() => p,
                    _ = &mut stopped => None,
                };
                let Some(progress) = progress else { break };
                use sgl::generate_response::Response as R;
                let response = match progress {
                    Progress::Tokens { n, cached } => {
                        cached_tokens = cached;
                        if n != 1 && n != max_new && (n - sent) < interval {
                            continue;
                        }
                        let chunk = R::Chunk(sgl::GenerateStreamChunk {
                            token_ids: (sent..n).map(|i| this.token(i)).collect(),
                            prompt_tokens,
                            completion_tokens: n,
                            cached_tokens,
                            ..Default::default()
                        });
                        sent = n;
                        chunk
                    }
                    Progress::Finished => R::Complete(sgl::GenerateComplete {
                        output_ids: (0..sent).map(|i| this.token(i)).collect(),
                        finish_reason: "length".into(),
                        prompt_tokens,
                        completion_tokens: sent,
                        cached_tokens,
                        ..Default::default()
                    }),
                };
                let done = matches!(response, R::Complete(_));
                let message = sgl::GenerateResponse {
                    request_id: request_id.clone(),
                    response: Some(response),
                };
                if tx.send(Ok(message)).await.is_err() || done {
                    break;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn health_check(
        &self,
        _: Request<sgl::HealthCheckRequest>,
    ) -> Result<Response<sgl::HealthCheckResponse>, Status> {
        Ok(Response::new(sgl::HealthCheckResponse {
            healthy: true,
            message: "ok".into(),
        }))
    }

    async fn abort(
        &self,
        request: Request<sgl::AbortRequest>,
    ) -> Result<Response<sgl::AbortResponse>, Status> {
        let found = self.0.abort(&request.into_inner().request_id);
        Ok(Response::new(sgl::AbortResponse {
            success: found,
            message: if found { "aborted" } else { "no such request" }.into(),
        }))
    }

    async fn get_model_info(
        &self,
        _: Request<sgl::GetModelInfoRequest>,
    ) -> Result<Response<sgl::GetModelInfoResponse>, Status> {
        let config = &self.0.config;
        let path = config.tokenizer.as_ref().map_or_else(
            || format!("/models/{}", config.model),
            |p| p.display().to_string(),
        );
        Ok(Response::new(sgl::GetModelInfoResponse {
            model_path: path.clone(),
            tokenizer_path: path,
            served_model_name: config.model.clone(),
            is_generation: true,
            max_context_length: 131_072,
            max_req_input_len: 131_072,
            vocab_size: 128_256,
            model_type: "llama".into(),
            architectures: vec!["LlamaForCausalLM".into()],
            ..Default::default()
        }))
    }

    async fn get_server_info(
        &self,
        _: Request<sgl::GetServerInfoRequest>,
    ) -> Result<Response<sgl::GetServerInfoResponse>, Status> {
        let load = self.0.load();
        Ok(Response::new(sgl::GetServerInfoResponse {
            active_requests: (load.running_requests + load.waiting_requests) as i32,
            sglang_version: "switchyard-sim".into(),
            server_type: "grpc".into(),
            ..Default::default()
        }))
    }

    async fn get_loads(
        &self,
        _: Request<sgl::GetLoadsRequest>,
    ) -> Result<Response<sgl::GetLoadsResponse>, Status> {
        let load = self.0.load();
        let (running, waiting) = (load.running_requests as i32, load.waiting_requests as i32);
        Ok(Response::new(sgl::GetLoadsResponse {
            version: "switchyard-sim".into(),
            dp_rank_count: 1,
            loads: vec![sgl::SchedulerLoad {
                num_running_reqs: running,
                num_waiting_reqs: waiting,
                num_total_reqs: running + waiting,
                num_used_tokens: load.num_used_tokens.unwrap_or(0),
                max_total_num_tokens: load.max_total_num_tokens.unwrap_or(0),
                token_usage: load.token_usage,
                gen_throughput: load.gen_throughput,
                cache_hit_rate: load.cache_hit_rate.unwrap_or(0.0),
                max_running_requests: load.max_running_requests as i32,
                num_waiting_uncached_tokens: load.waiting_uncached_tokens.unwrap_or(0) as i32,
                ..Default::default()
            }],
            aggregate: Some(sgl::AggregateMetrics {
                total_running_reqs: running,
                total_waiting_reqs: waiting,
                total_reqs: running + waiting,
                avg_token_usage: load.token_usage,
                avg_throughput: load.gen_throughput,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn flush_cache(
        &self,
        _: Request<smg::FlushCacheRequest>,
    ) -> Result<Response<smg::FlushCacheResponse>, Status> {
        let success = self.0.flush();
        Ok(Response::new(smg::FlushCacheResponse {
            success,
            message: if success {
                "flushed"
            } else {
                "requests are running: not flushed"
            }
            .into(),
        }))
    }

    async fn get_tokenizer(
        &self,
        _: Request<smg::GetTokenizerRequest>,
    ) -> Result<Response<Out<smg::GetTokenizerChunk>>, Status> {
        let Some(dir) = self.0.config.tokenizer.clone() else {
            return Err(Status::unimplemented(
                "this simulated engine has no tokenizer (start it with --tokenizer DIR)",
            ));
        };
        crate::mock::engines::tokenizer_chunks(&dir).map(Response::new)
    }

    async fn subscribe_kv_events(
        &self,
        request: Request<smg::SubscribeKvEventsRequest>,
    ) -> Result<Response<Out<smg::KvEventBatch>>, Status> {
        let start = request.into_inner().start_sequence_number;
        let engine = self.0.clone();
        let (first, live) = self.0.events().subscribe(start, || engine.snapshot());
        let first = tokio_stream::iter(first.into_iter().map(|b| Ok((*b).clone())));
        // A subscriber that falls too far behind is cut off: it resumes from
        // its cursor, out of the history.
        let live = tokio_stream::wrappers::BroadcastStream::new(live).map_while(|b| match b {
            Ok(batch) => Some(Ok((*batch).clone())),
            Err(_) => None,
        });
        let mut batches = Box::pin(first.chain(live));
        let stopped = self.0.stopped();
        Ok(Response::new(async_stream(move |tx| async move {
            tokio::pin!(stopped);
            loop {
                let batch = tokio::select! {
                    b = batches.next() => b,
                    _ = &mut stopped => None,
                };
                let Some(batch) = batch else { break };
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        })))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<T, F, Fut>(body: F) -> Out<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

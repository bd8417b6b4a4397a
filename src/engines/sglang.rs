//! SGLang in gRPC mode (`sglang serve --grpc-mode`):
//! `sglang.grpc.scheduler.SglangScheduler`, from the published
//! `proto/smg/sglang_scheduler.proto`.
//!
//! Token ids only (no text prompts); PD by bootstrap host, port and an
//! int32 room the router picks (a duplicate room crashes SGLang's
//! schedulers); `GetLoads` with per-rank loads and an aggregate.

use bytes::Bytes;
use prost::Message;

use super::seam::{EngineSeam, Method, PdStyle, Prompt, RankLoad, RequestView};
use super::translate::{Constraint, Input, Sampling, TranslateError};
use crate::pb::{self, sglang_scheduler as sglang};
use crate::transport::Failure;
use crate::worker::{Engine, EngineName, ModelFacts};

static NAME: EngineName = EngineName {
    name: "sglang",
    service: "sglang.grpc.scheduler.SglangScheduler",
    generate_path: "/sglang.grpc.scheduler.SglangScheduler/Generate",
};

/// SGLang's protocol.
#[derive(Debug)]
pub struct Sglang;

/// The routing fields of SGLang's `GenerateRequest` (`request_id` = 1,
/// `tokenized` = 2), the prompt left encoded; every other field is skipped
/// unread.
#[derive(Clone, PartialEq, prost::Message)]
struct View {
    #[prost(string, tag = "1")]
    request_id: String,
    #[prost(bytes = "bytes", tag = "2")]
    tokenized: Bytes,
}

impl EngineSeam for Sglang {
    fn engine(&self) -> Engine {
        Engine::new(&NAME)
    }

    fn wire(&self) -> pb::Engine {
        pb::Engine::Sglang
    }

    fn path(&self, method: Method) -> Option<&'static str> {
        Some(match method {
            Method::Abort => "/sglang.grpc.scheduler.SglangScheduler/Abort",
            Method::GetModelInfo => "/sglang.grpc.scheduler.SglangScheduler/GetModelInfo",
            Method::GetServerInfo => "/sglang.grpc.scheduler.SglangScheduler/GetServerInfo",
            Method::GetLoads => "/sglang.grpc.scheduler.SglangScheduler/GetLoads",
            Method::GetTokenizer => "/sglang.grpc.scheduler.SglangScheduler/GetTokenizer",
            Method::SubscribeKvEvents => "/sglang.grpc.scheduler.SglangScheduler/SubscribeKvEvents",
        })
    }

    fn model_info(&self, reply: Bytes) -> Result<ModelFacts, Failure> {
        let info = sglang::GetModelInfoResponse::decode(reply)
            .map_err(|_| Failure::BadReply("sglang GetModelInfoResponse"))?;
        Ok(ModelFacts {
            served_model_name: super::seam::model_name(info.served_model_name, info.model_path),
            max_context_length: u32::try_from(info.max_context_length).unwrap_or(0),
        })
    }

    fn abort_request(&self, request_id: &str) -> Vec<u8> {
        sglang::AbortRequest {
            request_id: request_id.to_string(),
            reason: "cancelled by the client".into(),
        }
        .encode_to_vec()
    }

    fn abort_reply(&self, reply: Bytes) -> Result<bool, Failure> {
        Ok(sglang::AbortResponse::decode(reply)
            .map_err(|_| Failure::BadReply("sglang AbortResponse"))?
            .success)
    }

    fn abort_ids(&self, message: Bytes) -> Result<Vec<String>, String> {
        let request = sglang::AbortRequest::decode(message)
            .map_err(|e| format!("the message is not a valid AbortRequest: {e}"))?;
        if request.request_id.is_empty() {
            return Err("AbortRequest.request_id is required".into());
        }
        Ok(vec![request.request_id])
    }

    fn abort_answer(&self, aborted: bool, message: String) -> Bytes {
        sglang::AbortResponse {
            success: aborted,
            message,
        }
        .encode_to_vec()
        .into()
    }

    fn loads(&self, reply: Bytes) -> Result<Vec<RankLoad>, Failure> {
        Ok(sglang::GetLoadsResponse::decode(reply)
            .map_err(|_| Failure::BadReply("sglang GetLoadsResponse"))?
            .loads
            .into_iter()
            .map(|l| RankLoad {
                running: l.num_running_reqs,
                waiting: l.num_waiting_reqs,
                token_usage: l.token_usage,
            })
            .collect())
    }

    fn merge_loads(&self, replies: Vec<Bytes>) -> Result<Bytes, Failure> {
        let mut merged = sglang::GetLoadsResponse::default();
        for bytes in replies {
            let reply = sglang::GetLoadsResponse::decode(bytes)
                .map_err(|_| Failure::BadReply("sglang GetLoadsResponse"))?;
            merged.timestamp = reply.timestamp;
            merged.version = reply.version;
            merged.loads.extend(reply.loads);
        }
        let mut aggregate = sglang::AggregateMetrics::default();
        let n = merged.loads.len().max(1) as f64;
        for (rank, load) in merged.loads.iter_mut().enumerate() {
            load.dp_rank = i32::try_from(rank).unwrap_or(i32::MAX);
            aggregate.total_running_reqs += load.num_running_reqs;
            aggregate.total_waiting_reqs += load.num_waiting_reqs;
            aggregate.total_reqs += load.num_total_reqs;
            aggregate.avg_token_usage += load.token_usage / n;
            aggregate.avg_throughput += load.gen_throughput / n;
            aggregate.avg_utilization += load.utilization / n;
        }
        merged.dp_rank_count = i32::try_from(merged.loads.len()).unwrap_or(i32::MAX);
        merged.aggregate = Some(aggregate);
        Ok(merged.encode_to_vec().into())
    }

    fn health_answer(&self, healthy: bool, message: String) -> Bytes {
        sglang::HealthCheckResponse { healthy, message }
            .encode_to_vec()
            .into()
    }

    fn view(&self, message: &Bytes) -> Result<RequestView, prost::DecodeError> {
        let view = View::decode(message.clone())?;
        Ok(RequestView {
            request_id: view.request_id,
            model: None,
            prompt: match view.tokenized.is_empty() {
                true => Prompt::None,
                false => Prompt::Tokenized(view.tokenized),
            },
        })
    }

    fn pd(&self) -> PdStyle {
        // int32 rooms.
        PdStyle::Bootstrap {
            rooms_below: Some(1 << 31),
        }
    }

    fn bootstrap(&self, host: &str, port: u16, room: u64) -> Vec<u8> {
        sglang::GenerateRequest {
            disaggregated_params: Some(sglang::DisaggregatedParams {
                bootstrap_host: host.to_string(),
                bootstrap_port: i32::from(port),
                bootstrap_room: i32::try_from(room).unwrap_or(i32::MAX),
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn takes_text(&self) -> bool {
        false
    }

    fn generate_request(
        &self,
        request_id: &str,
        input: Input,
        sampling: &Sampling,
    ) -> Result<Bytes, TranslateError> {
        let ids = match input {
            Input::TokenIds(ids) => ids,
            Input::Text(_) => {
                return Err(TranslateError::Invalid(
                    "SGLang takes token ids, not text".into(),
                ))
            }
        };
        if sampling.seed.is_some() {
            return Err(TranslateError::Unsupported {
                field: "seed",
                engine: self.engine(),
            });
        }
        // SGLang's defaults, set explicitly as it requires: temperature
        // 1.0, top_p 1.0, top_k −1, repetition_penalty 1.0, n 1.
        Ok(sglang::GenerateRequest {
            request_id: request_id.to_string(),
            tokenized: Some(sglang::TokenizedInput {
                original_text: String::new(),
                input_ids: ids,
            }),
            sampling_params: Some(sglang::SamplingParams {
                temperature: sampling.temperature.unwrap_or(1.0),
                top_p: sampling.top_p.unwrap_or(1.0),
                top_k: sampling.top_k.unwrap_or(-1),
                min_p: sampling.min_p.unwrap_or(0.0),
                frequency_penalty: sampling.frequency_penalty.unwrap_or(0.0),
                presence_penalty: sampling.presence_penalty.unwrap_or(0.0),
                repetition_penalty: sampling.repetition_penalty.unwrap_or(1.0),
                max_new_tokens: sampling.max_tokens,
                min_new_tokens: sampling.min_tokens.unwrap_or(0),
                stop: sampling.stop.clone(),
                stop_token_ids: sampling.stop_token_ids.clone(),
                ignore_eos: sampling.ignore_eos,
                logit_bias: sampling
                    .logit_bias
                    .iter()
                    .map(|(id, bias)| (id.to_string(), *bias))
                    .collect(),
                constraint: sampling.constraint.as_ref().map(|c| {
                    use sglang::sampling_params::Constraint as C;
                    match c {
                        // SGLang's JSON mode is the schema of any object.
                        Constraint::JsonObject => C::JsonSchema(r#"{"type":"object"}"#.into()),
                        Constraint::JsonSchema(s) => C::JsonSchema(s.clone()),
                        Constraint::Regex(r) => C::Regex(r.clone()),
                        Constraint::Grammar(g) => C::EbnfGrammar(g.clone()),
                        Constraint::StructuralTag(t) => C::StructuralTag(t.clone()),
                    }
                }),
                skip_special_tokens: sampling.skip_special_tokens,
                spaces_between_special_tokens: true,
                n: 1,
                ..Default::default()
            }),
            stream: true,
            // Output tokens only (−1: no prompt logprobs).
            return_logprob: sampling.logprobs.is_some(),
            top_logprobs_num: sampling
                .logprobs
                .map_or(0, |n| n.min(i32::MAX as u32) as i32),
            logprob_start_len: -1,
            ..Default::default()
        }
        .encode_to_vec()
        .into())
    }

    fn response(
        &self,
        message: Bytes,
    ) -> Result<(Option<pb::generate_response::Response>, u32), Failure> {
        super::seam::engine_response!(sglang, "sglang.grpc.scheduler.GenerateResponse", message)
    }
}

impl super::seam::MatchedStop for sglang::GenerateComplete {
    fn matched_stop(&self) -> String {
        match &self.matched_stop {
            Some(sglang::generate_complete::MatchedStop::MatchedStopStr(s)) => s.clone(),
            _ => String::new(),
        }
    }
}

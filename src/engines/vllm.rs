//! vLLM in gRPC mode (`vllm serve --grpc`): `vllm.grpc.engine.VllmEngine`,
//! from the published `proto/smg/vllm_engine.proto`.
//!
//! Token ids or text; PD sequential: the prefill side runs first (one token,
//! told to keep its KV cache for a remote decode) and its completion carries
//! the KV-transfer parameters the decode side is then given.

use bytes::Bytes;
use prost::Message;

use super::seam::{EngineSeam, Method, PdStyle, Prompt, RankLoad, RequestView};
use super::translate::{logit_bias, Constraint, Input, Sampling, TranslateError};
use crate::pb::{self, vllm_engine as vllm};
use crate::transport::Failure;
use crate::worker::{Engine, EngineName, ModelFacts};

static NAME: EngineName = EngineName {
    name: "vllm",
    service: "vllm.grpc.engine.VllmEngine",
    generate_path: "/vllm.grpc.engine.VllmEngine/Generate",
};

/// What a vLLM prefill request carries: keep the KV cache for a decode
/// worker to fetch (vLLM's KV connectors read `do_remote_decode`).
const PREFILL_PARAMS: &str = r#"{"do_remote_decode":true,"do_remote_prefill":false}"#;

/// vLLM's protocol.
#[derive(Debug)]
pub struct Vllm;

/// The routing fields of vLLM's `GenerateRequest` (`request_id` = 1, the
/// `input` oneof: `tokenized` = 2, `text` = 3), the prompt left encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct View {
    #[prost(string, tag = "1")]
    request_id: String,
    #[prost(bytes = "bytes", optional, tag = "2")]
    tokenized: Option<Bytes>,
    #[prost(string, optional, tag = "3")]
    text: Option<String>,
}

impl EngineSeam for Vllm {
    fn engine(&self) -> Engine {
        Engine::new(&NAME)
    }

    fn wire(&self) -> pb::Engine {
        pb::Engine::Vllm
    }

    fn path(&self, method: Method) -> Option<&'static str> {
        Some(match method {
            Method::Abort => "/vllm.grpc.engine.VllmEngine/Abort",
            Method::GetModelInfo => "/vllm.grpc.engine.VllmEngine/GetModelInfo",
            Method::GetServerInfo => "/vllm.grpc.engine.VllmEngine/GetServerInfo",
            Method::GetLoads => "/vllm.grpc.engine.VllmEngine/GetLoads",
            Method::GetTokenizer => "/vllm.grpc.engine.VllmEngine/GetTokenizer",
            Method::SubscribeKvEvents => "/vllm.grpc.engine.VllmEngine/SubscribeKvEvents",
        })
    }

    fn model_info(&self, reply: Bytes) -> Result<ModelFacts, Failure> {
        let info = vllm::GetModelInfoResponse::decode(reply)
            .map_err(|_| Failure::BadReply("vllm GetModelInfoResponse"))?;
        Ok(ModelFacts {
            served_model_name: super::seam::model_name(info.served_model_name, info.model_path),
            max_context_length: info.max_context_length,
        })
    }

    fn abort_request(&self, request_id: &str) -> Vec<u8> {
        vllm::AbortRequest {
            request_ids: vec![request_id.to_string()],
        }
        .encode_to_vec()
    }

    fn abort_reply(&self, reply: Bytes) -> Result<bool, Failure> {
        // vLLM's reply says nothing: a delivered abort counts.
        vllm::AbortResponse::decode(reply).map_err(|_| Failure::BadReply("vllm AbortResponse"))?;
        Ok(true)
    }

    fn abort_ids(&self, message: Bytes) -> Result<Vec<String>, String> {
        Ok(vllm::AbortRequest::decode(message)
            .map_err(|e| format!("the message is not a valid AbortRequest: {e}"))?
            .request_ids)
    }

    fn abort_answer(&self, _aborted: bool, _message: String) -> Bytes {
        vllm::AbortResponse {}.encode_to_vec().into()
    }

    fn loads(&self, reply: Bytes) -> Result<Vec<RankLoad>, Failure> {
        Ok(vllm::GetLoadsResponse::decode(reply)
            .map_err(|_| Failure::BadReply("vllm GetLoadsResponse"))?
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
        let mut merged = vllm::GetLoadsResponse::default();
        for bytes in replies {
            let reply = vllm::GetLoadsResponse::decode(bytes)
                .map_err(|_| Failure::BadReply("vllm GetLoadsResponse"))?;
            merged.timestamp = reply.timestamp;
            merged.version = reply.version;
            merged.loads.extend(reply.loads);
        }
        for (rank, load) in merged.loads.iter_mut().enumerate() {
            load.dp_rank = i32::try_from(rank).unwrap_or(i32::MAX);
        }
        merged.dp_rank_count = i32::try_from(merged.loads.len()).unwrap_or(i32::MAX);
        Ok(merged.encode_to_vec().into())
    }

    fn health_answer(&self, healthy: bool, message: String) -> Bytes {
        vllm::HealthCheckResponse { healthy, message }
            .encode_to_vec()
            .into()
    }

    fn view(&self, message: &Bytes) -> Result<RequestView, prost::DecodeError> {
        // Both fields of the oneof present: the last one counts, as for the
        // engine; the view cannot tell which came last, so the prompt is
        // then left out of routing.
        let view = View::decode(message.clone())?;
        Ok(RequestView {
            request_id: view.request_id,
            model: None,
            prompt: match (view.tokenized, view.text) {
                (Some(raw), None) => Prompt::Tokenized(raw),
                (None, Some(text)) => Prompt::Text(text),
                _ => Prompt::None,
            },
        })
    }

    fn pd(&self) -> PdStyle {
        PdStyle::Sequential
    }

    fn prefill_fields(&self) -> Vec<u8> {
        vllm::GenerateRequest {
            kv_transfer_params_json: Some(PREFILL_PARAMS.into()),
            sampling_params: Some(vllm::SamplingParams {
                max_tokens: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn transfer_params(&self, message: Bytes) -> Result<Option<String>, Failure> {
        let response = vllm::GenerateResponse::decode(message)
            .map_err(|_| Failure::BadReply("vllm.grpc.engine.GenerateResponse"))?;
        Ok(match response.response {
            Some(vllm::generate_response::Response::Complete(done)) => {
                done.kv_transfer_params_json.filter(|p| !p.is_empty())
            }
            _ => None,
        })
    }

    fn decode_fields(&self, params: String) -> Vec<u8> {
        vllm::GenerateRequest {
            kv_transfer_params_json: Some(params),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn takes_text(&self) -> bool {
        true
    }

    fn generate_request(
        &self,
        request_id: &str,
        input: Input,
        sampling: &Sampling,
    ) -> Result<Bytes, TranslateError> {
        let engine = self.engine();
        let input = match input {
            Input::TokenIds(ids) => {
                vllm::generate_request::Input::Tokenized(vllm::TokenizedInput {
                    original_text: String::new(),
                    input_ids: ids,
                })
            }
            Input::Text(text) => vllm::generate_request::Input::Text(text),
        };
        let top_k = match sampling.top_k {
            None | Some(-1) => 0,
            Some(k) => u32::try_from(k).map_err(|_| TranslateError::OutOfRange {
                field: "top_k",
                value: k.to_string(),
                engine,
                range: "-1, 0 (off) or a positive count",
            })?,
        };
        let seed = sampling
            .seed
            .map(|s| {
                i32::try_from(s).map_err(|_| TranslateError::OutOfRange {
                    field: "seed",
                    value: s.to_string(),
                    engine,
                    range: "0 to 2147483647",
                })
            })
            .transpose()?;
        Ok(vllm::GenerateRequest {
            request_id: request_id.to_string(),
            input: Some(input),
            sampling_params: Some(vllm::SamplingParams {
                temperature: sampling.temperature,
                top_p: sampling.top_p.unwrap_or(1.0),
                top_k,
                min_p: sampling.min_p.unwrap_or(0.0),
                frequency_penalty: sampling.frequency_penalty.unwrap_or(0.0),
                presence_penalty: sampling.presence_penalty.unwrap_or(0.0),
                repetition_penalty: sampling.repetition_penalty.unwrap_or(1.0),
                max_tokens: sampling.max_tokens,
                min_tokens: sampling.min_tokens.unwrap_or(0),
                stop: sampling.stop.clone(),
                stop_token_ids: sampling.stop_token_ids.clone(),
                ignore_eos: sampling.ignore_eos,
                logit_bias: logit_bias(sampling, engine)?,
                constraint: sampling.constraint.as_ref().map(|c| {
                    use vllm::sampling_params::Constraint as C;
                    match c {
                        Constraint::JsonObject => C::JsonObject(true),
                        Constraint::JsonSchema(s) => C::JsonSchema(s.clone()),
                        Constraint::Regex(r) => C::Regex(r.clone()),
                        Constraint::Grammar(g) => C::Grammar(g.clone()),
                        Constraint::StructuralTag(t) => C::StructuralTag(t.clone()),
                    }
                }),
                skip_special_tokens: sampling.skip_special_tokens,
                spaces_between_special_tokens: true,
                n: 1,
                seed,
                logprobs: sampling.logprobs.map(|n| n.min(i32::MAX as u32) as i32),
                ..Default::default()
            }),
            stream: true,
            ..Default::default()
        }
        .encode_to_vec()
        .into())
    }

    fn response(
        &self,
        message: Bytes,
    ) -> Result<(Option<pb::generate_response::Response>, u32), Failure> {
        super::seam::engine_response!(vllm, "vllm.grpc.engine.GenerateResponse", message)
    }
}

/// vLLM's completion does not say which stop matched.
impl super::seam::MatchedStop for vllm::GenerateComplete {}

//! TensorRT-LLM's gRPC server: `trtllm.TrtllmService`, from the published
//! `proto/smg/trtllm_service.proto`.
//!
//! Token ids only (the router tokenizes); `max_tokens` is required by the
//! protocol, so a call that sets none is sent [`DEFAULT_MAX_TOKENS`]; stop
//! strings are the engine's own (it tokenizes them). No `GetLoads`. No PD
//! through the router: the protocol's responses carry no context-phase
//! parameters back, so a decode worker could not be handed what a prefill
//! worker produced. Its `HealthCheck` answers a status string ("OK").

use bytes::Bytes;
use prost::Message;

use super::seam::{EngineSeam, Method, PdStyle, Prompt, RankLoad, RequestView};
use super::translate::{Constraint, Input, Sampling, TranslateError};
use crate::pb::{self, trtllm};
use crate::transport::Failure;
use crate::worker::{Engine, EngineName, ModelFacts};

static NAME: EngineName = EngineName {
    name: "trtllm",
    service: "trtllm.TrtllmService",
    generate_path: "/trtllm.TrtllmService/Generate",
};

/// What a call that sets no `max_tokens` is sent (TensorRT-LLM requires
/// one; it refuses more than its `max_seq_len` leaves room for).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// TensorRT-LLM's protocol.
#[derive(Debug)]
pub struct Trtllm;

/// The routing fields of TensorRT-LLM's `GenerateRequest` (`request_id` =
/// 1, `tokenized` = 2), the prompt left encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct View {
    #[prost(string, tag = "1")]
    request_id: String,
    #[prost(bytes = "bytes", tag = "2")]
    tokenized: Bytes,
}

impl EngineSeam for Trtllm {
    fn engine(&self) -> Engine {
        Engine::new(&NAME)
    }

    fn wire(&self) -> pb::Engine {
        pb::Engine::Trtllm
    }

    fn path(&self, method: Method) -> Option<&'static str> {
        match method {
            Method::Abort => Some("/trtllm.TrtllmService/Abort"),
            Method::GetModelInfo => Some("/trtllm.TrtllmService/GetModelInfo"),
            Method::GetServerInfo => Some("/trtllm.TrtllmService/GetServerInfo"),
            Method::GetTokenizer => Some("/trtllm.TrtllmService/GetTokenizer"),
            Method::SubscribeKvEvents => Some("/trtllm.TrtllmService/SubscribeKvEvents"),
            Method::GetLoads => None,
        }
    }

    fn model_info(&self, reply: Bytes) -> Result<ModelFacts, Failure> {
        let info = trtllm::GetModelInfoResponse::decode(reply)
            .map_err(|_| Failure::BadReply("trtllm GetModelInfoResponse"))?;
        Ok(ModelFacts {
            served_model_name: info.model_id,
            max_context_length: u32::try_from(info.max_seq_len).unwrap_or(0),
        })
    }

    fn abort_request(&self, request_id: &str) -> Vec<u8> {
        trtllm::AbortRequest {
            request_id: request_id.to_string(),
        }
        .encode_to_vec()
    }

    fn abort_reply(&self, reply: Bytes) -> Result<bool, Failure> {
        Ok(trtllm::AbortResponse::decode(reply)
            .map_err(|_| Failure::BadReply("trtllm AbortResponse"))?
            .success)
    }

    fn abort_ids(&self, message: Bytes) -> Result<Vec<String>, String> {
        let request = trtllm::AbortRequest::decode(message)
            .map_err(|e| format!("the message is not a valid AbortRequest: {e}"))?;
        if request.request_id.is_empty() {
            return Err("AbortRequest.request_id is required".into());
        }
        Ok(vec![request.request_id])
    }

    fn abort_answer(&self, aborted: bool, message: String) -> Bytes {
        trtllm::AbortResponse {
            success: aborted,
            message,
        }
        .encode_to_vec()
        .into()
    }

    fn loads(&self, _reply: Bytes) -> Result<Vec<RankLoad>, Failure> {
        Err(Failure::BadReply("trtllm.TrtllmService has no GetLoads"))
    }

    fn merge_loads(&self, _replies: Vec<Bytes>) -> Result<Bytes, Failure> {
        Err(Failure::BadReply("trtllm.TrtllmService has no GetLoads"))
    }

    fn health_answer(&self, healthy: bool, message: String) -> Bytes {
        trtllm::HealthCheckResponse {
            status: if healthy { "OK".into() } else { message },
        }
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
        PdStyle::None
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
                    "TensorRT-LLM takes token ids, not text".into(),
                ))
            }
        };
        // Its bias is a whole-vocabulary tensor, which the router cannot
        // size.
        if !sampling.logit_bias.is_empty() {
            return Err(TranslateError::Unsupported {
                field: "logit_bias",
                engine: self.engine(),
            });
        }
        Ok(trtllm::GenerateRequest {
            request_id: request_id.to_string(),
            tokenized: Some(trtllm::TokenizedInput {
                input_token_ids: ids,
                ..Default::default()
            }),
            sampling_config: Some(trtllm::SamplingConfig {
                beam_width: 1,
                num_return_sequences: 1,
                // −1 (off) is TensorRT-LLM's 0.
                top_k: sampling.top_k.map(|k| k.max(0)),
                top_p: sampling.top_p,
                seed: sampling.seed,
                temperature: sampling.temperature,
                min_p: sampling.min_p,
                min_tokens: sampling.min_tokens,
                frequency_penalty: sampling.frequency_penalty,
                presence_penalty: sampling.presence_penalty,
                repetition_penalty: sampling.repetition_penalty,
                ..Default::default()
            }),
            max_tokens: sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            // Each output token's log probability and this many of the most
            // likely at its position (0: the token's own only, as vLLM).
            output_config: sampling.logprobs.map(|top| trtllm::OutputConfig {
                logprobs: Some(top.min(i32::MAX as u32) as i32),
                ..Default::default()
            }),
            streaming: true,
            stop: sampling.stop.clone(),
            stop_token_ids: sampling.stop_token_ids.clone(),
            ignore_eos: sampling.ignore_eos,
            guided_decoding: sampling.constraint.as_ref().map(|c| {
                use trtllm::guided_decoding_params::GuideType as G;
                let (kind, guide) = match c {
                    Constraint::JsonObject => (G::Json, String::new()),
                    Constraint::JsonSchema(s) => (G::JsonSchema, s.clone()),
                    Constraint::Regex(r) => (G::Regex, r.clone()),
                    Constraint::Grammar(g) => (G::EbnfGrammar, g.clone()),
                    Constraint::StructuralTag(t) => (G::StructuralTag, t.clone()),
                };
                trtllm::GuidedDecodingParams {
                    guide_type: kind as i32,
                    guide,
                }
            }),
            ..Default::default()
        }
        .encode_to_vec()
        .into())
    }

    fn response(
        &self,
        message: Bytes,
    ) -> Result<(Option<pb::generate_response::Response>, u32), Failure> {
        // Its log probabilities come per token, each with its alternatives.
        super::seam::engine_response!(trtllm, "trtllm.GenerateResponse", message, |c| {
            (!c.logprobs.is_empty()).then(|| pb::LogProbs {
                token_logprobs: c.logprobs.iter().map(|l| l.logprob).collect(),
                token_ids: c.logprobs.iter().map(|l| l.token_id).collect(),
                top_logprobs: c
                    .logprobs
                    .iter()
                    .map(|l| pb::TopLogProbs {
                        values: l.top_logprobs.iter().map(|t| t.logprob).collect(),
                        token_ids: l.top_logprobs.iter().map(|t| t.token_id).collect(),
                    })
                    .collect(),
            })
        })
    }
}

impl super::seam::MatchedStop for trtllm::GenerateComplete {
    fn matched_stop(&self) -> String {
        match &self.matched_stop {
            Some(trtllm::generate_complete::MatchedStop::MatchedStopStr(s)) => s.clone(),
            _ => String::new(),
        }
    }
}

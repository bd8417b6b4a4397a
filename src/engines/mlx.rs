//! MLX's gRPC server: `mlx.grpc.engine.MlxEngine`, from the published
//! `proto/smg/mlx_engine.proto`.
//!
//! Token ids or text. The protocol has no stop strings: the router cuts the
//! text at them when it has the model's tokenizer, and refuses them when it
//! has not. No `GetLoads`, no PD, no KV events. Its responses carry no
//! request id (the router's translation sets it).

use bytes::Bytes;
use prost::Message;

use super::seam::{EngineSeam, Method, PdStyle, Prompt, RankLoad, RequestView};
use super::translate::{logit_bias, Input, Sampling, TranslateError};
use crate::pb::{self, mlx_engine as mlx};
use crate::transport::Failure;
use crate::worker::{Engine, EngineName, ModelFacts};

static NAME: EngineName = EngineName {
    name: "mlx",
    service: "mlx.grpc.engine.MlxEngine",
    generate_path: "/mlx.grpc.engine.MlxEngine/Generate",
};

/// MLX's protocol.
#[derive(Debug)]
pub struct Mlx;

/// The routing fields of MLX's `GenerateRequest` (`request_id` = 1, the
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

impl EngineSeam for Mlx {
    fn engine(&self) -> Engine {
        Engine::new(&NAME)
    }

    fn wire(&self) -> pb::Engine {
        pb::Engine::Mlx
    }

    fn path(&self, method: Method) -> Option<&'static str> {
        match method {
            Method::Abort => Some("/mlx.grpc.engine.MlxEngine/Abort"),
            Method::GetModelInfo => Some("/mlx.grpc.engine.MlxEngine/GetModelInfo"),
            Method::GetServerInfo => Some("/mlx.grpc.engine.MlxEngine/GetServerInfo"),
            Method::GetTokenizer => Some("/mlx.grpc.engine.MlxEngine/GetTokenizer"),
            Method::GetLoads | Method::SubscribeKvEvents => None,
        }
    }

    fn model_info(&self, reply: Bytes) -> Result<ModelFacts, Failure> {
        let info = mlx::GetModelInfoResponse::decode(reply)
            .map_err(|_| Failure::BadReply("mlx GetModelInfoResponse"))?;
        Ok(ModelFacts {
            served_model_name: super::seam::model_name(info.served_model_name, info.model_path),
            max_context_length: info.max_context_length,
        })
    }

    fn abort_request(&self, request_id: &str) -> Vec<u8> {
        mlx::AbortRequest {
            request_ids: vec![request_id.to_string()],
        }
        .encode_to_vec()
    }

    fn abort_reply(&self, reply: Bytes) -> Result<bool, Failure> {
        // The reply says nothing: a delivered abort counts.
        mlx::AbortResponse::decode(reply).map_err(|_| Failure::BadReply("mlx AbortResponse"))?;
        Ok(true)
    }

    fn abort_ids(&self, message: Bytes) -> Result<Vec<String>, String> {
        Ok(mlx::AbortRequest::decode(message)
            .map_err(|e| format!("the message is not a valid AbortRequest: {e}"))?
            .request_ids)
    }

    fn abort_answer(&self, _aborted: bool, _message: String) -> Bytes {
        mlx::AbortResponse {}.encode_to_vec().into()
    }

    fn loads(&self, _reply: Bytes) -> Result<Vec<RankLoad>, Failure> {
        Err(Failure::BadReply(
            "mlx.grpc.engine.MlxEngine has no GetLoads",
        ))
    }

    fn merge_loads(&self, _replies: Vec<Bytes>) -> Result<Bytes, Failure> {
        Err(Failure::BadReply(
            "mlx.grpc.engine.MlxEngine has no GetLoads",
        ))
    }

    fn health_answer(&self, healthy: bool, message: String) -> Bytes {
        mlx::HealthCheckResponse { healthy, message }
            .encode_to_vec()
            .into()
    }

    fn view(&self, message: &Bytes) -> Result<RequestView, prost::DecodeError> {
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
        PdStyle::None
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
        if !sampling.stop.is_empty() && !sampling.router_stops {
            return Err(TranslateError::Unsupported {
                field: "stop (MLX has no stop strings; give the router the model's tokenizer to cut the text at them)",
                engine,
            });
        }
        // MLX's protocol has no constraint and no minimum length.
        if sampling.constraint.is_some() {
            return Err(TranslateError::Unsupported {
                field: "response_format (MLX's protocol has no structured output)",
                engine,
            });
        }
        if sampling.min_tokens.is_some() {
            return Err(TranslateError::Unsupported {
                field: "min_tokens",
                engine,
            });
        }
        let input = match input {
            Input::TokenIds(ids) => mlx::generate_request::Input::Tokenized(mlx::TokenizedInput {
                original_text: String::new(),
                input_ids: ids,
            }),
            Input::Text(text) => mlx::generate_request::Input::Text(text),
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
        Ok(mlx::GenerateRequest {
            request_id: request_id.to_string(),
            input: Some(input),
            sampling_params: Some(mlx::SamplingParams {
                temperature: sampling.temperature,
                top_p: sampling.top_p.unwrap_or(1.0),
                top_k,
                min_p: sampling.min_p.unwrap_or(0.0),
                frequency_penalty: sampling.frequency_penalty.unwrap_or(0.0),
                presence_penalty: sampling.presence_penalty.unwrap_or(0.0),
                repetition_penalty: sampling.repetition_penalty.unwrap_or(1.0),
                max_tokens: sampling.max_tokens,
                stop_token_ids: sampling.stop_token_ids.clone(),
                ignore_eos: sampling.ignore_eos,
                logit_bias: logit_bias(sampling, engine)?,
                seed,
                logprobs: sampling.logprobs.map(|n| n.min(i32::MAX as u32) as i32),
            }),
            stream: true,
        }
        .encode_to_vec()
        .into())
    }

    fn response(
        &self,
        message: Bytes,
    ) -> Result<(Option<pb::generate_response::Response>, u32), Failure> {
        super::seam::engine_response!(mlx, "mlx.grpc.engine.GenerateResponse", message)
    }
}

/// MLX's completion names a stop token, not a string.
impl super::seam::MatchedStop for mlx::GenerateComplete {}

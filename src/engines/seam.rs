//! The engine seam: what differs between the protocols of gRPC workers,
//! asked of one value per engine ([`EngineSeam`]).
//!
//! A seam is *sans-IO*: it says which path to call and how to encode and
//! decode that engine's messages; the caller (admission, routers, health,
//! the tokenizer) does the calling, the same way for every engine. Each
//! engine is one file beside this one; `engines::ALL` lists them.

use bytes::Bytes;

use super::translate::{Input, Sampling, TranslateError};
use crate::pb;
use crate::transport::Failure;
use crate::worker::{Engine, ModelFacts};

/// Engine methods the router calls or forwards besides `Generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Stop a running request.
    Abort,
    /// Model facts.
    GetModelInfo,
    /// Server facts.
    GetServerInfo,
    /// Scheduler load.
    GetLoads,
    /// The model's tokenizer files (a server stream of chunks).
    GetTokenizer,
    /// The engine's KV cache events (a server stream).
    SubscribeKvEvents,
}

/// What a call's prompt is, for policies.
#[derive(Debug, Clone, Default)]
pub enum Prompt {
    /// None given.
    #[default]
    None,
    /// Text.
    Text(String),
    /// Token ids.
    TokenIds(Vec<u32>),
    /// An engine's `TokenizedInput` (`original_text` = 1, `input_ids` = 2,
    /// the shape every engine's proto gives it), still encoded: its token
    /// ids are decoded only for a policy that reads them (a prompt of
    /// thousands of ids costs tens of thousands of instructions to decode).
    Tokenized(Bytes),
}

impl Prompt {
    /// Its tokens: counted for token ids, estimated for text at
    /// `bytes_per_token` (a `TokenizedInput`'s ids are counted without
    /// decoding them: one varint ends in each byte below 128).
    pub fn tokens(&self, bytes_per_token: u64) -> u64 {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Tokenized {
            #[prost(string, tag = "1")]
            text: String,
            #[prost(bytes = "bytes", tag = "2")]
            ids: Bytes,
        }
        let text = |len: usize| (len as u64).div_ceil(bytes_per_token.max(1));
        match self {
            Prompt::None => 0,
            Prompt::Text(t) => text(t.len()),
            Prompt::TokenIds(ids) => ids.len() as u64,
            Prompt::Tokenized(bytes) => {
                match <Tokenized as prost::Message>::decode(bytes.clone()) {
                    Ok(t) if !t.ids.is_empty() => {
                        t.ids.iter().filter(|b| **b < 0x80).count() as u64
                    }
                    Ok(t) => text(t.text.len()),
                    Err(_) => text(bytes.len()),
                }
            }
        }
    }
}

/// Decodes `$message` as `$engine::GenerateResponse` (the type named
/// `$name` in errors) into `switchyard.v1`'s response and the prompt's
/// token count: every engine's responses have a chunk (`token_ids`,
/// `prompt_tokens`) and a completion (`finish_reason`, `prompt_tokens`,
/// `completion_tokens`), each in its own types, so one translation is
/// written once for all. Chunks' log probabilities come from
/// `output_logprobs` (SGLang's, vLLM's and MLX's shape), or from the
/// expression given with the chunk as `|c|`.
macro_rules! engine_response {
    // Engines whose chunks carry `output_logprobs` in the common shape.
    ($engine:ident, $name:literal, $message:expr) => {
        $crate::engines::seam::engine_response!($engine, $name, $message, |c| {
            c.output_logprobs.map(|l| $crate::pb::LogProbs {
                token_logprobs: l.token_logprobs,
                token_ids: l.token_ids,
                top_logprobs: l
                    .top_logprobs
                    .into_iter()
                    .map(|t| $crate::pb::TopLogProbs {
                        values: t.values,
                        token_ids: t.token_ids,
                    })
                    .collect(),
            })
        })
    };
    ($engine:ident, $name:literal, $message:expr, |$c:ident| $logprobs:expr) => {{
        use $crate::pb::generate_response::Response as Out;
        use $engine::generate_response::Response as In;
        let decoded = <$engine::GenerateResponse as prost::Message>::decode($message)
            .map_err(|_| $crate::transport::Failure::BadReply($name))?;
        Ok(match decoded.response {
            Some(In::Chunk(mut $c)) => {
                let token_ids = std::mem::take(&mut $c.token_ids);
                let prompt_tokens = $c.prompt_tokens;
                let logprobs = $logprobs;
                (
                    Some(Out::Chunk($crate::pb::GenerateChunk {
                        token_ids,
                        text: String::new(),
                        logprobs,
                    })),
                    prompt_tokens,
                )
            }
            Some(In::Complete(c)) => (
                Some(Out::Complete($crate::pb::GenerateComplete {
                    matched_stop: $crate::engines::seam::MatchedStop::matched_stop(&c),
                    finish_reason: c.finish_reason,
                    prompt_tokens: c.prompt_tokens,
                    completion_tokens: c.completion_tokens,
                    cached_tokens: c.cached_tokens,
                })),
                c.prompt_tokens,
            ),
            None => (None, 0),
        })
    }};
}
pub(super) use engine_response;

/// The stop string an engine's completion says ended the output (empty
/// when it says none, or its protocol cannot say).
pub(super) trait MatchedStop {
    fn matched_stop(&self) -> String {
        String::new()
    }
}

/// The served model name, else the model path (engines' `GetModelInfo`).
pub(super) fn model_name(served: String, path: String) -> String {
    if served.is_empty() {
        path
    } else {
        served
    }
}

/// The token ids of an encoded `TokenizedInput` (empty when it does not
/// decode: the engine will refuse the call, and routing does without).
pub fn tokenized_ids(raw: &Bytes) -> Vec<u32> {
    /// `TokenizedInput`'s `input_ids` (= 2), as every engine numbers it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Ids {
        #[prost(uint32, repeated, tag = "2")]
        input_ids: Vec<u32>,
    }
    <Ids as prost::Message>::decode(raw.clone())
        .map(|t| t.input_ids)
        .unwrap_or_default()
}

/// The routing fields of an inbound `GenerateRequest`.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    /// Its request id (empty: none).
    pub request_id: String,
    /// The model it names (`None`: the engine's message names none; the
    /// `x-switchyard-model` header does).
    pub model: Option<String>,
    /// Its prompt.
    pub prompt: Prompt,
}

/// How an engine runs prefill/decode disaggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdStyle {
    /// Both sides at once, meeting at a bootstrap host, port and room the
    /// router writes into the message ([`EngineSeam::bootstrap`]); rooms
    /// below `rooms_below` when the engine bounds them.
    Bootstrap {
        /// The engine's rooms are below this.
        rooms_below: Option<u64>,
    },
    /// The prefill side first, to its end; then the decode side with the
    /// transfer parameters the prefill side returned
    /// ([`EngineSeam::prefill_fields`], [`EngineSeam::transfer_params`],
    /// [`EngineSeam::decode_fields`]).
    Sequential,
    /// The engine's protocol has no PD.
    None,
}

/// One engine's protocol. Every method is cheap and does no IO.
pub trait EngineSeam: Send + Sync + 'static {
    /// The engine this is.
    fn engine(&self) -> Engine;

    /// Its value in `switchyard.v1.Engine`.
    fn wire(&self) -> pb::Engine;

    /// The path of `method` (`None`: the protocol has no such method).
    fn path(&self, method: Method) -> Option<&'static str>;

    /// The service a periodic health check asks about: the engine's own,
    /// which an engine warming up or draining reports NOT_SERVING.
    fn health_service(&self) -> &'static str {
        self.engine().service()
    }

    /// The model facts of a `GetModelInfo` reply (the request is the empty
    /// message for every engine).
    fn model_info(&self, reply: Bytes) -> Result<ModelFacts, Failure>;

    /// The `Abort` message for `request_id`.
    fn abort_request(&self, request_id: &str) -> Vec<u8>;

    /// Whether an `Abort` reply says the worker had the request.
    fn abort_reply(&self, reply: Bytes) -> Result<bool, Failure>;

    /// The request ids of an `Abort` a client sent the router (the message
    /// as the engine defines it), or why it is invalid.
    fn abort_ids(&self, message: Bytes) -> Result<Vec<String>, String>;

    /// The router's reply to a client's `Abort`: whether it aborted, and
    /// what to say (where the engine's reply has room for it).
    fn abort_answer(&self, aborted: bool, message: String) -> Bytes;

    /// Requests running and waiting, and KV usage (0–1), per rank of a
    /// `GetLoads` reply.
    fn loads(&self, reply: Bytes) -> Result<Vec<RankLoad>, Failure>;

    /// Several workers' `GetLoads` replies as one, ranks renumbered in
    /// order (and aggregates recomputed where the engine has them).
    fn merge_loads(&self, replies: Vec<Bytes>) -> Result<Bytes, Failure>;

    /// The router's reply to a client's `HealthCheck` on this service.
    fn health_answer(&self, healthy: bool, message: String) -> Bytes;

    /// The routing fields of an inbound `GenerateRequest`.
    fn view(&self, message: &Bytes) -> Result<RequestView, prost::DecodeError>;

    /// How the engine runs PD.
    fn pd(&self) -> PdStyle;

    /// The fields that give a `GenerateRequest` its bootstrap host, port
    /// and room ([`PdStyle::Bootstrap`]), to append to the message.
    fn bootstrap(&self, _host: &str, _port: u16, _room: u64) -> Vec<u8> {
        Vec::new()
    }

    /// The fields that make a `GenerateRequest` a prefill side's
    /// ([`PdStyle::Sequential`]), to append.
    fn prefill_fields(&self) -> Vec<u8> {
        Vec::new()
    }

    /// The transfer parameters in a prefill side's response message, when
    /// it carries them ([`PdStyle::Sequential`]).
    fn transfer_params(&self, _message: Bytes) -> Result<Option<String>, Failure> {
        Ok(None)
    }

    /// The fields that hand a decode side the prefill side's `params`
    /// ([`PdStyle::Sequential`]), to append.
    fn decode_fields(&self, _params: String) -> Vec<u8> {
        Vec::new()
    }

    /// Whether a text prompt can be sent as text (else the router must
    /// tokenize it).
    fn takes_text(&self) -> bool;

    /// The engine's streamed `GenerateRequest` for `input` with `sampling`,
    /// the engine's defaults set explicitly where it needs them.
    fn generate_request(
        &self,
        request_id: &str,
        input: Input,
        sampling: &Sampling,
    ) -> Result<Bytes, TranslateError>;

    /// One `GenerateResponse` of the engine as `switchyard.v1`'s, and the
    /// prompt's token count when the message carries it.
    fn response(
        &self,
        message: Bytes,
    ) -> Result<(Option<pb::generate_response::Response>, u32), Failure>;
}

/// One scheduler rank's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankLoad {
    /// Requests running.
    pub running: i32,
    /// Requests waiting.
    pub waiting: i32,
    /// KV cache usage, 0–1.
    pub token_usage: f64,
}

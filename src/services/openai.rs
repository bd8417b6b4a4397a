//! OpenAI-compatible (`/v1/chat/completions`, `/v1/completions`) and
//! SGLang-shaped (`/generate`) HTTP in front of gRPC engine workers (SGLang,
//! vLLM), which take and return token ids.
//!
//! The router renders the chat template and tokenizes (the model's
//! tokenizer, `--tokenizer MODEL=PATH`), sends the engine its own
//! `Generate` through the gRPC router (every policy, PD included), and
//! detokenizes the engine's token ids incrementally into OpenAI's
//! server-sent events, one per text delta; stop strings are applied to the
//! text; usage counts are the engine's. A client that goes away drops the
//! stream, which sends the engine `Abort`. Parameters this front does not
//! support are refused with 400 naming them. Tool calls (`tools`) are
//! rendered through the template and read out of the model's text by its
//! format's parser (`crate::tools`), streamed as OpenAI's `tool_calls`
//! deltas; reasoning parsers are not supported.

mod chat;
mod output;

use chat::Message_;
use output::{complete, sse, Output};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::{Stream, StreamExt};

use super::http_error::HttpError;
use crate::engines;
use crate::engines::translate::{Input, Sampling};
use crate::pb;
use crate::routers::grpc::GrpcRouter;
use crate::routers::select::{is_known_model, model_engine};
use crate::routers::translate::Responses;
use crate::routers::{generate_request_id, RouteError, MODEL_HEADER, REQUEST_ID_HEADER};
use crate::tokenizer::{ModelTokenizer, Tokenizers};
use crate::tools::ToolFormat;
use crate::transport::grpc::codec::Deframer;
use crate::worker::{ConnectionMode, Engine, WorkerRegistry, WorkerRole};

/// The HTTP front of gRPC engine workers.
#[derive(Debug, Clone)]
pub struct EngineFront {
    registry: Arc<WorkerRegistry>,
    router: Arc<GrpcRouter>,
    tokenizers: Arc<Tokenizers>,
    /// Tool-call formats configured by model.
    tool_formats: Arc<HashMap<String, ToolFormat>>,
}

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/generate` (SGLang's shape).
    Generate,
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];
const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "user",
];
const GENERATE_FIELDS: &[&str] = &[
    "model",
    "text",
    "input_ids",
    "sampling_params",
    "stream",
    "rid",
];
const GENERATE_SAMPLING: &[&str] = &[
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "skip_special_tokens",
    "seed",
];

/// A request's fields, whichever endpoint it came to.
#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Message_>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    input_ids: Option<Vec<u32>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    sampling_params: Option<GenerateSampling>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    // `parallel_tool_calls` is accepted and not read: the model's own
    // output decides how many calls it makes.
}

#[derive(Debug, Default, Deserialize)]
struct GenerateSampling {
    max_new_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    stop: Option<Value>,
    skip_special_tokens: Option<bool>,
    seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The names of `object`'s keys not in `known`, for a 400 that names them.
fn unsupported(object: &serde_json::Map<String, Value>, known: &[&str]) -> Option<String> {
    let extra: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    (!extra.is_empty()).then(|| extra.join(", "))
}

/// `stop`: a string or a list of strings.
fn stops(value: Option<Value>) -> Result<Vec<String>, HttpError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(HttpError::bad_request(
                    "stop must be a string or a list of strings",
                )),
            })
            .collect(),
        Some(_) => Err(HttpError::bad_request(
            "stop must be a string or a list of strings",
        )),
    }
}

impl EngineFront {
    /// A front over `registry`'s engine workers, calling them through
    /// `router`, with `tokenizers`.
    pub fn new(
        registry: Arc<WorkerRegistry>,
        router: Arc<GrpcRouter>,
        tokenizers: Arc<Tokenizers>,
    ) -> Self {
        EngineFront {
            registry,
            router,
            tokenizers,
            tool_formats: Arc::default(),
        }
    }

    /// With tool-call formats configured by model (others are detected
    /// from their chat templates).
    pub fn with_tool_formats(mut self, formats: Arc<HashMap<String, ToolFormat>>) -> Self {
        self.tool_formats = formats;
        self
    }

    /// Whether any model is served by SGLang or vLLM workers.
    pub fn any(&self) -> bool {
        let snapshot = self.registry.snapshot();
        [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
            .iter()
            .any(|role| {
                snapshot.models(ConnectionMode::Grpc, *role).any(|m| {
                    snapshot
                        .group(ConnectionMode::Grpc, *role, m)
                        .and_then(|g| g.first())
                        .is_some_and(|w| !w.engine().is_switchyard())
                })
            })
    }

    /// The engine of `model` when it is served by SGLang or vLLM workers and
    /// by no HTTP worker (those are the HTTP router's).
    pub fn engine_of(&self, model: &str) -> Option<Engine> {
        let snapshot = self.registry.snapshot();
        if model.is_empty() || is_known_model(&snapshot, ConnectionMode::Http, model) {
            return None;
        }
        model_engine(&snapshot, model).filter(|e| !e.is_switchyard())
    }

    /// Serves one request for `model` (served by `engine`) at `endpoint`.
    pub async fn serve(
        &self,
        endpoint: Endpoint,
        engine: Engine,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let object: serde_json::Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| HttpError::bad_request(format!("the body is not a JSON object: {e}")))?;
        let known = match endpoint {
            Endpoint::Chat => CHAT_FIELDS,
            Endpoint::Completions => COMPLETION_FIELDS,
            Endpoint::Generate => GENERATE_FIELDS,
        };
        if let Some(extra) = unsupported(&object, known) {
            return Err(HttpError::bad_request(format!(
                "unsupported parameter(s) for a model served by {engine} gRPC workers: {extra} (supported: {})",
                known.join(", ")
            )));
        }
        if let Some(Value::Object(sp)) = object.get("sampling_params") {
            if let Some(extra) = unsupported(sp, GENERATE_SAMPLING) {
                return Err(HttpError::bad_request(format!(
                    "unsupported sampling_params: {extra} (supported: {})",
                    GENERATE_SAMPLING.join(", ")
                )));
            }
        }
        let fields: Fields = serde_json::from_value(Value::Object(object))
            .map_err(|e| HttpError::bad_request(format!("invalid request: {e}")))?;
        if fields.n.is_some_and(|n| n != 1) {
            return Err(HttpError::bad_request("n must be 1"));
        }
        let model = fields.model.clone();
        let tokenizer = self
            .tokenizers
            .get(&model)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
        let tool_format = match endpoint {
            Endpoint::Chat => chat::offered(
                fields.tools.as_ref(),
                fields.tool_choice.as_ref(),
                &self.tool_formats,
                &model,
                &tokenizer,
            )?,
            _ => None,
        };
        let mut sampling = fields.clone_sampling()?;
        if tool_format == Some(ToolFormat::Mistral) {
            // Its calls open with a special token.
            sampling.skip_special_tokens = false;
        }
        let (input, sampling) = self.prompt(endpoint, &tokenizer, &model, sampling, &fields)?;
        if let Input::TokenIds(ids) = &input {
            self.router
                .check_prompt(&self.registry.snapshot(), ids.len(), &model)?;
        }
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map_or_else(generate_request_id, str::to_string);
        let message = engines::seam(engine)
            .generate_request(&request_id, input, &sampling)
            .map_err(RouteError::from)?;
        let mut metadata = HeaderMap::with_capacity(4);
        let model_value = HeaderValue::from_str(&model)
            .map_err(|_| HttpError::bad_request("model must be printable ASCII"))?;
        metadata.insert(MODEL_HEADER, model_value);
        // The client's trace context goes on with the call, as gRPC
        // metadata does (the router's span continues it when tracing).
        for name in ["traceparent", "tracestate"] {
            if let Some(value) = headers.get(name) {
                metadata.insert(name, value.clone());
            }
        }
        let (worker_headers, stream) = self.router.generate(engine, metadata, message).await?;
        let stream = stream.translated(
            Responses::new(engine, request_id.clone()).with_text(tokenizer, sampling.stop.clone()),
        );
        let out = Output {
            endpoint,
            id: format!(
                "{}-{request_id}",
                if endpoint == Endpoint::Chat {
                    "chatcmpl"
                } else {
                    "cmpl"
                }
            ),
            model,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            include_usage: fields.stream_options.is_some_and(|o| o.include_usage),
            tools: tool_format,
        };
        let mut response = if fields.stream {
            sse(out, stream).into_response()
        } else {
            complete(out, stream).await?.into_response()
        };
        for name in [
            "x-request-id",
            "x-switchyard-worker-id",
            "x-switchyard-prefill-worker-id",
            "x-switchyard-decode-worker-id",
        ] {
            if let Some(v) = worker_headers.get(name) {
                response.headers_mut().insert(name, v.clone());
            }
        }
        Ok(response)
    }

    /// The prompt as token ids, and the sampling parameters.
    fn prompt(
        &self,
        endpoint: Endpoint,
        tokenizer: &ModelTokenizer,
        model: &str,
        sampling: Sampling,
        fields: &Fields,
    ) -> Result<(Input, Sampling), HttpError> {
        let encode = |text: &str, special: bool| {
            tokenizer
                .encode(text, special)
                .map_err(|e| HttpError::bad_request(e.to_string()))
        };
        let ids = match endpoint {
            Endpoint::Chat => {
                if fields.messages.is_empty() {
                    return Err(HttpError::bad_request("messages must not be empty"));
                }
                let messages = fields
                    .messages
                    .iter()
                    .map(chat::message)
                    .collect::<Result<Vec<_>, HttpError>>()?;
                let offered = fields.tools.as_ref().filter(|t| !t.is_null());
                let prompt = tokenizer
                    .apply_chat_template_with_tools(model, &messages, offered, true)
                    .map_err(|e| HttpError::bad_request(e.to_string()))?;
                // The template writes the special tokens itself.
                encode(&prompt, false)?
            }
            Endpoint::Completions => match &fields.prompt {
                Some(Value::String(p)) => encode(p, true)?,
                Some(Value::Array(ids)) if ids.iter().all(Value::is_u64) => ids
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|i| {
                        u32::try_from(i)
                            .map_err(|_| HttpError::bad_request("token ids fit in 32 bits"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(HttpError::bad_request(
                        "prompt must be a string or a list of token ids",
                    ))
                }
            },
            Endpoint::Generate => match (&fields.text, &fields.input_ids) {
                (Some(text), None) => encode(text, true)?,
                (None, Some(ids)) => ids.clone(),
                _ => return Err(HttpError::bad_request("give one of text or input_ids")),
            },
        };
        Ok((Input::TokenIds(ids), sampling))
    }
}

impl Fields {
    fn clone_sampling(&self) -> Result<Sampling, HttpError> {
        if let Some(sp) = &self.sampling_params {
            return Ok(Sampling {
                temperature: sp.temperature,
                top_p: sp.top_p,
                top_k: sp.top_k,
                max_tokens: sp.max_new_tokens,
                stop: stops(sp.stop.clone())?,
                seed: sp.seed,
                skip_special_tokens: sp.skip_special_tokens.unwrap_or(true),
                router_stops: true,
            });
        }
        Ok(Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: None,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: stops(self.stop.clone())?,
            seed: self.seed,
            skip_special_tokens: true,
            router_stops: true,
        })
    }
}

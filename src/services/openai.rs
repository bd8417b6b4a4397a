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
//! support are refused with 400 naming them. Sampling fields and output
//! constraints (`response_format`, SGLang's `regex` / `ebnf`) go to the
//! engine's own fields (`request`), which enforces them. Tool calls
//! (`tools`) are rendered through the template and read out of the model's
//! text by its format's parser (`crate::tools`), streamed as OpenAI's
//! `tool_calls` deltas; `tool_choice` `required` or a named function
//! constrains the output to calls instead (`chat`). A reasoning model's
//! thought is split into `reasoning_content` (`crate::reasoning`).

mod anthropic;
mod anthropic_output;
mod chat;
mod choices;
mod logprobs;
mod output;
mod request;
mod responses;
mod responses_output;
mod sse;

pub use chat::Formats;
use output::{complete, Output, Parsers};
pub use request::Endpoint;
use request::{check_fields, Fields};
use sse::sse;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;
use serde_json::{json, Value};
use tokio_stream::{Stream, StreamExt};

use super::http_error::HttpError;
use crate::engines;
use crate::engines::translate::Input;
use crate::pb;
use crate::routers::grpc::GrpcRouter;
use crate::routers::select::{is_known_model, model_engine};
use crate::routers::translate::Responses;
use crate::routers::{generate_request_id, RouteError, MODEL_HEADER, REQUEST_ID_HEADER};
use crate::tenants::Meter;
use crate::tokenizer::{ModelTokenizer, Tokenizers};
use crate::transport::grpc::codec::Deframer;
use crate::worker::{ConnectionMode, Engine, WorkerRegistry, WorkerRole};

/// The HTTP front of gRPC engine workers.
#[derive(Debug, Clone)]
pub struct EngineFront {
    registry: Arc<WorkerRegistry>,
    router: Arc<GrpcRouter>,
    tokenizers: Arc<Tokenizers>,
    /// Output formats configured by model.
    formats: Arc<Formats>,
}

/// The most choices (`n`) one request may ask for.
const MAX_CHOICES: u32 = 16;

/// What every choice of an `n` > 1 request shares.
struct Choices<'a> {
    n: u32,
    engine: Engine,
    endpoint: Endpoint,
    fields: &'a Fields,
    tokenizer: &'a Arc<ModelTokenizer>,
    input: &'a Input,
    rendered: Option<&'a str>,
    sampling: &'a engines::translate::Sampling,
    request_id: &'a str,
    /// The tenant's meter, counted on by every choice's stream.
    meter: Option<&'a Arc<Meter>>,
}

/// The API a request came in, and so the shape of its answer.
enum Wire {
    /// OpenAI's chat and completions, SGLang's `/generate`.
    OpenAi,
    /// Anthropic's Messages.
    Anthropic,
    /// OpenAI's Responses, with the request's fields the response echoes.
    Responses(serde_json::Map<String, Value>),
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
            formats: Arc::default(),
        }
    }

    /// With output formats configured by model (others are detected from
    /// their chat templates).
    pub fn with_formats(mut self, formats: Arc<Formats>) -> Self {
        self.formats = formats;
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
        meter: Option<Arc<Meter>>,
    ) -> Result<Response, HttpError> {
        let object: serde_json::Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| HttpError::bad_request(format!("the body is not a JSON object: {e}")))?;
        // Anthropic's Messages API: the chat request it means, answered in
        // its shape.
        // So is OpenAI's Responses API.
        let (object, wire) = match endpoint {
            Endpoint::Messages => (anthropic::to_chat(object, false)?, Wire::Anthropic),
            Endpoint::Responses => {
                let (chat, echo) = responses::to_chat(object)?;
                (chat, Wire::Responses(echo))
            }
            Endpoint::CountTokens => {
                return self.count_tokens(anthropic::to_chat(object, true)?);
            }
            _ => (object, Wire::OpenAi),
        };
        let endpoint = match wire {
            Wire::OpenAi => endpoint,
            _ => Endpoint::Chat,
        };
        check_fields(&object, endpoint, engine)?;
        let fields: Fields = serde_json::from_value(Value::Object(object))
            .map_err(|e| HttpError::bad_request(format!("invalid request: {e}")))?;
        let n = fields.n.unwrap_or(1);
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(HttpError::bad_request(format!(
                "n must be from 1 to {MAX_CHOICES}"
            )));
        }
        let model = fields.model.clone();
        let tokenizer = self
            .tokenizers
            .get(&model)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
        let mut sampling = fields.sampling()?;
        let (mut input, mut rendered) = self.prompt(endpoint, &tokenizer, &model, &fields)?;
        let mut parsers = match (endpoint, &rendered) {
            (Endpoint::Chat, Some(prompt)) => {
                chat::parsers(&fields, &self.formats, &tokenizer, prompt, &mut sampling)?
            }
            _ => Parsers::default(),
        };
        if let (Some(prefill), Input::TokenIds(ids), Some(prompt)) =
            (parsers.prefill.take(), &mut input, &mut rendered)
        {
            // Encoded on its own: it starts with a special token, which
            // no merge crosses.
            ids.extend(
                tokenizer
                    .encode(&prefill, false)
                    .map_err(|e| HttpError::bad_request(e.to_string()))?,
            );
            prompt.push_str(&prefill);
        }
        parsers.logprobs = sampling.logprobs.is_some().then(|| tokenizer.clone());
        let prompt_tokens = match &input {
            Input::TokenIds(ids) => ids.len(),
            Input::Text(_) => 0,
        };
        if let Input::TokenIds(ids) = &input {
            self.router
                .check_prompt(&self.registry.snapshot(), ids.len(), &model)?;
        }
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map_or_else(generate_request_id, str::to_string);
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
        if n > 1 {
            let choices = Choices {
                n,
                engine,
                endpoint,
                fields: &fields,
                tokenizer: &tokenizer,
                input: &input,
                rendered: rendered.as_deref(),
                sampling: &sampling,
                request_id: &request_id,
                meter: meter.as_ref(),
            };
            return self.serve_choices(choices, metadata).await;
        }
        let message = engines::seam(engine)
            .generate_request(&request_id, input, &sampling)
            .map_err(RouteError::from)?;
        let (worker_headers, stream) = self.router.generate(engine, metadata, message).await?;
        let stream =
            stream
                .metered(meter)
                .translated(Responses::new(engine, request_id.clone()).with_text(
                    tokenizer,
                    sampling.stop.clone(),
                    sampling.skip_special_tokens,
                ));
        let out = Output {
            endpoint,
            id: match (&wire, endpoint) {
                (Wire::Anthropic, _) => format!("msg_{request_id}"),
                (Wire::Responses(_), _) => format!("resp_{request_id}"),
                (Wire::OpenAi, Endpoint::Chat) => format!("chatcmpl-{request_id}"),
                _ => format!("cmpl-{request_id}"),
            },
            model,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            include_usage: fields.stream_options.is_some_and(|o| o.include_usage),
            reasoning: parsers.reasoning.is_some() || parsers.harmony.is_some(),
            parsers,
            choice: 0,
        };
        let mut response = match (wire, fields.stream) {
            (Wire::Anthropic, true) => anthropic_output::sse(out, prompt_tokens, stream),
            (Wire::Anthropic, false) => anthropic_output::complete(out, stream)
                .await?
                .into_response(),
            (Wire::Responses(echo), true) => responses_output::sse(out, echo, stream),
            (Wire::Responses(echo), false) => responses_output::complete(out, echo, stream)
                .await?
                .into_response(),
            (Wire::OpenAi, true) => sse(out, stream).into_response(),
            (Wire::OpenAi, false) => complete(out, stream).await?.into_response(),
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

    /// `n` > 1: one call per choice, merged (`choices`).
    async fn serve_choices(
        &self,
        c: Choices<'_>,
        metadata: HeaderMap,
    ) -> Result<Response, HttpError> {
        let mut outs = Vec::with_capacity(c.n as usize);
        let mut streams: Vec<choices::ChoiceStream> = Vec::with_capacity(c.n as usize);
        let mut worker_headers = None;
        for i in 0..c.n {
            let rid = format!("{}-{i}", c.request_id);
            let mut sampling = c.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(u64::from(i)));
            let mut parsers = match (c.endpoint, c.rendered) {
                (Endpoint::Chat, Some(prompt)) => chat::parsers(
                    c.fields,
                    &self.formats,
                    c.tokenizer,
                    prompt,
                    &mut sampling.clone(),
                )?,
                _ => Parsers::default(),
            };
            parsers.logprobs = sampling.logprobs.is_some().then(|| c.tokenizer.clone());
            let message = engines::seam(c.engine)
                .generate_request(&rid, c.input.clone(), &sampling)
                .map_err(RouteError::from)?;
            let (headers, stream) = self
                .router
                .generate(c.engine, metadata.clone(), message)
                .await?;
            worker_headers.get_or_insert(headers);
            streams.push(Box::pin(stream.metered(c.meter.cloned()).translated(
                Responses::new(c.engine, rid).with_text(
                    c.tokenizer.clone(),
                    sampling.stop.clone(),
                    sampling.skip_special_tokens,
                ),
            )));
            outs.push(Output {
                endpoint: c.endpoint,
                id: match c.endpoint {
                    Endpoint::Chat => format!("chatcmpl-{}", c.request_id),
                    _ => format!("cmpl-{}", c.request_id),
                },
                model: c.fields.model.clone(),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                include_usage: c
                    .fields
                    .stream_options
                    .as_ref()
                    .is_some_and(|o| o.include_usage),
                reasoning: parsers.reasoning.is_some() || parsers.harmony.is_some(),
                parsers,
                choice: i as usize,
            });
        }
        let mut response = if c.fields.stream {
            choices::sse(outs, streams)
        } else {
            choices::complete(outs, streams).await?.into_response()
        };
        if let Some(v) = worker_headers.and_then(|h| h.get("x-request-id").cloned()) {
            response.headers_mut().insert("x-request-id", v);
        }
        Ok(response)
    }

    /// Anthropic's `count_tokens`: the prompt's length once rendered (tools
    /// included) and tokenized; nothing is sent to a worker.
    fn count_tokens(&self, object: serde_json::Map<String, Value>) -> Result<Response, HttpError> {
        let fields: Fields = serde_json::from_value(Value::Object(object))
            .map_err(|e| HttpError::bad_request(format!("invalid request: {e}")))?;
        let tokenizer = self
            .tokenizers
            .get(&fields.model)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
        let (input, _) = self.prompt(Endpoint::Chat, &tokenizer, &fields.model, &fields)?;
        let n = match input {
            Input::TokenIds(ids) => ids.len(),
            Input::Text(_) => 0,
        };
        Ok(axum::Json(json!({"input_tokens": n})).into_response())
    }

    /// The prompt as token ids, and a chat prompt's rendered text.
    fn prompt(
        &self,
        endpoint: Endpoint,
        tokenizer: &ModelTokenizer,
        model: &str,
        fields: &Fields,
    ) -> Result<(Input, Option<String>), HttpError> {
        let encode = |text: &str, special: bool| {
            tokenizer
                .encode(text, special)
                .map_err(|e| HttpError::bad_request(e.to_string()))
        };
        let ids = match endpoint {
            Endpoint::Chat | Endpoint::Messages | Endpoint::Responses | Endpoint::CountTokens => {
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
                    .apply_chat_template_with(
                        model,
                        &messages,
                        offered,
                        &chat::template_kwargs(fields)?,
                        true,
                    )
                    .map_err(|e| HttpError::bad_request(e.to_string()))?;
                // The template writes the special tokens itself.
                let ids = encode(&prompt, false)?;
                return Ok((Input::TokenIds(ids), Some(prompt)));
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
        Ok((Input::TokenIds(ids), None))
    }
}

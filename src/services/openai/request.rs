//! What a request to the front may carry, endpoint by endpoint, and its
//! sampling parameters and output constraint as the engines take them.
//! Anything not listed is refused with 400 naming it.

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engines::translate::{Constraint, Sampling};
use crate::services::HttpError;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/generate` (SGLang's shape).
    Generate,
    /// `/v1/messages` (Anthropic's Messages API; served as the chat
    /// request it means).
    Messages,
    /// `/v1/messages/count_tokens`.
    CountTokens,
    /// `/v1/responses` (OpenAI's Responses API, stateless; served as the
    /// chat request it means).
    Responses,
}

/// Sampling fields the chat and completion endpoints share (OpenAI's, and
/// the vLLM and SGLang extensions clients send them with).
const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "n",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "min_tokens",
    "seed",
    "stream",
    "stream_options",
    "user",
    "response_format",
    "regex",
    "ebnf",
    "logprobs",
];
const CHAT_ONLY: &[&str] = &[
    "top_logprobs",
    "messages",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template_kwargs",
    "reasoning_effort",
    "separate_reasoning",
];
const COMPLETION_ONLY: &[&str] = &["prompt"];
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
    "min_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "skip_special_tokens",
    "seed",
    "json_schema",
    "regex",
    "ebnf",
];

/// The fields an endpoint takes.
pub(super) fn known(endpoint: Endpoint) -> &'static [&'static str] {
    // Joined once, not per request.
    static CHAT: LazyLock<Vec<&str>> = LazyLock::new(|| [SAMPLING_FIELDS, CHAT_ONLY].concat());
    static COMPLETIONS: LazyLock<Vec<&str>> =
        LazyLock::new(|| [SAMPLING_FIELDS, COMPLETION_ONLY].concat());
    match endpoint {
        // Anthropic's requests are checked as the chat requests they become.
        Endpoint::Chat | Endpoint::Messages | Endpoint::Responses | Endpoint::CountTokens => &CHAT,
        Endpoint::Completions => &COMPLETIONS,
        Endpoint::Generate => GENERATE_FIELDS,
    }
}

/// Refuses fields `endpoint` does not take, naming them (and, for
/// `/generate`, unknown `sampling_params`).
pub(super) fn check_fields(
    object: &Map<String, Value>,
    endpoint: Endpoint,
    engine: impl std::fmt::Display,
) -> Result<(), HttpError> {
    refuse_unknown(
        object,
        known(endpoint),
        format_args!("{engine} gRPC workers"),
    )?;
    if let Some(Value::Object(sp)) = object.get("sampling_params") {
        if let Some(extra) = unsupported(sp, GENERATE_SAMPLING) {
            return Err(HttpError::bad_request(format!(
                "unsupported sampling_params: {extra} (supported: {})",
                GENERATE_SAMPLING.join(", ")
            )));
        }
    }
    Ok(())
}

/// A request's fields, whichever endpoint it came to.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Fields {
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) messages: Vec<Message_>,
    #[serde(default)]
    pub(super) prompt: Option<Value>,
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) input_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub(super) n: Option<u32>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    pub(super) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(super) sampling_params: Option<Params>,
    #[serde(default)]
    pub(super) tools: Option<Value>,
    #[serde(default)]
    pub(super) tool_choice: Option<Value>,
    #[serde(default)]
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub(super) chat_template_kwargs: Option<Map<String, Value>>,
    #[serde(default)]
    pub(super) reasoning_effort: Option<String>,
    #[serde(default)]
    pub(super) separate_reasoning: Option<bool>,
    #[serde(default)]
    pub(super) response_format: Option<Value>,
    #[serde(default)]
    pub(super) max_completion_tokens: Option<u32>,
    /// Chat: `true`; completions: how many alternatives.
    #[serde(default)]
    pub(super) logprobs: Option<Value>,
    #[serde(default)]
    pub(super) top_logprobs: Option<u32>,
    /// The sampling fields, at the top level (chat, completions).
    #[serde(flatten)]
    pub(super) params: Params,
}

/// Sampling parameters, by OpenAI's names and SGLang's (`/generate`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Params {
    #[serde(default, alias = "max_new_tokens")]
    max_tokens: Option<u32>,
    #[serde(default, alias = "min_new_tokens")]
    min_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    min_p: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    logit_bias: Option<Map<String, Value>>,
    stop: Option<Value>,
    #[serde(default)]
    stop_token_ids: Vec<u32>,
    #[serde(default)]
    ignore_eos: bool,
    skip_special_tokens: Option<bool>,
    seed: Option<u64>,
    json_schema: Option<Value>,
    regex: Option<String>,
    ebnf: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub(super) include_usage: bool,
}

/// A 400 naming `object`'s keys not in `known` (for a model served by
/// `served_by`), if there are any.
pub(super) fn refuse_unknown(
    object: &Map<String, Value>,
    known: &[&str],
    served_by: impl std::fmt::Display,
) -> Result<(), HttpError> {
    match unsupported(object, known) {
        Some(extra) => Err(HttpError::bad_request(format!(
            "unsupported parameter(s) for a model served by {served_by}: {extra} (supported: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The names of `object`'s keys not in `known`, for a 400 that names them.
fn unsupported(object: &Map<String, Value>, known: &[&str]) -> Option<String> {
    let extra: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    (!extra.is_empty()).then(|| extra.join(", "))
}

/// `stop`: a string or a list of strings.
fn stops(value: Option<&Value>) -> Result<Vec<String>, HttpError> {
    let refuse = || HttpError::bad_request("stop must be a string or a list of strings");
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(refuse))
            .collect(),
        Some(_) => Err(refuse()),
    }
}

/// `logit_bias`: token ids (as strings, OpenAI's JSON) to a bias from −100
/// to 100.
fn logit_bias(map: Option<&Map<String, Value>>) -> Result<Vec<(u32, f32)>, HttpError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    map.iter()
        .map(|(id, bias)| {
            let id = id.parse::<u32>().map_err(|_| {
                HttpError::bad_request(format!("logit_bias key {id:?} is not a token id"))
            })?;
            match bias.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(HttpError::bad_request(format!(
                    "logit_bias[{id}] must be a number from -100 to 100"
                ))),
            }
        })
        .collect()
}

/// `response_format`: `text`, `json_object` or `json_schema` (with its
/// `schema`).
fn response_format(value: Option<&Value>) -> Result<Option<Constraint>, HttpError> {
    let refuse = || {
        HttpError::bad_request(
            "response_format must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or \
             {\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
        )
    };
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => value
            .pointer("/json_schema/schema")
            .filter(|s| s.is_object())
            .map(|s| Some(Constraint::JsonSchema(s.to_string())))
            .ok_or_else(refuse),
        _ => Err(refuse()),
    }
}

impl Fields {
    /// The sampling parameters, and the output constraint asked for.
    pub(super) fn sampling(&self) -> Result<Sampling, HttpError> {
        let generate = self.sampling_params.is_some();
        let p = self.sampling_params.as_ref().unwrap_or(&self.params);
        let mut constraints = Vec::new();
        if let Some(c) = response_format(self.response_format.as_ref())? {
            constraints.push(c);
        }
        match &p.json_schema {
            None | Some(Value::Null) => {}
            // SGLang's `json_schema` is the schema's JSON text.
            Some(Value::String(s)) => constraints.push(Constraint::JsonSchema(s.clone())),
            Some(schema @ Value::Object(_)) => {
                constraints.push(Constraint::JsonSchema(schema.to_string()))
            }
            Some(_) => {
                return Err(HttpError::bad_request(
                    "sampling_params.json_schema must be a JSON schema (an object or its text)",
                ))
            }
        }
        constraints.extend(p.regex.clone().map(Constraint::Regex));
        constraints.extend(p.ebnf.clone().map(Constraint::Grammar));
        if constraints.len() > 1 {
            return Err(HttpError::bad_request(
                "give at most one of response_format, json_schema, regex and ebnf",
            ));
        }
        Ok(Sampling {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            max_tokens: if generate {
                p.max_tokens
            } else {
                self.max_completion_tokens.or(p.max_tokens)
            },
            stop: stops(p.stop.as_ref())?,
            seed: p.seed,
            skip_special_tokens: p.skip_special_tokens.unwrap_or(true),
            router_stops: true,
            min_p: p.min_p,
            frequency_penalty: p.frequency_penalty,
            presence_penalty: p.presence_penalty,
            repetition_penalty: p.repetition_penalty,
            min_tokens: p.min_tokens,
            stop_token_ids: p.stop_token_ids.clone(),
            ignore_eos: p.ignore_eos,
            logit_bias: logit_bias(p.logit_bias.as_ref())?,
            constraint: constraints.pop(),
            logprobs: self.logprobs_asked()?,
        })
    }

    /// How many alternatives per token the request asks log probabilities
    /// for, if it asks for any: chat's `logprobs: true` with
    /// `top_logprobs`, completions' `logprobs: N` (0 to 20 either way).
    fn logprobs_asked(&self) -> Result<Option<u32>, HttpError> {
        let n = match (&self.logprobs, self.top_logprobs) {
            (None | Some(Value::Null) | Some(Value::Bool(false)), None) => return Ok(None),
            (None | Some(Value::Null) | Some(Value::Bool(false)), Some(_)) => {
                return Err(HttpError::bad_request("top_logprobs needs logprobs: true"))
            }
            (Some(Value::Bool(true)), top) => top.unwrap_or(0),
            (Some(Value::Number(n)), None) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| HttpError::bad_request("logprobs must be a count from 0 to 20"))?,
            _ => {
                return Err(HttpError::bad_request(
                    "logprobs must be true (chat, with top_logprobs) or a count (completions)",
                ))
            }
        };
        if n > 20 {
            return Err(HttpError::bad_request(
                "at most 20 alternatives per token (top_logprobs / logprobs)",
            ));
        }
        Ok(Some(n))
    }
}

/// A chat message; `content` a string or a list of text parts.
#[derive(Debug, Deserialize)]
pub(super) struct Message_ {
    pub(super) role: String,
    #[serde(default)]
    pub(super) content: Value,
    #[serde(default)]
    pub(super) tool_calls: Option<Value>,
    #[serde(default)]
    pub(super) tool_call_id: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) reasoning_content: Option<String>,
}

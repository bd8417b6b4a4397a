//! A chat request's messages, tools and reasoning: `tools`, `tool_choice`
//! and `parallel_tool_calls` checked and the way calls are read chosen (the
//! model's format, or a constraint), the model's reasoning format chosen,
//! the template's variables, and messages (text content, calls and their
//! results, earlier thoughts) made ready for the template.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::output::Parsers;
use super::request::{Fields, Message_};
use crate::engines::translate::{Constraint, Sampling};
use crate::reasoning::harmony::HarmonyParser;
use crate::reasoning::{ReasoningFormat, ReasoningParser};
use crate::services::HttpError;
use crate::tokenizer::{ChatMessage, ModelTokenizer};
use crate::tools::{ToolFormat, ToolParser};

/// The formats of models' output, configured by model (a model not listed
/// has its formats detected from its chat template).
#[derive(Debug, Clone, Default)]
pub struct Formats {
    /// Tool-call formats (`[tool_parsers]`, `--tool-parser`).
    pub tools: HashMap<String, ToolFormat>,
    /// Reasoning formats (`[reasoning_parsers]`, `--reasoning-parser`).
    pub reasoning: HashMap<String, ReasoningFormat>,
}

/// The parsers a chat request's output goes through (`prompt`: the
/// rendered prompt), and what the engine must be asked for them (special
/// tokens kept for formats whose markers are special tokens; the schema of
/// a constrained tool choice).
pub(super) fn parsers(
    fields: &Fields,
    formats: &Formats,
    tokenizer: &ModelTokenizer,
    prompt: &str,
    sampling: &mut Sampling,
) -> Result<Parsers, HttpError> {
    let model = fields.model.as_str();
    let reasoning = formats
        .reasoning
        .get(model)
        .copied()
        .or_else(|| tokenizer.chat_template().and_then(ReasoningFormat::detect));
    let harmony = reasoning == Some(ReasoningFormat::Harmony);
    let calls = offered(fields, &formats.tools, model, tokenizer, harmony)?;
    let offers = calls.is_some();
    let constrained = matches!(calls, Some(Calls::Constrained { .. }));
    let mut parsers = Parsers {
        fold_thought: fields.separate_reasoning == Some(false),
        ..Parsers::default()
    };
    match calls {
        Some(Calls::Format(format)) => {
            if format.keeps_special_tokens() {
                // Its calls are marked by special tokens.
                sampling.skip_special_tokens = false;
            }
            // Strict tools: the engine holds their calls to the format and
            // their arguments to the schemas (a response_format, which
            // constrains the whole output, goes first).
            if sampling.constraint.is_none() {
                let strict = strict_tools(fields);
                sampling.constraint = format
                    .structural_tag(&strict)
                    .map(Constraint::StructuralTag);
            }
            parsers.tools = Some(ToolParser::new(format));
        }
        Some(Calls::Constrained {
            parser,
            schema,
            prefill,
        }) => {
            if sampling.constraint.is_some() {
                return Err(HttpError::bad_request(
                    "tool_choice \"required\" or a named function constrains the output itself: leave out response_format",
                ));
            }
            sampling.constraint = Some(Constraint::JsonSchema(schema));
            parsers.tools = Some(*parser);
            parsers.prefill = prefill;
        }
        Some(Calls::Harmony) | None => {}
    }
    if harmony {
        // Its channels are special tokens. A constrained call's header is
        // in the prompt: what follows is JSON, with no channels to read.
        if !constrained {
            sampling.skip_special_tokens = false;
            parsers.harmony = Some(HarmonyParser::new(offers));
        }
    } else if let Some(format) = reasoning.filter(|_| !parsers.fold_thought) {
        parsers.reasoning = Some(ReasoningParser::new(format, prompt));
    }
    Ok(parsers)
}

/// How a chat request's tool calls are read out of the output.
pub(super) enum Calls {
    /// In the model's own format, when it chooses to call (`auto`).
    Format(ToolFormat),
    /// The output constrained to calls (`required`, a named function): the
    /// engine enforces `schema`, `parser` reads what it allows; `prefill`
    /// opens the assistant's message for it (harmony models).
    Constrained {
        parser: Box<ToolParser>,
        schema: String,
        prefill: Option<String>,
    },
    /// In harmony's messages (gpt-oss), read with its thought and answer.
    Harmony,
}

/// The tools a chat request offers and how its calls are read: `None` when
/// it offers none (or `tool_choice` is `none`).
fn offered(
    fields: &Fields,
    formats: &HashMap<String, ToolFormat>,
    model: &str,
    tokenizer: &ModelTokenizer,
    harmony: bool,
) -> Result<Option<Calls>, HttpError> {
    let tools: &[Value] = match &fields.tools {
        None | Some(Value::Null) => &[],
        Some(Value::Array(tools)) => {
            for (i, tool) in tools.iter().enumerate() {
                if function_name(tool).is_none() {
                    return Err(HttpError::bad_request(format!(
                        "tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": ...}}}}"
                    )));
                }
            }
            tools
        }
        Some(_) => return Err(HttpError::bad_request("tools must be a list")),
    };
    let choice_error = || {
        HttpError::bad_request(
            "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )
    };
    match &fields.tool_choice {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => {}
        Some(Value::String(s)) if s == "required" => {
            if tools.is_empty() {
                return Err(HttpError::bad_request(
                    "tool_choice \"required\" needs tools",
                ));
            }
            let single = fields.parallel_tool_calls == Some(false);
            // Harmony (gpt-oss) writes its calls as messages of their own,
            // whose headers are special tokens no JSON constraint allows:
            // the calls' array is written as the final answer, its header
            // given (as vLLM does), and the model does not reason first.
            return Ok(Some(Calls::Constrained {
                parser: Box::new(ToolParser::array()),
                schema: required_schema(tools, single).to_string(),
                prefill: harmony.then(|| HARMONY_FINAL.to_string()),
            }));
        }
        Some(choice @ Value::Object(_)) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(choice_error)?;
            let tool = tools
                .iter()
                .find(|t| function_name(t) == Some(name))
                .ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "tool_choice names {name:?}, which is not among the tools"
                    ))
                })?;
            // Harmony: the call's own header, as the model writes it; the
            // arguments follow.
            return Ok(Some(Calls::Constrained {
                parser: Box::new(ToolParser::named(name)),
                schema: parameters(tool).to_string(),
                prefill: harmony.then(|| harmony_call_header(name)),
            }));
        }
        Some(_) => return Err(choice_error()),
    }
    if tools.is_empty() {
        return Ok(None);
    }
    if harmony {
        return Ok(Some(Calls::Harmony));
    }
    let format = formats
        .get(model)
        .copied()
        .or_else(|| tokenizer.chat_template().and_then(ToolFormat::detect));
    format.map(|f| Some(Calls::Format(f))).ok_or_else(|| {
        HttpError::bad_request(format!(
            "model {model:?} has no known tool-call format (its chat template shows none): \
             set one with --tool-parser {model}=FORMAT or [tool_parsers] in the config ({}), \
             or use tool_choice \"required\" or a named function",
            ToolFormat::ALL.map(ToolFormat::name).join(", ")
        ))
    })
}

/// The header of a harmony (gpt-oss) assistant message in its final
/// channel.
const HARMONY_FINAL: &str = "<|channel|>final<|message|>";

/// The header of a harmony assistant message calling function `name` with
/// JSON arguments.
fn harmony_call_header(name: &str) -> String {
    format!("<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>")
}

/// A tool's function name, if it is a function with one.
fn function_name(tool: &Value) -> Option<&str> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return None;
    }
    tool.pointer("/function/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// The offered functions marked `strict`, with their parameters' schemas.
fn strict_tools(fields: &Fields) -> Vec<(&str, Value)> {
    let Some(Value::Array(tools)) = &fields.tools else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| t.pointer("/function/strict") == Some(&Value::Bool(true)))
        .filter_map(|t| Some((function_name(t)?, parameters(t))))
        .collect()
}

/// A tool's parameters' schema (any object when it gives none).
fn parameters(tool: &Value) -> Value {
    tool.pointer("/function/parameters")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}))
}

/// The output `tool_choice: required` allows: a JSON array of at least one
/// call `{"name": ..., "parameters": ...}` of an offered tool (one at most
/// when `parallel_tool_calls` is false), as vLLM constrains it.
fn required_schema(tools: &[Value], single: bool) -> Value {
    let calls: Vec<Value> = tools
        .iter()
        .filter_map(|t| {
            let name = function_name(t)?;
            Some(json!({
                "type": "object",
                "properties": {"name": {"type": "string", "enum": [name]}, "parameters": parameters(t)},
                "required": ["name", "parameters"],
            }))
        })
        .collect();
    let mut schema = json!({"type": "array", "minItems": 1, "items": {"anyOf": calls}});
    if single {
        schema["maxItems"] = json!(1);
    }
    schema
}

/// The request's variables for the template: `chat_template_kwargs` (such
/// as `enable_thinking`) and `reasoning_effort`.
pub(super) fn template_kwargs(fields: &Fields) -> Result<Map<String, Value>, HttpError> {
    let mut kwargs = fields.chat_template_kwargs.clone().unwrap_or_default();
    if let Some(effort) = &fields.reasoning_effort {
        if !["none", "minimal", "low", "medium", "high"].contains(&effort.as_str()) {
            return Err(HttpError::bad_request(
                "reasoning_effort must be one of none, minimal, low, medium, high",
            ));
        }
        kwargs.insert("reasoning_effort".into(), Value::String(effort.clone()));
    }
    Ok(kwargs)
}

/// A request message as the template sees it: an assistant's calls with
/// their arguments as objects (as Hugging Face templates take them), a
/// tool message's call id and name.
pub(super) fn message(m: &Message_) -> Result<ChatMessage, HttpError> {
    let tool_calls = match &m.tool_calls {
        None | Some(Value::Null) => None,
        Some(Value::Array(calls)) => Some(Value::Array(
            calls
                .iter()
                .map(|call| {
                    let mut call = call.clone();
                    if let Some(args) = call.pointer_mut("/function/arguments") {
                        if let Some(parsed) = args
                            .as_str()
                            .and_then(|s| serde_json::from_str::<Value>(s).ok())
                            .filter(Value::is_object)
                        {
                            *args = parsed;
                        }
                    }
                    call
                })
                .collect(),
        )),
        Some(_) => {
            return Err(HttpError::bad_request(
                "a message's tool_calls must be a list",
            ))
        }
    };
    Ok(ChatMessage {
        role: m.role.clone(),
        content: content_text(&m.content)?,
        tool_calls,
        tool_call_id: m.tool_call_id.clone(),
        name: m.name.clone(),
        reasoning_content: m.reasoning_content.clone(),
    })
}

/// A message's text: a string, or the text parts of a list.
fn content_text(content: &Value) -> Result<String, HttpError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => Ok(t),
                    _ => Err(HttpError::bad_request(
                        "only text content parts are supported for gRPC engine workers",
                    )),
                }
            })
            .collect(),
        _ => Err(HttpError::bad_request(
            "message content must be a string or a list of parts",
        )),
    }
}

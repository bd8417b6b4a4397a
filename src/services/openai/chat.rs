//! A chat request's messages and tools: `tools`, `tool_choice` and
//! `parallel_tool_calls` checked, the model's tool-call format chosen, and
//! messages (text content, calls and their results) made ready for the
//! template.

use std::collections::HashMap;

use serde_json::Value;

use serde::Deserialize;

use crate::services::HttpError;
use crate::tokenizer::{ChatMessage, ModelTokenizer};
use crate::tools::ToolFormat;

/// The tools a chat request offers, and the format its model's calls come
/// in: `None` when it offers none (or `tool_choice` is `none`).
pub(super) fn offered(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    formats: &HashMap<String, ToolFormat>,
    model: &str,
    tokenizer: &ModelTokenizer,
) -> Result<Option<ToolFormat>, HttpError> {
    let listed = match tools {
        None | Some(Value::Null) => 0,
        Some(Value::Array(tools)) => {
            for (i, tool) in tools.iter().enumerate() {
                let named = tool.get("type").and_then(Value::as_str) == Some("function")
                    && tool
                        .get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.is_empty());
                if !named {
                    return Err(HttpError::bad_request(format!(
                        "tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": ...}}}}"
                    )));
                }
            }
            tools.len()
        }
        Some(_) => return Err(HttpError::bad_request("tools must be a list")),
    };
    match tool_choice {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => {}
        Some(Value::String(s)) if s == "required" => {
            return Err(HttpError::bad_request(
                "tool_choice \"required\" needs constrained decoding, which this router does not send yet: use \"auto\"",
            ))
        }
        Some(Value::Object(_)) => {
            return Err(HttpError::bad_request(
                "tool_choice naming a function needs constrained decoding, which this router does not send yet: use \"auto\"",
            ))
        }
        Some(_) => {
            return Err(HttpError::bad_request(
                "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", ...}",
            ))
        }
    }
    if listed == 0 {
        return Ok(None);
    }
    let format = formats
        .get(model)
        .copied()
        .or_else(|| tokenizer.chat_template().and_then(ToolFormat::detect));
    format.map(Some).ok_or_else(|| {
        HttpError::bad_request(format!(
            "model {model:?} has no known tool-call format (its chat template shows none): \
             set one with --tool-parser {model}=FORMAT or [tool_parsers] in the config ({})",
            ToolFormat::ALL.map(ToolFormat::name).join(", ")
        ))
    })
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
    })
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

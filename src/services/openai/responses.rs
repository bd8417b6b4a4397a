//! OpenAI's Responses API (`POST /v1/responses`), stateless, on the chat
//! machinery: a request is rewritten as the chat request it means
//! (`instructions`, `input` items, function tools, `tool_choice`,
//! `reasoning.effort`, `text.format`) and served as one; its output is
//! written as a response object and its typed events (`responses_output`).
//!
//! Nothing is stored: `previous_response_id` is refused (send the whole
//! conversation in `input`), and `store` is accepted and ignored.

use serde_json::{json, Map, Value};

use super::request::refuse_unknown;
use crate::services::HttpError;

/// Fields of the Responses API this front takes.
const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "reasoning",
    "text",
    "store",
    "metadata",
    "user",
    "include",
    "truncation",
];

/// A JSON object.
type Object = Map<String, Value>;

/// The chat request a Responses request means, and the request's fields the
/// response echoes (`tools`, `tool_choice`, ...).
pub(super) fn to_chat(mut object: Object) -> Result<(Object, Object), HttpError> {
    if object.contains_key("previous_response_id") {
        return Err(HttpError::bad_request(
            "previous_response_id: this router keeps no responses; send the whole conversation in input",
        ));
    }
    refuse_unknown(&object, FIELDS, "gRPC engine workers")?;
    let mut echo = Map::new();
    for key in [
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "metadata",
    ] {
        if let Some(v) = object.get(key) {
            echo.insert(key.into(), v.clone());
        }
    }
    let mut chat = Map::new();
    chat.insert("model".into(), object.remove("model").unwrap_or_default());
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stream", "stream"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
    ] {
        if let Some(v) = object.remove(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v);
        }
    }
    let mut messages = Vec::new();
    if let Some(Value::String(instructions)) = object.remove("instructions") {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match object.remove("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        _ => {
            return Err(HttpError::bad_request(
                "input must be a string or a list of items",
            ))
        }
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = object.remove("tools").filter(|t| !t.is_null()) {
        chat.insert("tools".into(), chat_tools(&tools)?);
    }
    if let Some(choice) = object.remove("tool_choice").filter(|t| !t.is_null()) {
        let choice = match &choice {
            Value::String(_) => choice,
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or_default()}})
            }
            _ => {
                return Err(HttpError::bad_request(
                    "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                ))
            }
        };
        chat.insert("tool_choice".into(), choice);
    }
    if let Some(effort) = object
        .remove("reasoning")
        .and_then(|r| r.get("effort").cloned())
        .filter(|e| !e.is_null())
    {
        chat.insert("reasoning_effort".into(), effort);
    }
    if let Some(format) = object
        .remove("text")
        .and_then(|t| t.get("format").cloned())
        .filter(|f| !f.is_null())
    {
        let format = match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => json!({"type": "json_schema", "json_schema": {
                "name": format.get("name").cloned().unwrap_or_default(),
                "schema": format.get("schema").cloned().unwrap_or_default(),
                "strict": format.get("strict").cloned().unwrap_or_default(),
            }}),
            _ => format,
        };
        chat.insert("response_format".into(), format);
    }
    Ok((chat, echo))
}

/// The text of a message item's content: a string, or its text parts.
fn content_text(content: &Value, i: usize) -> Result<String, HttpError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => Ok(t),
                    (kind, _) => Err(HttpError::bad_request(format!(
                        "input[{i}]: {} content is not supported for gRPC engine workers (only text)",
                        kind.unwrap_or("untyped")
                    ))),
                }
            })
            .collect(),
        _ => Err(HttpError::bad_request(format!(
            "input[{i}].content must be a string or a list of parts"
        ))),
    }
}

/// One input item as chat messages: a message; a function call (joined to
/// the assistant message before it, as one turn's calls); a call's output
/// (a `tool` message). Reasoning items are the model's own and are left out.
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), HttpError> {
    match item.get("type").and_then(Value::as_str).unwrap_or("message") {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("developer") | Some("system") => "system",
                Some(role @ ("user" | "assistant")) => role,
                _ => {
                    return Err(HttpError::bad_request(format!(
                        "input[{i}].role must be user, assistant, system or developer"
                    )))
                }
            };
            let text = content_text(item.get("content").unwrap_or(&Value::Null), i)?;
            messages.push(json!({"role": role, "content": text}));
        }
        "function_call" => {
            let call = json!({
                "id": item.get("call_id").cloned().unwrap_or_default(), "type": "function",
                "function": {"name": item.get("name").cloned().unwrap_or_default(),
                             "arguments": item.get("arguments").cloned().unwrap_or_else(|| json!("{}"))},
            });
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" => {
                    if !last["tool_calls"].is_array() {
                        last["tool_calls"] = json!([]);
                    }
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => messages.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => content_text(other, i)?,
                None => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": item.get("call_id").cloned().unwrap_or_default(), "content": output}));
        }
        "reasoning" => {}
        other => {
            return Err(HttpError::bad_request(format!(
                "input[{i}]: {other:?} items are not supported (supported: message, function_call, function_call_output, reasoning)"
            )))
        }
    }
    Ok(())
}

/// The Responses API's flat function tools as chat tools.
fn chat_tools(tools: &Value) -> Result<Value, HttpError> {
    let Value::Array(tools) = tools else {
        return Err(HttpError::bad_request("tools must be a list"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            match (
                tool.get("type").and_then(Value::as_str),
                tool.get("name").and_then(Value::as_str),
            ) {
                (Some("function"), Some(name)) if !name.is_empty() => {
                    let mut function = json!({"name": name});
                    for key in ["description", "parameters", "strict"] {
                        if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                            function[key] = v.clone();
                        }
                    }
                    Ok(json!({"type": "function", "function": function}))
                }
                _ => Err(HttpError::bad_request(format!(
                    "tools[{i}] must be {{\"type\": \"function\", \"name\": ..., \"parameters\": {{...}}}} (hosted tools are not available here)"
                ))),
            }
        })
        .collect()
}

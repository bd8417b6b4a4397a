//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`)
//! on the chat machinery: a request is rewritten as the chat request it
//! means (system prompt, content blocks, tools, tool choice, thinking) and
//! served as one; its output is written in Anthropic's shape
//! (`anthropic_output`).
//!
//! Blocks: `text`; an assistant's `tool_use` (its calls) and `thinking`
//! (its earlier thought, as `reasoning_content`); a user's `tool_result`
//! (a `tool` message, `is_error` marked in its text). Images, documents and
//! Anthropic's server tools are refused with 400 naming them.

use serde_json::{json, Map, Value};

use super::request::refuse_unknown;
use crate::services::HttpError;

/// Fields Anthropic's Messages API defines that this front takes.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
];

/// The chat request an Anthropic Messages request means (`count`: for
/// `count_tokens`, where `max_tokens` is not given).
pub(super) fn to_chat(
    mut object: Map<String, Value>,
    count: bool,
) -> Result<Map<String, Value>, HttpError> {
    refuse_unknown(&object, FIELDS, "gRPC engine workers")?;
    let mut chat = Map::new();
    let take = |object: &mut Map<String, Value>, key: &str| object.remove(key);
    chat.insert(
        "model".into(),
        take(&mut object, "model").unwrap_or_default(),
    );
    match take(&mut object, "max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
            chat.insert("max_tokens".into(), Value::Number(n));
        }
        None if count => {}
        _ => {
            return Err(HttpError::bad_request(
                "max_tokens is required: a whole number of at least 1",
            ))
        }
    }
    for key in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = take(&mut object, key) {
            chat.insert(key.into(), v);
        }
    }
    if let Some(stops) = take(&mut object, "stop_sequences") {
        chat.insert("stop".into(), stops);
    }
    let mut messages = Vec::new();
    match take(&mut object, "system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            messages.push(json!({"role": "system", "content": text_of(&system, "system")?}))
        }
    }
    let Some(Value::Array(turns)) = take(&mut object, "messages") else {
        return Err(HttpError::bad_request(
            "messages must be a list of {\"role\": \"user\" | \"assistant\", \"content\": ...}",
        ));
    };
    for (i, turn) in turns.iter().enumerate() {
        messages.extend(turn_messages(turn, i)?);
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = take(&mut object, "tools").filter(|t| !t.is_null()) {
        chat.insert("tools".into(), chat_tools(&tools)?);
    }
    if let Some(choice) = take(&mut object, "tool_choice").filter(|t| !t.is_null()) {
        let (choice, parallel) = chat_tool_choice(&choice)?;
        chat.insert("tool_choice".into(), choice);
        if let Some(parallel) = parallel {
            chat.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    if let Some(thinking) = take(&mut object, "thinking").filter(|t| !t.is_null()) {
        let enabled = match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => true,
            Some("disabled") => false,
            _ => {
                return Err(HttpError::bad_request(
                    "thinking must be {\"type\": \"enabled\", \"budget_tokens\": N} or {\"type\": \"disabled\"}",
                ))
            }
        };
        // The template's switch, by the names templates use.
        chat.insert(
            "chat_template_kwargs".into(),
            json!({"enable_thinking": enabled, "thinking": enabled}),
        );
    }
    Ok(chat)
}

/// The text of a `system` prompt or a message's content: a string, or a
/// list of `text` blocks.
fn text_of(content: &Value, what: &str) -> Result<String, HttpError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .map(
                |b| match (block_type(b), b.get("text").and_then(Value::as_str)) {
                    ("text", Some(t)) => Ok(t),
                    (kind, _) => Err(HttpError::bad_request(format!(
                        "{what}: only text blocks are supported here, not {kind:?}"
                    ))),
                },
            )
            .collect(),
        _ => Err(HttpError::bad_request(format!(
            "{what} must be a string or a list of text blocks"
        ))),
    }
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The chat messages one Anthropic turn makes: an assistant's text, thought
/// and calls in one message; a user's tool results as `tool` messages,
/// before the text beside them.
fn turn_messages(turn: &Value, i: usize) -> Result<Vec<Value>, HttpError> {
    let role = turn.get("role").and_then(Value::as_str);
    let content = turn.get("content").unwrap_or(&Value::Null);
    let blocks: Vec<Value> = match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(blocks) => blocks.clone(),
        _ => {
            return Err(HttpError::bad_request(format!(
                "messages[{i}].content must be a string or a list of blocks"
            )))
        }
    };
    let mut text = String::new();
    match role {
        Some("assistant") => {
            let (mut thought, mut calls) = (String::new(), Vec::new());
            for block in &blocks {
                match block_type(block) {
                    "text" => text.push_str(block["text"].as_str().unwrap_or_default()),
                    "thinking" => {
                        thought.push_str(block["thinking"].as_str().unwrap_or_default())
                    }
                    "redacted_thinking" => {}
                    "tool_use" => calls.push(json!({
                        "id": block["id"], "type": "function",
                        "function": {"name": block["name"], "arguments": block.get("input").cloned().unwrap_or_else(|| json!({})).to_string()},
                    })),
                    other => return Err(unsupported_block(i, other)),
                }
            }
            let mut message = json!({"role": "assistant", "content": text});
            if !thought.is_empty() {
                message["reasoning_content"] = Value::String(thought);
            }
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            }
            Ok(vec![message])
        }
        Some("user") => {
            let mut out = Vec::new();
            for block in &blocks {
                match block_type(block) {
                    "text" => text.push_str(block["text"].as_str().unwrap_or_default()),
                    "tool_result" => {
                        let mut result = match block.get("content") {
                            None | Some(Value::Null) => String::new(),
                            Some(c) => text_of(c, &format!("messages[{i}] tool_result"))?,
                        };
                        if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                            result = format!("Error: {result}");
                        }
                        out.push(json!({"role": "tool", "tool_call_id": block["tool_use_id"], "content": result}));
                    }
                    other => return Err(unsupported_block(i, other)),
                }
            }
            if !text.is_empty() || out.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
            Ok(out)
        }
        _ => Err(HttpError::bad_request(format!(
            "messages[{i}].role must be \"user\" or \"assistant\""
        ))),
    }
}

fn unsupported_block(i: usize, kind: &str) -> HttpError {
    HttpError::bad_request(format!(
        "messages[{i}]: {kind:?} blocks are not supported for gRPC engine workers \
         (supported: text, tool_use, tool_result, thinking)"
    ))
}

/// Anthropic's tools (`name`, `description`, `input_schema`) as OpenAI's.
fn chat_tools(tools: &Value) -> Result<Value, HttpError> {
    let Value::Array(tools) = tools else {
        return Err(HttpError::bad_request("tools must be a list"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let custom = matches!(tool.get("type").and_then(Value::as_str), None | Some("custom"));
            match (custom, tool.get("name").and_then(Value::as_str)) {
                (true, Some(name)) if !name.is_empty() => {
                    let mut function = json!({
                        "name": name,
                        "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                    });
                    if let Some(d) = tool.get("description") {
                        function["description"] = d.clone();
                    }
                    Ok(json!({"type": "function", "function": function}))
                }
                _ => Err(HttpError::bad_request(format!(
                    "tools[{i}] must be {{\"name\": ..., \"input_schema\": {{...}}}} (Anthropic's server tools are not available here)"
                ))),
            }
        })
        .collect()
}

/// Anthropic's `tool_choice` as OpenAI's, and whether calls may come in
/// parallel (`disable_parallel_tool_use`).
fn chat_tool_choice(choice: &Value) -> Result<(Value, Option<bool>), HttpError> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let chat = match (
        choice.get("type").and_then(Value::as_str),
        choice.get("name").and_then(Value::as_str),
    ) {
        (Some("auto"), _) => json!("auto"),
        (Some("any"), _) => json!("required"),
        (Some("none"), _) => json!("none"),
        (Some("tool"), Some(name)) => json!({"type": "function", "function": {"name": name}}),
        _ => {
            return Err(HttpError::bad_request(
                "tool_choice must be {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": ...}",
            ))
        }
    };
    Ok((chat, parallel))
}

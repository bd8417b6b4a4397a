//! What the HTTP routers read from a JSON request body: the model and the
//! routing input, without changing the body.
//!
//! Routing input, for cache-aware policies: `input_ids` (token ids) if
//! present; else `text` (SGLang `/generate`) or `prompt` (completions); else
//! the whole `messages` conversation (chat), every turn, not just the first.

use serde_json::{Map, Value};

use crate::routers::RouteError;

/// The parsed parts of a request body.
#[derive(Debug)]
pub struct HttpInput {
    /// The body as a JSON object.
    pub body: Map<String, Value>,
    /// `model`, or "" when absent.
    pub model: String,
    /// Text to route on.
    pub text: Option<String>,
    /// Token ids to route on.
    pub token_ids: Option<Vec<u32>>,
}

fn bad(message: impl Into<String>) -> RouteError {
    RouteError::InvalidRequest(message.into())
}

impl HttpInput {
    /// Parses `bytes` as a JSON object and extracts model and routing input.
    pub fn parse(bytes: &[u8]) -> Result<HttpInput, RouteError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(body) = value else {
            return Err(bad("the body must be a JSON object"));
        };
        let model = match body.get("model") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(m)) => m.clone(),
            Some(_) => return Err(bad("`model` must be a string")),
        };
        let token_ids = match body.get("input_ids") {
            None | Some(Value::Null) => None,
            Some(Value::Array(ids)) => Some(
                ids.iter()
                    .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| bad("`input_ids` must be an array of token ids (non-negative 32-bit integers)"))?,
            ),
            Some(_) => return Err(bad("`input_ids` must be an array of token ids")),
        };
        let text = match (body.get("text"), body.get("prompt"), body.get("messages")) {
            (Some(t), _, _) if !t.is_null() => Some(text_of(t, "text")?),
            (_, Some(p), _) if !p.is_null() => Some(text_of(p, "prompt")?),
            (_, _, Some(m)) if !m.is_null() => Some(conversation(m)?),
            _ => None,
        };
        Ok(HttpInput {
            body,
            model,
            text,
            token_ids,
        })
    }
}

/// A string, or an array of strings joined (batch prompts route on all).
fn text_of(value: &Value, field: &str) -> Result<String, RouteError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join("\n"))
            .ok_or_else(|| bad(format!("`{field}` must be a string or an array of strings"))),
        _ => Err(bad(format!(
            "`{field}` must be a string or an array of strings"
        ))),
    }
}

/// Every turn of a chat, as "role: content" lines. Content may be a string
/// or an array of parts, whose `text` parts count.
fn conversation(messages: &Value) -> Result<String, RouteError> {
    let Value::Array(turns) = messages else {
        return Err(bad("`messages` must be an array"));
    };
    let mut out = String::new();
    for turn in turns {
        let role = turn.get("role").and_then(Value::as_str).unwrap_or("");
        let content = match turn.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                return Err(bad(
                    "a message's `content` must be a string or an array of parts",
                ))
            }
        };
        out.push_str(role);
        out.push_str(": ");
        out.push_str(&content);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_on_the_whole_conversation() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let input = HttpInput::parse(body).unwrap();
        assert_eq!(input.model, "m");
        assert_eq!(input.text.as_deref(), Some("system: be brief\nuser: hi\n"));
    }

    #[test]
    fn text_prompt_and_ids() {
        assert_eq!(
            HttpInput::parse(br#"{"text":"a"}"#)
                .unwrap()
                .text
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            HttpInput::parse(br#"{"prompt":["a","b"]}"#)
                .unwrap()
                .text
                .as_deref(),
            Some("a\nb")
        );
        assert_eq!(
            HttpInput::parse(br#"{"input_ids":[1,2]}"#)
                .unwrap()
                .token_ids,
            Some(vec![1, 2])
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        for (body, needle) in [
            (&b"{"[..], "not valid JSON"),
            (b"[1]", "JSON object"),
            (br#"{"model":3}"#, "`model`"),
            (br#"{"input_ids":[-1]}"#, "`input_ids`"),
            (br#"{"messages":"hi"}"#, "`messages`"),
        ] {
            let err = HttpInput::parse(body).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}

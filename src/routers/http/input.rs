//! What the HTTP routers read from a JSON request body: the model and the
//! routing input, without changing the body.
//!
//! Routing input, for cache-aware policies: `input_ids` (token ids) if
//! present; else `text` (SGLang `/generate`) or `prompt` (completions); else
//! the whole `messages` conversation (chat), every turn, not just the first.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::routers::RouteError;

/// The parsed parts of a request body.
#[derive(Debug)]
pub struct HttpInput {
    /// `model`, or "" when absent.
    pub model: String,
    /// Text to route on.
    pub text: Option<String>,
    /// Token ids to route on.
    pub token_ids: Option<Vec<u32>>,
}

/// The fields routing reads, left unparsed until looked at; every other
/// field is skipped without being built into a value (the body itself goes
/// to the worker as it came).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input_ids: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
}

fn bad(message: impl Into<String>) -> RouteError {
    RouteError::InvalidRequest(message.into())
}

/// `raw` as a value, `None` for JSON `null`.
fn value(raw: Option<&RawValue>) -> Option<Value> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .filter(|v: &Value| !v.is_null())
}

impl HttpInput {
    /// Parses `bytes` as a JSON object and extracts model and routing input.
    pub fn parse(bytes: &[u8]) -> Result<HttpInput, RouteError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            // Valid JSON of another kind, or not JSON at all.
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => bad("the body must be a JSON object"),
                    Err(e) => bad(format!("the body is not valid JSON: {e}")),
                },
            );
        }
        let fields: Fields = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
        let model = match fields.model {
            None => String::new(),
            Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
                Ok(model) => model.unwrap_or_default(),
                Err(_) => return Err(bad("`model` must be a string")),
            },
        };
        let token_ids = match value(fields.input_ids) {
            None => None,
            Some(Value::Array(ids)) => Some(
                ids.iter()
                    .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| bad("`input_ids` must be an array of token ids (non-negative 32-bit integers)"))?,
            ),
            Some(_) => return Err(bad("`input_ids` must be an array of token ids")),
        };
        let text = match (
            value(fields.text),
            value(fields.prompt),
            value(fields.messages),
        ) {
            (Some(t), _, _) => Some(text_of(&t, "text")?),
            (_, Some(p), _) => Some(text_of(&p, "prompt")?),
            (_, _, Some(m)) => Some(conversation(&m)?),
            _ => None,
        };
        Ok(HttpInput {
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

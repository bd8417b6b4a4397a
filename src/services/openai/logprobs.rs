//! Log probabilities as OpenAI returns them: the engine's per-token figures
//! (`switchyard.v1.LogProbs`) with each token's text, in chat's shape
//! (`logprobs.content`: token, logprob, bytes, top_logprobs) or the legacy
//! completions shape (`tokens`, `token_logprobs`, `top_logprobs`,
//! `text_offset`).

use serde_json::{json, Map, Value};

use crate::pb;
use crate::tokenizer::ModelTokenizer;

/// One generated token's log probability and its alternatives.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    token: String,
    logprob: f32,
    top: Vec<(String, f32)>,
}

/// A token's text on its own (special tokens included).
fn text(tokenizer: &ModelTokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false).unwrap_or_default()
}

/// The entries of one chunk's log probabilities.
pub(super) fn entries(tokenizer: &ModelTokenizer, l: &pb::LogProbs) -> Vec<Entry> {
    l.token_ids
        .iter()
        .zip(&l.token_logprobs)
        .enumerate()
        .map(|(i, (id, logprob))| Entry {
            token: text(tokenizer, *id),
            logprob: *logprob,
            top: l
                .top_logprobs
                .get(i)
                .map(|t| {
                    t.token_ids
                        .iter()
                        .zip(&t.values)
                        .map(|(id, v)| (text(tokenizer, *id), *v))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn bytes(token: &str) -> Value {
    Value::Array(token.bytes().map(Value::from).collect())
}

/// Chat's `logprobs` object.
pub(super) fn chat(entries: &[Entry]) -> Value {
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "token": e.token, "logprob": e.logprob, "bytes": bytes(&e.token),
                "top_logprobs": e.top.iter().map(|(t, v)| json!({"token": t, "logprob": v, "bytes": bytes(t)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"content": content})
}

/// The completions `logprobs` object; `offset`: the length of the text
/// before these tokens.
pub(super) fn completion(entries: &[Entry], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(entries.len());
    for e in entries {
        text_offset.push(offset);
        offset += e.token.len();
    }
    json!({
        "tokens": entries.iter().map(|e| e.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            e.top.iter().map(|(t, v)| (t.clone(), json!(v))).collect::<Map<String, Value>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

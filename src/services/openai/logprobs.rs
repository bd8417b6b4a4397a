//! Log probabilities as OpenAI returns them: the engine's per-token figures
//! (`switchyard.v1.LogProbs`) with each token's text, in chat's shape
//! (`logprobs.content`: token, logprob, bytes — the token's own, so that a
//! character split over tokens is whole when they are joined —
//! top_logprobs) or the legacy
//! completions shape (`tokens`, `token_logprobs`, `top_logprobs`,
//! `text_offset`).

use serde_json::{json, Map, Value};

use crate::pb;
use crate::tokenizer::ModelTokenizer;

/// One generated token's log probability and its alternatives.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    token: Token,
    logprob: f32,
    top: Vec<(Token, f32)>,
}

/// A token's text on its own (special tokens included) and the bytes it
/// stands for (whole where its text has a replacement character for a
/// character split over tokens).
#[derive(Debug, Clone)]
struct Token {
    text: String,
    bytes: Vec<u8>,
}

fn token(tokenizer: &ModelTokenizer, id: u32) -> Token {
    Token {
        text: tokenizer.decode(&[id], false).unwrap_or_default(),
        bytes: tokenizer.token_bytes(id),
    }
}

/// The entries of one chunk's log probabilities.
pub(super) fn entries(tokenizer: &ModelTokenizer, l: &pb::LogProbs) -> Vec<Entry> {
    l.token_ids
        .iter()
        .zip(&l.token_logprobs)
        .enumerate()
        .map(|(i, (id, logprob))| Entry {
            token: token(tokenizer, *id),
            logprob: *logprob,
            top: l
                .top_logprobs
                .get(i)
                .map(|t| {
                    t.token_ids
                        .iter()
                        .zip(&t.values)
                        .map(|(id, v)| (token(tokenizer, *id), *v))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn bytes(token: &Token) -> Value {
    Value::Array(token.bytes.iter().copied().map(Value::from).collect())
}

/// Chat's `logprobs` object.
pub(super) fn chat(entries: &[Entry]) -> Value {
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "token": e.token.text, "logprob": e.logprob, "bytes": bytes(&e.token),
                "top_logprobs": e.top.iter().map(|(t, v)| json!({"token": t.text, "logprob": v, "bytes": bytes(t)})).collect::<Vec<_>>(),
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
        offset += e.token.text.len();
    }
    json!({
        "tokens": entries.iter().map(|e| e.token.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            e.top.iter().map(|(t, v)| (t.text.clone(), json!(v))).collect::<Map<String, Value>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

//! `switchyard.v1.Inference/Generate` to engine workers: the request
//! translated into the engine's `GenerateRequest` (through its seam, with
//! the model's tokenizer where the engine needs token ids), the engine's
//! responses translated back into `switchyard.v1` chunks and a completion,
//! detokenized and cut at stop strings. The field mapping is the table in
//! the README ("SGLang, vLLM, TensorRT-LLM and MLX workers").

use bytes::{Bytes, BytesMut};
use prost::Message;

use std::sync::Arc;

use crate::engines;
use crate::engines::translate::{Input, Sampling, TranslateError};
use crate::pb;
use crate::tokenizer::{Detokenizer, ModelTokenizer, TokenizerError};
use crate::transport::grpc::codec::{frame, Deframer};
use crate::transport::Failure;
use crate::worker::Engine;

/// `body` (a `switchyard.v1.GenerateRequest` whose request id is
/// `request_id`) as `engine`'s `GenerateRequest`, for `model`.
///
/// Sampling: proto3 has no "unset" for `switchyard.v1`'s floats, so 0 means
/// "the engine's default" for `temperature`, `top_p` and `top_k` and
/// `max_new_tokens` (SGLang's defaults are temperature 1.0, top_p 1.0,
/// top_k −1; they are set explicitly, as SGLang requires). The engine is
/// always asked to stream: `switchyard.v1` responses are a stream of chunks.
///
/// A text prompt is tokenized with `tokenizer` (the model's, or why there
/// is none; without one, SGLang refuses text and vLLM is sent it as text).
pub fn request(
    engine: Engine,
    body: &Bytes,
    request_id: &str,
    model: &str,
    tokenizer: Result<&ModelTokenizer, TokenizerError>,
) -> Result<EngineCall, TranslateError> {
    let request = pb::GenerateRequest::decode(body.clone())
        .map_err(|e| TranslateError::Invalid(e.to_string()))?;
    let s = request.sampling_params.unwrap_or_default();
    let mut tokenized = None;
    let tokenizer_ok = tokenizer.is_ok();
    let input = match (request.input, tokenizer) {
        (Some(pb::generate_request::Input::TokenIds(t)), _) => Input::TokenIds(t.ids),
        // With the model's tokenizer, the router tokenizes (for either
        // engine: the engine's loop is spared it, and cache-aware routing
        // sees the same tokens as for a token-id request).
        (Some(pb::generate_request::Input::Text(text)), Ok(tokenizer)) => {
            let ids = tokenizer
                .encode(&text, true)
                .map_err(|e| TranslateError::Tokenize {
                    model: model.to_string(),
                    reason: e.to_string(),
                })?;
            tokenized = Some(ids.clone());
            Input::TokenIds(ids)
        }
        // SGLang takes token ids only.
        (Some(pb::generate_request::Input::Text(_)), Err(e))
            if !engines::seam(engine).takes_text() =>
        {
            return Err(TranslateError::NeedsTokenizer {
                model: model.to_string(),
                engine,
                reason: e.to_string(),
            })
        }
        (Some(pb::generate_request::Input::Text(text)), Err(_)) => Input::Text(text),
        (None, _) => Input::TokenIds(Vec::new()),
    };
    let sampling = Sampling {
        temperature: (s.temperature != 0.0).then_some(s.temperature),
        top_p: (s.top_p != 0.0).then_some(s.top_p),
        top_k: (s.top_k != 0).then_some(s.top_k),
        max_tokens: (s.max_new_tokens > 0).then_some(s.max_new_tokens),
        stop: s.stop,
        seed: s.seed,
        skip_special_tokens: true,
        router_stops: tokenizer_ok,
        ..Sampling::default()
    };
    let stops = sampling.stop.clone();
    let message = match engine.is_switchyard() {
        true => body.clone(),
        false => engines::seam(engine).generate_request(request_id, input, &sampling)?,
    };
    Ok(EngineCall {
        message,
        stops,
        tokenized,
    })
}

/// A `switchyard.v1` request in an engine's protocol.
#[derive(Debug)]
pub struct EngineCall {
    /// The engine's `GenerateRequest`.
    pub message: Bytes,
    /// Stop strings, for the router to apply to the text.
    pub stops: Vec<String>,
    /// The prompt's token ids, when the router tokenized it.
    pub tokenized: Option<Vec<u32>>,
}

/// Turns an engine's response stream (gRPC-framed `GenerateResponse`s, in
/// chunks of any size) into `switchyard.v1` ones, message by message.
///
/// With a tokenizer, chunks carry text as well as token ids (detokenized
/// incrementally), and stop strings are applied to that text: output ends
/// before the first stop string, with finish reason `stop`, and the stream
/// ends there (the engine is sent `Abort` as the stream drops).
#[derive(Debug)]
pub struct Responses {
    engine: Engine,
    request_id: String,
    frames: Deframer,
    text: Option<TextOut>,
    /// A stop string matched: nothing more is translated.
    stopped: bool,
    /// Prompt tokens (as the engine reported them) and generated tokens so
    /// far, for the tenant's meter.
    tokens: (u32, u32),
}

/// Detokenizing and stop strings.
#[derive(Debug)]
struct TextOut {
    detokenizer: Detokenizer,
    stops: Vec<String>,
    /// Text decoded but held back: it may be the start of a stop string.
    held: String,
    /// Completion tokens so far (for the finish a stop string makes).
    completion_tokens: u32,
    prompt_tokens: u32,
}

/// What a chunk of the engine's stream became.
#[derive(Debug)]
pub struct Translated {
    /// Framed `switchyard.v1` messages (`None`: no whole message yet).
    pub bytes: Option<Bytes>,
    /// A stop string ended the output: the stream ends after `bytes`.
    pub done: bool,
}

impl Responses {
    /// A translator for one call of `engine`, answering as `request_id`.
    pub fn new(engine: Engine, request_id: String) -> Self {
        Responses {
            engine,
            request_id,
            frames: Deframer::default(),
            text: None,
            stopped: false,
            tokens: (0, 0),
        }
    }

    /// Chunks carry text detokenized with `tokenizer` (special tokens left
    /// out when `skip_special`); output ends at the first of `stops`.
    pub fn with_text(
        mut self,
        tokenizer: Arc<ModelTokenizer>,
        stops: Vec<String>,
        skip_special: bool,
    ) -> Self {
        self.text = Some(TextOut {
            detokenizer: Detokenizer::new(tokenizer, skip_special),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            completion_tokens: 0,
            prompt_tokens: 0,
        });
        self
    }

    /// The translation of the messages completed by `chunk`.
    pub fn chunk(&mut self, chunk: &[u8]) -> Result<Translated, Failure> {
        self.frames.push(chunk);
        let mut out = BytesMut::new();
        while !self.stopped {
            let Some(message) = self.frames.next_message().map_err(|_| Failure::Protocol)? else {
                break;
            };
            for response in self.translate(message)? {
                out.extend_from_slice(&frame(&response.encode_to_vec()));
            }
        }
        Ok(Translated {
            bytes: (!out.is_empty()).then(|| out.freeze()),
            done: self.stopped,
        })
    }

    fn translate(&mut self, message: Bytes) -> Result<Vec<pb::GenerateResponse>, Failure> {
        let response = self.decode(message)?;
        let Some(text) = self.text.as_mut() else {
            return Ok(vec![self.respond(response)]);
        };
        use pb::generate_response::Response as R;
        let detokenized = |r: Result<String, _>| {
            r.map_err(|_: crate::tokenizer::TokenizerError| {
                Failure::BadReply("token ids the tokenizer can decode")
            })
        };
        Ok(match response {
            Some(R::Chunk(mut chunk)) => {
                text.completion_tokens += chunk.token_ids.len() as u32;
                let delta = detokenized(text.detokenizer.push(&chunk.token_ids))?;
                let (emit, stop) = text.apply_stops(delta);
                chunk.text = emit;
                if let Some(matched_stop) = stop {
                    self.stopped = true;
                    let complete = R::Complete(pb::GenerateComplete {
                        finish_reason: "stop".into(),
                        prompt_tokens: text.prompt_tokens,
                        completion_tokens: text.completion_tokens,
                        cached_tokens: 0,
                        matched_stop,
                    });
                    vec![
                        self.respond(Some(R::Chunk(chunk))),
                        self.respond(Some(complete)),
                    ]
                } else {
                    vec![self.respond(Some(R::Chunk(chunk)))]
                }
            }
            Some(R::Complete(complete)) => {
                // What the detokenizer and the stop check still hold.
                let mut rest = detokenized(text.detokenizer.finish())?;
                let (mut emit, stop) = text.apply_stops(std::mem::take(&mut rest));
                let complete = match stop {
                    Some(matched_stop) => pb::GenerateComplete {
                        finish_reason: "stop".into(),
                        matched_stop,
                        ..complete
                    },
                    None => {
                        emit.push_str(&std::mem::take(&mut text.held));
                        complete
                    }
                };
                let mut out = Vec::with_capacity(2);
                if !emit.is_empty() {
                    out.push(self.respond(Some(R::Chunk(pb::GenerateChunk {
                        token_ids: Vec::new(),
                        text: emit,
                        logprobs: None,
                    }))));
                }
                out.push(self.respond(Some(R::Complete(complete))));
                out
            }
            other => vec![self.respond(other)],
        })
    }

    fn respond(&self, response: Option<pb::generate_response::Response>) -> pb::GenerateResponse {
        pb::GenerateResponse {
            request_id: self.request_id.clone(),
            response,
        }
    }

    /// The engine's message as a `switchyard.v1` response body.
    fn decode(
        &mut self,
        message: Bytes,
    ) -> Result<Option<pb::generate_response::Response>, Failure> {
        let (response, prompt_tokens) = engines::seam(self.engine).response(message)?;
        self.note_prompt(prompt_tokens);
        use pb::generate_response::Response as R;
        self.tokens.0 = self.tokens.0.max(prompt_tokens);
        match &response {
            Some(R::Chunk(chunk)) => self.tokens.1 += chunk.token_ids.len() as u32,
            Some(R::Complete(c)) => {
                self.tokens.0 = self.tokens.0.max(c.prompt_tokens);
                self.tokens.1 = self.tokens.1.max(c.completion_tokens);
            }
            _ => {}
        }
        Ok(response)
    }

    /// Prompt tokens (0: not reported) and tokens generated so far.
    pub fn tokens(&self) -> (u32, u32) {
        self.tokens
    }

    fn note_prompt(&mut self, prompt_tokens: u32) {
        if let Some(text) = self.text.as_mut() {
            text.prompt_tokens = text.prompt_tokens.max(prompt_tokens);
        }
    }
}

impl TextOut {
    /// Adds `delta` to the text: what can be emitted, and the stop string
    /// that matched, if one did (the emitted text then ends before it; the
    /// first in the text wins, the first listed at the same place). Text
    /// that may be the start of a stop string is held back until it cannot
    /// be.
    fn apply_stops(&mut self, delta: String) -> (String, Option<String>) {
        if self.stops.is_empty() {
            return (delta, None);
        }
        self.held.push_str(&delta);
        if let Some((at, i)) = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min()
        {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return (emit, Some(self.stops[i].clone()));
        }
        // Keep the longest tail that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|n| s.is_char_boundary(*n))
                    .find(|n| self.held.ends_with(&s[..*n]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_string();
        self.held.drain(..cut);
        (emit, None)
    }
}

#[cfg(test)]
mod tests;

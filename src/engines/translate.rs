//! `switchyard.v1.Inference/Generate` to SGLang and vLLM workers: the
//! request translated into the engine's `GenerateRequest` (engine defaults
//! set explicitly where proto3's zero values would mean something else),
//! the engine's responses translated back into `switchyard.v1` chunks and a
//! completion. The field mapping is the table in the README ("SGLang and
//! vLLM workers").

use bytes::{Bytes, BytesMut};
use prost::Message;

use std::sync::Arc;

use crate::pb::{self, sglang_scheduler as sglang, vllm_engine as vllm};
use crate::tokenizer::{Detokenizer, ModelTokenizer, TokenizerError};
use crate::transport::grpc::codec::{frame, Deframer};
use crate::transport::Failure;
use crate::worker::Engine;

/// Why a `switchyard.v1` request cannot go to an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// SGLang takes token ids; the model's text needs a tokenizer the
    /// router does not have.
    #[error("model {model:?} is served by SGLang workers, which take token ids: send `token_ids`, or give the router the model's tokenizer ({reason})")]
    NeedsTokenizer {
        /// The model.
        model: String,
        /// Why there is no tokenizer.
        reason: String,
    },
    /// Tokenizing failed.
    #[error("cannot tokenize the prompt for model {model:?}: {reason}")]
    Tokenize {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// A field the engine's protocol has no place for.
    #[error("sampling_params.{field} is not supported by {engine}'s gRPC protocol; leave it unset for this model")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// The engine.
        engine: Engine,
    },
    /// A value out of the engine's range.
    #[error("sampling_params.{field} = {value} is out of {engine}'s range ({range})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The engine.
        engine: Engine,
        /// What fits.
        range: &'static str,
    },
    /// The message does not decode.
    #[error("the message is not a valid switchyard.v1.GenerateRequest: {0}")]
    Invalid(String),
}

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
        (Some(pb::generate_request::Input::Text(_)), Err(e)) if engine == Engine::Sglang => {
            return Err(TranslateError::NeedsTokenizer {
                model: model.to_string(),
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
    };
    let stops = sampling.stop.clone();
    let message = match engine {
        Engine::Switchyard => body.clone(),
        _ => engine_request(engine, request_id, input, &sampling)?,
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

/// A prompt for an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Token ids (both engines).
    TokenIds(Vec<u32>),
    /// Text (vLLM only).
    Text(String),
}

/// Sampling parameters, `None` for the engine's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k; −1 is off.
    pub top_k: Option<i32>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Stop strings (the router applies them too, on the text).
    pub stop: Vec<String>,
    /// Random seed.
    pub seed: Option<u64>,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
}

/// `engine`'s `GenerateRequest` for `input` with `sampling`, streamed, its
/// defaults set explicitly (SGLang: temperature 1.0, top_p 1.0, top_k −1,
/// repetition_penalty 1.0, n 1).
pub fn engine_request(
    engine: Engine,
    request_id: &str,
    input: Input,
    sampling: &Sampling,
) -> Result<Bytes, TranslateError> {
    let out = match engine {
        Engine::Sglang => {
            let ids = match input {
                Input::TokenIds(ids) => ids,
                Input::Text(_) => {
                    return Err(TranslateError::Invalid(
                        "SGLang takes token ids, not text".into(),
                    ))
                }
            };
            if sampling.seed.is_some() {
                return Err(TranslateError::Unsupported {
                    field: "seed",
                    engine,
                });
            }
            sglang::GenerateRequest {
                request_id: request_id.to_string(),
                tokenized: Some(sglang::TokenizedInput {
                    original_text: String::new(),
                    input_ids: ids,
                }),
                sampling_params: Some(sglang::SamplingParams {
                    temperature: sampling.temperature.unwrap_or(1.0),
                    top_p: sampling.top_p.unwrap_or(1.0),
                    top_k: sampling.top_k.unwrap_or(-1),
                    repetition_penalty: 1.0,
                    max_new_tokens: sampling.max_tokens,
                    stop: sampling.stop.clone(),
                    skip_special_tokens: sampling.skip_special_tokens,
                    spaces_between_special_tokens: true,
                    n: 1,
                    ..Default::default()
                }),
                stream: true,
                ..Default::default()
            }
            .encode_to_vec()
        }
        Engine::Vllm => {
            let input = match input {
                Input::TokenIds(ids) => {
                    vllm::generate_request::Input::Tokenized(vllm::TokenizedInput {
                        original_text: String::new(),
                        input_ids: ids,
                    })
                }
                Input::Text(text) => vllm::generate_request::Input::Text(text),
            };
            let top_k = match sampling.top_k {
                None | Some(-1) => 0,
                Some(k) => u32::try_from(k).map_err(|_| TranslateError::OutOfRange {
                    field: "top_k",
                    value: k.to_string(),
                    engine,
                    range: "-1, 0 (off) or a positive count",
                })?,
            };
            let seed = sampling
                .seed
                .map(|s| {
                    i32::try_from(s).map_err(|_| TranslateError::OutOfRange {
                        field: "seed",
                        value: s.to_string(),
                        engine,
                        range: "0 to 2147483647",
                    })
                })
                .transpose()?;
            vllm::GenerateRequest {
                request_id: request_id.to_string(),
                input: Some(input),
                sampling_params: Some(vllm::SamplingParams {
                    temperature: sampling.temperature,
                    top_p: sampling.top_p.unwrap_or(1.0),
                    top_k,
                    repetition_penalty: 1.0,
                    max_tokens: sampling.max_tokens,
                    stop: sampling.stop.clone(),
                    skip_special_tokens: sampling.skip_special_tokens,
                    spaces_between_special_tokens: true,
                    n: 1,
                    seed,
                    ..Default::default()
                }),
                stream: true,
                ..Default::default()
            }
            .encode_to_vec()
        }
        Engine::Switchyard => {
            return Err(TranslateError::Invalid(
                "engine_request is for SGLang and vLLM".into(),
            ))
        }
    };
    Ok(out.into())
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
        }
    }

    /// Chunks carry text detokenized with `tokenizer`; output ends at the
    /// first of `stops`.
    pub fn with_text(mut self, tokenizer: Arc<ModelTokenizer>, stops: Vec<String>) -> Self {
        self.text = Some(TextOut {
            detokenizer: Detokenizer::new(tokenizer, true),
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
                if stop {
                    self.stopped = true;
                    let complete = R::Complete(pb::GenerateComplete {
                        finish_reason: "stop".into(),
                        prompt_tokens: text.prompt_tokens,
                        completion_tokens: text.completion_tokens,
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
                if !stop {
                    emit.push_str(&std::mem::take(&mut text.held));
                }
                let complete = if stop {
                    pb::GenerateComplete {
                        finish_reason: "stop".into(),
                        ..complete
                    }
                } else {
                    complete
                };
                let mut out = Vec::with_capacity(2);
                if !emit.is_empty() {
                    out.push(self.respond(Some(R::Chunk(pb::GenerateChunk {
                        token_ids: Vec::new(),
                        text: emit,
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
        // The two engines' responses have the same shape in their own
        // types: one translation, written once.
        macro_rules! from_engine {
            ($engine:ident, $name:literal) => {{
                use pb::generate_response::Response as Out;
                use $engine::generate_response::Response as In;
                let decoded = $engine::GenerateResponse::decode(message)
                    .map_err(|_| Failure::BadReply($name))?;
                match decoded.response {
                    Some(In::Chunk(c)) => {
                        self.note_prompt(c.prompt_tokens);
                        Some(Out::Chunk(pb::GenerateChunk {
                            token_ids: c.token_ids,
                            text: String::new(),
                        }))
                    }
                    Some(In::Complete(c)) => Some(Out::Complete(pb::GenerateComplete {
                        finish_reason: c.finish_reason,
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                    })),
                    None => None,
                }
            }};
        }
        let response = match self.engine {
            Engine::Sglang => from_engine!(sglang, "sglang.grpc.scheduler.GenerateResponse"),
            Engine::Vllm => from_engine!(vllm, "vllm.grpc.engine.GenerateResponse"),
            Engine::Switchyard => {
                pb::GenerateResponse::decode(message)
                    .map_err(|_| Failure::BadReply("switchyard.v1.GenerateResponse"))?
                    .response
            }
        };
        Ok(response)
    }

    fn note_prompt(&mut self, prompt_tokens: u32) {
        if let Some(text) = self.text.as_mut() {
            text.prompt_tokens = text.prompt_tokens.max(prompt_tokens);
        }
    }
}

impl TextOut {
    /// Adds `delta` to the text: what can be emitted, and whether a stop
    /// string matched (the emitted text then ends before it). Text that may
    /// be the start of a stop string is held back until it cannot be.
    fn apply_stops(&mut self, delta: String) -> (String, bool) {
        if self.stops.is_empty() {
            return (delta, false);
        }
        self.held.push_str(&delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return (emit, true);
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
        (emit, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Result<&'static ModelTokenizer, TokenizerError> {
        Err(TokenizerError::Missing("m".into()))
    }

    fn body(request: pb::GenerateRequest) -> Bytes {
        request.encode_to_vec().into()
    }

    #[test]
    fn sglang_gets_its_defaults_explicitly_and_token_ids() {
        let b = body(pb::GenerateRequest {
            input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds {
                ids: vec![1, 2],
            })),
            sampling_params: Some(pb::SamplingParams {
                max_new_tokens: 5,
                stop: vec!["\n".into()],
                ..Default::default()
            }),
            ..Default::default()
        });
        let out = sglang::GenerateRequest::decode(
            request(Engine::Sglang, &b, "r", "m", none())
                .unwrap()
                .message,
        )
        .unwrap();
        assert_eq!(out.request_id, "r");
        assert_eq!(out.tokenized.unwrap().input_ids, vec![1, 2]);
        let s = out.sampling_params.unwrap();
        assert_eq!((s.temperature, s.top_p, s.top_k), (1.0, 1.0, -1));
        assert_eq!(s.max_new_tokens, Some(5));
        assert_eq!(s.stop, vec!["\n".to_string()]);
        assert!(out.stream);
    }

    #[test]
    fn text_to_sglang_and_unsupported_fields_are_refused_with_the_reason() {
        let text = body(pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Text("hi".into())),
            ..Default::default()
        });
        let err = request(Engine::Sglang, &text, "r", "m", none()).unwrap_err();
        assert!(
            matches!(err, TranslateError::NeedsTokenizer { .. }),
            "{err}"
        );
        // vLLM takes text as it is.
        let out = vllm::GenerateRequest::decode(
            request(Engine::Vllm, &text, "r", "m", none())
                .unwrap()
                .message,
        )
        .unwrap();
        assert_eq!(
            out.input,
            Some(vllm::generate_request::Input::Text("hi".into()))
        );

        let seeded = body(pb::GenerateRequest {
            sampling_params: Some(pb::SamplingParams {
                seed: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(request(Engine::Sglang, &seeded, "r", "m", none())
            .unwrap_err()
            .to_string()
            .contains("seed"));
        let out = vllm::GenerateRequest::decode(
            request(Engine::Vllm, &seeded, "r", "m", none())
                .unwrap()
                .message,
        )
        .unwrap();
        assert_eq!(out.sampling_params.unwrap().seed, Some(7));
    }

    #[test]
    fn responses_are_translated_across_any_chunking() {
        let mut wire = BytesMut::new();
        for r in [
            sglang::GenerateResponse {
                request_id: "x".into(),
                response: Some(sglang::generate_response::Response::Chunk(
                    sglang::GenerateStreamChunk {
                        token_ids: vec![9],
                        ..Default::default()
                    },
                )),
            },
            sglang::GenerateResponse {
                request_id: "x".into(),
                response: Some(sglang::generate_response::Response::Complete(
                    sglang::GenerateComplete {
                        finish_reason: "stop".into(),
                        prompt_tokens: 2,
                        completion_tokens: 1,
                        ..Default::default()
                    },
                )),
            },
        ] {
            wire.extend_from_slice(&frame(&r.encode_to_vec()));
        }
        let mut t = Responses::new(Engine::Sglang, "r1".into());
        let mut out = BytesMut::new();
        // One byte at a time: messages split anywhere.
        for b in wire.iter() {
            if let Some(o) = t.chunk(&[*b]).unwrap().bytes {
                out.extend_from_slice(&o);
            }
        }
        let mut frames = Deframer::default();
        frames.push(&out);
        let first = pb::GenerateResponse::decode(frames.next_message().unwrap().unwrap()).unwrap();
        assert_eq!(first.request_id, "r1");
        assert!(
            matches!(first.response, Some(pb::generate_response::Response::Chunk(ref c)) if c.token_ids == vec![9])
        );
        let last = pb::GenerateResponse::decode(frames.next_message().unwrap().unwrap()).unwrap();
        match last.response {
            Some(pb::generate_response::Response::Complete(c)) => {
                assert_eq!(
                    (
                        c.finish_reason.as_str(),
                        c.prompt_tokens,
                        c.completion_tokens
                    ),
                    ("stop", 2, 1)
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;
    use crate::tokenizer::sample::write_sample;

    fn tokenizer() -> Arc<ModelTokenizer> {
        let dir = tempfile::tempdir().unwrap();
        write_sample(dir.path()).unwrap();
        Arc::new(ModelTokenizer::load(dir.path()).unwrap())
    }

    fn engine_stream(ids: &[u32]) -> Vec<u8> {
        let mut wire = Vec::new();
        for id in ids {
            let r = sglang::GenerateResponse {
                request_id: "x".into(),
                response: Some(sglang::generate_response::Response::Chunk(
                    sglang::GenerateStreamChunk {
                        token_ids: vec![*id],
                        prompt_tokens: 3,
                        ..Default::default()
                    },
                )),
            };
            wire.extend_from_slice(&frame(&r.encode_to_vec()));
        }
        let done = sglang::GenerateResponse {
            request_id: "x".into(),
            response: Some(sglang::generate_response::Response::Complete(
                sglang::GenerateComplete {
                    finish_reason: "length".into(),
                    prompt_tokens: 3,
                    completion_tokens: ids.len() as u32,
                    ..Default::default()
                },
            )),
        };
        wire.extend_from_slice(&frame(&done.encode_to_vec()));
        wire
    }

    /// Every message the translator emits for `wire`, fed in one chunk per
    /// message, and whether it stopped.
    fn run(t: &mut Responses, wire: &[u8]) -> (String, Option<String>, bool) {
        let mut frames = Deframer::default();
        let mut done = false;
        let mut all = Deframer::default();
        all.push(wire);
        while let Some(m) = all.next_message().unwrap() {
            let translated = t.chunk(&frame(&m)).unwrap();
            if let Some(b) = translated.bytes {
                frames.push(&b);
            }
            if translated.done {
                done = true;
                break;
            }
        }
        let (mut text, mut finish) = (String::new(), None);
        while let Some(m) = frames.next_message().unwrap() {
            match pb::GenerateResponse::decode(m).unwrap().response {
                Some(pb::generate_response::Response::Chunk(c)) => text += &c.text,
                Some(pb::generate_response::Response::Complete(c)) => {
                    finish = Some(c.finish_reason)
                }
                _ => {}
            }
        }
        (text, finish, done)
    }

    #[test]
    fn text_is_detokenized_across_multibyte_splits() {
        let tok = tokenizer();
        let reply = "日本語 🚂 café";
        let ids = tok.encode(reply, false).unwrap();
        let mut t = Responses::new(Engine::Sglang, "r".into()).with_text(tok, vec![]);
        let (text, finish, done) = run(&mut t, &engine_stream(&ids));
        assert_eq!(text, reply);
        assert_eq!(finish.as_deref(), Some("length"));
        assert!(!done);
    }

    #[test]
    fn a_stop_string_ends_the_output_before_it_even_across_tokens() {
        let tok = tokenizer();
        let ids = tok.encode("Hello, world! The router", false).unwrap();
        let mut t = Responses::new(Engine::Sglang, "r".into())
            .with_text(tok.clone(), vec!["world!".into()]);
        let (text, finish, done) = run(&mut t, &engine_stream(&ids));
        assert_eq!(text, "Hello, ");
        assert_eq!(finish.as_deref(), Some("stop"));
        assert!(done, "the stream ends at the stop string");

        // A stop string that never completes: the held-back text comes out.
        let mut t =
            Responses::new(Engine::Sglang, "r".into()).with_text(tok, vec!["router!".into()]);
        let (text, finish, _) = run(&mut t, &engine_stream(&ids));
        assert_eq!(text, "Hello, world! The router");
        assert_eq!(finish.as_deref(), Some("length"));
    }

    #[test]
    fn text_to_sglang_is_tokenized() {
        let tok = tokenizer();
        let b: Bytes = pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Text("Hello, world!".into())),
            ..Default::default()
        }
        .encode_to_vec()
        .into();
        let call = request(Engine::Sglang, &b, "r", "m", Ok(&tok)).unwrap();
        let out = sglang::GenerateRequest::decode(call.message).unwrap();
        assert_eq!(
            call.tokenized.as_deref(),
            out.tokenized.as_ref().map(|t| &t.input_ids[..])
        );
        assert_eq!(
            tok.decode(&out.tokenized.unwrap().input_ids, true).unwrap(),
            "Hello, world!"
        );
    }
}

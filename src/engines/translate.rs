//! `switchyard.v1.Inference/Generate` to SGLang and vLLM workers: the
//! request translated into the engine's `GenerateRequest` (engine defaults
//! set explicitly where proto3's zero values would mean something else),
//! the engine's responses translated back into `switchyard.v1` chunks and a
//! completion. The field mapping is the table in the README ("Engines").

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::pb::{self, sglang_scheduler as sglang, vllm_engine as vllm};
use crate::transport::grpc::codec::{frame, Deframer};
use crate::transport::Failure;
use crate::worker::Engine;

/// Why a `switchyard.v1` request cannot go to an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// SGLang takes token ids; text needs a tokenizer the router does not
    /// have yet.
    #[error("model {model:?} is served by SGLang workers, which take token ids: send `token_ids` (text prompts to SGLang need the router's tokenizer, which this version does not have)")]
    NeedsTokenizer {
        /// The model.
        model: String,
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
pub fn request(
    engine: Engine,
    body: &Bytes,
    request_id: &str,
    model: &str,
) -> Result<Bytes, TranslateError> {
    let request = pb::GenerateRequest::decode(body.clone())
        .map_err(|e| TranslateError::Invalid(e.to_string()))?;
    let sampling = request.sampling_params.unwrap_or_default();
    let max_new_tokens = (sampling.max_new_tokens > 0).then_some(sampling.max_new_tokens);
    let out = match engine {
        Engine::Sglang => {
            let ids = match request.input {
                Some(pb::generate_request::Input::TokenIds(t)) => t.ids,
                Some(pb::generate_request::Input::Text(_)) => {
                    return Err(TranslateError::NeedsTokenizer {
                        model: model.to_string(),
                    })
                }
                None => Vec::new(),
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
                    temperature: nonzero_or(sampling.temperature, 1.0),
                    top_p: nonzero_or(sampling.top_p, 1.0),
                    top_k: if sampling.top_k == 0 {
                        -1
                    } else {
                        sampling.top_k
                    },
                    repetition_penalty: 1.0,
                    max_new_tokens,
                    stop: sampling.stop,
                    skip_special_tokens: true,
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
            let input = match request.input {
                Some(pb::generate_request::Input::TokenIds(t)) => Some(
                    vllm::generate_request::Input::Tokenized(vllm::TokenizedInput {
                        original_text: String::new(),
                        input_ids: t.ids,
                    }),
                ),
                Some(pb::generate_request::Input::Text(t)) => {
                    Some(vllm::generate_request::Input::Text(t))
                }
                None => None,
            };
            let top_k = match u32::try_from(sampling.top_k) {
                Ok(k) => k,
                // vLLM: −1 (or 0) disables top-k.
                Err(_) if sampling.top_k == -1 => 0,
                Err(_) => {
                    return Err(TranslateError::OutOfRange {
                        field: "top_k",
                        value: sampling.top_k.to_string(),
                        engine,
                        range: "-1, 0 (off) or a positive count",
                    })
                }
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
                input,
                sampling_params: Some(vllm::SamplingParams {
                    temperature: (sampling.temperature != 0.0).then_some(sampling.temperature),
                    top_p: nonzero_or(sampling.top_p, 1.0),
                    top_k,
                    repetition_penalty: 1.0,
                    max_tokens: max_new_tokens,
                    stop: sampling.stop,
                    skip_special_tokens: true,
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
        Engine::Switchyard => return Ok(body.clone()),
    };
    Ok(out.into())
}

fn nonzero_or(value: f32, default: f32) -> f32 {
    if value == 0.0 {
        default
    } else {
        value
    }
}

/// Turns an engine's response stream (gRPC-framed `GenerateResponse`s, in
/// chunks of any size) into `switchyard.v1` ones, message by message.
#[derive(Debug)]
pub struct Responses {
    engine: Engine,
    request_id: String,
    frames: Deframer,
}

impl Responses {
    /// A translator for one call of `engine`, answering as `request_id`.
    pub fn new(engine: Engine, request_id: String) -> Self {
        Responses {
            engine,
            request_id,
            frames: Deframer::default(),
        }
    }

    /// The translation of the messages completed by `chunk`, framed
    /// (`None` while a message is still incomplete).
    pub fn chunk(&mut self, chunk: &[u8]) -> Result<Option<Bytes>, Failure> {
        self.frames.push(chunk);
        let mut out = BytesMut::new();
        while let Some(message) = self.frames.next_message().map_err(|_| Failure::Protocol)? {
            let response = self.translate(message)?;
            out.extend_from_slice(&frame(&response.encode_to_vec()));
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    fn translate(&self, message: Bytes) -> Result<pb::GenerateResponse, Failure> {
        use pb::generate_response::Response as Out;
        let response = match self.engine {
            Engine::Sglang => {
                use sglang::generate_response::Response as In;
                let decoded = sglang::GenerateResponse::decode(message)
                    .map_err(|_| Failure::BadReply("sglang.grpc.scheduler.GenerateResponse"))?;
                match decoded.response {
                    Some(In::Chunk(c)) => Some(Out::Chunk(pb::GenerateChunk {
                        token_ids: c.token_ids,
                        text: String::new(),
                    })),
                    Some(In::Complete(c)) => Some(Out::Complete(pb::GenerateComplete {
                        finish_reason: c.finish_reason,
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                    })),
                    None => None,
                }
            }
            Engine::Vllm => {
                use vllm::generate_response::Response as In;
                let decoded = vllm::GenerateResponse::decode(message)
                    .map_err(|_| Failure::BadReply("vllm.grpc.engine.GenerateResponse"))?;
                match decoded.response {
                    Some(In::Chunk(c)) => Some(Out::Chunk(pb::GenerateChunk {
                        token_ids: c.token_ids,
                        text: String::new(),
                    })),
                    Some(In::Complete(c)) => Some(Out::Complete(pb::GenerateComplete {
                        finish_reason: c.finish_reason,
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                    })),
                    None => None,
                }
            }
            Engine::Switchyard => {
                return pb::GenerateResponse::decode(message)
                    .map_err(|_| Failure::BadReply("switchyard.v1.GenerateResponse"))
            }
        };
        Ok(pb::GenerateResponse {
            request_id: self.request_id.clone(),
            response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = sglang::GenerateRequest::decode(request(Engine::Sglang, &b, "r", "m").unwrap())
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
        let err = request(Engine::Sglang, &text, "r", "m").unwrap_err();
        assert!(
            matches!(err, TranslateError::NeedsTokenizer { .. }),
            "{err}"
        );
        // vLLM takes text as it is.
        let out =
            vllm::GenerateRequest::decode(request(Engine::Vllm, &text, "r", "m").unwrap()).unwrap();
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
        assert!(request(Engine::Sglang, &seeded, "r", "m")
            .unwrap_err()
            .to_string()
            .contains("seed"));
        let out = vllm::GenerateRequest::decode(request(Engine::Vllm, &seeded, "r", "m").unwrap())
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
            if let Some(o) = t.chunk(&[*b]).unwrap() {
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

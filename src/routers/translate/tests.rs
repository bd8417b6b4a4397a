//! Translation both ways, against the engines' published types.

use super::*;
use crate::pb::{sglang_scheduler as sglang, vllm_engine as vllm};

fn sglang_engine() -> Engine {
    engines::by_name("sglang").unwrap()
}

fn vllm_engine() -> Engine {
    engines::by_name("vllm").unwrap()
}

mod request {
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
            request(sglang_engine(), &b, "r", "m", none())
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
        let err = request(sglang_engine(), &text, "r", "m", none()).unwrap_err();
        assert!(
            matches!(err, TranslateError::NeedsTokenizer { .. }),
            "{err}"
        );
        // vLLM takes text as it is.
        let out = vllm::GenerateRequest::decode(
            request(vllm_engine(), &text, "r", "m", none())
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
        assert!(request(sglang_engine(), &seeded, "r", "m", none())
            .unwrap_err()
            .to_string()
            .contains("seed"));
        let out = vllm::GenerateRequest::decode(
            request(vllm_engine(), &seeded, "r", "m", none())
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
        let mut t = Responses::new(sglang_engine(), "r1".into());
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

mod text {
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
    /// message: the text, the finish reason and the stop string it names,
    /// and whether it stopped.
    fn run(t: &mut Responses, wire: &[u8]) -> (String, Option<(String, String)>, bool) {
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
                    finish = Some((c.finish_reason, c.matched_stop))
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
        let mut t = Responses::new(sglang_engine(), "r".into()).with_text(tok, vec![], true);
        let (text, finish, done) = run(&mut t, &engine_stream(&ids));
        assert_eq!(text, reply);
        assert_eq!(finish, Some(("length".into(), String::new())));
        assert!(!done);
    }

    #[test]
    fn a_stop_string_ends_the_output_before_it_even_across_tokens() {
        let tok = tokenizer();
        let ids = tok.encode("Hello, world! The router", false).unwrap();
        let mut t = Responses::new(sglang_engine(), "r".into()).with_text(
            tok.clone(),
            vec!["The".into(), "world!".into()],
            true,
        );
        let (text, finish, done) = run(&mut t, &engine_stream(&ids));
        assert_eq!(text, "Hello, ");
        // The first in the text, named (Anthropic's stop_sequence).
        assert_eq!(finish, Some(("stop".into(), "world!".into())));
        assert!(done, "the stream ends at the stop string");

        // A stop string that never completes: the held-back text comes out.
        let mut t = Responses::new(sglang_engine(), "r".into()).with_text(
            tok,
            vec!["router!".into()],
            true,
        );
        let (text, finish, _) = run(&mut t, &engine_stream(&ids));
        assert_eq!(text, "Hello, world! The router");
        assert_eq!(finish, Some(("length".into(), String::new())));
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
        let call = request(sglang_engine(), &b, "r", "m", Ok(&tok)).unwrap();
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

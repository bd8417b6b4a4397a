//! TensorRT-LLM workers (`trtllm.TrtllmService`) through the router, driven
//! by clients generated from the published proto: detection, the service
//! relayed, `Abort` (the client's and a cancelled call's), model and server
//! info, health, `switchyard.v1` translated, the tokenizer fetched for the
//! OpenAI front, and PD refused (the protocol cannot carry it).

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use switchyard::mock::{reply_text, MockConfig, MockEngine, MockWorker};
use switchyard::pb::trtllm::trtllm_service_client::TrtllmServiceClient;
use switchyard::pb::{self, trtllm};
use switchyard::tokenizer::{sample, ModelTokenizer};
use tonic::transport::Channel;
use tonic::Code;

const SERVICE: &str = "trtllm.TrtllmService";

async fn trtllm_mock(config: MockConfig) -> MockWorker {
    mock_with(MockConfig {
        engine: MockEngine::Trtllm,
        tokens: 4,
        ..config
    })
    .await
}

async fn add_detected(
    router: &Router,
    worker: &MockWorker,
) -> Result<pb::WorkerInfo, tonic::Status> {
    router
        .try_add_spec(pb::WorkerSpec {
            url: worker.url(),
            ..Default::default()
        })
        .await
}

fn client(router: &Router) -> TrtllmServiceClient<Channel> {
    TrtllmServiceClient::new(router.channel.clone())
}

fn generate_request(id: &str, ids: &[u32], max: u32) -> trtllm::GenerateRequest {
    trtllm::GenerateRequest {
        request_id: id.into(),
        tokenized: Some(trtllm::TokenizedInput {
            input_token_ids: ids.to_vec(),
            ..Default::default()
        }),
        max_tokens: max,
        streaming: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_trtllm_worker_is_detected_relayed_described_and_health_checked() {
    let router = start_router().await;
    let w = trtllm_mock(MockConfig {
        name: "t".into(),
        model: "trt-8b".into(),
        ..MockConfig::default()
    })
    .await;
    let info = add_detected(&router, &w).await.unwrap();
    let spec = info.spec.as_ref().unwrap();
    assert_eq!(spec.engine, pb::Engine::Trtllm as i32);
    assert_eq!(spec.model_id, "trt-8b");
    assert_eq!(info.model_info.unwrap().max_context_length, 8192);

    // Its own service, relayed: the worker's token ids come back.
    let mut stream = client(&router)
        .generate(generate_request("t-1", &[5, 6, 7], 3))
        .await
        .unwrap()
        .into_inner();
    let (mut ids, mut finish) = (Vec::new(), String::new());
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.request_id, "t-1");
        match m.response {
            Some(trtllm::generate_response::Response::Chunk(c)) => ids.extend(c.token_ids),
            Some(trtllm::generate_response::Response::Complete(c)) => finish = c.finish_reason,
            None => {}
        }
    }
    assert_eq!(ids, vec![1000, 1001, 1002]);
    assert_eq!(finish, "length");
    let seen = &w.stats().seen()[0];
    assert_eq!(
        (seen.request_id.as_str(), seen.token_ids.clone()),
        ("t-1", vec![5, 6, 7])
    );

    // Model and server info from the worker; HealthCheck from the router.
    let model = client(&router)
        .get_model_info(trtllm::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(model.model_id, "trt-8b");
    let server = client(&router)
        .get_server_info(trtllm::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.version, "mock-t");
    let health = client(&router)
        .health_check(trtllm::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, "OK");
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    eventually(
        Duration::from_secs(5),
        "TrtllmService is SERVING",
        || async { router.health_of(SERVICE).await == serving },
    )
    .await;
    router.assert_still_serves().await;
}

#[tokio::test]
async fn switchyard_v1_calls_to_trtllm_are_translated_and_text_needs_a_tokenizer() {
    let router = start_router().await;
    let w = trtllm_mock(MockConfig {
        name: "t".into(),
        model: "trt".into(),
        ..MockConfig::default()
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    let out = router
        .generate(pb::GenerateRequest {
            model: "trt".into(),
            input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds {
                ids: vec![1, 2],
            })),
            sampling_params: Some(pb::SamplingParams {
                max_new_tokens: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.finish_reason().as_deref(), Some("length"));
    let ids: Vec<u32> = out
        .messages
        .iter()
        .filter_map(|m| match &m.response {
            Some(pb::generate_response::Response::Chunk(c)) => Some(c.token_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(ids, vec![1000, 1001]);
    assert_eq!(w.stats().seen()[0].token_ids, vec![1, 2]);

    // Text without the model's tokenizer: refused, naming why.
    let err = router.generate(request("trt", "hello")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("tokenizer"), "{}", err.message());
    router.assert_still_serves().await;
}

#[tokio::test]
async fn a_trtllm_call_is_aborted_by_the_client_and_by_cancelling_it() {
    let router = start_router().await;
    let w = trtllm_mock(MockConfig {
        name: "h".into(),
        model: "trt".into(),
        hang: true,
        ..MockConfig::default()
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    let call = {
        let mut client = client(&router);
        tokio::spawn(async move {
            let mut stream = client
                .generate(generate_request("to-abort", &[1], 4))
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        })
    };
    eventually(
        Duration::from_secs(5),
        "the worker has the call",
        || async { w.stats().calls() == 1 },
    )
    .await;
    let reply = client(&router)
        .abort(trtllm::AbortRequest {
            request_id: "to-abort".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.success, "{}", reply.message);
    assert_eq!(w.stats().abort_ids(), vec!["to-abort".to_string()]);
    within(Duration::from_secs(5), "the aborted call ends", call)
        .await
        .unwrap()
        .unwrap();

    // A cancelled call: the engine is sent its own Abort.
    let call = {
        let mut client = client(&router);
        tokio::spawn(async move {
            let _ = client
                .generate(generate_request("c1", &[1], 4))
                .await
                .unwrap()
                .into_inner()
                .message()
                .await;
        })
    };
    eventually(
        Duration::from_secs(5),
        "the worker has the call",
        || async { w.stats().calls() == 2 },
    )
    .await;
    call.abort();
    eventually(
        Duration::from_secs(5),
        "the engine got its Abort",
        || async { w.stats().abort_ids().contains(&"c1".to_string()) },
    )
    .await;
}

#[tokio::test]
async fn a_trtllm_worker_cannot_be_half_of_a_pd_pair() {
    let router = start_router().await;
    let w = trtllm_mock(MockConfig {
        name: "t".into(),
        model: "trt".into(),
        ..MockConfig::default()
    })
    .await;
    let err = router
        .try_add_spec(pb::WorkerSpec {
            url: w.url(),
            role: pb::WorkerRole::Decode as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("trtllm"), "{}", err.message());
    assert!(router.list().await.is_empty(), "nothing registered");
}

#[tokio::test]
async fn the_openai_front_serves_trtllm_with_the_tokenizer_it_fetched() {
    let dir = tempfile::tempdir().unwrap();
    sample::write_sample(dir.path()).unwrap();
    let tokenizer = ModelTokenizer::load(dir.path()).unwrap();
    let router = start_router().await;
    let ids = tokenizer.encode(&reply_text("t"), false).unwrap();
    let reply_tokens = ids.len();
    let w = trtllm_mock(MockConfig {
        name: "t".into(),
        model: "trt".into(),
        tokens: ids.len() as u32,
        reply_ids: Some(Arc::new(ids)),
        model_path: Some(dir.path().display().to_string()),
        ..MockConfig::default()
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    // TensorRT-LLM needs max_tokens: the client's, passed on.
    let chat = json!({"model": "trt", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": reply_tokens});
    let post = |body: Value| {
        let url = router.http_url("/v1/chat/completions");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    eventually(Duration::from_secs(10), "the tokenizer is fetched", || {
        let chat = chat.clone();
        let post = &post;
        async move { post(chat).await.0 == 200 }
    })
    .await;
    let (_, body) = post(chat.clone()).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], reply_text("t"));
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // The engine got the prompt as token ids.
    let seen = w.stats().seen().pop().unwrap();
    assert!(!seen.token_ids.is_empty());

    // Log probabilities, from TensorRT-LLM's own per-token shape: each
    // token's own and the two likeliest at its place, named by the
    // tokenizer (the mock: −(i mod 4 + 1)/8 for token i, alternatives one
    // lower each, the token itself first).
    let mut asked = chat.clone();
    asked["logprobs"] = json!(true);
    asked["top_logprobs"] = json!(2);
    let (status, body) = post(asked).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), reply_tokens);
    for (i, entry) in content.iter().enumerate() {
        let own = -((i % 4) as f64 + 1.0) / 8.0;
        assert_eq!(entry["logprob"].as_f64(), Some(own), "{entry}");
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{entry}");
        assert_eq!(top[0]["token"], entry["token"]);
        assert_eq!(top[1]["logprob"].as_f64(), Some(own - 1.0));
    }
    // Each token's bytes (a character may span tokens) make the reply.
    let bytes: Vec<u8> = content
        .iter()
        .flat_map(|e| e["bytes"].as_array().unwrap().iter())
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), reply_text("t"));
}

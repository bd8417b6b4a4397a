//! MLX workers (`mlx.grpc.engine.MlxEngine`) through the router, driven by
//! clients generated from the published proto: detection, the service
//! relayed (token ids and text), `Abort`, model and server info, health,
//! `switchyard.v1` translated (stop strings only with a tokenizer, MLX has
//! none of its own), the tokenizer fetched for the OpenAI front, and PD
//! refused (the protocol has none).

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use switchyard::mock::{reply_text, MockConfig, MockEngine, MockWorker};
use switchyard::pb::mlx_engine::mlx_engine_client::MlxEngineClient;
use switchyard::pb::{self, mlx_engine as mlx};
use switchyard::tokenizer::{sample, ModelTokenizer};
use tonic::transport::Channel;
use tonic::Code;

const SERVICE: &str = "mlx.grpc.engine.MlxEngine";

async fn mlx_mock(config: MockConfig) -> MockWorker {
    mock_with(MockConfig {
        engine: MockEngine::Mlx,
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

fn client(router: &Router) -> MlxEngineClient<Channel> {
    MlxEngineClient::new(router.channel.clone())
}

fn generate_request(
    id: &str,
    input: mlx::generate_request::Input,
    max: u32,
) -> mlx::GenerateRequest {
    mlx::GenerateRequest {
        request_id: id.into(),
        input: Some(input),
        sampling_params: Some(mlx::SamplingParams {
            max_tokens: Some(max),
            ..Default::default()
        }),
        stream: true,
    }
}

fn tokens(ids: &[u32]) -> mlx::generate_request::Input {
    mlx::generate_request::Input::Tokenized(mlx::TokenizedInput {
        original_text: String::new(),
        input_ids: ids.to_vec(),
    })
}

#[tokio::test]
async fn an_mlx_worker_is_detected_relayed_described_and_health_checked() {
    let router = start_router().await;
    let w = mlx_mock(MockConfig {
        name: "m".into(),
        model: "mlx-3b".into(),
        ..MockConfig::default()
    })
    .await;
    let info = add_detected(&router, &w).await.unwrap();
    let spec = info.spec.as_ref().unwrap();
    assert_eq!(spec.engine, pb::Engine::Mlx as i32);
    assert_eq!(spec.model_id, "mlx-3b");
    assert_eq!(info.model_info.unwrap().max_context_length, 4096);

    // Token ids and text on its own service, relayed.
    for (input, prompt) in [
        (tokens(&[5, 6, 7]), vec![5, 6, 7]),
        (mlx::generate_request::Input::Text("a b".into()), vec![]),
    ] {
        let mut stream = client(&router)
            .generate(generate_request("m-1", input, 3))
            .await
            .unwrap()
            .into_inner();
        let (mut ids, mut finish) = (Vec::new(), String::new());
        while let Some(m) = stream.message().await.unwrap() {
            match m.response {
                Some(mlx::generate_response::Response::Chunk(c)) => ids.extend(c.token_ids),
                Some(mlx::generate_response::Response::Complete(c)) => finish = c.finish_reason,
                None => {}
            }
        }
        assert_eq!(ids, vec![1000, 1001, 1002]);
        assert_eq!(finish, "length");
        let seen = w.stats().seen().pop().unwrap();
        assert_eq!((seen.request_id.as_str(), seen.token_ids), ("m-1", prompt));
    }

    let model = client(&router)
        .get_model_info(mlx::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(model.served_model_name, "mlx-3b");
    let server = client(&router)
        .get_server_info(mlx::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.server_type, "mlx-grpc");
    let health = client(&router)
        .health_check(mlx::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.healthy, "{}", health.message);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    eventually(Duration::from_secs(5), "MlxEngine is SERVING", || async {
        router.health_of(SERVICE).await == serving
    })
    .await;
}

#[tokio::test]
async fn switchyard_v1_calls_to_mlx_are_translated_and_stops_need_a_tokenizer() {
    let router = start_router().await;
    let w = mlx_mock(MockConfig {
        name: "m".into(),
        model: "mlx".into(),
        ..MockConfig::default()
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    // Text goes as text: MLX takes it.
    let out = router.generate(request("mlx", "a b c")).await.unwrap();
    assert_eq!(out.finish_reason().as_deref(), Some("length"));
    match &out.messages.last().unwrap().response {
        Some(pb::generate_response::Response::Complete(c)) => assert_eq!(c.prompt_tokens, 3),
        other => panic!("{other:?}"),
    }
    assert!(out.messages.iter().all(|m| m.request_id == out.request_id));
    // Stop strings without a tokenizer: MLX cannot apply them, nor can the
    // router.
    let mut req = request("mlx", "x");
    req.sampling_params = Some(pb::SamplingParams {
        stop: vec!["END".into()],
        ..Default::default()
    });
    let err = router.generate(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("stop"), "{}", err.message());
    assert_eq!(w.stats().calls(), 1, "the refused call reached no worker");
    router.assert_still_serves().await;
}

#[tokio::test]
async fn an_mlx_call_is_aborted_by_the_client_and_by_cancelling_it() {
    let router = start_router().await;
    let w = mlx_mock(MockConfig {
        name: "h".into(),
        model: "mlx".into(),
        hang: true,
        ..MockConfig::default()
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    let call = {
        let mut client = client(&router);
        tokio::spawn(async move {
            let mut stream = client
                .generate(generate_request("to-abort", tokens(&[1]), 4))
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
    client(&router)
        .abort(mlx::AbortRequest {
            request_ids: vec!["to-abort".into()],
        })
        .await
        .unwrap();
    assert_eq!(w.stats().abort_ids(), vec!["to-abort".to_string()]);
    within(Duration::from_secs(5), "the aborted call ends", call)
        .await
        .unwrap()
        .unwrap();

    let call = {
        let mut client = client(&router);
        tokio::spawn(async move {
            let _ = client
                .generate(generate_request("c1", tokens(&[1]), 4))
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
async fn an_mlx_worker_cannot_be_half_of_a_pd_pair() {
    let router = start_router().await;
    let w = mlx_mock(MockConfig {
        name: "m".into(),
        model: "mlx".into(),
        ..MockConfig::default()
    })
    .await;
    let err = router
        .try_add_spec(pb::WorkerSpec {
            url: w.url(),
            role: pb::WorkerRole::Prefill as i32,
            bootstrap_port: Some(8998),
            engine: pb::Engine::Mlx as i32,
            model_id: "mlx".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("mlx"), "{}", err.message());
    assert!(router.list().await.is_empty(), "nothing registered");
}

#[tokio::test]
async fn the_openai_front_serves_mlx_with_the_tokenizer_it_fetched() {
    let dir = tempfile::tempdir().unwrap();
    sample::write_sample(dir.path()).unwrap();
    let tokenizer = ModelTokenizer::load(dir.path()).unwrap();
    let router = start_router().await;
    let ids = tokenizer.encode(&reply_text("m"), false).unwrap();
    let w = mlx_mock(MockConfig {
        name: "m".into(),
        model: "mlx".into(),
        tokens: ids.len() as u32,
        reply_ids: Some(Arc::new(ids)),
        model_path: Some(dir.path().display().to_string()),
        ..MockConfig::default()
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    let url = router.http_url("/v1/chat/completions");
    let post = |body: Value| {
        let url = url.clone();
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
    let chat = json!({"model": "mlx", "messages": [{"role": "user", "content": "Hello"}], "stop": ["from"]});
    eventually(Duration::from_secs(10), "the tokenizer is fetched", || {
        let chat = chat.clone();
        let post = &post;
        async move { post(chat).await.0 == 200 }
    })
    .await;
    let (_, body) = post(chat).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    // The router cut the text at the stop string MLX could not be sent.
    assert_eq!(v["choices"][0]["message"]["content"], "Hello ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

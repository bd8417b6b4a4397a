//! SGLang and vLLM workers behind the router: engine detection at
//! AddWorker, the engines' own services on the router (Generate, Abort,
//! model info, loads, health), PD in each engine's way, health from the
//! engine's service name. Workers are the mock in `--engine sglang|vllm`
//! mode; clients are tonic clients generated from the published protos.

use std::time::Duration;

use crate::common::*;
use switchyard::mock::MockEngine;
use switchyard::mock::{MockConfig, MockRole, MockWorker};
use switchyard::pb::sglang_scheduler::sglang_scheduler_client::SglangSchedulerClient;
use switchyard::pb::vllm_engine::vllm_engine_client::VllmEngineClient;
use switchyard::pb::{self, sglang_scheduler as sgl, vllm_engine as vllm};
use switchyard::Config;
use tonic::transport::Channel;
use tonic::Code;

fn engine_cfg(name: &str, engine: MockEngine, model: &str) -> MockConfig {
    MockConfig {
        name: name.into(),
        tokens: 4,
        engine,
        model: model.into(),
        ..MockConfig::default()
    }
}

async fn engine_mock(name: &str, engine: MockEngine, model: &str) -> MockWorker {
    mock_with(engine_cfg(name, engine, model)).await
}

/// AddWorker with only the url: the engine and model are the worker's.
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

async fn add_pd(router: &Router, worker: &MockWorker) -> pb::WorkerInfo {
    let (role, bootstrap_port) = match worker.bootstrap_port() {
        Some(port) => (pb::WorkerRole::Prefill, Some(u32::from(port))),
        None => (pb::WorkerRole::Decode, None),
    };
    router
        .try_add_spec(pb::WorkerSpec {
            url: worker.url(),
            role: role as i32,
            bootstrap_port,
            ..Default::default()
        })
        .await
        .expect("AddWorker")
}

fn sglang(router: &Router) -> SglangSchedulerClient<Channel> {
    SglangSchedulerClient::new(router.channel.clone())
}

fn vllm_client(router: &Router) -> VllmEngineClient<Channel> {
    VllmEngineClient::new(router.channel.clone())
}

fn sgl_request(id: &str, ids: &[u32], max: u32) -> sgl::GenerateRequest {
    sgl::GenerateRequest {
        request_id: id.into(),
        tokenized: Some(sgl::TokenizedInput {
            original_text: String::new(),
            input_ids: ids.to_vec(),
        }),
        sampling_params: Some(sgl::SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: -1,
            max_new_tokens: Some(max),
            ..Default::default()
        }),
        stream: true,
        ..Default::default()
    }
}

fn vllm_request(id: &str, ids: &[u32], max: u32) -> vllm::GenerateRequest {
    vllm::GenerateRequest {
        request_id: id.into(),
        input: Some(vllm::generate_request::Input::Tokenized(
            vllm::TokenizedInput {
                original_text: String::new(),
                input_ids: ids.to_vec(),
            },
        )),
        sampling_params: Some(vllm::SamplingParams {
            max_tokens: Some(max),
            ..Default::default()
        }),
        stream: true,
        ..Default::default()
    }
}

/// Every response of an SGLang stream: chunks' token ids, and the
/// completion.
async fn sgl_collect(
    stream: &mut tonic::Streaming<sgl::GenerateResponse>,
) -> (Vec<u32>, Option<sgl::GenerateComplete>) {
    let mut tokens = Vec::new();
    let mut complete = None;
    while let Some(message) = stream.message().await.expect("stream") {
        match message.response {
            Some(sgl::generate_response::Response::Chunk(c)) => tokens.extend(c.token_ids),
            Some(sgl::generate_response::Response::Complete(c)) => complete = Some(c),
            None => panic!("a response without a body"),
        }
    }
    (tokens, complete)
}

#[tokio::test]
async fn add_worker_detects_the_engine_and_takes_the_model_from_it() {
    let router = start_router().await;
    let s = engine_mock("s", MockEngine::Sglang, "llama-8b").await;
    let v = engine_mock("v", MockEngine::Vllm, "qwen-7b").await;
    let y = mock("y").await;

    let info = add_detected(&router, &s).await.unwrap();
    let spec = info.spec.as_ref().unwrap();
    assert_eq!(spec.engine, pb::Engine::Sglang as i32);
    assert_eq!(spec.model_id, "llama-8b");
    let facts = info.model_info.as_ref().unwrap();
    assert_eq!(facts.served_model_name, "llama-8b");
    assert_eq!(facts.max_context_length, 8192);

    let info = add_detected(&router, &v).await.unwrap();
    assert_eq!(info.spec.as_ref().unwrap().engine, pb::Engine::Vllm as i32);
    assert_eq!(info.spec.as_ref().unwrap().model_id, "qwen-7b");
    assert_eq!(info.model_info.unwrap().max_context_length, 4096);

    // A switchyard worker is detected too, but reports no model.
    let err = add_detected(&router, &y).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("switchyard") && err.message().contains("model_id"),
        "{}",
        err.message()
    );
    let info = router
        .try_add_spec(pb::WorkerSpec {
            url: y.url(),
            model_id: "mine".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(info.spec.unwrap().engine, pb::Engine::Switchyard as i32);

    // A model_id given wins over the engine's name.
    let s2 = engine_mock("s2", MockEngine::Sglang, "llama-8b").await;
    let info = router
        .try_add_spec(pb::WorkerSpec {
            url: s2.url(),
            model_id: "alias".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(info.spec.unwrap().model_id, "alias");
    assert_eq!(info.model_info.unwrap().served_model_name, "llama-8b");
}

#[tokio::test]
async fn a_worker_that_cannot_be_reached_or_identified_is_refused_and_nothing_is_registered() {
    let router = start_router().await;
    let err = router
        .try_add_spec(pb::WorkerSpec {
            url: "grpc://127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cannot reach grpc://127.0.0.1:1"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("grpc.health.v1"),
        "says what was tried: {}",
        err.message()
    );

    // A gRPC server that serves none of the engines' services (only
    // grpc.health.v1, knowing none of them).
    let foreign = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign_addr = foreign.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(foreign)),
    );
    let err = router
        .try_add_spec(pb::WorkerSpec {
            url: format!("grpc://{foreign_addr}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cannot identify the engine"),
        "{}",
        err.message()
    );
    assert!(router.list().await.is_empty());

    // An engine named for an HTTP worker is a bad request.
    let err = router
        .try_add_spec(pb::WorkerSpec {
            url: "http://127.0.0.1:1".into(),
            model_id: "m".into(),
            engine: pb::Engine::Vllm as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("grpc:// workers only"),
        "{}",
        err.message()
    );

    // One model, one engine.
    let s = engine_mock("s", MockEngine::Sglang, "m").await;
    let v = engine_mock("v", MockEngine::Vllm, "m").await;
    add_detected(&router, &s).await.unwrap();
    let err = add_detected(&router, &v).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("served by sglang workers"),
        "{}",
        err.message()
    );
    assert_eq!(router.list().await.len(), 1);
    router.assert_still_serves().await;
}

#[tokio::test]
async fn sglang_generate_is_routed_by_the_policy_and_relayed() {
    let router = start_router().await;
    let a = engine_mock("a", MockEngine::Sglang, "llama").await;
    let b = engine_mock("b", MockEngine::Sglang, "llama").await;
    add_detected(&router, &a).await.unwrap();
    add_detected(&router, &b).await.unwrap();

    for i in 0..4 {
        let mut stream = sglang(&router)
            .generate(sgl_request(&format!("r{i}"), &[1, 2, 3], 3))
            .await
            .unwrap()
            .into_inner();
        let (tokens, complete) = sgl_collect(&mut stream).await;
        assert_eq!(tokens, vec![1000, 1001, 1002]);
        let complete = complete.expect("a completion");
        assert_eq!(complete.finish_reason, "length");
        assert_eq!(complete.prompt_tokens, 3);
    }
    // Round-robin (the default policy) alternates between the two.
    assert_eq!((a.stats().calls(), b.stats().calls()), (2, 2));
    let seen: Vec<_> = a
        .stats()
        .seen()
        .into_iter()
        .chain(b.stats().seen())
        .collect();
    assert!(seen.iter().all(|s| s.token_ids == vec![1, 2, 3]));
    assert!(seen.iter().any(|s| s.request_id == "r0"));

    // A request without an id gets one, the same the worker sees.
    let response = sglang(&router)
        .generate(sgl_request("", &[9], 1))
        .await
        .unwrap();
    let id = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut stream = response.into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.request_id, id);
}

#[tokio::test]
async fn vllm_generate_with_text_or_tokens_is_relayed() {
    let router = start_router().await;
    let v = engine_mock("v", MockEngine::Vllm, "qwen").await;
    add_detected(&router, &v).await.unwrap();
    let mut stream = vllm_client(&router)
        .generate(vllm_request("t1", &[5, 6], 2))
        .await
        .unwrap()
        .into_inner();
    let mut tokens = Vec::new();
    let mut finish = None;
    while let Some(m) = stream.message().await.unwrap() {
        match m.response.unwrap() {
            vllm::generate_response::Response::Chunk(c) => tokens.extend(c.token_ids),
            vllm::generate_response::Response::Complete(c) => finish = Some(c.finish_reason),
        }
    }
    assert_eq!(tokens, vec![1000, 1001]);
    assert_eq!(finish.as_deref(), Some("length"));

    let text = vllm::GenerateRequest {
        request_id: "t2".into(),
        input: Some(vllm::generate_request::Input::Text("one two three".into())),
        stream: false,
        ..Default::default()
    };
    let mut stream = vllm_client(&router)
        .generate(text)
        .await
        .unwrap()
        .into_inner();
    let only = stream.message().await.unwrap().unwrap();
    match only.response.unwrap() {
        vllm::generate_response::Response::Complete(c) => assert_eq!(c.prompt_tokens, 3),
        other => panic!("a non-streaming call answers with its completion: {other:?}"),
    }
    assert!(stream.message().await.unwrap().is_none());
}

#[tokio::test]
async fn the_model_comes_from_metadata_and_ambiguity_names_the_models() {
    let router = start_router().await;
    let a = engine_mock("a", MockEngine::Sglang, "alpha").await;
    let b = engine_mock("b", MockEngine::Sglang, "beta").await;
    add_detected(&router, &a).await.unwrap();
    add_detected(&router, &b).await.unwrap();

    let err = sglang(&router)
        .generate(sgl_request("x", &[1], 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("alpha") && err.message().contains("beta"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("x-switchyard-model"),
        "{}",
        err.message()
    );

    let mut call = tonic::Request::new(sgl_request("y", &[1], 1));
    call.metadata_mut()
        .insert("x-switchyard-model", "beta".parse().unwrap());
    let mut stream = sglang(&router).generate(call).await.unwrap().into_inner();
    sgl_collect(&mut stream).await;
    assert_eq!(b.stats().calls(), 1);
    assert_eq!(a.stats().calls(), 0);

    // A vLLM call when only SGLang workers exist; a switchyard.v1 call to
    // an SGLang model.
    let err = vllm_client(&router)
        .generate(vllm_request("z", &[1], 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no vllm workers"),
        "{}",
        err.message()
    );
    let err = router.generate(request("alpha", "text")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("token ids") && err.message().contains("tokenizer"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn switchyard_v1_calls_are_translated_to_and_from_each_engine() {
    let router = start_router().await;
    let s = engine_mock("s", MockEngine::Sglang, "sg").await;
    let v = engine_mock("v", MockEngine::Vllm, "vl").await;
    add_detected(&router, &s).await.unwrap();
    add_detected(&router, &v).await.unwrap();

    // Token ids to SGLang: its defaults set, the stream translated back.
    let mut req = request_tokens("sg");
    req.sampling_params = Some(pb::SamplingParams {
        max_new_tokens: 3,
        ..Default::default()
    });
    let out = router.generate(req).await.unwrap();
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
    assert_eq!(ids, vec![1000, 1001, 1002]);
    assert!(out.messages.iter().all(|m| m.request_id == out.request_id));
    let seen = &s.stats().seen()[0];
    assert_eq!(seen.token_ids, vec![1, 2]);
    assert_eq!(
        seen.request_id, out.request_id,
        "the engine sees the call's id"
    );

    // Text to vLLM, as text; a seed outside vLLM's int32 is refused.
    let out = router.generate(request("vl", "a b c d")).await.unwrap();
    match &out.messages.last().unwrap().response {
        Some(pb::generate_response::Response::Complete(c)) => assert_eq!(c.prompt_tokens, 4),
        other => panic!("{other:?}"),
    }
    let mut req = request("vl", "x");
    req.sampling_params = Some(pb::SamplingParams {
        seed: Some(1 << 40),
        ..Default::default()
    });
    let err = router.generate(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("seed"), "{}", err.message());
    router.assert_still_serves().await;
}

#[tokio::test]
async fn switchyard_v1_calls_to_sglang_pd_are_translated_and_paired() {
    let router = start_router().await;
    let p = mock_with(MockConfig {
        role: MockRole::Prefill { bootstrap_port: 0 },
        ..engine_cfg("p", MockEngine::Sglang, "pd")
    })
    .await;
    let d = mock_with(MockConfig {
        role: MockRole::Decode,
        ..engine_cfg("d", MockEngine::Sglang, "pd")
    })
    .await;
    add_pd(&router, &p).await;
    add_pd(&router, &d).await;
    let out = router.generate(request_tokens("pd")).await.unwrap();
    assert_eq!(out.finish_reason().as_deref(), Some("length"));
    assert_eq!(d.stats().paired(), 1);
}

fn request_tokens(model: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.into(),
        input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds {
            ids: vec![1, 2],
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn abort_on_the_router_reaches_the_worker_running_the_request() {
    let router = start_router().await;
    let w = mock_with(MockConfig {
        hang: true,
        ..engine_cfg("h", MockEngine::Sglang, "m")
    })
    .await;
    add_detected(&router, &w).await.unwrap();
    let mut client = sglang(&router);
    // The router answers once the worker's first bytes arrive: a hung
    // worker's call waits in a task.
    let call = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut stream = client
                .generate(sgl_request("to-abort", &[1], 4))
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
    let reply = client
        .abort(sgl::AbortRequest {
            request_id: "to-abort".into(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.success, "{}", reply.message);
    assert_eq!(w.stats().aborted_streams(), 1);
    assert_eq!(w.stats().abort_ids(), vec!["to-abort".to_string()]);
    // The aborted call ends (the mock ends it without a completion).
    within(Duration::from_secs(5), "the aborted call ends", call)
        .await
        .unwrap()
        .unwrap();

    let reply = client
        .abort(sgl::AbortRequest {
            request_id: "never-ran".into(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.success);
    assert!(reply.message.contains("never-ran"), "{}", reply.message);
}

#[tokio::test]
async fn a_cancelled_engine_call_sends_the_engine_its_own_abort() {
    let router = start_router().await;
    for engine in [MockEngine::Sglang, MockEngine::Vllm] {
        let w = mock_with(MockConfig {
            hang: true,
            ..engine_cfg("h", engine, &format!("m-{engine}"))
        })
        .await;
        add_detected(&router, &w).await.unwrap();
        let call = {
            let router_channel = router.channel.clone();
            tokio::spawn(async move {
                match engine {
                    MockEngine::Sglang => {
                        let _ = SglangSchedulerClient::new(router_channel)
                            .generate(sgl_request("c1", &[1], 4))
                            .await
                            .unwrap()
                            .into_inner()
                            .message()
                            .await;
                    }
                    _ => {
                        let _ = VllmEngineClient::new(router_channel)
                            .generate(vllm_request("c1", &[1], 4))
                            .await
                            .unwrap()
                            .into_inner()
                            .message()
                            .await;
                    }
                }
            })
        };
        eventually(
            Duration::from_secs(5),
            "the worker has the call",
            || async { w.stats().calls() == 1 },
        )
        .await;
        call.abort();
        eventually(
            Duration::from_secs(5),
            "the engine got its Abort",
            || async { w.stats().aborts() == 1 },
        )
        .await;
        assert_eq!(
            w.stats().abort_ids(),
            vec!["c1".to_string()],
            "{engine}: the abort names the request"
        );
    }
}

#[tokio::test]
async fn model_info_server_info_and_loads_come_from_the_workers_health_from_the_router() {
    let router = start_router().await;
    let a = engine_mock("a", MockEngine::Sglang, "m").await;
    let b = engine_mock("b", MockEngine::Sglang, "m").await;
    add_detected(&router, &a).await.unwrap();
    add_detected(&router, &b).await.unwrap();
    let mut client = sglang(&router);

    let info = client
        .get_model_info(sgl::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.served_model_name, "m");
    assert_eq!(info.max_context_length, 8192);
    let server = client
        .get_server_info(sgl::GetServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        server.sglang_version.starts_with("mock-"),
        "{}",
        server.sglang_version
    );

    let loads = client
        .get_loads(sgl::GetLoadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(loads.dp_rank_count, 2, "one rank from each worker");
    let ranks: Vec<i32> = loads.loads.iter().map(|l| l.dp_rank).collect();
    assert_eq!(ranks, vec![0, 1]);
    assert!(loads.aggregate.is_some());

    let health = client
        .health_check(sgl::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.healthy, "{}", health.message);
    assert_eq!(
        a.stats().health_generations() + b.stats().health_generations(),
        0,
        "HealthCheck is answered by the router, not by a generation on a worker"
    );

    // Everything else is refused, naming what is served.
    let err = client
        .embed(sgl::EmbedRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("call Embed on a worker directly"),
        "{}",
        err.message()
    );

    // With every worker gone unhealthy, HealthCheck says so.
    a.set_healthy(false).await;
    b.set_healthy(false).await;
    eventually(
        Duration::from_secs(5),
        "the router sees both unhealthy",
        || async {
            !sglang(&router)
                .health_check(sgl::HealthCheckRequest {})
                .await
                .unwrap()
                .into_inner()
                .healthy
        },
    )
    .await;
}

#[tokio::test]
async fn a_warming_engine_gets_no_calls_until_its_health_says_serving() {
    let router = start_router().await;
    let warm = engine_mock("warm", MockEngine::Sglang, "m").await;
    let cold = mock_with(MockConfig {
        warmup: Duration::from_millis(800),
        ..engine_cfg("cold", MockEngine::Sglang, "m")
    })
    .await;
    add_detected(&router, &warm).await.unwrap();
    // Added while warming: out of rotation at once (its own service says
    // NOT_SERVING), not after failed health checks.
    let info = add_detected(&router, &cold).await.unwrap();
    assert_eq!(info.health, pb::HealthStatus::Unhealthy as i32);
    for i in 0..6 {
        let mut s = sglang(&router)
            .generate(sgl_request(&format!("w{i}"), &[1], 1))
            .await
            .unwrap()
            .into_inner();
        sgl_collect(&mut s).await;
    }
    assert_eq!(cold.stats().calls(), 0);
    eventually(
        Duration::from_secs(5),
        "the cold worker warms up and is healthy",
        || async {
            router
                .list()
                .await
                .iter()
                .all(|w| w.health == pb::HealthStatus::Healthy as i32)
        },
    )
    .await;
}

#[tokio::test]
async fn sglang_pd_pairs_both_sides_with_a_router_chosen_room() {
    let router = start_router().await;
    let p = mock_with(MockConfig {
        role: MockRole::Prefill { bootstrap_port: 0 },
        ..engine_cfg("p", MockEngine::Sglang, "pd")
    })
    .await;
    let d = mock_with(MockConfig {
        role: MockRole::Decode,
        ..engine_cfg("d", MockEngine::Sglang, "pd")
    })
    .await;
    add_pd(&router, &p).await;
    add_pd(&router, &d).await;

    let mut handles = Vec::new();
    for i in 0..8 {
        let channel = router.channel.clone();
        handles.push(tokio::spawn(async move {
            let mut request = sgl_request(&format!("pd{i}"), &[1, 2], 2);
            // A client-chosen room is replaced (duplicates crash SGLang).
            request.disaggregated_params = Some(sgl::DisaggregatedParams {
                bootstrap_host: "evil".into(),
                bootstrap_port: 1,
                bootstrap_room: 7,
            });
            let mut stream = SglangSchedulerClient::new(channel)
                .generate(request)
                .await
                .unwrap()
                .into_inner();
            sgl_collect(&mut stream).await
        }));
    }
    for h in handles {
        let (tokens, complete) = h.await.unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(complete.is_some());
    }
    assert_eq!(
        d.stats().paired(),
        8,
        "every decode side met its prefill side"
    );
    let rooms: std::collections::HashSet<u64> = p
        .stats()
        .seen()
        .iter()
        .map(|s| s.disaggregated.as_ref().unwrap().bootstrap_room)
        .collect();
    assert_eq!(rooms.len(), 8, "a room per call");
    assert!(rooms.iter().all(|r| *r != 7 && *r > 0 && *r < (1 << 31)));
    let params = p.stats().seen()[0].disaggregated.clone().unwrap();
    assert_eq!(params.bootstrap_host, "127.0.0.1");
    assert_eq!(
        params.bootstrap_port,
        u32::from(p.bootstrap_port().unwrap())
    );
}

#[tokio::test]
async fn vllm_pd_runs_prefill_first_and_hands_its_kv_parameters_to_decode() {
    let router = start_router().await;
    let p = mock_with(MockConfig {
        role: MockRole::Prefill { bootstrap_port: 0 },
        ..engine_cfg("p", MockEngine::Vllm, "pd")
    })
    .await;
    let d = mock_with(MockConfig {
        role: MockRole::Decode,
        ..engine_cfg("d", MockEngine::Vllm, "pd")
    })
    .await;
    add_pd(&router, &p).await;
    add_pd(&router, &d).await;

    let response = vllm_client(&router)
        .generate(vllm_request("v-pd", &[3, 4, 5], 3))
        .await
        .unwrap();
    for side in [
        "x-switchyard-prefill-worker-id",
        "x-switchyard-decode-worker-id",
    ] {
        assert!(
            response.metadata().get(side).is_some(),
            "{side} names the worker"
        );
    }
    let mut stream = response.into_inner();
    let mut tokens = 0;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(vllm::generate_response::Response::Chunk(c)) = m.response {
            tokens += c.token_ids.len();
        }
    }
    assert_eq!(tokens, 3, "the decode side's stream, whole");
    assert_eq!(d.stats().paired(), 1);
    let prefill_saw = &p.stats().seen()[0];
    assert!(prefill_saw
        .kv_transfer_params
        .as_deref()
        .unwrap()
        .contains("do_remote_decode"));
    let decode_saw = &d.stats().seen()[0];
    let kv = decode_saw.kv_transfer_params.as_deref().unwrap();
    assert!(kv.contains("remote_room"), "{kv}");
    assert_eq!(decode_saw.token_ids, vec![3, 4, 5]);
}

#[tokio::test]
async fn engine_reported_load_steers_power_of_two() {
    let mut config = test_config();
    config.policy.name = switchyard::policies::PolicyKind::PowerOfTwo;
    let router = start_router_with(config).await;
    let busy = mock_with(MockConfig {
        reported_waiting: 50,
        ..engine_cfg("busy", MockEngine::Vllm, "m")
    })
    .await;
    let idle = engine_mock("idle", MockEngine::Vllm, "m").await;
    let busy_id = add_detected(&router, &busy).await.unwrap().id;
    add_detected(&router, &idle).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the busy engine's load is polled",
        || async {
            router
                .list()
                .await
                .iter()
                .any(|w| w.id == busy_id && w.load >= 50)
        },
    )
    .await;
    for i in 0..10 {
        let mut s = vllm_client(&router)
            .generate(vllm_request(&format!("l{i}"), &[1], 1))
            .await
            .unwrap()
            .into_inner();
        while s.message().await.unwrap().is_some() {}
    }
    assert_eq!(
        busy.stats().calls(),
        0,
        "the engine reporting 50 waiting gets nothing"
    );
    assert_eq!(idle.stats().calls(), 10);
}

#[tokio::test]
async fn the_router_reports_each_engine_service_in_grpc_health() {
    let router = start_router().await;
    const SGLANG: &str = "sglang.grpc.scheduler.SglangScheduler";
    const VLLM: &str = "vllm.grpc.engine.VllmEngine";
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(router.health_of(SGLANG).await, not_serving);
    let s = engine_mock("s", MockEngine::Sglang, "m").await;
    add_detected(&router, &s).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "SglangScheduler is SERVING",
        || async { router.health_of(SGLANG).await == serving },
    )
    .await;
    assert_eq!(router.health_of(VLLM).await, not_serving, "no vLLM workers");
    assert_eq!(
        router.health_of("switchyard.v1.Inference").await,
        serving,
        "switchyard.v1 calls are translated"
    );
    s.set_healthy(false).await;
    eventually(
        Duration::from_secs(5),
        "SglangScheduler is NOT_SERVING",
        || async { router.health_of(SGLANG).await == not_serving },
    )
    .await;
}

#[tokio::test]
async fn cache_aware_routes_engine_calls_on_their_token_ids() {
    let mut config = test_config();
    config.policy.name = switchyard::policies::PolicyKind::CacheAware;
    let router = start_router_with(config).await;
    let a = engine_mock("a", MockEngine::Sglang, "m").await;
    let b = engine_mock("b", MockEngine::Sglang, "m").await;
    add_detected(&router, &a).await.unwrap();
    add_detected(&router, &b).await.unwrap();
    // Two prompt families, alternating. Cache-aware sends each family to
    // the worker that holds its prefix; without the token ids it would fall
    // back to the least loaded worker, the first, for every call.
    let family = |f: u32, i: u32| -> Vec<u32> {
        let mut ids: Vec<u32> = (0..200).map(|t| f * 1000 + t).collect();
        ids.push(50_000 + i);
        ids
    };
    for i in 0..8u32 {
        let mut s = sglang(&router)
            .generate(sgl_request(&format!("c{i}"), &family(i % 2, i), 1))
            .await
            .unwrap()
            .into_inner();
        sgl_collect(&mut s).await;
    }
    for w in [&a, &b] {
        let seen = w.stats().seen();
        assert_eq!(
            seen.len(),
            4,
            "{}: each worker serves one family",
            w.config().name
        );
        let first = seen[0].token_ids[0];
        assert!(
            seen.iter().all(|s| s.token_ids[0] == first),
            "one family per worker"
        );
    }
}

#[tokio::test]
async fn text_to_sglang_is_tokenized_and_answers_come_back_as_text_with_stops_applied() {
    let dir = tempfile::tempdir().unwrap();
    switchyard::tokenizer::sample::write_sample(dir.path()).unwrap();
    let tokenizer = switchyard::tokenizer::ModelTokenizer::load(dir.path()).unwrap();
    let reply = switchyard::mock::reply_text("s");
    let reply_ids = tokenizer.encode(&reply, false).unwrap();
    let mut config = test_config();
    config
        .tokenizers
        .insert("sg".into(), dir.path().to_path_buf());
    let router = start_router_with(config).await;
    let s = mock_with(MockConfig {
        reply_ids: Some(std::sync::Arc::new(reply_ids.clone())),
        tokens: reply_ids.len() as u32,
        token_delay: Duration::from_millis(2),
        ..engine_cfg("s", MockEngine::Sglang, "sg")
    })
    .await;
    add_detected(&router, &s).await.unwrap();

    let out = router
        .generate(request("sg", "Hello, world!"))
        .await
        .unwrap();
    assert_eq!(
        out.text(),
        reply,
        "the reply, detokenized across multi-byte characters"
    );
    assert_eq!(out.finish_reason().as_deref(), Some("length"));
    let seen = &s.stats().seen()[0];
    assert_eq!(
        tokenizer.decode(&seen.token_ids, true).unwrap(),
        "Hello, world!"
    );

    // A stop string: the text ends before it, the engine is told to stop.
    let mut req = request("sg", "Hello");
    req.sampling_params = Some(pb::SamplingParams {
        stop: vec!["日本".into()],
        ..Default::default()
    });
    let out = router.generate(req).await.unwrap();
    assert_eq!(out.text(), "Hello from s! Café, ");
    assert_eq!(out.finish_reason().as_deref(), Some("stop"));
    let id = out.request_id.clone();
    eventually(
        Duration::from_secs(5),
        "the engine is sent Abort",
        || async { s.stats().abort_ids().contains(&id) },
    )
    .await;

    // A model without a tokenizer: text is refused, token ids still work.
    let other = engine_mock("o", MockEngine::Sglang, "no-tok").await;
    add_detected(&router, &other).await.unwrap();
    // The router tries the worker's GetTokenizer (this mock has none); once
    // that has failed, text is refused saying how to give it one.
    eventually(
        Duration::from_secs(5),
        "text refused with the reason",
        || async {
            let err = router
                .generate(request("no-tok", "Hello"))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::FailedPrecondition);
            err.message().contains("--tokenizer no-tok=PATH")
                && err.message().contains("GetTokenizer")
        },
    )
    .await;
    router.generate(request_tokens("no-tok")).await.unwrap();
}

#[tokio::test]
async fn text_and_token_id_requests_for_one_prompt_share_cache_aware_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    switchyard::tokenizer::sample::write_sample(dir.path()).unwrap();
    let tokenizer = switchyard::tokenizer::ModelTokenizer::load(dir.path()).unwrap();
    let mut config = test_config();
    config.policy.name = switchyard::policies::PolicyKind::CacheAware;
    config
        .tokenizers
        .insert("m".into(), dir.path().to_path_buf());
    let router = start_router_with(config).await;
    let a = engine_mock("a", MockEngine::Sglang, "m").await;
    let b = engine_mock("b", MockEngine::Sglang, "m").await;
    add_detected(&router, &a).await.unwrap();
    add_detected(&router, &b).await.unwrap();
    let family_one = "The quick brown fox jumps over the lazy dog. ".repeat(8);
    let family_two = "Switchyard routes requests for large language models. ".repeat(8);
    let as_text = |t: &str| request("m", t);
    let as_ids = |t: &str| pb::GenerateRequest {
        model: "m".into(),
        input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds {
            ids: tokenizer.encode(t, true).unwrap(),
        })),
        ..Default::default()
    };
    // One as text, the other as token ids, then each the other way round.
    let first = router
        .generate(as_text(&format!("{family_one} one")))
        .await
        .unwrap()
        .worker;
    let second = router
        .generate(as_ids(&format!("{family_two} two")))
        .await
        .unwrap()
        .worker;
    assert_ne!(first, second, "two prompt families, two workers");
    let again_one = router
        .generate(as_ids(&format!("{family_one} three")))
        .await
        .unwrap()
        .worker;
    let again_two = router
        .generate(as_text(&format!("{family_two} four")))
        .await
        .unwrap()
        .worker;
    assert_eq!(again_one, first, "token ids find the prefix the text left");
    assert_eq!(
        again_two, second,
        "text finds the prefix the token ids left"
    );
}

#[tokio::test]
async fn prompts_longer_than_the_model_takes_are_refused_before_any_worker_sees_them() {
    let router = start_router_with(Config {
        limits: switchyard::config::LimitsConfig {
            max_prompt_tokens: 10_000,
            ..Default::default()
        },
        ..test_config()
    })
    .await;
    let s = engine_mock("s", MockEngine::Sglang, "sg").await;
    let info = add_detected(&router, &s).await.unwrap();
    let context = info.model_info.unwrap().max_context_length;
    assert!(context > 2, "the mock reports a context length");
    let ids = |n: u32| pb::GenerateRequest {
        model: "sg".into(),
        input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds {
            ids: (0..n).collect(),
        })),
        sampling_params: Some(pb::SamplingParams {
            max_new_tokens: 1,
            ..Default::default()
        }),
        ..Default::default()
    };

    // The whole context: no room for a token; refused, naming both numbers.
    let err = router.generate(ids(context)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(&format!("{context} tokens"))
            && err.message().contains(&format!("at most {}", context - 1))
            && err.message().contains("max context length"),
        "{}",
        err.message()
    );
    assert!(s.stats().seen().is_empty(), "the worker saw the call");
    // One less fits.
    router.generate(ids(context - 1)).await.unwrap();
    assert_eq!(s.stats().seen().len(), 1);

    // The router's own bound, below the model's: over HTTP too (the
    // SGLang-shaped front, which needs the model's tokenizer), as a 400.
    let dir = tempfile::tempdir().unwrap();
    switchyard::tokenizer::sample::write_sample(dir.path()).unwrap();
    let small = start_router_with(Config {
        limits: switchyard::config::LimitsConfig {
            max_prompt_tokens: 3,
            ..Default::default()
        },
        tokenizers: [("sg".to_string(), dir.path().to_path_buf())].into(),
        ..test_config()
    })
    .await;
    add_detected(&small, &s).await.unwrap();
    let err = small.generate(ids(4)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("limits.max_prompt_tokens"),
        "{}",
        err.message()
    );
    small.generate(ids(3)).await.unwrap();
    let response = reqwest::Client::new()
        .post(small.http_url("/generate"))
        .json(&serde_json::json!({"model": "sg", "input_ids": [1, 2, 3, 4], "sampling_params": {"max_new_tokens": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("limits.max_prompt_tokens"), "{body}");
    assert_eq!(
        s.stats().seen().len(),
        2,
        "refused calls reached the worker"
    );
}

#[tokio::test]
async fn a_url_whose_scheme_does_not_match_the_server_is_refused_naming_the_right_one() {
    let router = start_router().await;
    let http = MockWorker::start_http("127.0.0.1:0".parse().unwrap(), MockConfig::default())
        .await
        .unwrap();
    let as_grpc = http.url().replace("http://", "grpc://");
    let err = router
        .try_add_spec(pb::WorkerSpec {
            url: as_grpc,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("answers HTTP/1.1") && err.message().contains(&http.url()),
        "{}",
        err.message()
    );

    let grpc = mock("g").await;
    let as_http = grpc.url().replace("grpc://", "http://");
    let err = router.try_add(&as_http, MODEL).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("answers gRPC") && err.message().contains(&grpc.url()),
        "{}",
        err.message()
    );
    assert!(router.list().await.is_empty());
}

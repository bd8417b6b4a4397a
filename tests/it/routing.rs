//! The gRPC regular router: add → routable, round-robin, remove, model
//! resolution and every routing error code.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use switchyard::mock::{MockConfig, MockWorker};
use switchyard::pb;
use tonic::Code;

#[tokio::test]
async fn added_worker_is_routable_at_once_and_named_in_metadata() {
    let router = start_router().await;
    let worker = mock("alpha").await;
    let info = router.add(&worker.url(), MODEL).await;
    // No sleep: routable the moment AddWorker returned.
    let out = router
        .generate(request(MODEL, "hello world"))
        .await
        .unwrap();
    assert_eq!(out.worker, info.id);
    assert_eq!(out.text(), "alpha:0 alpha:1 alpha:2 alpha:3 ");
    assert_eq!(out.finish_reason().as_deref(), Some("length"));
    assert_eq!(worker.stats().calls(), 1);
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let router = start_router().await;
    let mut workers = Vec::new();
    for name in ["a", "b", "c"] {
        let w = mock(name).await;
        router.add(&w.url(), MODEL).await;
        workers.push(w);
    }
    let mut by_worker: HashMap<String, u32> = HashMap::new();
    for _ in 0..30 {
        let out = router.generate(request(MODEL, "x")).await.unwrap();
        *by_worker.entry(out.worker).or_default() += 1;
    }
    assert_eq!(by_worker.len(), 3);
    assert!(by_worker.values().all(|n| *n == 10), "{by_worker:?}");
    for w in &workers {
        assert_eq!(w.stats().calls(), 10);
    }
}

#[tokio::test]
async fn removed_worker_gets_no_new_calls_but_its_stream_completes() {
    let router = start_router().await;
    let slow = mock_with(MockConfig {
        name: "slow".into(),
        tokens: 10,
        token_delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let other = mock("other").await;
    let slow_info = router.add(&slow.url(), MODEL).await;

    // Start a stream on the slow worker, then remove it mid-stream.
    let mut inference = router.inference();
    let response = inference.generate(request(MODEL, "long")).await.unwrap();
    let mut stream = response.into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.response,
        Some(pb::generate_response::Response::Chunk(_))
    ));
    router.add(&other.url(), MODEL).await;
    router.remove(&slow_info.id).await;
    let calls_at_removal = slow.stats().calls();

    for _ in 0..10 {
        let out = router.generate(request(MODEL, "x")).await.unwrap();
        assert_ne!(out.worker, slow_info.id);
    }
    // The stream in flight on the removed worker runs to its end.
    let mut rest = 0;
    let mut finished = false;
    while let Some(m) = stream.message().await.unwrap() {
        match m.response {
            Some(pb::generate_response::Response::Chunk(_)) => rest += 1,
            Some(pb::generate_response::Response::Complete(c)) => {
                finished = c.finish_reason == "length"
            }
            _ => {}
        }
    }
    assert_eq!(rest, 9);
    assert!(finished);
    assert_eq!(slow.stats().calls(), calls_at_removal);
    assert_eq!(other.stats().calls(), 10);
}

#[tokio::test]
async fn empty_model_means_the_only_model_and_is_refused_when_ambiguous() {
    let router = start_router().await;
    let a = mock("a").await;
    let b = mock("b").await;
    router.add(&a.url(), "model-a").await;
    let out = router.generate(request("", "x")).await.unwrap();
    assert!(out.text().starts_with("a:0"));
    // The worker sees the request as the client sent it.
    assert_eq!(a.stats().seen()[0].model, "");

    router.add(&b.url(), "model-b").await;
    let err = router.generate(request("", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("model-a") && err.message().contains("model-b"),
        "{}",
        err.message()
    );
    // Naming the model still works.
    let out = router.generate(request("model-b", "x")).await.unwrap();
    assert!(out.text().starts_with("b:0"));
}

#[tokio::test]
async fn a_model_nobody_serves_is_not_found_and_one_served_over_http_says_so() {
    let router = start_router().await;
    let err = router.generate(request("", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no workers"), "{}", err.message());

    let w = mock("a").await;
    router.add(&w.url(), MODEL).await;
    let err = router
        .generate(request("llama-70b", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("llama-70b"), "{}", err.message());

    // A model only HTTP workers serve: the gRPC call is told where to go,
    // and the HTTP call for a gRPC-only model likewise.
    let h = MockWorker::start_http("127.0.0.1:0".parse().unwrap(), MockConfig::default())
        .await
        .unwrap();
    router.add(&h.url(), "over-http").await;
    let err = router
        .generate(request("over-http", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("HTTP listener"), "{}", err.message());
    let response = reqwest::Client::new()
        .post(router.http_url("/generate"))
        .json(&serde_json::json!({"model": MODEL, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body = response.text().await.unwrap();
    assert!(body.contains("gRPC listener"), "{body}");
}

/// A worker that answers every call `UNAVAILABLE` before any response.
async fn always_failing() -> MockWorker {
    mock_with(MockConfig {
        name: "failing".into(),
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await
}

#[tokio::test]
async fn worker_failing_before_any_response_is_unavailable() {
    let router = start_router().await;
    let failing = always_failing().await;
    router.add(&failing.url(), MODEL).await;
    let err = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("failed before responding"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn unreachable_worker_is_unavailable_and_the_router_keeps_serving() {
    let router = start_router().await;
    let gone = mock("gone").await;
    let url = gone.url();
    gone.stop().await;
    router.add(&url, MODEL).await;
    let err = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    router.assert_still_serves().await;
}

/// The URL of a worker that was started and stopped: connections to it are
/// refused.
async fn dead_worker_url(name: &str) -> String {
    let gone = mock(name).await;
    let url = gone.url();
    gone.stop().await;
    url
}

#[tokio::test]
async fn unreachable_worker_is_skipped_for_a_reachable_one() {
    let router = router_without_health_checks().await;
    let gone = router.add(&dead_worker_url("gone").await, MODEL).await;
    let live = mock("live").await;
    let live_info = router.add(&live.url(), MODEL).await;

    // Round-robin offers every other call to the dead worker first.
    for i in 0..10 {
        let out = router
            .generate(request(MODEL, "x"))
            .await
            .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
        assert_eq!(out.worker, live_info.id);
    }
    assert_eq!(live.stats().calls(), 10);
    let listed = router.list().await;
    let dead = listed.iter().find(|w| w.id == gone.id).unwrap();
    // Still in rotation (so calls were offered to it), and no load left
    // behind by the attempts that failed.
    assert_eq!(dead.health, pb::HealthStatus::Healthy as i32);
    assert!(listed.iter().all(|w| w.in_flight == 0), "{listed:?}");
}

#[tokio::test]
async fn no_reachable_worker_is_unavailable_naming_the_workers_tried() {
    let router = router_without_health_checks().await;
    let mut ids = Vec::new();
    for name in ["d1", "d2", "d3", "d4", "d5"] {
        ids.push(router.add(&dead_worker_url(name).await, MODEL).await.id);
    }
    let err = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // At most retry.max_attempts (4) workers are offered one call.
    assert!(
        err.message()
            .contains("none of the 4 workers tried for model"),
        "{}",
        err.message()
    );
    let named = ids.iter().filter(|id| err.message().contains(id.as_str()));
    assert_eq!(named.count(), 4, "{}", err.message());
    router.assert_still_serves().await;
}

#[tokio::test]
async fn a_worker_that_received_the_call_is_not_retried() {
    let router = router_without_health_checks().await;
    let failing = always_failing().await;
    router.add(&failing.url(), MODEL).await;
    let live = mock("live").await;
    router.add(&live.url(), MODEL).await;

    let mut failures = 0;
    for _ in 0..4 {
        if let Err(err) = router.generate(request(MODEL, "x")).await {
            assert_eq!(err.code(), Code::Unavailable);
            assert!(
                err.message().contains("failed before responding"),
                "{}",
                err.message()
            );
            failures += 1;
        }
    }
    // Round-robin: two calls each; the failing worker's two fail and are
    // not sent on to the live one (the worker had the call and answered).
    assert_eq!(failures, 2);
    assert_eq!(failing.stats().calls(), 2);
    assert_eq!(live.stats().calls(), 2);
}

#[tokio::test]
async fn failure_after_a_partial_stream_passes_the_workers_error_on() {
    let router = start_router().await;
    let flaky = mock_with(MockConfig {
        name: "flaky".into(),
        tokens: 10,
        fail_after: Some(3),
        ..MockConfig::default()
    })
    .await;
    router.add(&flaky.url(), MODEL).await;
    let response = router
        .inference()
        .generate(request(MODEL, "x"))
        .await
        .unwrap();
    let mut stream = response.into_inner();
    let (chunks, err) = messages_until_error(&mut stream).await;
    assert_eq!(chunks, 3);
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("injected failure after 3 tokens"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn garbage_request_bytes_are_invalid_argument_and_nothing_breaks() {
    let router = start_router().await;
    let w = mock("a").await;
    router.add(&w.url(), MODEL).await;
    // Send bytes that are not a GenerateRequest, through a raw client.
    let mut raw =
        switchyard::pb::raw::inference_client::InferenceClient::new(router.channel.clone());
    let err = raw
        .generate(bytes::Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("GenerateRequest"),
        "{}",
        err.message()
    );
    assert_eq!(w.stats().calls(), 0);
    assert!(router.generate(request(MODEL, "x")).await.is_ok());
}

//! The HTTP routers over the shared registry, against HTTP mock workers:
//! management, routing, removal, churn, health, SSE relay, PD, and the
//! error statuses, with a real HTTP client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use switchyard::mock::{MockConfig, MockRole, MockWorker};
use tokio_stream::StreamExt;

async fn http_mock(name: &str, tokens: u32, delay_ms: u64) -> MockWorker {
    http_mock_with(MockConfig {
        name: name.into(),
        tokens,
        token_delay: Duration::from_millis(delay_ms),
        ..MockConfig::default()
    })
    .await
}

async fn http_mock_with(config: MockConfig) -> MockWorker {
    MockWorker::start_http("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn add_http(router: &Router, spec: Value) -> reqwest::Response {
    client()
        .post(router.http_url("/workers"))
        .json(&spec)
        .send()
        .await
        .unwrap()
}

async fn add(router: &Router, worker: &MockWorker, model: &str) -> String {
    let response = add_http(router, json!({"url": worker.url(), "model_id": model})).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// GET `path` on the router and parse the JSON body.
async fn get_json(router: &Router, path: &str) -> Value {
    client()
        .get(router.http_url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST /generate; returns (status, serving worker id, body).
async fn generate(router: &Router, body: Value) -> (u16, String, Value) {
    let response = client()
        .post(router.http_url("/generate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let worker = response
        .headers()
        .get("x-switchyard-worker-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, worker, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn added_over_http_is_routable_and_removed_is_never_chosen() {
    let router = start_router().await;
    let a = http_mock("a", 2, 0).await;
    let b = http_mock("b", 2, 0).await;
    let a_id = add(&router, &a, MODEL).await;
    let (status, worker, body) = generate(&router, json!({"text": "hello"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(worker, a_id);
    assert_eq!(body["text"], "a:0 a:1 ");

    let b_id = add(&router, &b, MODEL).await;
    let listed: Value = get_json(&router, "/workers").await;
    assert_eq!(listed["workers"].as_array().unwrap().len(), 2);
    let removed = client()
        .delete(router.http_url(&format!("/workers/{a_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let calls = a.stats().calls();
    for _ in 0..6 {
        let (status, worker, _) = generate(&router, json!({"text": "x", "model": MODEL})).await;
        assert_eq!(status, 200);
        assert_eq!(worker, b_id);
    }
    assert_eq!(a.stats().calls(), calls);
    let gone = client()
        .get(router.http_url(&format!("/workers/{a_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn sse_is_relayed_as_it_arrives_and_a_disconnect_cancels_upstream() {
    let router = start_router().await;
    let slow = http_mock("slow", 5, 200).await;
    add(&router, &slow, MODEL).await;
    let response = client()
        .post(router.http_url("/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("slow:0"),
        "{first:?}"
    );
    // The first event arrived while the worker was still generating: it was
    // relayed, not buffered until the end.
    assert_eq!(slow.stats().completed(), 0, "the worker had not finished");
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("slow:4"), "{rest}");
    assert!(rest.contains("data: [DONE]"));

    // Disconnect mid-stream: the worker sees its client go away.
    let response = client()
        .post(router.http_url("/generate"))
        .json(&json!({"text": "x", "stream": true, "sampling_params": {"max_new_tokens": 50}}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    eventually(Duration::from_secs(5), "upstream cancelled", || async {
        slow.stats().cancelled() == 1
    })
    .await;
    eventually(Duration::from_secs(5), "load released", || async {
        router.list().await.iter().all(|w| w.in_flight == 0)
    })
    .await;
}

#[tokio::test]
async fn grpc_and_http_routers_serve_from_one_registry() {
    let router = start_router().await;
    let g = mock("grpc-worker").await;
    let h = http_mock("http-worker", 2, 0).await;
    // Both registered over gRPC; the HTTP worker shows up over HTTP too.
    router.add(&g.url(), "grpc-model").await;
    let h_info = router.add(&h.url(), "http-model").await;
    let out = router.generate(request("grpc-model", "x")).await.unwrap();
    assert!(out.text().starts_with("grpc-worker:0"));
    let (status, worker, body) =
        generate(&router, json!({"text": "x", "model": "http-model"})).await;
    assert_eq!((status, worker), (200, h_info.id.clone()), "{body}");
    let listed: Value = get_json(&router, "/workers?connection_mode=http").await;
    assert_eq!(listed["workers"][0]["id"], h_info.id.as_str());
    let models: Value = get_json(&router, "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["grpc-model", "http-model"]);
    // An HTTP worker is not a gRPC candidate, and vice versa.
    let err = router
        .generate(request("http-model", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("HTTP listener"), "{}", err.message());
    let (status, _, _) = generate(&router, json!({"text": "x", "model": "grpc-model"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn http_worker_health_drives_routing_and_readiness() {
    let router = start_router().await;
    let a = http_mock("a", 1, 0).await;
    let b = http_mock("b", 1, 0).await;
    let a_id = add(&router, &a, MODEL).await;
    let b_id = add(&router, &b, MODEL).await;
    let readiness = || async {
        let r = client()
            .get(router.http_url("/readiness"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (code, body) = readiness().await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"model": MODEL, "status": "ready", "healthy_workers": 2, "total_workers": 2})
    );

    a.set_healthy(false).await;
    eventually(Duration::from_secs(5), "a unhealthy", || async {
        readiness().await.1["healthy_workers"] == 1
    })
    .await;
    for _ in 0..4 {
        assert_eq!(generate(&router, json!({"text": "x"})).await.1, b_id);
    }
    b.set_healthy(false).await;
    eventually(Duration::from_secs(5), "not ready", || async {
        readiness().await.0 == 503
    })
    .await;
    let (status, _, body) = generate(&router, json!({"text": "x"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no healthy workers"));
    a.set_healthy(true).await;
    eventually(Duration::from_secs(5), "ready again", || async {
        readiness().await.0 == 200
    })
    .await;
    assert_eq!(generate(&router, json!({"text": "x"})).await.1, a_id);
}

#[tokio::test]
async fn unreachable_http_worker_is_skipped_for_a_reachable_one() {
    let router = router_without_health_checks().await;
    // Down when added: registered, but listed unhealthy and out of
    // rotation until a health check passes (it was asked GET /health).
    let early = http_mock("early", 1, 0).await;
    let early_url = early.url();
    early.stop().await;
    let response = add_http(
        &router,
        json!({"url": early_url, "model_id": "early-model"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(listed["health"], "unhealthy", "{listed}");

    // Up when added, down when called.
    let gone = http_mock("gone", 1, 0).await;
    let gone_url = gone.url();
    let response = add_http(&router, json!({"url": gone_url, "model_id": MODEL})).await;
    assert_eq!(response.status(), 201);
    gone.stop().await;
    let live = http_mock("live", 1, 0).await;
    let live_id = add(&router, &live, MODEL).await;

    // Round-robin offers every other request to the dead worker first.
    for _ in 0..6 {
        let (status, worker, body) = generate(&router, json!({"model": MODEL, "text": "x"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(worker, live_id);
    }
    assert_eq!(live.stats().calls(), 6);

    // Round robin offered each of them to the dead worker first: six
    // failures in a row opened its circuit, so it is passed over now.
    let workers: serde_json::Value = reqwest::get(router.http_url("/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gone_json = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"] == gone_url.as_str())
        .unwrap()
        .clone();
    assert_eq!(gone_json["circuit"], "open", "{gone_json}");
    assert!(gone_json["circuit_open_ms"].as_u64().unwrap() > 0);

    // With neither reachable: 502, naming the one tried.
    live.stop().await;
    let (status, _, body) = generate(&router, json!({"model": MODEL, "text": "x"})).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("could not be reached"), "{message}");
    assert!(message.contains(&live_id), "{message}");
}

#[tokio::test]
async fn errors_have_the_right_status_and_a_message() {
    let mut config = test_config();
    config.http.max_body_bytes = 4096;
    let router = start_router_with(config).await;
    let w = http_mock("w", 1, 0).await;
    add(&router, &w, MODEL).await;
    let post = |path: &'static str, body: Vec<u8>| {
        let url = router.http_url(path);
        async move {
            let r = client().post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let cases: Vec<(&'static str, Vec<u8>, u16, &str)> = vec![
        ("/generate", b"{not json".to_vec(), 400, "not valid JSON"),
        (
            "/generate",
            br#"{"model": 7}"#.to_vec(),
            400,
            "`model` must be a string",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"nope","messages":[]}"#.to_vec(),
            404,
            "unknown model",
        ),
        (
            "/generate",
            format!(r#"{{"text":"{}"}}"#, "x".repeat(8000)).into_bytes(),
            413,
            "4096-byte limit",
        ),
        (
            "/workers",
            br#"{"url":"ftp://h:1","model_id":"m"}"#.to_vec(),
            400,
            "unsupported scheme",
        ),
        (
            "/workers",
            br#"{"url":"http://h:1","model_id":"m","colour":"red"}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "/workers",
            format!(r#"{{"url":"{}","model_id":"m"}}"#, w.url()).into_bytes(),
            409,
            "already registered",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, body) = post(path, body).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
    }
    // A worker that was down when added: 503, saying why none can serve.
    let down = http_mock("down", 1, 0).await;
    let url = down.url();
    down.stop().await;
    add_http(&router, json!({"url": url, "model_id": "down-model"})).await;
    let (status, _, body) = generate(&router, json!({"text": "x", "model": "down-model"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("failing health checks"));
    let deleted = client()
        .delete(router.http_url("/workers/w-none"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 404);
    // Still serving.
    assert_eq!(
        generate(&router, json!({"text": "x", "model": MODEL}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn http_pd_sends_both_sides_the_bootstrap_and_returns_decode() {
    let router = start_router().await;
    let p = http_mock_with(MockConfig {
        name: "pre".into(),
        tokens: 1,
        role: MockRole::Prefill { bootstrap_port: 0 },
        ..MockConfig::default()
    })
    .await;
    let d = http_mock_with(MockConfig {
        name: "dec".into(),
        tokens: 3,
        role: MockRole::Decode,
        ..MockConfig::default()
    })
    .await;
    let port = p.bootstrap_port().unwrap();
    let r = add_http(
        &router,
        json!({"url": p.url(), "model_id": "pd", "role": "prefill", "bootstrap_port": port}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = add_http(
        &router,
        json!({"url": d.url(), "model_id": "pd", "role": "decode"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let readiness: Value = get_json(&router, "/readiness").await;
    assert_eq!(readiness["prefill_healthy"], 1);
    assert_eq!(readiness["decode_total"], 1);

    for stream in [false, true] {
        let response = client()
            .post(router.http_url("/v1/chat/completions"))
            .json(&json!({"model": "pd", "messages": [{"role": "user", "content": "hi"}], "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response
            .headers()
            .contains_key("x-switchyard-prefill-worker-id"));
        assert!(response
            .headers()
            .contains_key("x-switchyard-decode-worker-id"));
        let text = response.text().await.unwrap();
        assert!(text.contains("dec:2"), "{text}");
    }
    assert_eq!(d.stats().paired(), 2);
    let sent_p = p.stats().seen()[0].disaggregated.clone().unwrap();
    let sent_d = d.stats().seen()[0].disaggregated.clone().unwrap();
    assert_eq!(sent_p, sent_d);
    assert_eq!(sent_p.bootstrap_port, u32::from(port));

    // A prefill failure is reported to the client.
    p.update(|c| c.fail_rate = 1.0);
    let response = client()
        .post(router.http_url("/generate"))
        .json(&json!({"model": "pd", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_never_routes_to_a_removed_http_worker() {
    let router = Arc::new(start_router().await);
    let mut mocks = Vec::new();
    for i in 0..6 {
        mocks.push(http_mock(&format!("m{i}"), 1, 0).await);
    }
    let urls: Arc<Vec<String>> = Arc::new(mocks.iter().map(|m| m.url()).collect());
    let removed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut churners = Vec::new();
    for t in 0..3usize {
        let (router, urls, removed_at) = (router.clone(), urls.clone(), removed_at.clone());
        churners.push(tokio::spawn(async move {
            for i in 0..40usize {
                let url = &urls[(t * 5 + i * 7) % urls.len()];
                let r = add_http(&router, json!({"url": url, "model_id": MODEL})).await;
                assert!(matches!(r.status().as_u16(), 201 | 409));
                let victim = router
                    .list()
                    .await
                    .into_iter()
                    .find(|w| w.spec.as_ref().unwrap().url == urls[(t + i * 3) % urls.len()]);
                if let Some(victim) = victim {
                    let r = client()
                        .delete(router.http_url(&format!("/workers/{}", victim.id)))
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 200 {
                        removed_at.lock().unwrap().insert(victim.id, Instant::now());
                    } else {
                        assert_eq!(r.status(), 404);
                    }
                }
            }
        }));
    }
    let mut callers = Vec::new();
    for _ in 0..6 {
        let router = router.clone();
        callers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..40 {
                let started = Instant::now();
                let (status, worker, body) =
                    generate(&router, json!({"text": "x", "model": MODEL})).await;
                // 404 when the model momentarily has no workers at all.
                assert!(matches!(status, 200 | 503 | 404), "{status}: {body}");
                out.push((started, worker));
            }
            out
        }));
    }
    for c in churners {
        c.await.unwrap();
    }
    let removed_at = removed_at.lock().unwrap().clone();
    assert!(removed_at.len() > 10);
    for c in callers {
        for (started, worker) in c.await.unwrap() {
            if let Some(removed) = removed_at.get(&worker) {
                assert!(
                    started < *removed,
                    "a call started after {worker} was removed was routed to it"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_http_management_api_identifies_grpc_engine_workers_too() {
    let router = start_router().await;
    let s = mock_with(MockConfig {
        name: "s".into(),
        engine: switchyard::mock::MockEngine::Sglang,
        model: "llama".into(),
        ..MockConfig::default()
    })
    .await;
    let response = add_http(&router, json!({"url": s.url()})).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["engine"], "sglang");
    assert_eq!(body["model_id"], "llama");
    assert_eq!(body["max_context_length"], 8192);

    let response = add_http(&router, json!({"url": "grpc://127.0.0.1:1"})).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot reach grpc://127.0.0.1:1"),
        "{message}"
    );

    let response = add_http(
        &router,
        json!({"url": "http://127.0.0.1:1", "model_id": "m", "engine": "vllm"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let response = add_http(
        &router,
        json!({"url": "grpc://127.0.0.1:1", "engine": "tgi"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let listed: Value = get_json(&router, "/workers").await;
    assert_eq!(listed["workers"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn workers_are_found_and_removed_by_url_and_unknown_routes_get_json_404s() {
    let router = start_router().await;
    let a = http_mock("a", 1, 0).await;
    let b = http_mock("b", 1, 0).await;
    let id_a = add(&router, &a, "m").await;
    add(&router, &b, "m").await;
    let encoded = a.url().replace(':', "%3A").replace('/', "%2F");
    let got = get_json(&router, &format!("/workers/{encoded}")).await;
    assert_eq!(got["id"], id_a.as_str());

    let removed = client()
        .delete(router.http_url("/workers"))
        .query(&[("url", b.url())])
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let removed: Value = removed.json().await.unwrap();
    assert_eq!(removed["url"], b.url().as_str());
    let removed = client()
        .delete(router.http_url(&format!("/workers/{encoded}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert!(router.list().await.is_empty());
    let missing = client()
        .delete(router.http_url("/workers"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);

    let nothing = client().get(router.http_url("/nope")).send().await.unwrap();
    assert_eq!(nothing.status(), 404);
    let body: Value = nothing.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("/nope"),
        "{body}"
    );
}

//! The admin listener's metrics as an operator reads them: calls counted
//! per worker by outcome (a cancelled stream as cancelled), the overload
//! refusals, and a removed worker's series gone (cardinality follows the
//! registry, not the clients); readiness turns 503 with no healthy worker.
//!
//! A crate of its own: these tests read process-wide counters (the
//! router's overhead histograms), which other tests' calls would move.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../it/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use switchyard::mock::MockConfig;
use switchyard::{App, Config};
use tokio::net::TcpListener;
use tonic::transport::Channel;

struct Admin {
    addr: SocketAddr,
    grpc: Channel,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: Config) -> Admin {
    let app = App::build(config).await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(
        switchyard::app::Listeners {
            grpc,
            http: None,
            admin: Some(admin),
        },
        async {
            let _ = rx.await;
        },
    ));
    let grpc = Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Admin {
        addr,
        grpc,
        _shutdown: tx,
    }
}

/// Registers `url` for the test model through the router's gRPC API.
async fn add(admin: &Admin, url: String) -> switchyard::pb::WorkerInfo {
    switchyard::pb::worker_management_client::WorkerManagementClient::new(admin.grpc.clone())
        .add_worker(switchyard::pb::AddWorkerRequest {
            worker: Some(switchyard::pb::WorkerSpec {
                url,
                model_id: MODEL.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

/// The value of the one series of `name` whose labels include all of
/// `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn calls_are_counted_per_worker_and_a_removed_workers_series_go_with_it() {
    let admin = start(test_config()).await;
    let router_mgmt =
        switchyard::pb::worker_management_client::WorkerManagementClient::new(admin.grpc.clone());
    let mut inference = switchyard::pb::inference_client::InferenceClient::new(admin.grpc.clone());
    let worker = mock_with(MockConfig {
        tokens: 50,
        token_delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let added = add(&admin, worker.url()).await;
    let id = format!("worker=\"{}\"", added.id);

    // Two calls read to the end; one dropped after its first chunk.
    for _ in 0..2 {
        let mut short = request(MODEL, "x");
        short.sampling_params = Some(switchyard::pb::SamplingParams {
            max_new_tokens: 2,
            ..Default::default()
        });
        let mut stream = inference.generate(short).await.unwrap().into_inner();
        while stream.message().await.unwrap().is_some() {}
    }
    let mut stream = inference
        .generate(request(MODEL, "to be dropped"))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap();
    let text = scrape(admin.addr).await;
    assert_eq!(
        value(&text, "switchyard_worker_in_flight", &[&id]),
        Some(1.0),
        "{text}"
    );
    drop(stream);

    eventually(
        Duration::from_secs(5),
        "the dropped call counted",
        || async {
            let text = scrape(admin.addr).await;
            value(
                &text,
                "switchyard_worker_calls_total",
                &[&id, "outcome=\"cancelled\""],
            ) == Some(1.0)
        },
    )
    .await;
    let text = scrape(admin.addr).await;
    assert_eq!(
        value(
            &text,
            "switchyard_worker_calls_total",
            &[&id, "outcome=\"success\""]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "switchyard_worker_first_answer_seconds_count",
            &[&id]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "switchyard_worker_in_flight", &[&id]),
        Some(0.0)
    );
    // Router-wide (shared by this file's tests): every call sent was timed.
    let sent = value(
        &text,
        "switchyard_router_overhead_seconds_count",
        &["listener=\"grpc\"", "dispatch=\"regular\""],
    )
    .unwrap();
    assert!(sent >= 3.0, "{text}");
    assert_eq!(
        value(
            &text,
            "switchyard_workers",
            &["mode=\"grpc\"", "role=\"regular\""]
        ),
        Some(1.0)
    );
    let ready = reqwest::get(format!("http://{}/readyz", admin.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Removed: none of its series is left, and with no worker the router
    // is not ready.
    router_mgmt
        .clone()
        .remove_worker(switchyard::pb::RemoveWorkerRequest {
            target: Some(switchyard::pb::remove_worker_request::Target::Id(
                added.id.clone(),
            )),
        })
        .await
        .unwrap();
    let text = scrape(admin.addr).await;
    assert!(!text.contains(&id), "{text}");
    let ready = reqwest::get(format!("http://{}/readyz", admin.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("no healthy worker"));
}

#[tokio::test]
async fn overload_refusals_are_counted() {
    let mut config = test_config();
    config.limits.max_in_flight = 1;
    config.limits.queue_size = 0;
    let admin = start(config).await;
    let worker = mock_with(MockConfig {
        tokens: 100,
        token_delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    add(&admin, worker.url()).await;
    let mut inference = switchyard::pb::inference_client::InferenceClient::new(admin.grpc.clone());
    let mut held = inference
        .generate(request(MODEL, "holds the only permit"))
        .await
        .unwrap()
        .into_inner();
    held.message().await.unwrap();
    for _ in 0..3 {
        let refused = inference.generate(request(MODEL, "x")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }
    let text = scrape(admin.addr).await;
    assert_eq!(
        value(&text, "switchyard_calls_refused_overload_total", &[]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(value(&text, "switchyard_calls_in_flight", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_aware_decisions_and_tree_sizes_are_exported() {
    let mut config = test_config();
    config.policy.name = switchyard::policies::PolicyKind::CacheAware;
    let admin = start(config).await;
    let (a, b) = (mock("a").await, mock("b").await);
    add(&admin, a.url()).await;
    add(&admin, b.url()).await;
    let mut inference = switchyard::pb::inference_client::InferenceClient::new(admin.grpc.clone());
    let prompt = "a long shared system prompt that the tree will remember. ".repeat(4);
    // The first call finds nothing; the next four find the first one's prefix.
    for i in 0..5 {
        let response = inference
            .generate(request(MODEL, &format!("{prompt}{i}")))
            .await
            .unwrap();
        let mut stream = response.into_inner();
        while stream.message().await.unwrap().is_some() {}
    }
    let text = scrape(admin.addr).await;
    let grpc = [
        "router=\"grpc\"",
        "set=\"regular\"",
        "policy=\"cache_aware\"",
    ];
    let decision = |d: &str| {
        let d = format!("decision=\"{d}\"");
        let mut labels = grpc.to_vec();
        labels.push(&d);
        value(&text, "switchyard_policy_decisions_total", &labels)
    };
    assert_eq!(decision("cache_miss"), Some(1.0), "{text}");
    assert_eq!(decision("cache_hit"), Some(4.0), "{text}");
    assert_eq!(decision("load_imbalance"), Some(0.0), "{text}");
    let model = format!("model=\"{MODEL}\"");
    let mut labels = grpc.to_vec();
    labels.push(&model);
    let symbols = value(&text, "switchyard_cache_aware_tree_symbols", &labels)
        .unwrap_or_else(|| panic!("no tree size: {text}"));
    assert!(
        symbols >= prompt.len() as f64,
        "{symbols} < {}",
        prompt.len()
    );
    // The dashboard's snapshot shows the same per model.
    let snapshot: serde_json::Value = reqwest::get(format!("http://{}/api/snapshot", admin.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        snapshot["models"][0]["tree_symbols"].as_f64(),
        Some(symbols),
        "{snapshot}"
    );
    // The HTTP router's policy saw no calls.
    assert_eq!(
        value(
            &text,
            "switchyard_policy_decisions_total",
            &[
                "router=\"http\"",
                "set=\"regular\"",
                "decision=\"cache_hit\""
            ]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_pd_calls_overhead_is_a_series_of_its_own() {
    let admin = start(test_config()).await;
    let prefill = mock_with(MockConfig {
        name: "pre".into(),
        tokens: 1,
        role: switchyard::mock::MockRole::Prefill { bootstrap_port: 0 },
        ..MockConfig::default()
    })
    .await;
    let decode = mock_with(MockConfig {
        name: "dec".into(),
        tokens: 2,
        role: switchyard::mock::MockRole::Decode,
        ..MockConfig::default()
    })
    .await;
    let mut management =
        switchyard::pb::worker_management_client::WorkerManagementClient::new(admin.grpc.clone());
    for (worker, role) in [
        (&prefill, switchyard::pb::WorkerRole::Prefill),
        (&decode, switchyard::pb::WorkerRole::Decode),
    ] {
        management
            .add_worker(switchyard::pb::AddWorkerRequest {
                worker: Some(switchyard::pb::WorkerSpec {
                    url: worker.url(),
                    model_id: "pd-model".into(),
                    role: role as i32,
                    bootstrap_port: worker.bootstrap_port().map(u32::from),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let mut inference = switchyard::pb::inference_client::InferenceClient::new(admin.grpc.clone());
    let mut stream = inference
        .generate(request("pd-model", "x"))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}

    let text = scrape(admin.addr).await;
    let pd = value(
        &text,
        "switchyard_router_overhead_seconds_count",
        &["listener=\"grpc\"", "dispatch=\"pd\""],
    );
    // Router-wide, and no other test of this file makes PD calls.
    assert_eq!(pd, Some(1.0), "{text}");
}

#[tokio::test]
async fn relayed_chunks_are_timed_on_their_way_through_the_router() {
    let admin = start(test_config()).await;
    // A token every 10 ms: every chunk is waited for, and one wait in 16
    // is timed.
    let worker = mock_with(MockConfig {
        name: "paced".into(),
        tokens: 160,
        token_delay: Duration::from_millis(10),
        ..MockConfig::default()
    })
    .await;
    let added = add(&admin, worker.url()).await;
    let before = value(
        &scrape(admin.addr).await,
        "switchyard_router_chunk_overhead_seconds_count",
        &[],
    )
    .unwrap();
    let mut inference = switchyard::pb::inference_client::InferenceClient::new(admin.grpc.clone());
    let mut stream = inference
        .generate(request(MODEL, "x"))
        .await
        .unwrap()
        .into_inner();
    let mut chunks = 0;
    while stream.message().await.unwrap().is_some() {
        chunks += 1;
    }
    assert!(chunks >= 160, "{chunks} messages");
    // Every one of them counted for the worker once the call ended (a
    // chunk may carry more than one message, never fewer than one).
    let relayed = value(
        &scrape(admin.addr).await,
        "switchyard_worker_chunks_relayed_total",
        &[&format!("worker=\"{}\"", added.id)],
    )
    .unwrap();
    assert!(
        (80.0..=f64::from(chunks)).contains(&relayed),
        "{relayed} chunks of {chunks} messages"
    );

    let text = scrape(admin.addr).await;
    let count = value(&text, "switchyard_router_chunk_overhead_seconds_count", &[]).unwrap();
    let sum = value(&text, "switchyard_router_chunk_overhead_seconds_sum", &[]).unwrap();
    // About one chunk in 16 (other tests of this file stream too, fewer
    // chunks: never as many as would be timed if every chunk were).
    let timed = count - before;
    assert!(
        (5.0..=60.0).contains(&timed),
        "{timed} chunks timed\n{text}"
    );
    // From the wake to the hand-over, not the wait for the token: well
    // under the 10 ms between tokens (microseconds, unless the machine is
    // very busy).
    assert!(sum / count < 0.005, "mean {} s", sum / count);
}

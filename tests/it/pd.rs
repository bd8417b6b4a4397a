//! The gRPC prefill/decode router against prefill and decode mocks that
//! really rendezvous over TCP with the bootstrap values the router sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use switchyard::mock::{MockConfig, MockRole, MockWorker};
use switchyard::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const PD_MODEL: &str = "pd-model";

fn cfg(name: &str, role: MockRole, tokens: u32, delay_ms: u64) -> MockConfig {
    MockConfig {
        name: name.into(),
        tokens,
        token_delay: Duration::from_millis(delay_ms),
        role,
        ..MockConfig::default()
    }
}

async fn add_pd(
    router: &Router,
    worker: &MockWorker,
    model: &str,
) -> Result<pb::WorkerInfo, tonic::Status> {
    let (role, bootstrap_port) = match worker.bootstrap_port() {
        Some(port) => (pb::WorkerRole::Prefill, Some(u32::from(port))),
        None => (pb::WorkerRole::Decode, None),
    };
    router
        .management()
        .add_worker(pb::AddWorkerRequest {
            worker: Some(pb::WorkerSpec {
                url: worker.url(),
                model_id: model.into(),
                role: role as i32,
                bootstrap_port,
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner().worker.unwrap())
}

async fn prefill(name: &str, tokens: u32, delay_ms: u64) -> MockWorker {
    mock_with(cfg(
        name,
        MockRole::Prefill { bootstrap_port: 0 },
        tokens,
        delay_ms,
    ))
    .await
}

async fn decode(name: &str, tokens: u32, delay_ms: u64) -> MockWorker {
    mock_with(cfg(name, MockRole::Decode, tokens, delay_ms)).await
}

fn header(md: &tonic::metadata::MetadataMap, name: &str) -> String {
    md.get(name).unwrap().to_str().unwrap().to_string()
}

#[tokio::test]
async fn pd_round_trip_through_the_rendezvous() {
    let router = start_router().await;
    let p = prefill("pre", 1, 0).await;
    let d = decode("dec", 4, 0).await;
    let p_info = add_pd(&router, &p, PD_MODEL).await.unwrap();
    let d_info = add_pd(&router, &d, PD_MODEL).await.unwrap();

    let response = router
        .inference()
        .generate(request(PD_MODEL, "hello"))
        .await
        .unwrap();
    assert_eq!(
        header(response.metadata(), "x-switchyard-prefill-worker-id"),
        p_info.id
    );
    assert_eq!(
        header(response.metadata(), "x-switchyard-decode-worker-id"),
        d_info.id
    );
    let mut stream = response.into_inner();
    let mut text = String::new();
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(pb::generate_response::Response::Chunk(c)) = m.response {
            text.push_str(&c.text);
        }
    }
    assert_eq!(text, "dec:0 dec:1 dec:2 dec:3 ");
    assert_eq!(d.stats().paired(), 1);
    let sent_p = p.stats().seen()[0].disaggregated.clone().unwrap();
    let sent_d = d.stats().seen()[0].disaggregated.clone().unwrap();
    assert_eq!(sent_p, sent_d, "both sides get the same bootstrap values");
    assert_eq!(sent_p.bootstrap_host, "127.0.0.1");
    assert_eq!(
        sent_p.bootstrap_port,
        u32::from(p.bootstrap_port().unwrap())
    );
    assert_ne!(sent_p.bootstrap_room, 0);
    eventually(
        Duration::from_secs(5),
        "both load guards released",
        || async { router.list().await.iter().all(|w| w.in_flight == 0) },
    )
    .await;
    assert_eq!(
        p.stats().completed(),
        1,
        "the prefill stream was drained to its end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pd_calls_get_distinct_rooms_and_all_pair() {
    let router = Arc::new(start_router().await);
    let mut mocks = Vec::new();
    for i in 0..2 {
        let p = prefill(&format!("p{i}"), 1, 0).await;
        let d = decode(&format!("d{i}"), 3, 1).await;
        add_pd(&router, &p, PD_MODEL).await.unwrap();
        add_pd(&router, &d, PD_MODEL).await.unwrap();
        mocks.push((p, d));
    }
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let router = router.clone();
            tokio::spawn(async move {
                router
                    .generate(request(PD_MODEL, &format!("prompt {i}")))
                    .await
            })
        })
        .collect();
    for c in calls {
        let out = c.await.unwrap().unwrap();
        assert_eq!(out.finish_reason().as_deref(), Some("length"));
    }
    let mut rooms = HashSet::new();
    let mut paired = 0;
    for (p, d) in &mocks {
        for seen in p.stats().seen() {
            assert!(
                rooms.insert(seen.disaggregated.unwrap().bootstrap_room),
                "room reused"
            );
        }
        paired += d.stats().paired();
    }
    assert_eq!(rooms.len(), 40);
    assert_eq!(paired, 40);
}

#[tokio::test]
async fn prefill_failure_reaches_the_client_and_cancels_decode() {
    let router = start_router().await;
    let p = mock_with(MockConfig {
        fail_rate: 1.0,
        ..cfg("pre", MockRole::Prefill { bootstrap_port: 0 }, 1, 0)
    })
    .await;
    let d = decode("dec", 4, 0).await;
    let p_info = add_pd(&router, &p, PD_MODEL).await.unwrap();
    add_pd(&router, &d, PD_MODEL).await.unwrap();
    let err = router.generate(request(PD_MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains(&p_info.id), "{}", err.message());
    eventually(Duration::from_secs(5), "decode told to abort", || async {
        d.stats().aborts() >= 1
    })
    .await;
    assert_eq!(d.stats().completed(), 0);

    // Prefill failing mid-stream, after decode started streaming.
    let router = start_router().await;
    let p = mock_with(MockConfig {
        fail_after: Some(5),
        ..cfg("pre2", MockRole::Prefill { bootstrap_port: 0 }, 10, 20)
    })
    .await;
    let d = decode("dec2", 200, 10).await;
    add_pd(&router, &p, PD_MODEL).await.unwrap();
    add_pd(&router, &d, PD_MODEL).await.unwrap();
    let mut stream = router
        .inference()
        .generate(request(PD_MODEL, "x"))
        .await
        .unwrap()
        .into_inner();
    let (chunks, err) = messages_until_error(&mut stream).await;
    assert!(chunks > 0 && chunks < 200, "{chunks}");
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message().contains("injected failure after 5 tokens"),
        "{}",
        err.message()
    );
    eventually(Duration::from_secs(5), "decode told to abort", || async {
        d.stats().aborts() >= 1
    })
    .await;
}

#[tokio::test]
async fn decode_failure_reaches_the_client_and_cancels_prefill() {
    let router = start_router().await;
    let p = prefill("pre", 200, 10).await;
    let d = mock_with(MockConfig {
        fail_after: Some(2),
        ..cfg("dec", MockRole::Decode, 10, 10)
    })
    .await;
    add_pd(&router, &p, PD_MODEL).await.unwrap();
    add_pd(&router, &d, PD_MODEL).await.unwrap();
    let mut stream = router
        .inference()
        .generate(request(PD_MODEL, "x"))
        .await
        .unwrap()
        .into_inner();
    let (chunks, err) = messages_until_error(&mut stream).await;
    assert_eq!(chunks, 2);
    assert_eq!(err.code(), Code::Internal);
    eventually(Duration::from_secs(5), "prefill told to abort", || async {
        p.stats().aborts() >= 1
    })
    .await;
    eventually(Duration::from_secs(5), "prefill stops", || async {
        p.stats().cancelled() + p.stats().aborted_streams() == 1
    })
    .await;
    assert_eq!(p.stats().completed(), 0);
}

#[tokio::test]
async fn client_cancel_aborts_both_sides() {
    let router = start_router().await;
    let p = prefill("pre", 500, 10).await;
    let d = decode("dec", 500, 10).await;
    add_pd(&router, &p, PD_MODEL).await.unwrap();
    add_pd(&router, &d, PD_MODEL).await.unwrap();
    let mut stream = router
        .inference()
        .generate(request(PD_MODEL, "x"))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let listed = router.list().await;
    assert!(
        listed.iter().all(|w| w.in_flight == 1),
        "both sides counted: {listed:?}"
    );
    drop(stream);
    eventually(Duration::from_secs(5), "both told to abort", || async {
        p.stats().aborts() >= 1 && d.stats().aborts() >= 1
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "load released on both sides",
        || async { router.list().await.iter().all(|w| w.in_flight == 0) },
    )
    .await;
}

#[tokio::test]
async fn a_pd_model_serves_only_with_both_sides_healthy() {
    let router = start_router().await;
    let inference = "switchyard.v1.Inference";
    let p = prefill("pre", 1, 0).await;
    let d = decode("dec", 2, 0).await;
    let p_info = add_pd(&router, &p, PD_MODEL).await.unwrap();
    assert_eq!(
        router.health_of(inference).await,
        ServingStatus::NotServing as i32
    );
    let err = router.generate(request(PD_MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no decode workers"),
        "{}",
        err.message()
    );
    add_pd(&router, &d, PD_MODEL).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "SERVING with both sides",
        || async { router.health_of(inference).await == ServingStatus::Serving as i32 },
    )
    .await;
    assert!(router.generate(request(PD_MODEL, "x")).await.is_ok());

    router.remove(&p_info.id).await;
    eventually(
        Duration::from_secs(5),
        "NOT_SERVING without prefill",
        || async { router.health_of(inference).await == ServingStatus::NotServing as i32 },
    )
    .await;
    let err = router.generate(request(PD_MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no prefill workers") && err.message().contains(PD_MODEL),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn mixing_regular_and_pd_workers_in_one_model_is_refused() {
    let router = start_router().await;
    let p = prefill("pre", 1, 0).await;
    add_pd(&router, &p, PD_MODEL).await.unwrap();
    let err = router
        .try_add("grpc://127.0.0.1:1", PD_MODEL)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("disaggregated"), "{}", err.message());

    router.add("grpc://127.0.0.1:2", "regular-model").await;
    let d = decode("dec", 1, 0).await;
    let err = add_pd(&router, &d, "regular-model").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("regularly"), "{}", err.message());
}

#[tokio::test]
async fn cache_aware_prefill_selection_follows_prefixes() {
    // The default prefill policy is cache_aware. It only works if the PD
    // router's policy instance hears about workers through registry events.
    let router = start_router().await;
    let mut prefills = Vec::new();
    let mut prefill_ids = Vec::new();
    for i in 0..3 {
        let p = prefill(&format!("p{i}"), 1, 0).await;
        prefill_ids.push(add_pd(&router, &p, PD_MODEL).await.unwrap().id);
        prefills.push(p);
    }
    let d = decode("dec", 1, 0).await;
    add_pd(&router, &d, PD_MODEL).await.unwrap();
    let prefix = "A long system prompt shared by a whole conversation. ".repeat(30);
    let pick = |text: String| {
        let router = &router;
        async move {
            let response = router
                .inference()
                .generate(request(PD_MODEL, &text))
                .await
                .unwrap();
            let id = header(response.metadata(), "x-switchyard-prefill-worker-id");
            let mut s = response.into_inner();
            while s.message().await.unwrap().is_some() {}
            id
        }
    };
    let first = pick(format!("{prefix} turn 1")).await;
    for turn in 2..8 {
        assert_eq!(pick(format!("{prefix} turn {turn}")).await, first);
    }
    let mut spread: HashMap<String, u32> = HashMap::new();
    for g in 0..9 {
        *spread
            .entry(pick(format!("group {g}: {}", "distinct text ".repeat(40))).await)
            .or_default() += 1;
    }
    assert_eq!(
        spread.len(),
        3,
        "distinct prefixes use every prefill worker: {spread:?}"
    );
    // The favoured prefill worker goes away: the next turn goes elsewhere.
    router.remove(&first).await;
    let next = pick(format!("{prefix} turn 9")).await;
    assert_ne!(next, first);
    assert!(prefill_ids.contains(&next));
}

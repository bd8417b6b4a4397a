//! Policies through the real router with four mock workers: cache-aware
//! stickiness and spread, removal of the favoured worker, load balancing
//! under imbalance, power-of-two steering, and consistent hashing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use switchyard::mock::{MockConfig, MockWorker};
use switchyard::policies::PolicyKind;
use switchyard::Config;

fn config(kind: PolicyKind) -> Config {
    let mut c = test_config();
    c.policy.name = kind;
    c
}

async fn fleet(router: &Router, n: usize) -> (Vec<MockWorker>, Vec<String>) {
    let mut mocks = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let m = mock(&format!("w{i}")).await;
        ids.push(router.add(&m.url(), MODEL).await.id);
        mocks.push(m);
    }
    (mocks, ids)
}

fn long_prefix(tag: &str) -> String {
    format!("[{tag}] You are a careful assistant. ").repeat(40)
}

async fn keyed(router: &Router, key: &str) -> String {
    let mut req = tonic::Request::new(request(MODEL, "x"));
    req.metadata_mut()
        .insert("x-switchyard-routing-key", key.parse().unwrap());
    let response = router.inference().generate(req).await.unwrap();
    let worker = response
        .metadata()
        .get("x-switchyard-worker-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut stream = response.into_inner();
    while stream.message().await.unwrap().is_some() {}
    worker
}

#[tokio::test]
async fn cache_aware_sticks_to_a_shared_prefix_and_spreads_distinct_ones() {
    let router = start_router_with(config(PolicyKind::CacheAware)).await;
    let (_mocks, ids) = fleet(&router, 4).await;
    let prefix = long_prefix("shared");
    let mut seen = Vec::new();
    for i in 0..12 {
        let out = router
            .generate(request(MODEL, &format!("{prefix} question {i}")))
            .await
            .unwrap();
        seen.push(out.worker);
    }
    assert!(seen.iter().all(|w| *w == seen[0]), "{seen:?}");

    let mut spread: HashMap<String, u32> = HashMap::new();
    for g in 0..16 {
        let out = router
            .generate(request(MODEL, &long_prefix(&format!("group-{g}"))))
            .await
            .unwrap();
        *spread.entry(out.worker).or_default() += 1;
    }
    assert_eq!(
        spread.len(),
        4,
        "distinct prefixes use every worker: {spread:?}"
    );
    assert!(ids.iter().all(|id| spread.contains_key(id)));
}

#[tokio::test]
async fn removing_the_favoured_worker_sends_the_next_request_elsewhere() {
    let router = start_router_with(config(PolicyKind::CacheAware)).await;
    let (mocks, _ids) = fleet(&router, 4).await;
    let prefix = long_prefix("favoured");
    let favoured = router
        .generate(request(MODEL, &format!("{prefix} 1")))
        .await
        .unwrap()
        .worker;
    assert_eq!(
        router
            .generate(request(MODEL, &format!("{prefix} 2")))
            .await
            .unwrap()
            .worker,
        favoured
    );
    router.remove(&favoured).await;
    let next = router
        .generate(request(MODEL, &format!("{prefix} 3")))
        .await
        .unwrap();
    assert_ne!(next.worker, favoured);
    assert_eq!(next.finish_reason().as_deref(), Some("length"));
    // And the prefix now sticks to its new home.
    assert_eq!(
        router
            .generate(request(MODEL, &format!("{prefix} 4")))
            .await
            .unwrap()
            .worker,
        next.worker
    );
    drop(mocks);
}

#[tokio::test]
async fn cache_aware_spreads_load_once_imbalance_crosses_the_thresholds() {
    let mut c = config(PolicyKind::CacheAware);
    c.policy.cache_aware.balance_abs_threshold = 2;
    c.policy.cache_aware.balance_rel_threshold = 1.5;
    let router = start_router_with(c).await;
    let slow = switchyard::mock::MockWorker::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            name: "slow".into(),
            tokens: 1000,
            token_delay: Duration::from_millis(20),
            ..MockConfig::default()
        },
    )
    .await
    .unwrap();
    let slow_id = router.add(&slow.url(), MODEL).await.id;
    let prefix = long_prefix("hot");
    // Teach the tree that the prefix lives on the slow worker (the only one).
    let mut held = Vec::new();
    for i in 0..4 {
        let response = router
            .inference()
            .generate(request(MODEL, &format!("{prefix} {i}")))
            .await
            .unwrap();
        assert_eq!(
            response.metadata().get("x-switchyard-worker-id").unwrap(),
            slow_id.as_str()
        );
        held.push(response.into_inner());
    }
    // Now others join; the slow worker holds 4 streams, the others none:
    // 4 - 0 > 2 and 4 > 0 * 1.5, so the hot prefix goes elsewhere.
    let (_others, other_ids) = fleet(&router, 3).await;
    let out = router
        .generate(request(MODEL, &format!("{prefix} next")))
        .await
        .unwrap();
    assert!(other_ids.contains(&out.worker), "went to {}", out.worker);
    drop(held);
    eventually(Duration::from_secs(5), "load released", || async {
        router.list().await.iter().all(|w| w.in_flight == 0)
    })
    .await;
    // Balanced again: the prefix follows the cache back to the slow worker.
    let mut again = request(MODEL, &format!("{prefix} again"));
    again.sampling_params = Some(switchyard::pb::SamplingParams {
        max_new_tokens: 2,
        ..Default::default()
    });
    let out = router.generate(again).await.unwrap();
    assert_eq!(out.worker, slow_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_steers_away_from_a_slow_worker() {
    let router = Arc::new(start_router_with(config(PolicyKind::PowerOfTwo)).await);
    let mut mocks = Vec::new();
    let mut slow_id = String::new();
    for i in 0..4 {
        let delay = if i == 0 { 100 } else { 1 };
        let m = mock_with(MockConfig {
            name: format!("w{i}"),
            tokens: 4,
            token_delay: Duration::from_millis(delay),
            ..MockConfig::default()
        })
        .await;
        let id = router.add(&m.url(), MODEL).await.id;
        if i == 0 {
            slow_id = id;
        }
        mocks.push(m);
    }
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let mut served = Vec::new();
            for _ in 0..15 {
                served.push(router.generate(request(MODEL, "x")).await.unwrap().worker);
            }
            served
        }));
    }
    let mut slow_calls = 0;
    let mut total = 0;
    for t in tasks {
        for w in t.await.unwrap() {
            total += 1;
            slow_calls += usize::from(w == slow_id);
        }
    }
    // A fair share would be 60 of 240.
    assert!(
        slow_calls < 30,
        "slow worker served {slow_calls} of {total}"
    );
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_and_moves_about_a_fifth_on_growth() {
    let router = start_router_with(config(PolicyKind::ConsistentHash)).await;
    let (_mocks, _ids) = fleet(&router, 4).await;
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut before = HashMap::new();
    for k in &keys {
        before.insert(k.clone(), keyed(&router, k).await);
    }
    for k in &keys[..20] {
        assert_eq!(
            keyed(&router, k).await,
            before[k],
            "a key stays on its worker"
        );
    }
    let fifth = mock("w4").await;
    let fifth_id = router.add(&fifth.url(), MODEL).await.id;
    let mut moved = 0;
    for k in &keys {
        let now = keyed(&router, k).await;
        if now != before[k] {
            moved += 1;
            assert_eq!(now, fifth_id, "keys move only to the new worker");
        }
    }
    assert!(
        (16..=70).contains(&moved),
        "{moved} of 200 keys moved; expected about 40"
    );
    // Without a key: the fallback (round robin) spreads requests.
    let mut spread: HashMap<String, u32> = HashMap::new();
    for _ in 0..10 {
        *spread
            .entry(router.generate(request(MODEL, "x")).await.unwrap().worker)
            .or_default() += 1;
    }
    assert_eq!(spread.len(), 5, "{spread:?}");
}

//! Health: the router's grpc.health.v1 statuses, worker health checks with
//! thresholds, and routing that follows them.

use std::time::Duration;

use crate::common::*;
use switchyard::config::StartupWorker;
use switchyard::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const SERVING: i32 = ServingStatus::Serving as i32;
const NOT_SERVING: i32 = ServingStatus::NotServing as i32;
const INFERENCE: &str = "switchyard.v1.Inference";

async fn health_of_worker(router: &Router, id: &str) -> i32 {
    router
        .list()
        .await
        .into_iter()
        .find(|w| w.id == id)
        .unwrap()
        .health
}

#[tokio::test]
async fn router_statuses_follow_the_registry() {
    let router = start_router().await;
    assert_eq!(router.health_of("").await, SERVING);
    assert_eq!(
        router.health_of("switchyard.v1.WorkerManagement").await,
        SERVING
    );
    assert_eq!(router.health_of(INFERENCE).await, NOT_SERVING);
    let err = router
        .health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let w = mock("a").await;
    let info = router.add(&w.url(), MODEL).await;
    eventually(Duration::from_secs(5), "Inference SERVING", || async {
        router.health_of(INFERENCE).await == SERVING
    })
    .await;
    router.remove(&info.id).await;
    eventually(Duration::from_secs(5), "Inference NOT_SERVING", || async {
        router.health_of(INFERENCE).await == NOT_SERVING
    })
    .await;
}

#[tokio::test]
async fn startup_workers_are_routable_before_serving_is_reported() {
    let w = mock("boot").await;
    let mut config = test_config();
    config.workers.push(StartupWorker {
        url: w.url(),
        model_id: MODEL.into(),
        engine: None,
        role: Default::default(),
        bootstrap_port: None,
        labels: Default::default(),
    });
    let router = start_router_with(config).await;
    // The very first check already says SERVING, and a call goes through.
    assert_eq!(router.health_of(INFERENCE).await, SERVING);
    let out = router.generate(request(MODEL, "x")).await.unwrap();
    assert!(out.text().starts_with("boot:0"));
}

#[tokio::test]
async fn unhealthy_workers_are_skipped_and_chosen_again_after_recovery() {
    let router = start_router().await;
    let a = mock("a").await;
    let b = mock("b").await;
    let a_info = router.add(&a.url(), MODEL).await;
    let b_info = router.add(&b.url(), MODEL).await;
    let mut watch = router
        .management()
        .watch_workers(pb::WatchWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut inference_watch = router
        .health()
        .watch(tonic_health::pb::HealthCheckRequest {
            service: INFERENCE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inference_watch.message().await.unwrap().unwrap().status,
        SERVING
    );

    a.set_healthy(false).await;
    eventually(Duration::from_secs(5), "a marked unhealthy", || async {
        health_of_worker(&router, &a_info.id).await == pb::HealthStatus::Unhealthy as i32
    })
    .await;
    let a_calls = a.stats().calls();
    for _ in 0..6 {
        let out = router.generate(request(MODEL, "x")).await.unwrap();
        assert_eq!(out.worker, b_info.id);
    }
    assert_eq!(a.stats().calls(), a_calls);
    assert_eq!(router.health_of(INFERENCE).await, SERVING);

    // With every worker unhealthy the model cannot be served.
    b.set_healthy(false).await;
    let next = tokio::time::timeout(Duration::from_secs(5), inference_watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status, NOT_SERVING);
    let err = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no healthy workers"),
        "{}",
        err.message()
    );

    // Recovery: chosen again, and SERVING again.
    a.set_healthy(true).await;
    let next = tokio::time::timeout(Duration::from_secs(5), inference_watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status, SERVING);
    let out = router.generate(request(MODEL, "x")).await.unwrap();
    assert_eq!(out.worker, a_info.id);

    // The health changes were registry events, in order.
    let mut changes = Vec::new();
    while changes.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.kind == pb::worker_event::Kind::HealthChanged as i32 {
            let w = e.worker.unwrap();
            changes.push((w.id, w.health));
        }
    }
    let unhealthy = pb::HealthStatus::Unhealthy as i32;
    let healthy = pb::HealthStatus::Healthy as i32;
    assert_eq!(
        changes,
        vec![
            (a_info.id.clone(), unhealthy),
            (b_info.id.clone(), unhealthy),
            (a_info.id.clone(), healthy)
        ]
    );
}

#[tokio::test]
async fn a_dead_worker_is_marked_unhealthy_by_failed_checks() {
    let router = start_router().await;
    let alive = mock("alive").await;
    let doomed = mock("doomed").await;
    router.add(&alive.url(), MODEL).await;
    let doomed_info = router.add(&doomed.url(), MODEL).await;
    doomed.stop().await;
    eventually(Duration::from_secs(5), "dead worker unhealthy", || async {
        health_of_worker(&router, &doomed_info.id).await == pb::HealthStatus::Unhealthy as i32
    })
    .await;
    for _ in 0..4 {
        assert!(router.generate(request(MODEL, "x")).await.is_ok());
    }
}

#[tokio::test]
async fn a_worker_that_never_answers_is_marked_unhealthy_by_check_timeouts() {
    let router = start_router().await;
    // Every check must time out.
    let (url, held) = silent_worker().await;
    let info = router.add(&url, MODEL).await;
    eventually(
        Duration::from_secs(5),
        "silent worker unhealthy",
        || async {
            health_of_worker(&router, &info.id).await == pb::HealthStatus::Unhealthy as i32
        },
    )
    .await;
    // With its only worker unhealthy, the model is refused at once.
    let status = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    held.abort();
}

/// The default: a worker registered without being contacted (engine and
/// model given) is listed UNCHECKED, is no candidate, and is checked at
/// once (not at the next round, a minute away here): a dead one turns
/// UNHEALTHY, a live one HEALTHY and routable.
#[tokio::test]
async fn a_worker_added_without_contact_waits_for_its_first_check() {
    let mut config = test_config();
    config.health_check.trust_unchecked = false;
    config.health_check.interval_ms = 60_000;
    config.health_check.timeout_ms = 2_000;
    let router = start_router_with(config).await;
    let (dead_url, _held) = dark_host().await;
    let dead = router.add(&dead_url, "dead-model").await;
    assert_eq!(dead.health, pb::HealthStatus::Unchecked as i32, "{dead:?}");
    // No candidate while unchecked: the call is refused, saying why.
    let err = router
        .generate(request("dead-model", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("not checked yet")
            || err.message().contains("failing health checks"),
        "{err:?}"
    );

    let live = mock("live").await;
    let info = router.add(&live.url(), MODEL).await;
    assert_eq!(info.health, pb::HealthStatus::Unchecked as i32, "{info:?}");
    eventually(
        Duration::from_secs(5),
        "the live worker's first check passes",
        || async { health_of_worker(&router, &info.id).await == pb::HealthStatus::Healthy as i32 },
    )
    .await;
    let out = router.generate(request(MODEL, "x")).await.unwrap();
    assert!(out.text().starts_with("live:0"));
    // The dark host never answers: its first check times out, unhealthy.
    eventually(
        Duration::from_secs(10),
        "the dark worker's first check fails",
        || async {
            health_of_worker(&router, &dead.id).await == pb::HealthStatus::Unhealthy as i32
        },
    )
    .await;
}

/// `--worker` with engine and model given (not contacted): the router
/// reports SERVING once the first check has passed, and the call goes to
/// the worker.
#[tokio::test]
async fn uncontacted_startup_workers_serve_once_checked() {
    let w = mock("boot").await;
    let mut config = test_config();
    config.health_check.trust_unchecked = false;
    config.health_check.interval_ms = 60_000;
    config.workers.push(StartupWorker {
        url: w.url(),
        model_id: MODEL.into(),
        engine: Some("switchyard".into()),
        role: Default::default(),
        bootstrap_port: None,
        labels: Default::default(),
    });
    let router = start_router_with(config).await;
    eventually(
        Duration::from_secs(5),
        "SERVING after the first check",
        || async { router.health_of(INFERENCE).await == SERVING },
    )
    .await;
    assert_eq!(
        router.list().await[0].health,
        pb::HealthStatus::Healthy as i32
    );
    let out = router.generate(request(MODEL, "x")).await.unwrap();
    assert!(out.text().starts_with("boot:0"));
}

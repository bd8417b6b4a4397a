//! Overload: the router's limit on calls in flight (both listeners), its
//! queue, and the per-worker limit; refusals are RESOURCE_EXHAUSTED / 429
//! with a retry-after, and no permit outlives its call.

use std::time::Duration;

use crate::common::*;
use switchyard::Config;
use tonic::Code;

fn limited(max_in_flight: usize, queue_size: usize) -> Config {
    let mut config = test_config();
    config.limits.max_in_flight = max_in_flight;
    config.limits.queue_size = queue_size;
    config.limits.queue_timeout_ms = 200;
    config
}

/// Starts `n` calls to the (hung) worker and waits until it has them.
async fn hold(
    router: &Router,
    worker: &switchyard::mock::MockWorker,
    n: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let before = worker.stats().calls();
    let calls = (0..n)
        .map(|_| {
            let mut client = router.inference();
            tokio::spawn(async move {
                let _ = client.generate(request(MODEL, "hold")).await;
            })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "the held calls reach the worker",
        || async { worker.stats().calls() == before + n },
    )
    .await;
    calls
}

#[tokio::test]
async fn no_permit_outlives_its_call_after_10000_cancelled_calls() {
    // The worker's circuit breaker off: this is about the router's permits.
    // An occasional failure here (one call on the worker, three refused for
    // 30 s, on a busy machine) matches the breaker rather than a leak: had
    // the storm opened the circuit (the worker's HTTP/2 server ends a
    // connection on which too many streams were reset before it accepted
    // them, failing the calls on it), its half-open probe would hang on
    // this worker, which never answers, and every other call would be
    // refused as UNAVAILABLE. Not reproduced with the circuit's state
    // logged (closed after the storm in every run); a failure now names the
    // last refusal's status, which tells the two apart.
    let mut config = limited(4, 0);
    config.breaker.enabled = false;
    let router = start_router_with(config).await;
    let worker = hung_mock().await;
    router.add(&worker.url(), MODEL).await;

    // 10,000 calls, cancelled at every stage: before the router read them,
    // while routing, while the worker holds them; many are refused.
    let mut refused = 0;
    for batch in 0..2_500 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let mut client = router.inference();
                tokio::spawn(async move { client.generate(request(MODEL, "x")).await })
            })
            .collect();
        if batch % 2 == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        for call in calls {
            if call.is_finished() {
                if let Ok(Err(status)) = call.await {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    refused += 1;
                }
            } else {
                call.abort();
            }
        }
    }
    eprintln!("{refused} of 10000 refused while earlier ones were still being released");

    // Every permit is back: four calls are admitted at once...
    let held = eventually_admitted(&router, &worker, 4).await;
    // ...and the fifth is refused at once, with a retry-after.
    let status = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limits.max_in_flight"),
        "{status:?}"
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    for call in held {
        call.abort();
    }
}

/// Waits until every cancelled call has let go of the worker (its load,
/// counted by the router, is back to 0), then holds `n` calls at once until
/// all are admitted. The worker's own count of arrivals cannot say this:
/// calls of the cancelled storm the router had already sent keep arriving
/// for a while on a busy machine, and a cancelled call's permit can outlive
/// its hold on the worker by a moment. So a call refused
/// (`RESOURCE_EXHAUSTED`) is sent again; a permit that leaked never comes
/// back, and the `n` calls are then never all admitted, which fails the
/// test.
async fn eventually_admitted(
    router: &Router,
    worker: &switchyard::mock::MockWorker,
    n: u64,
) -> Vec<tokio::task::JoinHandle<Option<tonic::Status>>> {
    let url = worker.url();
    let in_flight = || async {
        let listed = router.list().await;
        listed
            .iter()
            .find(|w| w.spec.as_ref().is_some_and(|s| s.url == url))
            .map_or(0, |w| w.in_flight)
    };
    eventually(
        Duration::from_secs(30),
        "every cancelled call lets go of the worker",
        || async { in_flight().await == 0 },
    )
    .await;
    // A connection of their own: the storm's 10,000 reset streams on the
    // shared one are the client's business, not the router's permits.
    let fresh = tonic::transport::Channel::from_shared(format!("http://{}", router.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let send = || {
        let mut client = switchyard::pb::inference_client::InferenceClient::new(fresh.clone());
        tokio::spawn(async move { client.generate(request(MODEL, "hold")).await.err() })
    };
    let mut calls: Vec<_> = (0..n).map(|_| send()).collect();
    let mut refusals = 0;
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // The worker hangs: a call that ended was refused.
        let admitted = in_flight().await;
        if admitted == n as u32 && calls.iter().all(|c| !c.is_finished()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} calls are not all admitted within 30 s: {admitted} on the worker, {refusals} refused \
             and sent again, {} still pending (refusals that never stop: a leaked permit; \
             calls pending and never refused: a stall before the router's limit); the last refusal: {last:?}",
            calls.iter().filter(|c| !c.is_finished()).count()
        );
        for call in calls.iter_mut().filter(|c| c.is_finished()) {
            refusals += 1;
            last = std::mem::replace(call, send()).await.ok().flatten();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    calls
}

#[tokio::test]
async fn the_queue_waits_for_a_permit_and_http_shares_the_limit() {
    let router = start_router_with(limited(1, 1)).await;
    let worker = hung_mock().await;
    router.add(&worker.url(), MODEL).await;
    let held = hold(&router, &worker, 1).await;

    // One call may wait; it gets the permit the held call returns.
    let mut client = router.inference();
    let waiting = tokio::spawn(async move { client.generate(request(MODEL, "next")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // With the queue full, a third is refused at once.
    let status = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("waiting"), "{status:?}");
    // The HTTP listener shares the limit: 429 with Retry-After.
    let response = reqwest::Client::new()
        .post(router.http_url("/generate"))
        .json(&serde_json::json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    held[0].abort();
    eventually(
        Duration::from_secs(5),
        "the waiting call reaches the worker",
        || async { worker.stats().calls() == 2 },
    )
    .await;
    // The call that waited now holds the permit (its worker hangs): a new
    // call waits queue_timeout_ms (200 ms) and is refused.
    let status = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("no call finished within"),
        "{status:?}"
    );
    waiting.abort();
}

#[tokio::test]
async fn a_worker_at_its_limit_is_passed_over_then_refused() {
    let mut config = test_config();
    config.limits.max_in_flight_per_worker = 2;
    let router = start_router_with(config).await;
    let worker = hung_mock().await;
    let worker_id = router.add(&worker.url(), MODEL).await.id;
    let held = hold(&router, &worker, 2).await;
    let status = router.generate(request(MODEL, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_in_flight_per_worker"),
        "{status:?}"
    );
    assert_eq!(
        worker.stats().calls(),
        2,
        "the refused call reached the worker"
    );
    // It was refused after waiting for the worker as long as a call waits
    // in the queue (limits.queue_timeout_ms, 1 s): a call that finds the
    // worker busy waits its turn, and goes when a call of the worker's
    // ends.
    let mut held = held;
    let waiting = {
        let mut client = router.inference();
        tokio::spawn(async move {
            let _ = client.generate(request(MODEL, "waits")).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(worker.stats().calls(), 2, "it went past the limit");
    held.pop().unwrap().abort();
    eventually(
        Duration::from_secs(5),
        "the waiting call reaches the worker",
        || async { worker.stats().calls() == 3 },
    )
    .await;
    // It holds the worker's freed place: the worker is at its limit again.
    held.push(waiting);

    // A second worker takes the calls the first cannot.
    let other = mock("other").await;
    router.add(&other.url(), MODEL).await;
    for _ in 0..4 {
        let out = router.generate(request(MODEL, "x")).await.unwrap();
        assert_ne!(out.worker, worker_id);
    }
    for call in held {
        call.abort();
    }
}

#[tokio::test]
async fn ten_times_the_limit_is_refused_without_reaching_the_worker_and_permits_return() {
    // A limit of 10 with no queue, held by 10 calls to a hung worker; then
    // 100 more at once. Each of the 100 is refused while the 10 still hold
    // their permits (so at once, not after any wait), none reaches the
    // worker, and once the 10 go, 10 are admitted again.
    let router = start_router_with(limited(10, 0)).await;
    let worker = hung_mock().await;
    router.add(&worker.url(), MODEL).await;
    let held = hold(&router, &worker, 10).await;

    let excess: Vec<_> = (0..100)
        .map(|_| {
            let mut client = router.inference();
            tokio::spawn(async move { client.generate(request(MODEL, "more")).await })
        })
        .collect();
    for call in excess {
        let status = within(
            Duration::from_secs(30),
            "a call past the limit is answered",
            call,
        )
        .await
        .unwrap()
        .expect_err("past the limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    }
    assert_eq!(
        worker.stats().calls(),
        10,
        "no refused call reached the worker"
    );
    let listed = router.list().await;
    assert_eq!(listed[0].in_flight, 10, "the refused calls hold nothing");

    for call in held {
        call.abort();
    }
    let again = eventually_admitted(&router, &worker, 10).await;
    for call in again {
        call.abort();
    }
}

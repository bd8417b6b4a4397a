//! Failure isolation: a worker that fails its calls is passed over by its
//! circuit breaker (fed by real calls, not health checks), comes back
//! through one probe, and calls that reach no worker are offered to
//! another within the retry budget.

use std::time::Duration;

use crate::common::*;
use switchyard::mock::{MockConfig, MockWorker};
use switchyard::pb;
use switchyard::policies::PolicyKind;
use switchyard::worker::CircuitConfig;
use switchyard::Config;
use tokio_stream::StreamExt;

/// Round robin, so that every worker is offered calls in turn, and health
/// checks that do not run during the test: only the circuit can take a
/// worker out.
fn config(breaker: CircuitConfig) -> Config {
    let mut config = test_config();
    config.health_check.interval_ms = 60_000;
    config.policy.name = PolicyKind::RoundRobin;
    config.breaker = breaker;
    config
}

async fn circuit_of(router: &Router, id: &str) -> pb::CircuitState {
    let info = router
        .management()
        .get_worker(pb::GetWorkerRequest {
            target: Some(pb::get_worker_request::Target::Id(id.into())),
        })
        .await
        .unwrap()
        .into_inner();
    info.circuit()
}

/// A grpc:// URL where nothing listens: connecting is refused at once.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("grpc://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn a_worker_failing_half_its_calls_is_ejected_and_returns_through_a_probe() {
    // Ejections longer than the 200 calls take even on a loaded machine:
    // with short ones, a slow run let the worker back in (a probe each
    // time the ejection ran out) often enough to fail more calls.
    let router = start_router_with(config(CircuitConfig {
        base_ejection_ms: 2_000,
        max_ejection_ms: 2_000,
        ..CircuitConfig::default()
    }))
    .await;
    let good = mock("good").await;
    let flaky = mock_with(MockConfig {
        name: "flaky".into(),
        tokens: 4,
        fail_rate: 0.5,
        ..MockConfig::default()
    })
    .await;
    router.add(&good.url(), MODEL).await;
    let flaky_id = router.add(&flaky.url(), MODEL).await.id;
    let mut events = router
        .management()
        .watch_workers(pb::WatchWorkersRequest {})
        .await
        .unwrap()
        .into_inner();

    // 200 calls in a row. Without the circuit, round robin sends the flaky
    // worker 100 of them and 50 fail (a quarter of all calls).
    let mut failed = 0;
    for _ in 0..200 {
        if router.generate(request(MODEL, "hello")).await.is_err() {
            failed += 1;
        }
    }
    assert!(
        failed <= 20,
        "{failed} of 200 calls failed: the failing worker kept getting calls"
    );
    assert!(
        flaky.stats().calls() < 60,
        "the failing worker got {} of 200 calls",
        flaky.stats().calls()
    );

    // Watchers heard the circuit open.
    let opened = within(Duration::from_secs(5), "a circuit event", async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if event.kind() == pb::worker_event::Kind::CircuitChanged {
                return event;
            }
        }
    })
    .await;
    let worker = opened.worker.unwrap();
    assert_eq!(worker.id, flaky_id);
    assert_eq!(worker.circuit(), pb::CircuitState::Open);

    // The worker recovers: once its backoff passes, a probe call succeeds,
    // the circuit closes, and it takes its turn again.
    flaky.update(|c| c.fail_rate = 0.0);
    eventually(Duration::from_secs(10), "the circuit closes", || async {
        let _ = router.generate(request(MODEL, "hello")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        circuit_of(&router, &flaky_id).await == pb::CircuitState::Closed
    })
    .await;
    let before = flaky.stats().calls();
    for _ in 0..20 {
        router.generate(request(MODEL, "hello")).await.unwrap();
    }
    let taken = flaky.stats().calls() - before;
    assert!(
        (9..=11).contains(&taken),
        "the recovered worker took {taken} of 20 calls under round robin"
    );
}

#[tokio::test]
async fn watchers_hear_the_circuit_turn_half_open_when_its_ejection_ends_without_any_call() {
    let router = start_router_with(config(CircuitConfig {
        consecutive_failures: 1,
        base_ejection_ms: 300,
        max_ejection_ms: 300,
        ..CircuitConfig::default()
    }))
    .await;
    let bad = mock_with(MockConfig {
        name: "bad".into(),
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let id = router.add(&bad.url(), MODEL).await.id;
    let mut events = router
        .management()
        .watch_workers(pb::WatchWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(router.generate(request(MODEL, "x")).await.is_err());
    let mut heard = Vec::new();
    within(Duration::from_secs(5), "open, then half-open", async {
        while heard.len() < 2 {
            let event = events.next().await.unwrap().unwrap();
            if event.kind() == pb::worker_event::Kind::CircuitChanged {
                heard.push(event.worker.unwrap().circuit());
            }
        }
    })
    .await;
    assert_eq!(
        heard,
        vec![pb::CircuitState::Open, pb::CircuitState::HalfOpen]
    );
    // The listing agrees, and no call was made meanwhile.
    assert_eq!(circuit_of(&router, &id).await, pb::CircuitState::HalfOpen);
    assert_eq!(bad.stats().calls(), 1);
}

/// A router (round robin, one failure opens a circuit for 200 ms) with a
/// good worker and a failing one, whose circuit one failed call has
/// opened: the router, both workers and the failing one's id.
async fn one_failure_opens() -> (Router, MockWorker, MockWorker, String) {
    let router = start_router_with(config(CircuitConfig {
        consecutive_failures: 1,
        base_ejection_ms: 200,
        max_ejection_ms: 200,
        ..CircuitConfig::default()
    }))
    .await;
    let good = mock("good").await;
    let bad = mock_with(MockConfig {
        name: "bad".into(),
        tokens: 4,
        fail_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    router.add(&good.url(), MODEL).await;
    let bad_id = router.add(&bad.url(), MODEL).await.id;
    for _ in 0..2 {
        let _ = router.generate(request(MODEL, "x")).await;
    }
    assert_eq!(bad.stats().calls(), 1);
    assert_eq!(circuit_of(&router, &bad_id).await, pb::CircuitState::Open);
    (router, good, bad, bad_id)
}

#[tokio::test]
async fn a_half_open_worker_gets_exactly_one_probe_and_a_cancelled_probe_frees_the_turn() {
    let (router, _good, bad, bad_id) = one_failure_opens().await;

    // Now it hangs: the probe will not finish while the others run.
    bad.update(|c| {
        c.fail_rate = 0.0;
        c.hang = true;
    });
    eventually(Duration::from_secs(5), "the ejection runs out", || async {
        circuit_of(&router, &bad_id).await == pb::CircuitState::HalfOpen
    })
    .await;
    // Calls until one is chosen for the worker (round robin may offer the
    // next one to the good worker, which answers it): that one is the probe.
    let mut probe = None;
    for _ in 0..4 {
        let mut client = router.inference();
        let call = request(MODEL, "probe");
        let spawned = tokio::spawn(async move { client.generate(call).await });
        eventually(
            Duration::from_secs(5),
            "the call is answered or reaches the hanging worker",
            || async { bad.stats().calls() == 2 || spawned.is_finished() },
        )
        .await;
        probe = Some(spawned);
        if bad.stats().calls() == 2 {
            break;
        }
    }
    let probe = probe.unwrap();
    assert_eq!(bad.stats().calls(), 2, "the probe reached the worker");
    assert_eq!(
        circuit_of(&router, &bad_id).await,
        pb::CircuitState::HalfOpen
    );
    for _ in 0..10 {
        router.generate(request(MODEL, "x")).await.unwrap();
    }
    assert_eq!(bad.stats().calls(), 2, "one probe at a time");

    // The probe's client goes away: that says nothing about the worker, so
    // the circuit stays half-open (not open again) and the next call probes.
    probe.abort();
    let _ = probe.await;
    eventually(
        Duration::from_secs(5),
        "the worker is told to abort",
        || async { bad.stats().aborts() == 1 },
    )
    .await;
    assert_eq!(
        circuit_of(&router, &bad_id).await,
        pb::CircuitState::HalfOpen
    );
    bad.update(|c| c.hang = false);
    eventually(Duration::from_secs(5), "a second probe", || async {
        let _ = router.generate(request(MODEL, "x")).await;
        bad.stats().calls() >= 3
    })
    .await;
    eventually(Duration::from_secs(5), "the circuit closes", || async {
        circuit_of(&router, &bad_id).await == pb::CircuitState::Closed
    })
    .await;
}

/// A probe proves the worker at its first chunk: a recovered worker whose
/// probe streams a long generation is back in rotation at once, not when
/// that stream ends.
#[tokio::test]
async fn a_probe_closes_the_circuit_at_its_first_chunk_not_at_its_end() {
    let (router, _good, bad, bad_id) = one_failure_opens().await;

    // It recovers, and streams slowly: 40 tokens 100 ms apart (4 s).
    bad.update(|c| {
        c.fail_rate = 0.0;
        c.tokens = 40;
        c.token_delay = Duration::from_millis(100);
    });
    eventually(Duration::from_secs(5), "the ejection runs out", || async {
        circuit_of(&router, &bad_id).await == pb::CircuitState::HalfOpen
    })
    .await;
    let mut probe = None;
    for _ in 0..4 {
        let mut stream = router
            .inference()
            .generate(request(MODEL, "probe"))
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        if bad.stats().calls() == 2 {
            probe = Some(stream);
            break;
        }
    }
    let mut probe = probe.expect("a call reached the recovered worker");
    assert_eq!(bad.stats().calls(), 2, "the probe reached the worker");
    // Its first chunk closed the circuit while it still streams, and the
    // next calls are shared with the worker again.
    assert_eq!(circuit_of(&router, &bad_id).await, pb::CircuitState::Closed);
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut client = router.inference();
        others.push(tokio::spawn(async move {
            client.generate(request(MODEL, "x")).await.map(|_| ())
        }));
    }
    eventually(
        Duration::from_secs(2),
        "calls reach the worker beside its probe",
        || async { bad.stats().calls() >= 3 },
    )
    .await;
    assert!(
        probe.next().await.is_some_and(|m| m.is_ok()),
        "the probe is still streaming"
    );
    for other in others {
        other.abort();
    }
}

#[tokio::test]
async fn three_dead_workers_and_one_live_fail_no_call() {
    // Ejections that outlast the test: the circuits are checked open after
    // 200 calls, however long a busy machine takes for them.
    let router = start_router_with(config(CircuitConfig {
        base_ejection_ms: 600_000,
        max_ejection_ms: 600_000,
        ..CircuitConfig::default()
    }))
    .await;
    let live = mock("live").await;
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(router.add(&dead_url().await, MODEL).await.id);
    }
    router.add(&live.url(), MODEL).await;
    for i in 0..200 {
        router
            .generate(request(MODEL, "x"))
            .await
            .unwrap_or_else(|status| panic!("call {i} failed: {status:?}"));
    }
    assert_eq!(live.stats().calls(), 200);
    for id in &dead {
        assert_eq!(circuit_of(&router, id).await, pb::CircuitState::Open);
    }
}

// Paused time: the clock moves only when every task waits, so the time the
// calls took is exact.
#[tokio::test(start_paused = true)]
async fn calls_stop_waiting_on_a_dark_worker_once_its_circuit_opens() {
    let mut config = config(CircuitConfig {
        base_ejection_ms: 600_000,
        max_ejection_ms: 600_000,
        ..CircuitConfig::default()
    });
    config.upstream.connect_timeout_ms = 500;
    let router = start_router_with(config).await;
    let (dark_url, _dark) = dark_host().await;
    let live = mock("live").await;
    let dark = router.add(&dark_url, MODEL).await.id;
    router.add(&live.url(), MODEL).await;

    let started = tokio::time::Instant::now();
    for _ in 0..40 {
        router.generate(request(MODEL, "x")).await.unwrap();
    }
    let waited = started.elapsed();
    // Five connect timeouts open the circuit; before, every other call
    // waited for one (10 s).
    assert!(
        waited < Duration::from_millis(3_000),
        "40 calls took {waited:?}: calls kept waiting on the dark worker"
    );
    assert_eq!(circuit_of(&router, &dark).await, pb::CircuitState::Open);
    assert_eq!(live.stats().calls(), 40);
}

// Paused time: the clock jumps to each timer, so seconds of worker pauses
// take none.
#[tokio::test(start_paused = true)]
async fn a_stream_whose_worker_goes_silent_fails_and_the_worker_is_told_to_abort() {
    let mut config = config(CircuitConfig::default());
    config.limits.stream_idle_ms = 1_000;
    let router = start_router_with(config).await;
    // A token every 10 s: after the first, the stream is silent too long.
    let slow = mock_with(MockConfig {
        name: "slow".into(),
        tokens: 3,
        token_delay: Duration::from_secs(10),
        ..MockConfig::default()
    })
    .await;
    router.add(&slow.url(), MODEL).await;
    let mut stream = router
        .inference()
        .generate(request(MODEL, "x"))
        .await
        .unwrap()
        .into_inner();
    let (messages, status) = messages_until_error(&mut stream).await;
    assert_eq!(messages, 1);
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("sent nothing for"), "{status:?}");
    eventually(
        Duration::from_secs(5),
        "the worker is told to abort",
        || async { slow.stats().aborts() == 1 },
    )
    .await;

    // A worker that pauses less than the interval between tokens is never
    // cut, however long the whole stream takes.
    slow.update(|c| {
        c.tokens = 10;
        c.token_delay = Duration::from_millis(600);
    });
    let out = router.generate(request(MODEL, "x")).await.unwrap();
    assert_eq!(out.text().matches("slow:").count(), 10);
}

/// A `mock-worker` process (killable like a real one): the process and its
/// URL.
async fn worker_process(name: &str) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-worker"))
        .args(["--listen", "127.0.0.1:0", "--name", name])
        .args(["--tokens", "40", "--token-delay-ms", "25"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let url = line.rsplit(' ').next().unwrap().to_string();
    (child, url)
}

#[tokio::test]
async fn a_worker_killed_mid_stream_fails_only_its_streams_and_gets_no_new_calls() {
    let router = start_router_with(config(CircuitConfig {
        base_ejection_ms: 30_000,
        max_ejection_ms: 30_000,
        ..CircuitConfig::default()
    }))
    .await;
    let (mut doomed, doomed_url) = worker_process("doomed").await;
    let (_survivor, survivor_url) = worker_process("survivor").await;
    let doomed_id = router.add(&doomed_url, MODEL).await.id;
    router.add(&survivor_url, MODEL).await;

    // 16 streams of 40 tokens, a token every 25 ms: half on each worker.
    let streams: Vec<_> = (0..16)
        .map(|_| {
            let mut client = router.inference();
            tokio::spawn(async move {
                let response = client.generate(request(MODEL, "x")).await?;
                let worker = response
                    .metadata()
                    .get("x-switchyard-worker-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                let mut stream = response.into_inner();
                let mut tokens = 0;
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => tokens += 1,
                        Ok(None) => return Ok((worker, tokens, None)),
                        Err(status) => return Ok((worker, tokens, Some(status))),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.kill().await.unwrap();

    let mut cut = 0;
    for stream in streams {
        let outcome: Result<_, tonic::Status> = stream.await.unwrap();
        let (worker, tokens, error) = outcome.unwrap();
        if worker == doomed_id {
            let status = error.expect("a stream on the killed worker ends in an error");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(tokens < 41, "{tokens}");
            cut += 1;
        } else {
            assert!(
                error.is_none(),
                "a stream on the other worker failed: {error:?}"
            );
            assert_eq!(tokens, 41, "40 tokens and the completion");
        }
    }
    assert_eq!(cut, 8);

    // New calls: none fails (the dead worker refuses connections, so a
    // call offered to it goes to the other), and its circuit opens.
    let mut short = request(MODEL, "x");
    short.sampling_params = Some(pb::SamplingParams {
        max_new_tokens: 1,
        ..Default::default()
    });
    for i in 0..30 {
        router
            .generate(short.clone())
            .await
            .unwrap_or_else(|status| panic!("call {i} after the kill failed: {status:?}"));
    }
    assert_eq!(
        circuit_of(&router, &doomed_id).await,
        pb::CircuitState::Open
    );
}

#[tokio::test]
async fn a_hung_worker_is_ejected_by_its_calls_deadlines() {
    let router = start_router_with(config(CircuitConfig {
        consecutive_failures: 2,
        base_ejection_ms: 60_000,
        max_ejection_ms: 60_000,
        ..CircuitConfig::default()
    }))
    .await;
    let hung = hung_mock().await;
    let good = mock("good").await;
    let hung_id = router.add(&hung.url(), MODEL).await.id;
    router.add(&good.url(), MODEL).await;

    // Calls with a 200 ms deadline: those given to the hung worker time out
    // before it answers, and two of them in a row open its circuit.
    let mut timed_out = 0;
    for _ in 0..20 {
        let mut call = tonic::Request::new(request(MODEL, "x"));
        call.set_timeout(Duration::from_millis(200));
        match router.inference().generate(call).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                while stream.message().await.unwrap().is_some() {}
            }
            Err(status) => {
                // tonic enforces the deadline itself too, and may give up a
                // moment before the router's copy of it fires: then the
                // router sees a cancel at the deadline.
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ),
                    "{status:?}"
                );
                timed_out += 1;
            }
        }
    }
    assert_eq!(
        timed_out, 2,
        "after two timeouts the hung worker got no more calls"
    );
    assert_eq!(hung.stats().calls(), 2);
    assert_eq!(circuit_of(&router, &hung_id).await, pb::CircuitState::Open);
}

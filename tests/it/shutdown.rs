//! Stopping on a signal: NOT_SERVING first while still answering, then no
//! new connections, then a bounded drain, then open calls cancelled (their
//! workers sent `Abort`), whatever is still open; a second signal exits at
//! once.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use switchyard::config::ShutdownConfig;
use switchyard::pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::HealthCheckRequest;

async fn connect(router: &Router) -> Channel {
    Channel::from_shared(format!("http://{}", router.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_turns_not_serving_while_the_listener_still_answers() {
    let mut router = start_router_with(switchyard::Config {
        shutdown: ShutdownConfig {
            grace_ms: 60_000,
            drain_ms: 1_000,
        },
        ..test_config()
    })
    .await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    assert_eq!(router.health_of("").await, ServingStatus::Serving as i32);

    router.begin_shutdown();
    // A poller on a new connection is still answered, and hears NOT_SERVING.
    eventually(Duration::from_secs(5), "NOT_SERVING reported", || async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(connect(&router).await);
        let status = health
            .check(HealthCheckRequest {
                service: "switchyard.v1.Inference".into(),
            })
            .await
            .expect("the listener still answers during the grace")
            .into_inner()
            .status;
        status == ServingStatus::NotServing as i32
    })
    .await;
    // Calls still go through during the grace.
    assert!(router.generate(request(MODEL, "x")).await.is_ok());
}

#[tokio::test]
async fn shutdown_finishes_whatever_streams_are_open_and_aborts_hung_calls() {
    let mut router = start_router_with(switchyard::Config {
        shutdown: ShutdownConfig {
            grace_ms: 0,
            drain_ms: 300,
        },
        ..test_config()
    })
    .await;
    let hung = hung_mock().await;
    router.add(&hung.url(), MODEL).await;

    // Streams that never end by themselves: a health Watch, WatchWorkers,
    // and a call without a deadline to a worker that never answers.
    let mut health = router.health();
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    let mut workers = router
        .management()
        .watch_workers(pb::WatchWorkersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut client = router.inference();
    let hung_call = tokio::spawn(async move { client.generate(request(MODEL, "x")).await });
    eventually(
        Duration::from_secs(5),
        "the hung call reached the worker",
        || async { hung.stats().calls() == 1 },
    )
    .await;

    router.begin_shutdown();
    within(
        Duration::from_secs(30),
        "the router stops",
        router.stopped(),
    )
    .await;

    // The hung call was cancelled and its worker told to abort before
    // `serve` returned.
    assert_eq!(hung.stats().aborts(), 1);
    assert!(hung_call.await.unwrap().is_err());
    // The long-lived streams were ended, not left hanging.
    while let Ok(Some(_)) = watch.message().await {}
    while let Ok(Some(_)) = workers.message().await {}
    assert!(tokio::net::TcpStream::connect(router.addr).await.is_err());
}

#[tokio::test]
async fn an_unfinished_request_body_does_not_hold_up_shutdown() {
    let mut config = test_config();
    config.shutdown.drain_ms = 300;
    let mut router = start_router_with(config).await;
    let (mut send, response) = open_raw_call(router.addr).await;
    // Half a message, then nothing.
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 10, 1, 2]), false)
        .unwrap();
    router.begin_shutdown();
    within(
        Duration::from_secs(30),
        "the router stops",
        router.stopped(),
    )
    .await;
    // The call was cut off (reset or refused), not answered normally.
    match response.await {
        Err(_) => {}
        Ok(r) => assert_ne!(grpc_status(r.headers()), Some("0")),
    }
}

/// A raw HTTP/2 `Generate` call to `addr` whose body the test writes.
pub async fn open_raw_call(
    addr: std::net::SocketAddr,
) -> (h2::SendStream<bytes::Bytes>, h2::client::ResponseFuture) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}/switchyard.v1.Inference/Generate"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, send) = client.send_request(request, false).unwrap();
    (send, response)
}

fn grpc_status(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// The `switchyard` binary on a free port, serving with `config_toml`; its
/// gRPC address once it prints it.
async fn spawn_binary(config_toml: &str) -> (tokio::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config_toml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--grpc-listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the router prints its address");
    let addr = line
        .strip_prefix("switchyard listening on ")
        .expect("the address line")
        .to_string();
    (child, addr, dir)
}

fn signal(child: &tokio::process::Child, signal: Signal) {
    let pid = child.id().expect("still running");
    nix::sys::signal::kill(Pid::from_raw(pid as i32), signal).unwrap();
}

/// The router binary with `drain_ms`, a hung worker, and a call to it in
/// flight (it has reached the worker).
struct BinaryWithHungCall {
    child: tokio::process::Child,
    addr: String,
    hung: switchyard::mock::MockWorker,
    call: tokio::task::JoinHandle<
        Result<tonic::Response<tonic::Streaming<pb::GenerateResponse>>, tonic::Status>,
    >,
    _dir: tempfile::TempDir,
}

async fn binary_with_hung_call(drain_ms: u64) -> BinaryWithHungCall {
    let hung = hung_mock().await;
    let worker_url = hung.url();
    let config = format!(
        "[shutdown]\ngrace_ms = 0\ndrain_ms = {drain_ms}\n\n[[workers]]\nurl = \"{worker_url}\"\nmodel_id = \"{MODEL}\"\n"
    );
    let (child, addr, dir) = spawn_binary(&config).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::inference_client::InferenceClient::new(channel);
    let call = tokio::spawn(async move { client.generate(request(MODEL, "x")).await });
    eventually(
        Duration::from_secs(10),
        "the hung call reached the worker",
        || async { hung.stats().calls() == 1 },
    )
    .await;
    BinaryWithHungCall {
        child,
        addr,
        hung,
        call,
        _dir: dir,
    }
}

#[tokio::test]
async fn sigterm_drains_then_exits_and_a_second_signal_exits_at_once() {
    // One SIGTERM with a hung call: the drain (a minute) is what it waits
    // for; a second signal ends the process at once, with status 130.
    let BinaryWithHungCall {
        mut child, addr, ..
    } = binary_with_hung_call(60_000).await;
    signal(&child, Signal::SIGTERM);
    // Still draining: the listener is closed to new connections.
    eventually(Duration::from_secs(10), "the listener closed", || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits for the drain"
    );
    signal(&child, Signal::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("a second signal ends the process")
        .unwrap();
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn sigterm_with_a_short_drain_exits_cleanly_and_aborts_the_hung_call() {
    let BinaryWithHungCall {
        mut child,
        hung,
        call,
        ..
    } = binary_with_hung_call(200).await;
    signal(&child, Signal::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the router exits after its drain")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(hung.stats().aborts(), 1, "the worker was told to abort");
    assert!(call.await.unwrap().is_err());
}

#[tokio::test]
async fn sigterm_with_100_streams_running_cuts_none_of_them() {
    // 100 streams of 20 tokens, a token every 50 ms (a second each), over
    // ten client connections; SIGTERM once every one has started. The
    // drain (30 s) outlasts them: every stream must end whole and well, no
    // new connection is taken meanwhile, and the process exits cleanly
    // once they are done, long before the drain deadline.
    let worker = mock_with(switchyard::mock::MockConfig {
        name: "steady".into(),
        tokens: 20,
        token_delay: Duration::from_millis(50),
        ..switchyard::mock::MockConfig::default()
    })
    .await;
    let config = format!(
        "[shutdown]\ngrace_ms = 0\ndrain_ms = 30000\n\n[[workers]]\nurl = \"{}\"\nmodel_id = \"{MODEL}\"\n",
        worker.url()
    );
    let (mut child, addr, _dir) = spawn_binary(&config).await;
    let mut calls = Vec::new();
    for c in 0..10 {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for i in 0..10 {
            let mut client = pb::inference_client::InferenceClient::new(channel.clone());
            let mut call = request(MODEL, "x");
            call.request_id = format!("stream-{c}-{i}");
            calls.push(tokio::spawn(async move {
                let mut stream = client.generate(call).await?.into_inner();
                let mut tokens = 0;
                let mut finish = None;
                while let Some(message) = stream.message().await? {
                    match message.response {
                        Some(pb::generate_response::Response::Chunk(_)) => tokens += 1,
                        Some(pb::generate_response::Response::Complete(done)) => {
                            finish = Some(done.finish_reason)
                        }
                        other => panic!("unexpected message: {other:?}"),
                    }
                }
                Ok::<_, tonic::Status>((tokens, finish))
            }));
        }
    }
    eventually(
        Duration::from_secs(20),
        "all 100 streams reached the worker",
        || async { worker.stats().calls() == 100 },
    )
    .await;
    signal(&child, Signal::SIGTERM);
    eventually(Duration::from_secs(10), "the listener closed", || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    for call in calls {
        let (tokens, finish) = call
            .await
            .unwrap()
            .expect("no stream is cut while the drain lasts");
        assert_eq!(tokens, 20, "every token arrives");
        assert_eq!(
            finish.as_deref(),
            Some("length"),
            "each stream ends as the worker ended it"
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the router exits once its streams are done, before the drain deadline")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(worker.stats().aborts(), 0, "no stream was cancelled");
}

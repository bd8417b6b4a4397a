//! The hop under faults: clients that stop reading, calls and bodies that
//! never end, and shutdown with streams open.

use std::time::Duration;

use crate::common::*;
use switchyard::config::UpstreamConfig;
use switchyard::pb;
use switchyard::pb::inference_client::InferenceClient;
use tonic::transport::Endpoint;

/// A client connection whose HTTP/2 windows are tiny, so that a stream it
/// does not read stops the router's sending after a few messages.
async fn stingy_client(router: &Router) -> InferenceClient<tonic::transport::Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", router.addr))
        .unwrap()
        .initial_stream_window_size(1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    InferenceClient::new(channel)
}

fn long_request(tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        sampling_params: Some(pb::SamplingParams {
            max_new_tokens: tokens,
            ..Default::default()
        }),
        ..request(MODEL, "hello")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_back_only_its_own_streams() {
    // One upstream connection, so the stalled streams and the healthy ones
    // share it, as they do on a busy worker.
    let router = start_router_with(switchyard::Config {
        upstream: UpstreamConfig {
            connections_per_worker: 1,
            ..UpstreamConfig::default()
        },
        ..test_config()
    })
    .await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;

    // Eight streams of 20,000 tokens each that are not read.
    let mut stalled_client = stingy_client(&router).await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let response = stalled_client
            .generate(long_request(20_000))
            .await
            .expect("the stalled streams start");
        stalled.push(response.into_inner());
    }
    // The worker runs far ahead of what the client took (a few dozen
    // tokens per stream): the rest waits in the router and the worker.
    eventually(Duration::from_secs(20), "the worker runs ahead", || async {
        worker.stats().tokens() >= 8 * 1_000
    })
    .await;

    // Neighbours on the same worker connection finish whole streams.
    let mut calls = Vec::new();
    for _ in 0..10 {
        let router_channel = router.channel.clone();
        calls.push(tokio::spawn(async move {
            let mut client = InferenceClient::new(router_channel);
            let response = client.generate(long_request(2_000)).await?;
            let mut stream = response.into_inner();
            let mut messages = 0;
            while stream.message().await?.is_some() {
                messages += 1;
            }
            Ok::<_, tonic::Status>(messages)
        }));
    }
    for call in calls {
        let messages = within(Duration::from_secs(60), "a neighbour's stream", call)
            .await
            .unwrap()
            .expect("a neighbour's stream finishes");
        assert_eq!(messages, 2_001, "2,000 tokens and the final message");
    }

    // The stalled streams lost nothing: read now, each is whole.
    let read_all = async {
        for mut stream in stalled {
            let mut messages = 0;
            while stream
                .message()
                .await
                .expect("a stalled stream is intact")
                .is_some()
            {
                messages += 1;
            }
            assert_eq!(messages, 20_001);
        }
    };
    within(
        Duration::from_secs(60),
        "the stalled streams complete",
        read_all,
    )
    .await;
    router.assert_still_serves().await;
}

#[tokio::test]
async fn a_call_without_a_deadline_gets_the_default_one() {
    let mut config = test_config();
    config.limits.default_deadline_ms = 300;
    let router = start_router_with(config).await;
    let hung = hung_mock().await;
    router.add(&hung.url(), MODEL).await;

    let status = within(
        Duration::from_secs(30),
        "a call without a deadline to a hung worker ends",
        router.generate(request(MODEL, "x")),
    )
    .await
    .expect_err("a hung worker cannot answer");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let seen = hung.stats().seen();
    let timeout = seen[0].timeout.expect("the worker is told the deadline");
    assert!(timeout <= Duration::from_millis(300), "{timeout:?}");
    eventually(
        Duration::from_secs(5),
        "the worker told to abort",
        || async { hung.stats().aborts() == 1 },
    )
    .await;
    router.assert_still_serves().await;
}

#[tokio::test]
async fn a_grpc_request_body_that_stops_arriving_is_refused() {
    let mut config = test_config();
    config.limits.request_body_idle_ms = 200;
    let router = start_router_with(config).await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;

    let tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let call = http::Request::post(format!(
        "http://{}/switchyard.v1.Inference/Generate",
        router.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(call, false).unwrap();
    // A frame header announcing 10 bytes, two of them, then nothing.
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 10, 1, 2]), false)
        .unwrap();
    let response = within(Duration::from_secs(30), "the router answers", response)
        .await
        .expect("the router answers");
    let status = response
        .headers()
        .get("grpc-status")
        .expect("a trailers-only gRPC error")
        .to_str()
        .unwrap();
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    let message = response
        .headers()
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(message.contains("stopped"), "{message}");
    assert_eq!(worker.stats().calls(), 0, "nothing reached the worker");
    router.assert_still_serves().await;
}

#[tokio::test]
async fn an_http_request_body_that_stops_arriving_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.limits.request_body_idle_ms = 200;
    let router = start_router_with(config).await;

    let mut tcp = tokio::net::TcpStream::connect(router.http_addr)
        .await
        .unwrap();
    tcp.write_all(
        b"POST /generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"text\":",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The router answers, then closes (the request cannot be finished).
    loop {
        let n = within(
            Duration::from_secs(30),
            "the router answers",
            tcp.read(&mut buf),
        )
        .await
        .unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");
}

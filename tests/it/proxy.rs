//! The faithful hop: cancellation, deadlines, request ids, load accounting,
//! Abort, and fields unknown to Switchyard's proto in both directions.

use std::time::Duration;

use crate::common::*;
use switchyard::mock::MockConfig;
use switchyard::pb;
use tonic::Code;

/// A copy of the proto with fields Switchyard does not know (tests/proto/fidelity.proto).
mod fidelity {
    include!(concat!(env!("OUT_DIR"), "/fidelity/switchyard.v1.rs"));
}

fn slow(name: &str, tokens: u32, delay_ms: u64) -> MockConfig {
    MockConfig {
        name: name.into(),
        tokens,
        token_delay: Duration::from_millis(delay_ms),
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn client_cancel_cancels_upstream_and_aborts_on_the_worker() {
    let router = start_router().await;
    let worker = mock_with(slow("w", 1000, 10)).await;
    let info = router.add(&worker.url(), MODEL).await;
    let response = router
        .inference()
        .generate(request(MODEL, "x"))
        .await
        .unwrap();
    let mut stream = response.into_inner();
    stream.message().await.unwrap().unwrap();
    // In flight while streaming, visible to operators.
    let listed = router.list().await;
    assert_eq!(
        listed.iter().find(|w| w.id == info.id).unwrap().in_flight,
        1
    );

    drop(stream); // the client goes away
    eventually(Duration::from_secs(5), "worker sees the abort", || async {
        worker.stats().aborts() == 1
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "worker stops generating",
        || async { worker.stats().cancelled() + worker.stats().aborted_streams() == 1 },
    )
    .await;
    assert_eq!(worker.stats().completed(), 0);
    // The load guard was released.
    let listed = router.list().await;
    assert_eq!(
        listed.iter().find(|w| w.id == info.id).unwrap().in_flight,
        0
    );
}

#[tokio::test]
async fn completed_streams_release_load_and_send_no_abort() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    for _ in 0..5 {
        router.generate(request(MODEL, "x")).await.unwrap();
    }
    assert!(router.list().await.iter().all(|w| w.in_flight == 0));
    // Every abort a finished call could have sent has been answered (or
    // given up on) once the tracker is empty: none reached the worker.
    switchyard::routers::call::aborts_in_flight().wait().await;
    assert_eq!(worker.stats().aborts(), 0);
    assert_eq!(worker.stats().completed(), 5);
}

#[tokio::test]
async fn deadline_propagates_to_the_worker() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    let mut req = tonic::Request::new(request(MODEL, "x"));
    req.set_timeout(Duration::from_secs(7));
    let mut stream = router.inference().generate(req).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    let seen = worker.stats().seen();
    let timeout = seen[0].timeout.expect("the worker received a grpc-timeout");
    assert!(timeout <= Duration::from_secs(7), "{timeout:?}");
    assert!(timeout > Duration::from_secs(6), "{timeout:?}");
}

#[tokio::test]
async fn deadline_expiring_is_deadline_exceeded_and_aborts_the_worker() {
    let router = start_router().await;
    let hanging = mock_with(MockConfig {
        name: "hang".into(),
        hang: true,
        ..MockConfig::default()
    })
    .await;
    router.add(&hanging.url(), MODEL).await;
    let mut req = tonic::Request::new(request(MODEL, "x"));
    req.set_timeout(Duration::from_millis(200));
    let err = match router.inference().generate(req).await {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    // Before any response the router answers DEADLINE_EXCEEDED, but a tonic
    // client also runs its own timer for the response head and reports that
    // one as CANCELLED "Timeout expired"; whichever lands first wins.
    assert!(
        err.code() == Code::DeadlineExceeded
            || (err.code() == Code::Cancelled && err.message() == "Timeout expired"),
        "{err:?}"
    );
    eventually(Duration::from_secs(5), "worker told to abort", || async {
        hanging.stats().aborts() == 1
    })
    .await;

    // Mid-stream expiry too: a slow stream outliving its deadline.
    let slow_worker = mock_with(slow("slow", 100, 20)).await;
    router.add(&slow_worker.url(), "slow-model").await;
    let mut req = tonic::Request::new(request("slow-model", "x"));
    req.set_timeout(Duration::from_millis(300));
    let mut stream = router.inference().generate(req).await.unwrap().into_inner();
    let (got, err) = messages_until_error(&mut stream).await;
    assert!(got > 0 && got < 100, "{got}");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    eventually(
        Duration::from_secs(5),
        "slow worker told to abort",
        || async { slow_worker.stats().aborts() == 1 },
    )
    .await;
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_propagated_when_present() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;

    // No id anywhere: the router makes one, the worker and the client see it.
    let out = router.generate(request(MODEL, "x")).await.unwrap();
    assert_eq!(out.request_id.len(), 32, "{:?}", out.request_id);
    let seen = &worker.stats().seen()[0];
    assert_eq!(seen.request_id, out.request_id);
    assert_eq!(seen.x_request_id.as_deref(), Some(out.request_id.as_str()));
    assert!(out.messages.iter().all(|m| m.request_id == out.request_id));

    // x-request-id from the client.
    let mut req = tonic::Request::new(request(MODEL, "x"));
    req.metadata_mut()
        .insert("x-request-id", "client-id-42".parse().unwrap());
    req.metadata_mut()
        .insert("x-tenant", "acme".parse().unwrap());
    let response = router.inference().generate(req).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "client-id-42"
    );
    let seen = worker.stats().seen().pop().unwrap();
    assert_eq!(seen.request_id, "client-id-42");
    assert_eq!(seen.x_request_id.as_deref(), Some("client-id-42"));
    // Other client metadata passes through.
    assert!(seen
        .metadata
        .iter()
        .any(|(k, v)| k == "x-tenant" && v == "acme"));

    // request_id in the message wins and is left unchanged.
    let mut body = request(MODEL, "x");
    body.request_id = "body-id".into();
    let out = router.generate(body).await.unwrap();
    assert_eq!(out.request_id, "body-id");
    assert_eq!(
        worker.stats().seen().pop().unwrap().x_request_id.as_deref(),
        Some("body-id")
    );
}

#[tokio::test]
async fn abort_through_the_router_reaches_the_serving_worker() {
    let router = start_router().await;
    let worker = mock_with(slow("w", 1000, 10)).await;
    router.add(&worker.url(), MODEL).await;
    let mut body = request(MODEL, "x");
    body.request_id = "to-abort".into();
    let mut stream = router
        .inference()
        .generate(body)
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let aborted = router
        .inference()
        .abort(pb::AbortRequest {
            request_id: "to-abort".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .aborted;
    assert!(aborted);
    // The worker ends the stream with finish_reason "abort".
    let mut reason = None;
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(pb::generate_response::Response::Complete(c)) = m.response {
            reason = Some(c.finish_reason);
        }
    }
    assert_eq!(reason.as_deref(), Some("abort"));
    // Unknown ids are not an error: the call may just have finished.
    let again = router
        .inference()
        .abort(pb::AbortRequest {
            request_id: "to-abort".into(),
        })
        .await
        .unwrap();
    assert!(!again.into_inner().aborted);
    let err = router
        .inference()
        .abort(pb::AbortRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_fields_survive_both_directions() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    let mut client = fidelity::inference_client::InferenceClient::new(router.channel.clone());
    let request = fidelity::GenerateRequest {
        request_id: String::new(),
        model: MODEL.into(),
        input: Some(fidelity::generate_request::Input::Text("hi".into())),
        client_extension: "from-a-newer-client".into(),
        client_numbers: vec![1, 300, u64::MAX],
    };
    let mut stream = client.generate(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        messages.push(m);
    }
    // Client → worker: the worker received the unknown fields' bytes.
    let seen = worker.stats().seen();
    assert!(!seen[0].unknown_fields.is_empty());
    // Worker → client: the worker echoed them as unknown response fields,
    // and the router relayed them untouched.
    assert_eq!(messages.len(), 5);
    for m in &messages {
        assert_eq!(m.client_extension, "from-a-newer-client");
        assert_eq!(m.client_numbers, vec![1, 300, u64::MAX]);
    }
    // The router still added the request id it had to.
    assert_eq!(messages[0].request_id.len(), 32);
}

#[tokio::test]
async fn a_restarted_worker_is_served_again_on_a_new_connection() {
    let router = start_router().await;
    let worker = mock("before").await;
    let addr = worker.addr();
    router.add(&worker.url(), MODEL).await;
    assert!(router.generate(request(MODEL, "x")).await.is_ok());
    worker.stop().await;

    let restarted = switchyard::mock::MockWorker::start(
        addr,
        MockConfig {
            name: "after".into(),
            ..MockConfig::default()
        },
    )
    .await
    .unwrap();
    // The old connection is gone; calls reconnect on their own. At most the
    // one call that raced the old connection's close may fail.
    let failures = std::cell::Cell::new(0);
    eventually(
        Duration::from_secs(5),
        "calls reach the restarted worker",
        || async {
            match router.generate(request(MODEL, "x")).await {
                Ok(out) => out.text().starts_with("after:"),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    failures.set(failures.get() + 1);
                    false
                }
            }
        },
    )
    .await;
    assert!(
        failures.get() <= 1,
        "{} calls failed after the restart",
        failures.get()
    );
    assert!(restarted.stats().calls() >= 1);
}

#[tokio::test]
async fn a_worker_that_stops_answering_is_cut_off_by_keep_alive() {
    let mut config = test_config();
    config.upstream.keep_alive_interval_ms = 1_000;
    let router = start_router_with(config).await;
    let (url, held) = silent_worker().await;
    router.add(&url, MODEL).await;
    // No deadline: only the keep-alive ping can end this call.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        router.generate(request(MODEL, "x")),
    )
    .await
    .expect("the call ended once the ping went unanswered");
    let status = outcome.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    held.abort();
}

/// A worker written against HTTP/2 directly: it answers health checks, and
/// answers `Generate` with `tokens` messages followed, a moment later, by a
/// reset of the stream (what a worker that crashes mid-generation looks
/// like on the wire).
async fn worker_that_resets_after(tokens: usize) -> String {
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("grpc://{}", listener.local_addr().unwrap());
    let framed = |message: Vec<u8>| {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
        bytes::Bytes::from(out)
    };
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    // Answered in its own task: the connection keeps being
                    // driven (and the data flushed) while it waits.
                    tokio::spawn(async move {
                        let head = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(head, false).unwrap();
                        if request.uri().path() == "/grpc.health.v1.Health/Check" {
                            // HealthCheckResponse { status: SERVING }
                            send.send_data(framed(vec![0x08, 0x01]), false).unwrap();
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            send.send_trailers(trailers).unwrap();
                            return;
                        }
                        for i in 0..tokens {
                            let chunk = pb::GenerateResponse {
                                request_id: String::new(),
                                response: Some(pb::generate_response::Response::Chunk(
                                    pb::GenerateChunk {
                                        token_ids: vec![],
                                        text: format!("t{i} "),
                                        logprobs: None,
                                    },
                                )),
                            };
                            send.send_data(framed(chunk.encode_to_vec()), false)
                                .unwrap();
                        }
                        // Sent together with the data, the reset would make h2
                        // drop the data still queued on the router's side.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        send.send_reset(h2::Reason::INTERNAL_ERROR);
                    });
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_worker_resetting_mid_stream_delivers_what_it_sent_then_the_error() {
    let router = start_router().await;
    let url = worker_that_resets_after(5).await;
    router.add(&url, MODEL).await;
    let response = router
        .inference()
        .generate(request(MODEL, "x"))
        .await
        .expect("the worker answered before resetting");
    let (messages, status) = messages_until_error(&mut response.into_inner()).await;
    assert_eq!(messages, 5);
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    router.assert_still_serves().await;
}

#[tokio::test]
async fn shutdown_lets_a_stream_in_flight_finish_then_refuses_connections() {
    let router = start_router().await;
    let addr = router.addr;
    let worker = mock_with(slow("w", 10, 30)).await;
    router.add(&worker.url(), MODEL).await;
    let mut stream = router
        .inference()
        .generate(request(MODEL, "x"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    // Shut down mid-stream: the call in flight still completes.
    let stopping = tokio::spawn(router.stop());
    let mut rest = 0;
    while let Some(message) = stream.message().await.expect("the stream ends cleanly") {
        assert!(message.response.is_some());
        rest += 1;
    }
    // 10 chunks and the completion message, the first read before shutdown.
    assert_eq!(rest + 1, 11);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the router stopped once its last call finished")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// Paused time: the clock moves only when every task waits, so the time the
// calls took is exact: one connect timeout if they shared the attempt,
// eight in turn if they queued.
#[tokio::test(start_paused = true)]
async fn calls_waiting_on_a_hanging_connect_fail_together() {
    let mut config = test_config();
    config.upstream.connect_timeout_ms = 500;
    config.upstream.connections_per_worker = 1;
    let router = start_router_with(config).await;
    let (dark_url, _dark) = dark_host().await;
    router.add(&dark_url, MODEL).await;

    // Eight calls at once, no deadlines: they share the one attempt's
    // timeout instead of waiting for eight in turn (4 s).
    let started = tokio::time::Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut client = router.inference();
            tokio::spawn(async move { client.generate(request(MODEL, "x")).await })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("timed out"), "{status:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1_000),
        "calls queued behind each other's connect attempts: {waited:?}"
    );
}

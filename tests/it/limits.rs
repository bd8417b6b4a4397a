//! What a caller cannot make the router do: register workers at hosts that
//! are not workers' (cloud metadata, link-local, numbers that are not
//! addresses), register without bound, get an unbounded `ListWorkers`
//! answer, or send `Generate` as something other than gRPC.

use crate::common::*;
use std::time::Duration;
use switchyard::admission::hosts::WorkerHostsConfig;
use switchyard::pb;
use switchyard::Config;
use tonic::Code;

#[tokio::test]
async fn metadata_and_link_local_hosts_are_refused_and_nothing_is_registered() {
    let router = start_router().await;
    for (url, code, needle) in [
        (
            "grpc://169.254.169.254:80",
            Code::PermissionDenied,
            "link-local",
        ),
        (
            "http://169.254.169.254",
            Code::PermissionDenied,
            "link-local",
        ),
        (
            "http://metadata.google.internal",
            Code::PermissionDenied,
            "metadata",
        ),
        (
            "grpc://[fe80::1]:7001",
            Code::PermissionDenied,
            "link-local",
        ),
        ("grpc://0.0.0.0:7001", Code::InvalidArgument, "unspecified"),
        (
            "grpc://2130706433:7001",
            Code::InvalidArgument,
            "dotted-quad",
        ),
    ] {
        let status = router.try_add(url, MODEL).await.unwrap_err();
        assert_eq!(status.code(), code, "{url}: {status:?}");
        assert!(status.message().contains(needle), "{url}: {status:?}");
    }
    let long = format!("grpc://{}.example:7001", "a".repeat(10_000));
    let status = router.try_add(&long, MODEL).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(router.list().await.is_empty());

    // The HTTP API says the same, as 403.
    let response = reqwest::Client::new()
        .post(router.http_url("/workers"))
        .json(&serde_json::json!({"url": "http://169.254.169.254", "model_id": MODEL}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(router.list().await.is_empty());
    router.assert_still_serves().await;
}

#[tokio::test]
async fn an_allow_list_admits_only_its_networks() {
    let router = start_router_with(Config {
        worker_hosts: WorkerHostsConfig {
            allow: vec!["10.0.0.0/8".into()],
            ..WorkerHostsConfig::default()
        },
        ..test_config()
    })
    .await;
    let worker = mock("w").await;
    let status = router.try_add(&worker.url(), MODEL).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("not in worker_hosts.allow (10.0.0.0/8)"),
        "{status:?}"
    );
    router.add("grpc://10.9.8.7:7001", MODEL).await;
}

#[tokio::test]
async fn the_number_of_workers_is_capped() {
    let mut config = test_config();
    config.limits.max_workers = 3;
    let router = start_router_with(config).await;
    for port in 7001..7004 {
        router.add(&format!("grpc://127.0.0.1:{port}"), MODEL).await;
    }
    let status = router
        .try_add("grpc://127.0.0.1:7004", MODEL)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("limits.max_workers"),
        "{status:?}"
    );
    assert_eq!(router.list().await.len(), 3);
    // Room again once one is removed.
    let first = router.list().await[0].id.clone();
    router.remove(&first).await;
    router.add("grpc://127.0.0.1:7004", MODEL).await;
}

#[tokio::test]
async fn list_workers_pages_through_every_worker_once() {
    let router = start_router().await;
    for port in 7001..7008 {
        router.add(&format!("grpc://127.0.0.1:{port}"), MODEL).await;
    }
    let mut management = router.management();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = management
            .list_workers(pb::ListWorkersRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.workers.len() <= 3);
        seen.extend(page.workers.into_iter().map(|w| w.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut all: Vec<_> = router.list().await.into_iter().map(|w| w.id).collect();
    all.sort();
    assert_eq!(seen, all, "every worker once, in id order");

    let bad = management
        .list_workers(pb::ListWorkersRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

/// Sends a request over HTTP/2 with `content_type` and a 1 MiB body, of
/// which only the first bytes go before the answer is read; then the rest.
/// Returns the answer's status; panics if the stream is reset before the
/// whole body is sent (a client still uploading would see the reset, not
/// the answer: curl did, in 19 of 20 tries).
async fn answer_before_the_body_ends(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
) -> u16 {
    const BODY: usize = 1 << 20;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"hello"), false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered before the body ended")
        .unwrap();
    let mut left = BODY;
    while left > 0 {
        body.reserve_capacity(left);
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| body.poll_capacity(cx)),
        )
        .await
        .expect("flow-control window opened: the server reads the body");
        let n = sent.expect("stream open").expect("stream not reset");
        body.send_data(bytes::Bytes::from(vec![b'x'; n]), n == left)
            .expect("stream not reset");
        left -= n;
    }
    response.status().as_u16()
}

#[tokio::test]
async fn generate_that_is_not_grpc_is_refused_with_415_while_its_body_is_still_sent() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    let status = answer_before_the_body_ends(
        router.addr,
        "/switchyard.v1.Inference/Generate",
        "text/plain",
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(worker.stats().calls(), 0);
    // The HTTP listener's early answers (here its 404) do the same.
    let status = answer_before_the_body_ends(router.http_addr, "/nowhere", "text/plain").await;
    assert_eq!(status, 404);
    router.assert_still_serves().await;
}

#[tokio::test]
async fn metadata_over_the_limit_is_refused_naming_it_before_any_worker_sees_it() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    let with_metadata = |bytes: usize| {
        let mut request = tonic::Request::new(request(MODEL, "hi"));
        request
            .metadata_mut()
            .insert("x-big", "a".repeat(bytes).parse().unwrap());
        request
    };
    // Under the default 16 KiB: routed.
    let mut inference = router.inference();
    let fine = inference.generate(with_metadata(8 * 1024)).await;
    assert!(fine.is_ok(), "{fine:?}");
    // Over it: refused with what to do, over gRPC and HTTP.
    let err = inference
        .generate(with_metadata(20 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("limits.max_metadata_bytes") && err.message().contains("16384"),
        "{}",
        err.message()
    );
    // Far over it (33,000 bytes in one field, or 680 small fields): still a
    // status a gRPC client reads, not HTTP/2's bare 431.
    let many = || {
        let mut request = tonic::Request::new(request(MODEL, "hi"));
        for i in 0..680 {
            let name: tonic::metadata::MetadataKey<tonic::metadata::Ascii> =
                format!("x-h{i}").parse().unwrap();
            request
                .metadata_mut()
                .insert(name, "0123456789".parse().unwrap());
        }
        request
    };
    for addr in [router.addr] {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::inference_client::InferenceClient::new(channel);
        for (what, call) in [
            ("33,000 bytes", with_metadata(33_000)),
            ("680 fields", many()),
        ] {
            let err = match client.generate(call).await {
                Err(status) => status,
                Ok(response) => response.into_inner().message().await.unwrap_err(),
            };
            assert_eq!(
                err.code(),
                Code::ResourceExhausted,
                "{what} on {addr}: {err:?}"
            );
            assert!(
                err.message().contains("limits.max_metadata_bytes"),
                "{what}: {err:?}"
            );
        }
    }
    // The HTTP listener: a 431 naming the limit, over HTTP/2 and HTTP/1.1,
    // whether just over it or far over it.
    let small_fields: Vec<(String, String)> = (0..680)
        .map(|i| (format!("x-h{i}"), "0123456789".to_string()))
        .collect();
    for (what, fields) in [
        ("20 KiB", vec![("x-big".to_string(), "a".repeat(20 * 1024))]),
        (
            "33,000 bytes",
            vec![("x-big".to_string(), "a".repeat(33_000))],
        ),
        ("680 fields", small_fields),
    ] {
        let mut http1 = reqwest::Client::new().post(router.http_url("/generate"));
        let mut http2 = http::Request::post("/generate").header("content-type", "application/json");
        for (name, value) in &fields {
            http1 = http1.header(name, value);
            http2 = http2.header(name, value);
        }
        let response = http1
            .json(&serde_json::json!({"model": MODEL, "text": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 431, "{what} over HTTP/1.1");
        // hyper's HTTP/1 parser takes 100 fields; past that its 431 has no
        // message (raising the count costs every request an allocation).
        if fields.len() <= 100 {
            let body = response.text().await.unwrap();
            assert!(
                body.contains("limits.max_metadata_bytes"),
                "{what} over HTTP/1.1: {body}"
            );
        }

        let tcp = tokio::net::TcpStream::connect(router.http_addr)
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(http2.body(()).unwrap(), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 431, "{what} over HTTP/2");
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("limits.max_metadata_bytes"),
            "{what} over HTTP/2: {text}"
        );
    }
    assert_eq!(worker.stats().calls(), 1, "only the call under the limit");
    router.assert_still_serves().await;
}

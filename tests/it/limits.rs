//! What a caller cannot make the router do: register workers at hosts that
//! are not workers' (cloud metadata, link-local, numbers that are not
//! addresses), register without bound, get an unbounded `ListWorkers`
//! answer, or send `Generate` as something other than gRPC.

use crate::common::*;
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

#[tokio::test]
async fn generate_that_is_not_grpc_is_refused_with_415() {
    let router = start_router().await;
    let worker = mock("w").await;
    router.add(&worker.url(), MODEL).await;
    let tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/switchyard.v1.Inference/Generate")
        .header("content-type", "text/plain")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"hello"), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(worker.stats().calls(), 0);
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
    // status a gRPC client reads, not HTTP/2's bare 431 (the gRPC listener;
    // the HTTP listener's HTTP/2 still answers 431 above 16 KiB + 16 KiB).
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
    let http = reqwest::Client::new()
        .post(router.http_url("/generate"))
        .header("x-big", "a".repeat(20 * 1024))
        .json(&serde_json::json!({"model": MODEL, "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 431);
    let body: serde_json::Value = http.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_metadata_bytes"),
        "{body}"
    );
    assert_eq!(worker.stats().calls(), 1, "only the call under the limit");
    router.assert_still_serves().await;
}

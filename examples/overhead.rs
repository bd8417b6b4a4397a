//! Run with: `cargo run --release --example overhead -- [CALLS]`
//!
//! Measures what routing adds to a `Generate` call: the same one-token
//! request sent directly to a mock worker, through the router to a regular
//! worker, and through the router to a prefill/decode pair. Everything runs
//! in this process on 127.0.0.1 (router, mocks and client share one tokio
//! runtime), sequentially, so the figures are per-call latency, not capacity.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use switchyard::config::StartupWorker;
use switchyard::mock::{MockConfig, MockRole, MockWorker};
use switchyard::pb;
use switchyard::pb::inference_client::InferenceClient;
use switchyard::worker::WorkerRole;
use switchyard::{App, Config};
use tonic::transport::Channel;

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect")
}

async fn measure(label: &str, channel: Channel, model: &str, calls: usize) -> Duration {
    let mut client = InferenceClient::new(channel);
    let request = || pb::GenerateRequest {
        model: model.into(),
        input: Some(pb::generate_request::Input::Text("hello".into())),
        ..Default::default()
    };
    for _ in 0..calls / 10 {
        let mut s = client
            .generate(request())
            .await
            .expect("warm-up call")
            .into_inner();
        while s.message().await.expect("stream").is_some() {}
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let mut s = client.generate(request()).await.expect("call").into_inner();
        while s.message().await.expect("stream").is_some() {}
        times.push(started.elapsed());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let p50 = pct(0.50);
    println!(
        "{label:<28} p50 {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs",
        p50.as_secs_f64() * 1e6,
        pct(0.90).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6
    );
    p50
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let any = "127.0.0.1:0".parse().expect("address");
    let one_token = |name: &str, role| MockConfig {
        name: name.into(),
        tokens: 1,
        role,
        ..MockConfig::default()
    };
    let regular = MockWorker::start(any, one_token("regular", MockRole::Regular))
        .await
        .expect("mock");
    let prefill = MockWorker::start(
        any,
        one_token("prefill", MockRole::Prefill { bootstrap_port: 0 }),
    )
    .await
    .expect("mock");
    let decode = MockWorker::start(any, one_token("decode", MockRole::Decode))
        .await
        .expect("mock");

    let worker = |url: String, model: &str, role: WorkerRole, bootstrap_port| StartupWorker {
        url,
        model_id: model.into(),
        engine: None,
        role: role.to_string(),
        bootstrap_port,
        labels: Default::default(),
    };
    let mut config = Config {
        grpc_listen: any,
        ..Config::default()
    };
    config.workers = vec![
        worker(regular.url(), "regular", WorkerRole::Regular, None),
        worker(
            prefill.url(),
            "pd",
            WorkerRole::Prefill,
            prefill.bootstrap_port().map(u32::from),
        ),
        worker(decode.url(), "pd", WorkerRole::Decode, None),
    ];
    let app = App::build(config).await.expect("config");
    let listener = tokio::net::TcpListener::bind(any).await.expect("bind");
    let router_addr = listener.local_addr().expect("addr");
    tokio::spawn(app.serve(listener, std::future::pending()));

    println!(
        "{calls} sequential one-token calls each, after {} warm-up calls\n",
        calls / 10
    );
    let direct = measure(
        "direct to worker",
        channel(regular.addr()).await,
        "regular",
        calls,
    )
    .await;
    let routed = measure(
        "router → regular worker",
        channel(router_addr).await,
        "regular",
        calls,
    )
    .await;
    let pd = measure(
        "router → prefill + decode",
        channel(router_addr).await,
        "pd",
        calls,
    )
    .await;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!();
    println!("added p50, regular: {:>8.1} µs", us(routed) - us(direct));
    println!("added p50, PD:      {:>8.1} µs (PD over regular: {:.1} µs; includes the mocks' TCP rendezvous)", us(pd) - us(direct), us(pd) - us(routed));
}

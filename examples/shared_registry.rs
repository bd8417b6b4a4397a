//! Run with an etcd on loopback (see `docs/BENCHMARKS.md`, "Shared registry"):
//! `cargo run --release --example shared_registry -- --etcd etcd://127.0.0.1:2379/bench propagation`
//! `cargo run --release --example shared_registry -- --etcd etcd://127.0.0.1:2379/bench cache --routers 3`
//!
//! Two measurements of routers sharing a registry through etcd, all in this
//! process over real loopback sockets:
//! - `propagation`: `AddWorker` on one router, then the time until the
//!   worker is in another router's registry (routable there), over many
//!   adds; p50/p99/max of both.
//! - `cache`: cache-aware routing with several routers against one. Prompt
//!   groups share a long prefix; calls go to the routers in turn; a call is
//!   a *prefix hit* when the worker it lands on has served its group before
//!   (so that worker's KV cache holds the prefix). Each router's tree sees
//!   only its own calls, so more routers spread a group over more workers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use switchyard::config::RegistryConfig;
use switchyard::mock::{MockConfig, MockWorker};
use switchyard::pb;
use switchyard::pb::inference_client::InferenceClient;
use switchyard::pb::worker_management_client::WorkerManagementClient;
use switchyard::policies::{PolicyConfig, PolicyKind};
use switchyard::worker::WorkerRegistry;
use switchyard::{App, Config};
use tokio::net::TcpListener;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// The shared registry: etcd://HOST:PORT/PREFIX (each run uses a fresh
    /// sub-prefix).
    #[arg(long)]
    etcd: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Time from AddWorker returning on one router to routable on another.
    Propagation {
        /// How many adds.
        #[arg(long, default_value_t = 200)]
        adds: usize,
    },
    /// Prefix hits of cache-aware routing with N routers.
    Cache {
        /// Routers sharing the registry.
        #[arg(long, default_value_t = 3)]
        routers: usize,
        /// Workers of the model.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Prompt groups (one shared prefix each).
        #[arg(long, default_value_t = 32)]
        groups: usize,
        /// Calls per group.
        #[arg(long, default_value_t = 12)]
        calls: usize,
    },
}

struct Running {
    registry: Arc<WorkerRegistry>,
    channel: Channel,
}

async fn router(config: Config) -> Running {
    let app = App::build(config).await.unwrap();
    let registry = app.registry().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app.serve(listener, std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running { registry, channel }
}

fn config(etcd: &str, policy: PolicyKind) -> Config {
    Config {
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        registry: RegistryConfig {
            url: Some(etcd.to_string()),
            ..RegistryConfig::default()
        },
        policy: PolicyConfig {
            name: policy,
            ..PolicyConfig::default()
        },
        ..Config::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn spec(url: String, model: &str) -> pb::WorkerSpec {
    pb::WorkerSpec {
        url,
        model_id: model.into(),
        engine: pb::Engine::Switchyard as i32,
        ..Default::default()
    }
}

async fn propagation(etcd: &str, adds: usize) {
    let a = router(config(etcd, PolicyKind::RoundRobin)).await;
    let b = router(config(etcd, PolicyKind::RoundRobin)).await;
    let mut management = WorkerManagementClient::new(a.channel.clone());
    let (mut add_times, mut seen_times) = (Vec::new(), Vec::new());
    for i in 0..adds {
        // Not contacted: engine and model are given.
        let url = format!("grpc://127.0.0.1:{}", 30_000 + i);
        let start = Instant::now();
        let info = management
            .add_worker(pb::AddWorkerRequest {
                worker: Some(spec(url, "m")),
            })
            .await
            .unwrap()
            .into_inner()
            .worker
            .unwrap();
        let returned = Instant::now();
        add_times.push(returned - start);
        assert!(a.registry.get(&info.id).is_ok(), "routable where added");
        while b.registry.get(&info.id).is_err() {
            tokio::task::yield_now().await;
        }
        seen_times.push(returned.elapsed());
    }
    add_times.sort();
    seen_times.sort();
    for (what, times) in [
        (
            "AddWorker on router A (write to etcd, wait for A's watch)",
            &add_times,
        ),
        ("AddWorker returned on A -> routable on B", &seen_times),
    ] {
        println!(
            "{what}: n={} p50={:?} p99={:?} max={:?}",
            times.len(),
            percentile(times, 0.50),
            percentile(times, 0.99),
            times[times.len() - 1]
        );
    }
}

async fn cache(etcd: &str, routers: usize, workers: usize, groups: usize, calls: usize) {
    let mut mocks: Vec<MockWorker> = Vec::new();
    for i in 0..workers {
        mocks.push(
            MockWorker::start(
                "127.0.0.1:0".parse().unwrap(),
                MockConfig {
                    name: format!("w{i}"),
                    tokens: 1,
                    ..MockConfig::default()
                },
            )
            .await
            .unwrap(),
        );
    }
    let mut all = Vec::new();
    for _ in 0..routers {
        all.push(router(config(etcd, PolicyKind::CacheAware)).await);
    }
    let mut management = WorkerManagementClient::new(all[0].channel.clone());
    for m in &mocks {
        management
            .add_worker(pb::AddWorkerRequest {
                worker: Some(spec(m.url(), "m")),
            })
            .await
            .unwrap();
    }
    for r in &all {
        while r.registry.len() < workers {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let prefixes: Vec<String> = (0..groups)
        .map(|g| format!("[group {g:03}] shared system prompt text. ").repeat(40))
        .collect();
    let mut served: HashMap<usize, HashSet<String>> = HashMap::new();
    let (mut hits, mut total) = (0usize, 0usize);
    let mut clients: Vec<_> = all
        .iter()
        .map(|r| InferenceClient::new(r.channel.clone()))
        .collect();
    let mut n = 0usize;
    // Calls interleave groups, and go to the routers in turn, as a load
    // balancer in front of them would send them.
    for c in 0..calls {
        for (g, prefix) in prefixes.iter().enumerate() {
            let client = &mut clients[n % routers];
            n += 1;
            let response = client
                .generate(pb::GenerateRequest {
                    model: "m".into(),
                    input: Some(pb::generate_request::Input::Text(format!(
                        "{prefix} question {c}"
                    ))),
                    ..Default::default()
                })
                .await
                .unwrap();
            let worker = response
                .metadata()
                .get("x-switchyard-worker-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let mut stream = response.into_inner();
            while stream.message().await.unwrap().is_some() {}
            let seen = served.entry(g).or_default();
            hits += usize::from(seen.contains(&worker));
            total += 1;
            seen.insert(worker);
        }
    }
    let spread: f64 =
        served.values().map(|s| s.len() as f64).sum::<f64>() / served.len().max(1) as f64;
    println!(
        "cache_aware, {routers} router(s), {workers} workers, {groups} groups x {calls} calls: prefix hits {hits}/{total} = {:.1}% (best possible {:.1}%); workers per group {spread:.2}",
        100.0 * hits as f64 / total as f64,
        100.0 * (calls - 1) as f64 / calls as f64,
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // A fresh sub-prefix, so runs never see each other's workers.
    let etcd = format!(
        "{}/run-{:x}",
        args.etcd.trim_end_matches('/'),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    match args.what {
        What::Propagation { adds } => propagation(&etcd, adds).await,
        What::Cache {
            routers,
            workers,
            groups,
            calls,
        } => cache(&etcd, routers, workers, groups, calls).await,
    }
    std::process::exit(0);
}

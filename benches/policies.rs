//! Policy `select` at 8, 64, 512 and 4,096 workers, and cache-aware
//! `select` + `record` for a 1 KiB prompt.
//!
//! Run with: `cargo bench --bench policies`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard::policies::{self, Policy, PolicyConfig, PolicyKind, RequestFacts};
use switchyard::transport::grpc::ChannelConfig;
use switchyard::worker::{Worker, WorkerRegistry, WorkerRole, WorkerSpec};

fn main() {
    divan::main();
}

const SIZES: [usize; 4] = [8, 64, 512, 4096];

fn setup(kind: PolicyKind, n: usize) -> (Arc<WorkerRegistry>, Arc<dyn Policy>, Vec<Arc<Worker>>) {
    let r = Arc::new(WorkerRegistry::new(ChannelConfig::default()));
    let config = PolicyConfig {
        name: kind,
        ..PolicyConfig::default()
    };
    let policy = policies::build(kind, &config, &r);
    let workers = (0..n)
        .map(|i| {
            let url = format!("grpc://10.0.{}.{}:7000", i / 256, i % 256);
            r.add(WorkerSpec::new(&url, "m", WorkerRole::Regular, None, BTreeMap::new()).unwrap())
                .unwrap()
        })
        .collect();
    (r, policy, workers)
}

fn prompt(group: usize, unique: usize) -> String {
    let mut p = format!("group {group:03}: ").repeat(1024 / 16 / 2);
    p.truncate(512);
    p.push_str(&format!("{unique:0>512}"));
    p
}

/// Routes 1,000 prompts in 16 groups, so the cache-aware tree has content.
fn warm(policy: &Arc<dyn Policy>, workers: &[Arc<Worker>]) {
    for i in 0..1000 {
        let text = prompt(i % 16, i);
        let facts = RequestFacts {
            model: "m",
            text: Some(&text),
            ..Default::default()
        };
        let w = policy.select(workers, &facts).unwrap();
        policy.record(&w, &facts);
    }
}

fn bench_select(bencher: divan::Bencher, kind: PolicyKind, n: usize) {
    let (_r, policy, workers) = setup(kind, n);
    warm(&policy, &workers);
    let text = prompt(3, 999_999);
    bencher.bench(|| {
        let facts = RequestFacts {
            model: "m",
            text: Some(divan::black_box(&text)),
            routing_key: Some("session-42"),
            ..Default::default()
        };
        policy.select(&workers, &facts).unwrap()
    });
}

#[divan::bench(args = SIZES)]
fn select_random(bencher: divan::Bencher, n: usize) {
    bench_select(bencher, PolicyKind::Random, n);
}

#[divan::bench(args = SIZES)]
fn select_round_robin(bencher: divan::Bencher, n: usize) {
    bench_select(bencher, PolicyKind::RoundRobin, n);
}

#[divan::bench(args = SIZES)]
fn select_power_of_two(bencher: divan::Bencher, n: usize) {
    bench_select(bencher, PolicyKind::PowerOfTwo, n);
}

#[divan::bench(args = SIZES)]
fn select_consistent_hash(bencher: divan::Bencher, n: usize) {
    bench_select(bencher, PolicyKind::ConsistentHash, n);
}

#[divan::bench(args = SIZES)]
fn select_cache_aware(bencher: divan::Bencher, n: usize) {
    bench_select(bencher, PolicyKind::CacheAware, n);
}

/// The target: under 5 µs at 64 workers for a 1 KiB prompt.
#[divan::bench(args = SIZES)]
fn cache_aware_select_and_record_1kib(bencher: divan::Bencher, n: usize) {
    let (_r, policy, workers) = setup(PolicyKind::CacheAware, n);
    warm(&policy, &workers);
    let mut i = 0;
    bencher
        .with_inputs(|| {
            i += 1;
            prompt(i % 16, 1_000_000 + i)
        })
        .bench_local_refs(|text| {
            let facts = RequestFacts {
                model: "m",
                text: Some(text),
                ..Default::default()
            };
            let w = policy.select(&workers, &facts).unwrap();
            policy.record(&w, &facts);
        });
}

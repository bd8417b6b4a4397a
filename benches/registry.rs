//! Registry resolve: the per-call read on the hot path.
//!
//! Run with: `cargo bench --bench registry`
//!
//! `resolve_spread`: N workers spread over 100 models, resolving one model.
//! `resolve_other_models`: 8 workers in the resolved model and N in 99 other
//! models; the time must not grow with N.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard::transport::grpc::ChannelConfig;
use switchyard::worker::{ConnectionMode, WorkerRegistry, WorkerRole, WorkerSpec};

fn main() {
    divan::main();
}

fn registry(workers: usize, models: usize, target_extra: usize) -> Arc<WorkerRegistry> {
    let r = Arc::new(WorkerRegistry::new(ChannelConfig::default()));
    let mut port = 1u32;
    let mut add = |model: String| {
        let url = format!(
            "grpc://10.{}.{}.{}:{}",
            (port >> 16) & 255,
            (port >> 8) & 255,
            port & 255,
            7000
        );
        port += 1;
        r.add(WorkerSpec::new(&url, &model, WorkerRole::Regular, None, BTreeMap::new()).unwrap())
            .unwrap();
    };
    for i in 0..workers {
        add(format!("model-{}", i % models));
    }
    for _ in 0..target_extra {
        add("target".to_string());
    }
    r
}

#[divan::bench(args = [10, 1_000, 10_000])]
fn resolve_spread(bencher: divan::Bencher, workers: usize) {
    let r = registry(workers, 100, 0);
    bencher.bench(|| {
        r.resolve(
            ConnectionMode::Grpc,
            WorkerRole::Regular,
            divan::black_box("model-7"),
        )
    });
}

#[divan::bench(args = [0, 1_000, 10_000])]
fn resolve_other_models(bencher: divan::Bencher, other_workers: usize) {
    let r = registry(other_workers, 99, 8);
    bencher.bench(|| {
        r.resolve(
            ConnectionMode::Grpc,
            WorkerRole::Regular,
            divan::black_box("target"),
        )
    });
}

//! The least TTFT a trace's prompts can have on the simulated engine
//! (`mock-worker --sim`'s physics): each prompt alone on an idle engine, its
//! uncached tokens prefilled in chunks of the step's token budget, under
//! three caches: none, a single LRU cache as large as the fleet's (the
//! replay's practical bound), and an infinite one. No router can do better
//! than the infinite cache's figures on that engine; they bound what any
//! routing policy's TTFT can reach (docs/BENCHMARKS.md, issue 26).
//!
//! Run with: `cargo run --release --example ttft_floor -- TRACE [LIMIT] [FLEET_TOKENS]`
//! (defaults: the whole trace, 8 engines of 6,200 blocks of 64 tokens).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use switchyard::mock::sim::physics::{Physics, Work};
use switchyard::replay::trace;

/// The engine's block and step budget, as `mock-worker --sim` defaults them.
const BLOCK: usize = 64;
const STEP_TOKENS: usize = 8192;

fn ttft(physics: &Physics, prompt: usize, cached: usize) -> f64 {
    let mut done = cached.min(prompt.saturating_sub(1));
    let mut seconds = 0.0;
    while done < prompt {
        let tokens = (prompt - done).min(STEP_TOKENS);
        seconds += physics.step_seconds(&[Work {
            tokens,
            context: done,
        }]);
        done += tokens;
    }
    seconds
}

fn summary(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() as f64 * q) as usize).min(xs.len() - 1)];
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    format!(
        "mean {mean:.3} s  p50 {:.3} s  p90 {:.3} s  p99 {:.3} s",
        at(0.5),
        at(0.9),
        at(0.99)
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: ttft_floor TRACE [LIMIT] [FLEET_TOKENS]");
    let limit = args.next().map(|l| l.parse().expect("LIMIT: a number"));
    let fleet: usize = args.next().map_or(8 * 6200 * BLOCK, |t| {
        t.parse().expect("FLEET_TOKENS: a number")
    });
    let requests = trace::read(std::path::Path::new(&path), limit).expect("a Mooncake trace");
    let matched = trace::matched(&requests, fleet, BLOCK);
    let physics = Physics::default();
    let floor = |cached: fn(&(usize, usize)) -> usize| {
        let xs = requests
            .iter()
            .zip(&matched)
            .map(|(r, m)| ttft(&physics, r.input_length, cached(m)))
            .collect();
        summary(xs)
    };
    println!("{} requests, TTFT alone on an idle engine:", requests.len());
    println!("  no cache:                 {}", floor(|_| 0));
    println!("  one fleet-sized LRU cache: {}", floor(|m| m.1));
    println!("  an infinite cache:        {}", floor(|m| m.0));
}

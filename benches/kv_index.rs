//! The KV-event index's lookup for one prompt: hashing its blocks with the
//! router's chained hash, then walking them against the index.
//!
//! Run with: `cargo bench --bench kv_index`
//!
//! The index: 8 workers, each holding what a simulated H100 holds (6,200
//! blocks of 64 tokens: 32 conversations of 12,000 tokens each, the first
//! 4,096 tokens shared by all conversations), as their KV events stored
//! them. The prompt: 12,000 tokens continuing one conversation, whose first
//! 11,520 tokens one worker holds (180 of its 187 full blocks).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use switchyard::kv::{hash, KvIndex};
use switchyard::pb::smg::grpc::common as smg;

fn main() {
    divan::main();
}

const BLOCK: usize = 64;
const WORKERS: u64 = 8;
const PROMPT: usize = 12_000;

fn tokens(conversation: u64, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let owner = if i < 4096 { 0 } else { conversation };
            ((owner * 1_000_003 + i as u64 * 7919) % 128_000) as u32
        })
        .collect()
}

fn index() -> KvIndex {
    let index = KvIndex::new(Duration::from_secs(60));
    let mut engine_hash = 1i64;
    for w in 0..WORKERS {
        for c in 0..32 {
            let ids = tokens(w * 100 + c + 1, PROMPT);
            let mut parent = None;
            let blocks: Vec<smg::KvBlock> = ids
                .chunks_exact(BLOCK)
                .map(|b| {
                    engine_hash += 1;
                    smg::KvBlock {
                        block_hash: engine_hash,
                        token_ids: b.to_vec(),
                        block_size: BLOCK as i32,
                        ..Default::default()
                    }
                })
                .collect();
            for block in blocks {
                let h = block.block_hash;
                index.apply(
                    w,
                    &[smg::KvCacheEvent {
                        event_id: 0,
                        data: Some(smg::kv_cache_event::Data::Stored(smg::KvBlocksStored {
                            blocks: vec![block],
                            parent_block_hash: parent,
                            ..Default::default()
                        })),
                    }
                    .into()],
                );
                parent = Some(h);
            }
        }
    }
    index
}

/// Resident memory, bytes (Linux).
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

#[divan::bench]
fn lookup_12000_token_prompt(bencher: divan::Bencher) {
    let before = resident();
    let index = index();
    let after = resident();
    let (blocks, _) = index.size();
    let held: usize = (0..WORKERS).map(|w| index.blocks(w)).sum();
    println!(
        "index: {blocks} distinct blocks, {held} held by workers, {:.1} MB resident ({:.0} bytes a held block)",
        (after - before) as f64 / 1e6,
        (after - before) as f64 / held as f64
    );
    let mut prompt = tokens(3 * 100 + 5 + 1, 11_520);
    prompt.extend(tokens(999_999, PROMPT - 11_520).iter().map(|t| t + 1));
    let workers: Vec<u64> = (0..WORKERS).collect();
    let mut hashes = Vec::new();
    hash::chain(&prompt, BLOCK, &mut hashes);
    assert_eq!(index.overlap(&hashes, &workers)[3], 180);
    bencher.bench_local(|| {
        hash::chain(divan::black_box(&prompt), BLOCK, &mut hashes);
        index.overlap(&hashes, &workers)
    });
}

#[divan::bench]
fn hash_12000_tokens(bencher: divan::Bencher) {
    let prompt = tokens(1, PROMPT);
    let mut hashes = Vec::new();
    bencher.bench_local(|| hash::chain(divan::black_box(&prompt), BLOCK, &mut hashes));
}

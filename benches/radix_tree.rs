//! Radix tree insert and match with 10,000 stored prompts.
//!
//! Run with: `cargo bench --bench radix_tree`
//!
//! Stored prompts: 100 groups, each a shared prefix of half the prompt size
//! plus a unique suffix, spread over 8 tenants. `match` looks up a new prompt
//! of a known group (walks the shared half, diverges in the suffix);
//! `insert` adds a new such prompt.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use switchyard::policies::radix_tree::RadixTree;

fn main() {
    divan::main();
}

const STORED: usize = 10_000;
const GROUPS: usize = 100;

/// Deterministic pseudo-random bytes (xorshift), printable.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn prompt(group: usize, unique: u64, size: usize) -> Vec<u8> {
    let mut p = bytes(group as u64 + 1, size / 2);
    p.extend(bytes(unique + 1_000_000, size - size / 2));
    p
}

fn tree(size: usize) -> RadixTree<u8> {
    let mut t = RadixTree::new();
    for i in 0..STORED {
        t.insert(
            &prompt(i % GROUPS, i as u64, size),
            (i % 8) as u64,
            usize::MAX,
        );
    }
    t
}

#[divan::bench(args = [1024, 8192, 32768], sample_count = 30, sample_size = 20)]
fn longest_match(bencher: divan::Bencher, size: usize) {
    let t = tree(size);
    let mut n = 0u64;
    bencher
        .with_inputs(|| {
            n += 1;
            prompt((n as usize) % GROUPS, 10_000_000 + n, size)
        })
        .bench_local_refs(|p| t.longest_match(p, |_| true));
}

#[divan::bench(args = [1024, 8192, 32768], sample_count = 30, sample_size = 20)]
fn insert(bencher: divan::Bencher, size: usize) {
    let mut t = tree(size);
    let mut n = 0u64;
    bencher
        .with_inputs(|| {
            n += 1;
            (prompt((n as usize) % GROUPS, 20_000_000 + n, size), n % 8)
        })
        .bench_local_refs(|(p, tenant)| t.insert(p, *tenant, usize::MAX));
}

//! The index against a naive model: per worker, the set of token prefixes
//! its live blocks spell; a prompt's overlap is how many of its leading
//! block prefixes are in that set.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::kv::hash;
use crate::pb::smg::grpc::common as smg;

const B: usize = 4;

fn stored(hash: i64, parent: Option<i64>, tokens: Vec<u32>) -> smg::KvCacheEvent {
    smg::KvCacheEvent {
        event_id: 0,
        data: Some(smg::kv_cache_event::Data::Stored(smg::KvBlocksStored {
            blocks: vec![smg::KvBlock {
                block_hash: hash,
                block_size: tokens.len() as i32,
                token_ids: tokens,
                ..Default::default()
            }],
            parent_block_hash: parent,
            ..Default::default()
        })),
    }
}

fn removed(hash: i64) -> smg::KvCacheEvent {
    smg::KvCacheEvent {
        event_id: 0,
        data: Some(smg::kv_cache_event::Data::Removed(smg::KvBlocksRemoved {
            block_hashes: vec![hash],
            ..Default::default()
        })),
    }
}

fn cleared() -> smg::KvCacheEvent {
    smg::KvCacheEvent {
        event_id: 0,
        data: Some(smg::kv_cache_event::Data::Cleared(Default::default())),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Worker, parent (index into its live blocks, or root), block tokens.
    Store(u64, Option<usize>, Vec<u32>),
    Remove(u64, usize),
    Clear(u64),
    /// Worker whose chain to follow, depth, and a changed token.
    Lookup(u64, usize, Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0u64..3;
    prop_oneof![
        6 => (worker.clone(), proptest::option::of(0usize..8), proptest::collection::vec(0u32..2, B))
            .prop_map(|(w, p, t)| Op::Store(w, p, t)),
        2 => (worker.clone(), 0usize..8).prop_map(|(w, i)| Op::Remove(w, i)),
        1 => worker.clone().prop_map(Op::Clear),
        4 => (worker, 0usize..8, proptest::option::of(0usize..32))
            .prop_map(|(w, d, c)| Op::Lookup(w, d, c)),
    ]
}

#[derive(Default)]
struct Model {
    /// Worker → engine hash → the token prefix it ends.
    live: HashMap<u64, HashMap<i64, Vec<u32>>>,
}

impl Model {
    fn depth(&self, worker: u64, prompt: &[u32]) -> usize {
        let prefixes: HashSet<&Vec<u32>> = self
            .live
            .get(&worker)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        (1..=prompt.len() / B)
            .take_while(|i| prefixes.contains(&prompt[..i * B].to_vec()))
            .count()
    }
}

proptest! {
    #[test]
    fn the_index_agrees_with_a_naive_model(ops in proptest::collection::vec(op(), 1..80)) {
        let index = KvIndex::new(Duration::from_secs(60));
        let mut model = Model::default();
        let mut next_hash = 1i64;
        for op in ops {
            match op {
                Op::Store(w, parent, tokens) => {
                    let live = model.live.entry(w).or_default();
                    let mut keys: Vec<i64> = live.keys().copied().collect();
                    keys.sort();
                    let parent = parent.and_then(|i| keys.get(i % keys.len().max(1)).copied());
                    let mut prefix = parent.map(|p| live[&p].clone()).unwrap_or_default();
                    prefix.extend(&tokens);
                    // An engine does not store a block it already has.
                    if live.values().any(|v| *v == prefix) {
                        continue;
                    }
                    let h = next_hash;
                    next_hash += 1;
                    live.insert(h, prefix);
                    let applied = index.apply(w, &[stored(h, parent, tokens).into()]);
                    prop_assert_eq!(applied.orphans, 0);
                }
                Op::Remove(w, i) => {
                    let live = model.live.entry(w).or_default();
                    let mut keys: Vec<i64> = live.keys().copied().collect();
                    keys.sort();
                    if let Some(&h) = keys.get(i % keys.len().max(1)) {
                        live.remove(&h);
                        index.apply(w, &[removed(h).into()]);
                    }
                }
                Op::Clear(w) => {
                    model.live.remove(&w);
                    index.apply(w, &[cleared().into()]);
                }
                Op::Lookup(w, d, change) => {
                    // A prompt along one of w's chains (or made up), maybe
                    // with one token changed.
                    let mut prompt: Vec<u32> = model
                        .live
                        .get(&w)
                        .and_then(|m| m.values().max_by_key(|v| (v.len() % (d + 1), (*v).clone())).cloned())
                        .unwrap_or_else(|| vec![0; B * 2]);
                    prompt.extend([1, 0, 1]);
                    if let Some(c) = change {
                        let c = c % prompt.len();
                        prompt[c] ^= 1;
                    }
                    let mut hashes = Vec::new();
                    hash::chain(&prompt, B, &mut hashes);
                    let got = index.overlap(&hashes, &[0, 1, 2]);
                    for worker in 0..3u64 {
                        prop_assert_eq!(got[worker as usize], model.depth(worker, &prompt), "worker {}", worker);
                    }
                }
            }
        }
    }
}

#[test]
fn an_unknown_parent_is_an_orphan_and_stores_nothing() {
    let index = KvIndex::new(Duration::from_secs(60));
    let applied = index.apply(7, &[stored(5, Some(99), vec![1, 2, 3, 4]).into()]);
    assert_eq!(applied.orphans, 1);
    assert_eq!(index.blocks(7), 0);
}

#[test]
fn pending_blocks_count_until_confirmed_removed_or_expired() {
    let index = KvIndex::new(Duration::from_millis(50));
    let prompt: Vec<u32> = (0..8).collect();
    let mut hashes = Vec::new();
    hash::chain(&prompt, B, &mut hashes);
    index.record(1, &hashes, 8);
    assert_eq!(index.overlap(&hashes, &[1, 2]), vec![2, 0]);
    // The engine confirms the first block and later evicts it.
    index.apply(1, &[stored(10, None, prompt[..4].to_vec()).into()]);
    assert_eq!(index.overlap(&hashes, &[1]), vec![2]);
    index.apply(1, &[removed(10).into()]);
    assert_eq!(
        index.overlap(&hashes, &[1]),
        vec![0],
        "eviction drops what was pending too"
    );
    // Unconfirmed blocks expire.
    index.record(2, &hashes, 8);
    assert_eq!(index.overlap(&hashes, &[2]), vec![2]);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(index.overlap(&hashes, &[2]), vec![0]);
}

#[test]
fn a_forgotten_worker_leaves_nothing_behind() {
    let index = KvIndex::new(Duration::from_secs(60));
    index.apply(3, &[stored(1, None, vec![1, 2, 3, 4]).into()]);
    let mut hashes = Vec::new();
    hash::chain(&[9, 9, 9, 9], B, &mut hashes);
    index.record(3, &hashes, 4);
    assert_eq!(index.size().0, 2);
    index.forget(3);
    assert_eq!(index.size().0, 0);
    assert_eq!(index.blocks(3), 0);
}

#[test]
fn a_worker_without_load_records_counts_what_was_sent_to_it() {
    // Its stream not live yet: the policy must not see it as idle.
    let index = KvIndex::new(Duration::from_secs(30));
    assert_eq!(index.load(1), None);
    index.record(1, &[], 12_000);
    index.record(1, &[], 500);
    assert_eq!(index.load(1), Some((None, 12_500)));
    // A record counts what reached the engine before it.
    let load = EngineLoad {
        running: 2,
        queued_tokens: Some(300),
        ..Default::default()
    };
    index.set_load(1, load);
    assert_eq!(index.load(1), Some((Some(load), 0)));
    index.record(1, &[], 40);
    assert_eq!(index.load(1), Some((Some(load), 40)));
}

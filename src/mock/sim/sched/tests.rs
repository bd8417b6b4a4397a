//! The scheduler against cases computed by hand (blocks of 4 tokens).

use super::*;
use crate::mock::sim::cache::CacheEvent;

fn config(blocks: usize, seqs: usize, budget: usize) -> SchedConfig {
    SchedConfig {
        block_size: 4,
        num_gpu_blocks: blocks,
        max_num_seqs: seqs,
        max_num_batched_tokens: budget,
        enable_prefix_caching: true,
        enable_chunked_prefill: true,
        watermark: 0.0,
    }
}

fn prompt(n: u32, salt: u32) -> Arc<[u32]> {
    (0..n).map(|i| i + salt * 1000).collect()
}

/// Runs until idle: each request's (first token's step, cached tokens).
fn run(s: &mut Scheduler) -> Vec<(u64, usize, u32)> {
    let mut firsts = Vec::new();
    for step in 1..1000 {
        if s.is_idle() {
            break;
        }
        for out in s.step().outputs {
            if let Output::Token { id, n: 1, cached } = out {
                firsts.push((id, step, cached));
            }
        }
    }
    firsts
}

#[test]
fn a_repeated_prompt_is_served_from_whole_cached_blocks() {
    let mut s = Scheduler::new(config(16, 8, 64), Physics::default());
    s.add(1, prompt(10, 1), 2);
    assert_eq!(run(&mut s), vec![(1, 1, 0)]);
    // Two full blocks of the ten tokens were cached.
    let stored = s
        .cache()
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, CacheEvent::Stored { .. }))
        .count();
    assert_eq!(stored, 2);
    s.add(2, prompt(10, 1), 2);
    assert_eq!(run(&mut s), vec![(2, 1, 8)]);
    // A prompt of exactly two cached blocks still computes its last one.
    s.add(3, prompt(8, 1), 1);
    assert_eq!(run(&mut s), vec![(3, 1, 4)]);
    // Another prefix: nothing.
    s.add(4, prompt(10, 2), 1);
    assert_eq!(run(&mut s), vec![(4, 1, 0)]);
}

#[test]
fn a_cache_hit_shortens_the_prefill() {
    let mut s = Scheduler::new(config(1100, 8, 8192), Physics::default());
    s.add(1, prompt(4096, 1), 1);
    let cold = s.step();
    s.add(2, prompt(4096, 1), 1);
    let warm = s.step();
    assert_eq!(cold.prefill_tokens, 4096);
    assert_eq!(warm.prefill_tokens, 4, "only the last block is computed");
    assert!(warm.seconds * 5.0 < cold.seconds);
}

#[test]
fn a_long_prompt_is_chunked_by_the_token_budget() {
    let mut s = Scheduler::new(config(16, 8, 4), Physics::default());
    s.add(1, prompt(10, 1), 1);
    // 4 + 4 + 2 tokens: the first token comes with the third step.
    assert_eq!(run(&mut s), vec![(1, 3, 0)]);
    let mut s = Scheduler::new(
        SchedConfig {
            enable_chunked_prefill: false,
            ..config(16, 8, 12)
        },
        Physics::default(),
    );
    // Without chunking a prompt that does not fit beside others waits.
    s.add(1, prompt(8, 1), 1);
    s.add(2, prompt(8, 2), 1);
    assert_eq!(run(&mut s), vec![(1, 1, 0), (2, 2, 0)]);
}

#[test]
fn the_queue_is_first_come_first_served_within_the_seats() {
    let mut s = Scheduler::new(config(16, 1, 64), Physics::default());
    s.add(1, prompt(4, 1), 3);
    s.add(2, prompt(4, 2), 1);
    assert_eq!(s.counts(), (0, 2));
    assert_eq!(s.waiting_uncached_tokens(), 8);
    // One seat: the second starts when the first's three tokens are done.
    assert_eq!(run(&mut s), vec![(1, 1, 0), (2, 4, 0)]);
}

#[test]
fn freed_blocks_are_evicted_when_capacity_runs_out() {
    // Four blocks: prompt A takes two, its generated token a third. B's
    // three then take the never-used one, A's uncached third, and A's
    // last prompt block (freed before its root): A keeps its root.
    let mut s = Scheduler::new(config(4, 8, 64), Physics::default());
    s.add(1, prompt(8, 1), 2);
    run(&mut s);
    s.cache().drain_events();
    s.add(2, prompt(8, 2), 2);
    run(&mut s);
    let removed = s
        .cache()
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, CacheEvent::Removed { .. }))
        .count();
    assert_eq!(removed, 1);
    s.add(3, prompt(8, 1), 1);
    assert_eq!(run(&mut s), vec![(3, 1, 4)], "A's first block is left");
}

#[test]
fn the_watermark_holds_back_admission() {
    let mut s = Scheduler::new(
        SchedConfig {
            watermark: 0.5,
            ..config(8, 8, 64)
        },
        Physics::default(),
    );
    // Each needs three blocks; with four kept free only one runs at a time.
    s.add(1, prompt(10, 1), 1);
    s.add(2, prompt(10, 2), 1);
    assert_eq!(run(&mut s), vec![(1, 1, 0), (2, 2, 0)]);
}

#[test]
fn a_decode_short_of_blocks_preempts_the_newest() {
    // Five blocks; two prompts of 8 take two each; their 9th tokens need
    // one more each: the second is preempted, recomputed after the first.
    let mut s = Scheduler::new(config(5, 8, 64), Physics::default());
    s.add(1, prompt(8, 1), 3);
    s.add(2, prompt(8, 2), 3);
    let mut tokens = [0u32; 3];
    let mut finished = Vec::new();
    for _ in 0..50 {
        if s.is_idle() {
            break;
        }
        for out in s.step().outputs {
            match out {
                Output::Token { id, n, .. } => tokens[id as usize] = n,
                Output::Finished { id } => finished.push(id),
            }
        }
    }
    assert_eq!(tokens[1..], [3, 3]);
    assert_eq!(finished, vec![1, 2]);
    assert_eq!(s.cache().used_blocks(), 0);
}

#[test]
fn an_aborted_request_frees_its_blocks() {
    let mut s = Scheduler::new(config(16, 8, 64), Physics::default());
    s.add(1, prompt(10, 1), 100);
    s.step();
    assert_eq!(s.cache().used_blocks(), 3);
    assert!(s.abort(1));
    assert!(!s.abort(1));
    assert_eq!(s.cache().used_blocks(), 0);
    assert!(s.is_idle());
}

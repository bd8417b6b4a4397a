//! Mooncake-format traces: one JSON object a line with `timestamp` (ms),
//! `input_length`, `output_length` and `hash_ids` (the prompt as 512-token
//! blocks; equal ids are equal blocks). Token ids are made per block: token
//! `i` of block `h` is a hash of `(h, i)` modulo the vocabulary, so equal
//! blocks are equal token sequences and unequal blocks differ.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

/// Tokens per trace block.
pub const TRACE_BLOCK: usize = 512;
/// Llama 3's vocabulary.
const VOCAB: u64 = 128_000;

/// One request of a trace.
#[derive(Debug, Clone, Deserialize)]
pub struct TraceRequest {
    /// Arrival, ms from the trace's start.
    pub timestamp: u64,
    /// Prompt tokens.
    pub input_length: usize,
    /// Tokens to generate.
    pub output_length: u32,
    /// The prompt's blocks.
    pub hash_ids: Vec<u64>,
}

/// Reads a trace, the first `limit` requests (all if `None`), in arrival
/// order; a bad line is an error naming it.
pub fn read(path: &Path, limit: Option<usize>) -> Result<Vec<TraceRequest>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let r: TraceRequest = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not a trace request: {e}", path.display(), i + 1))?;
        if r.input_length == 0 || r.input_length > r.hash_ids.len() * TRACE_BLOCK {
            return Err(format!(
                "{}:{}: input_length {} does not fit {} blocks of {TRACE_BLOCK}",
                path.display(),
                i + 1,
                r.input_length,
                r.hash_ids.len()
            ));
        }
        out.push(r);
    }
    out.sort_by_key(|r| r.timestamp);
    Ok(out)
}

fn token(block: u64, i: usize) -> u32 {
    let mut x = block
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64 ^ 0xD6E8_FEB8_6659_FD93);
    x ^= x >> 32;
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^= x >> 29;
    (x % VOCAB) as u32
}

/// Makes prompts' token ids, each block's once.
#[derive(Debug, Default)]
pub struct Tokens {
    blocks: HashMap<u64, Arc<[u32]>>,
}

impl Tokens {
    /// `request`'s prompt.
    pub fn prompt(&mut self, request: &TraceRequest) -> Vec<u32> {
        let mut out = Vec::with_capacity(request.input_length);
        for &h in &request.hash_ids {
            let block = self
                .blocks
                .entry(h)
                .or_insert_with(|| (0..TRACE_BLOCK).map(|i| token(h, i)).collect());
            let take = (request.input_length - out.len()).min(TRACE_BLOCK);
            out.extend_from_slice(&block[..take]);
        }
        out
    }
}

/// What the best routing could get: Σ cached prompt tokens / Σ prompt
/// tokens with one cache for the whole fleet, infinite (`infinite`) or an
/// LRU of `capacity_tokens` (`practical`), counted in `engine_block`-token
/// blocks as an engine does (at least one prompt token is computed).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    /// An infinite cache's hit rate.
    pub infinite: f64,
    /// A single LRU cache as large as the whole fleet's.
    pub practical: f64,
}

fn matched_tokens(request: &TraceRequest, blocks: usize, engine_block: usize) -> usize {
    let tokens = (blocks * TRACE_BLOCK).min(request.input_length.saturating_sub(1));
    tokens / engine_block * engine_block
}

/// The two bounds for `requests`.
pub fn bounds(requests: &[TraceRequest], capacity_tokens: usize, engine_block: usize) -> Bounds {
    let total: usize = requests.iter().map(|r| r.input_length).sum();
    let total = total.max(1) as f64;
    let matched = matched(requests, capacity_tokens, engine_block);
    let sum = |pick: fn(&(usize, usize)) -> usize| matched.iter().map(pick).sum::<usize>() as f64;
    Bounds {
        infinite: sum(|m| m.0) / total,
        practical: sum(|m| m.1) / total,
    }
}

/// Each request's cached prompt tokens, in whole `engine_block`s, under the
/// two bounds' caches: (an infinite cache, a single LRU cache of
/// `capacity_tokens`).
pub fn matched(
    requests: &[TraceRequest],
    capacity_tokens: usize,
    engine_block: usize,
) -> Vec<(usize, usize)> {
    // Infinite: every block seen stays.
    let mut seen = HashSet::new();
    // Practical: an LRU of whole trace blocks.
    let capacity = (capacity_tokens / TRACE_BLOCK).max(1);
    let mut lru: BTreeMap<u64, u64> = BTreeMap::new(); // stamp -> block
    let mut stamps: HashMap<u64, u64> = HashMap::new(); // block -> stamp
    let mut clock = 0u64;
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let k = r.hash_ids.iter().take_while(|h| seen.contains(*h)).count();
        let infinite = matched_tokens(r, k, engine_block);
        seen.extend(r.hash_ids.iter().copied());
        let k = r
            .hash_ids
            .iter()
            .take_while(|h| stamps.contains_key(*h))
            .count();
        let practical = matched_tokens(r, k, engine_block);
        for &h in &r.hash_ids {
            if let Some(old) = stamps.insert(h, clock) {
                lru.remove(&old);
            }
            lru.insert(clock, h);
            clock += 1;
        }
        while stamps.len() > capacity {
            let Some((_, h)) = lru.pop_first() else { break };
            stamps.remove(&h);
        }
        out.push((infinite, practical));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(input: usize, ids: &[u64]) -> TraceRequest {
        TraceRequest {
            timestamp: 0,
            input_length: input,
            output_length: 1,
            hash_ids: ids.to_vec(),
        }
    }

    #[test]
    fn equal_blocks_are_equal_tokens_and_others_differ() {
        let mut t = Tokens::default();
        let a = t.prompt(&req(1000, &[1, 2]));
        let b = t.prompt(&req(700, &[1, 3]));
        assert_eq!(a.len(), 1000);
        assert_eq!(a[..512], b[..512]);
        assert_ne!(a[512..700], b[512..700]);
    }

    #[test]
    fn the_bounds_count_shared_prefixes_in_engine_blocks() {
        // Second request shares one block of two; third shares both but
        // is exactly two blocks long (its last token is computed).
        let trace = [req(1024, &[1, 2]), req(1024, &[1, 3]), req(1024, &[1, 2])];
        let b = bounds(&trace, 100 * TRACE_BLOCK, 64);
        let expected = (512.0 + 960.0) / 3072.0;
        assert!((b.infinite - expected).abs() < 1e-9, "{b:?}");
        assert_eq!(b.infinite, b.practical);
        // A cache of two blocks: by the third request block 2 is gone.
        let small = bounds(&trace, 2 * TRACE_BLOCK, 64);
        assert!(
            (small.practical - 1024.0 / 3072.0).abs() < 1e-9,
            "{small:?}"
        );
    }
}

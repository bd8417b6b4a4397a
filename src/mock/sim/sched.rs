//! The simulated engine's continuous-batching scheduler, after vLLM's: each
//! step first gives every running sequence its next tokens (one for a
//! decode, a chunk for a prefill in progress), then admits waiting
//! sequences first come first served while the step's token budget, the
//! running limit and the cache's free blocks (above the watermark) allow.
//! A sequence's prompt blocks already cached are not computed again. When
//! a decode needs a block and none is free, the newest running sequence is
//! preempted: its blocks are freed and it waits at the head of the queue to
//! be computed again (vLLM's recompute). Sans-IO: the caller runs a step,
//! waits its duration, then delivers its outputs.

use std::collections::VecDeque;
use std::sync::Arc;

use super::cache::{prompt_hashes, KvCache};
use super::physics::{Physics, Work};

/// The scheduler's knobs, with vLLM's names.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConfig {
    /// `block_size`: tokens per KV block.
    pub block_size: usize,
    /// `num_gpu_blocks`: KV blocks in all.
    pub num_gpu_blocks: usize,
    /// `max_num_seqs`: sequences running at once.
    pub max_num_seqs: usize,
    /// `max_num_batched_tokens`: tokens one step computes.
    pub max_num_batched_tokens: usize,
    /// `enable_prefix_caching`.
    pub enable_prefix_caching: bool,
    /// `enable_chunked_prefill`: a prompt may be computed over several steps.
    pub enable_chunked_prefill: bool,
    /// Fraction of blocks kept free when admitting (vLLM's 1%).
    pub watermark: f64,
}

impl Default for SchedConfig {
    /// 6,200 blocks of 64 tokens (about 397,000 tokens: what an 80 GB GPU
    /// at 90% memory holds beside Llama-3.1-8B's weights and activations,
    /// at 128 KiB a token), 256 sequences, 8,192 tokens a step.
    fn default() -> Self {
        SchedConfig {
            block_size: 64,
            num_gpu_blocks: 6_200,
            max_num_seqs: 256,
            max_num_batched_tokens: 8_192,
            enable_prefix_caching: true,
            enable_chunked_prefill: true,
            watermark: 0.01,
        }
    }
}

/// What a step did for one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A token was generated (the `n`th, from 1); `cached` prompt tokens
    /// were found in the cache when the sequence was admitted.
    Token {
        /// The sequence.
        id: u64,
        /// Tokens generated so far, this one included.
        n: u32,
        /// Prompt tokens served from the cache.
        cached: u32,
    },
    /// The sequence has generated all it asked for and left.
    Finished {
        /// The sequence.
        id: u64,
    },
}

#[derive(Debug)]
struct Seq {
    id: u64,
    prompt: Arc<[u32]>,
    hashes: Vec<u64>,
    max_new: u32,
    generated: u32,
    /// Tokens whose KV is computed (or was found cached).
    computed: usize,
    /// Prompt tokens found cached at first admission (reported).
    cached: Option<u32>,
    blocks: Vec<u32>,
}

impl Seq {
    fn context(&self) -> usize {
        self.prompt.len() + self.generated as usize
    }

    fn remaining(&self) -> usize {
        self.context() - self.computed
    }
}

/// The scheduler's state.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedConfig,
    physics: Physics,
    cache: KvCache,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
}

/// A step's duration and what it produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Simulated seconds (before any speed-up).
    pub seconds: f64,
    /// Tokens and completions, in order.
    pub outputs: Vec<Output>,
    /// Prompt tokens computed this step.
    pub prefill_tokens: usize,
}

impl Scheduler {
    /// An idle engine.
    pub fn new(config: SchedConfig, physics: Physics) -> Self {
        let cache = KvCache::new(
            config.num_gpu_blocks,
            config.block_size,
            config.enable_prefix_caching,
        );
        Scheduler {
            config,
            physics,
            cache,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// The cache, for its events and counts.
    pub fn cache(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// The knobs.
    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// Queues a request of `prompt` generating `max_new` tokens (at least 1).
    pub fn add(&mut self, id: u64, prompt: Arc<[u32]>, max_new: u32) {
        let hashes = prompt_hashes(&prompt, self.config.block_size);
        self.waiting.push_back(Seq {
            id,
            prompt,
            hashes,
            max_new: max_new.max(1),
            generated: 0,
            computed: 0,
            cached: None,
            blocks: Vec::new(),
        });
    }

    /// Drops a request wherever it is; whether it was there.
    pub fn abort(&mut self, id: u64) -> bool {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let seq = self.running.remove(i);
            self.cache.release(&seq.blocks);
            return true;
        }
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i);
            return true;
        }
        false
    }

    /// Sequences running and waiting.
    pub fn counts(&self) -> (usize, usize) {
        (self.running.len(), self.waiting.len())
    }

    /// Whether any work is left.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Queued prefill work: prompt tokens of waiting sequences not found in
    /// the cache now, plus those of running sequences still being computed
    /// in chunks (a long prompt holds the step's budget until it is done).
    pub fn waiting_uncached_tokens(&self) -> usize {
        let waiting: usize = self
            .waiting
            .iter()
            .map(|s| {
                let hit = self.cache.hits(&s.hashes) * self.config.block_size;
                s.context().saturating_sub(hit.max(s.computed))
            })
            .sum();
        let chunking: usize = self
            .running
            .iter()
            .filter(|s| s.computed < s.prompt.len())
            .map(|s| s.prompt.len() - s.computed)
            .sum();
        waiting + chunking
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.block_size)
    }

    /// Plans and applies one step.
    pub fn step(&mut self) -> Step {
        let mut budget = self.config.max_num_batched_tokens;
        let mut work: Vec<(usize, usize)> = Vec::new(); // (running index, tokens)
                                                        // Running sequences, oldest first; preempt the newest when a block
                                                        // is short.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &self.running[i];
            let n = seq.remaining().min(budget);
            let need = self
                .blocks_for(seq.computed + n)
                .saturating_sub(seq.blocks.len());
            match self.cache.allocate(need) {
                Some(blocks) => {
                    self.running[i].blocks.extend(blocks);
                    work.push((i, n));
                    budget -= n;
                    i += 1;
                }
                None => {
                    let Some(mut victim) = self.running.pop() else {
                        break;
                    };
                    self.cache.release(&victim.blocks);
                    victim.blocks.clear();
                    victim.computed = 0;
                    self.waiting.push_front(victim);
                    // Retry `i` (unless it was the one preempted).
                }
            }
        }
        self.admit(&mut budget, &mut work);
        self.run(work)
    }

    /// Admits waiting sequences while budget, seats and blocks allow.
    fn admit(&mut self, budget: &mut usize, work: &mut Vec<(usize, usize)>) {
        let watermark = (self.config.watermark * self.cache.capacity() as f64).ceil() as usize;
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(seq) = self.waiting.front() else {
                break;
            };
            let bs = self.config.block_size;
            // Always compute at least the last prompt token.
            let hits = self.cache.hits(&seq.hashes).min((seq.context() - 1) / bs);
            let start = hits * bs;
            let remaining = seq.context() - start;
            let n = remaining.min(*budget);
            if n < remaining && !self.config.enable_chunked_prefill && !work.is_empty() {
                break;
            }
            let new = self.blocks_for(start + n) - hits;
            let taken_free = self.cache.free_hits(&seq.hashes, hits);
            if self.cache.free_blocks() < new + taken_free + watermark {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            let mut blocks = self.cache.take_cached(&seq.hashes, hits);
            match self.cache.allocate(new) {
                Some(more) => blocks.extend(more),
                None => {
                    self.cache.release(&blocks);
                    self.waiting.push_front(seq);
                    break;
                }
            }
            seq.blocks = blocks;
            seq.computed = start;
            seq.cached.get_or_insert(start as u32);
            self.running.push(seq);
            work.push((self.running.len() - 1, n));
            *budget -= n;
        }
    }

    /// Computes the planned tokens: caches the prompt blocks they fill,
    /// generates a token for each sequence whose context is complete and
    /// lets finished ones go.
    fn run(&mut self, work: Vec<(usize, usize)>) -> Step {
        let mut step = Step::default();
        let shape: Vec<Work> = work
            .iter()
            .map(|&(i, n)| Work {
                tokens: n,
                context: self.running[i].computed,
            })
            .collect();
        step.seconds = self.physics.step_seconds(&shape);
        let bs = self.config.block_size;
        let mut finished = Vec::new();
        for (i, n) in work {
            let seq = &mut self.running[i];
            let before = seq.computed;
            seq.computed += n;
            if before < seq.prompt.len() {
                step.prefill_tokens += n.min(seq.prompt.len() - before);
            }
            // Prompt blocks this step filled.
            let full = (seq.computed.min(seq.prompt.len())) / bs;
            for b in before / bs..full.min(seq.hashes.len()) {
                let parent = b.checked_sub(1).map(|p| seq.hashes[p]);
                let tokens = &seq.prompt[b * bs..(b + 1) * bs];
                self.cache
                    .commit(seq.blocks[b], seq.hashes[b], parent, tokens);
            }
            if seq.computed == seq.context() {
                seq.generated += 1;
                step.outputs.push(Output::Token {
                    id: seq.id,
                    n: seq.generated,
                    cached: seq.cached.unwrap_or(0),
                });
                if seq.generated >= seq.max_new {
                    finished.push(seq.id);
                }
            }
        }
        for id in finished {
            if let Some(i) = self.running.iter().position(|s| s.id == id) {
                let seq = self.running.remove(i);
                self.cache.release(&seq.blocks);
            }
            step.outputs.push(Output::Finished { id });
        }
        step
    }
}

#[cfg(test)]
mod tests;

//! How long a scheduler step takes: a roofline model of one GPU running one
//! dense transformer. A step runs every scheduled token through the model
//! once: its compute is the weights' multiply-adds per token (2 FLOPs per
//! parameter) plus attention over each token's context (4·layers·hidden
//! FLOPs per pair of token and context position, causal within a chunk);
//! its memory traffic is the weights once plus the KV cache of every
//! scheduled sequence's context. The step takes the larger of the two at
//! the stated efficiencies, plus a fixed overhead (scheduling, launches,
//! sampling).
//!
//! Defaults: Llama-3.1-8B (bf16; 8.03 B parameters, 32 layers, hidden 4096,
//! 8 KV heads of 128: 128 KiB of KV per token; from the model's published
//! `config.json`) on one H100 SXM 80 GB (989 TFLOPS dense bf16, 3.35 TB/s
//! HBM3; NVIDIA's H100 datasheet), at 50% of peak compute and 80% of peak
//! bandwidth, 1 ms overhead. That gives about 27,000 prefill tokens/s in a
//! full 8,192-token step, 0.47 s for a whole 12,000-token prompt and about 7 ms a
//! decode step at small batch, near what vLLM and SGLang report for this
//! model and GPU.

/// The model and GPU a step's duration is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Physics {
    /// Model parameters.
    pub params: f64,
    /// Transformer layers.
    pub layers: f64,
    /// Hidden size.
    pub hidden: f64,
    /// Bytes of KV cache per token (all layers, K and V).
    pub kv_bytes_per_token: f64,
    /// Bytes of weights read per step.
    pub weight_bytes: f64,
    /// Peak dense FLOP/s.
    pub peak_flops: f64,
    /// Peak memory bandwidth, bytes/s.
    pub peak_bandwidth: f64,
    /// Fraction of peak compute reached.
    pub compute_efficiency: f64,
    /// Fraction of peak bandwidth reached.
    pub bandwidth_efficiency: f64,
    /// Seconds each step costs beyond compute and memory.
    pub overhead: f64,
}

impl Default for Physics {
    fn default() -> Self {
        Physics {
            params: 8.03e9,
            layers: 32.0,
            hidden: 4096.0,
            kv_bytes_per_token: (2 * 32 * 8 * 128 * 2) as f64,
            weight_bytes: 16.06e9,
            peak_flops: 989e12,
            peak_bandwidth: 3.35e12,
            compute_efficiency: 0.5,
            bandwidth_efficiency: 0.8,
            overhead: 1e-3,
        }
    }
}

/// One sequence's share of a step: `tokens` computed after `context`
/// tokens already in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Tokens computed this step (1 for a decode).
    pub tokens: usize,
    /// Tokens before them (cached or computed in earlier steps).
    pub context: usize,
}

impl Physics {
    /// Seconds one step running `work` takes (0 for no work).
    pub fn step_seconds(&self, work: &[Work]) -> f64 {
        if work.is_empty() {
            return 0.0;
        }
        let mut flops = 0.0;
        let mut kv_tokens = 0.0;
        for w in work {
            let n = w.tokens as f64;
            let c = w.context as f64;
            flops += 2.0 * self.params * n;
            // Each new token attends to the context and, causally, to the
            // new tokens before it.
            flops += 4.0 * self.layers * self.hidden * n * (c + n / 2.0);
            kv_tokens += c + n;
        }
        let compute = flops / (self.peak_flops * self.compute_efficiency);
        let memory = (self.weight_bytes + self.kv_bytes_per_token * kv_tokens)
            / (self.peak_bandwidth * self.bandwidth_efficiency);
        self.overhead + compute.max(memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_give_the_documented_figures() {
        let p = Physics::default();
        // A whole 12,000-token prompt: about 0.47 s.
        let long = p.step_seconds(&[Work {
            tokens: 12_000,
            context: 0,
        }]);
        assert!((0.44..0.50).contains(&long), "{long}");
        // A full 8,192-token step: about 27,000 tokens/s.
        let short = 8192.0
            / p.step_seconds(&[Work {
                tokens: 8192,
                context: 0,
            }]);
        assert!((25_000.0..29_000.0).contains(&short), "{short}");
        // A decode step of one short sequence: about 7 ms.
        let decode = p.step_seconds(&[Work {
            tokens: 1,
            context: 500,
        }]);
        assert!((0.006..0.008).contains(&decode), "{decode}");
        // Cached context makes a chunk dearer, not free.
        let after = p.step_seconds(&[Work {
            tokens: 512,
            context: 8_000,
        }]);
        let fresh = p.step_seconds(&[Work {
            tokens: 512,
            context: 0,
        }]);
        assert!(after > fresh);
        assert_eq!(p.step_seconds(&[]), 0.0);
    }
}

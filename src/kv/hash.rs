//! The router's own chained hash of a KV block's token ids: a block's hash
//! covers its parent's, so equal hashes mean equal prefixes, and prompts
//! match blocks without knowing any engine's hash function. Four
//! independent multiply lanes over pairs of tokens, folded with a
//! SplitMix64 finaliser: a 12,000-token prompt hashes in a few
//! microseconds. Not for adversaries: a collision costs one routing
//! choice, never a wrong answer.

/// The parent of a chain's first block.
pub const ROOT: u64 = 0x243F_6A88_85A3_08D3;

const K: [u64; 4] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x85EB_CA77_C2B2_AE63,
];

fn finish(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The hash of a block of `tokens` after the block hashed `parent`.
pub fn block(parent: u64, tokens: &[u32]) -> u64 {
    let mut lanes = [parent, parent ^ K[1], parent ^ K[2], parent ^ K[3]];
    let mut chunks = tokens.chunks_exact(8);
    for c in &mut chunks {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let word = u64::from(c[2 * l]) | (u64::from(c[2 * l + 1]) << 32);
            *lane = (*lane ^ word).wrapping_mul(K[l]).rotate_left(29);
        }
    }
    let mut tail = parent;
    for &t in chunks.remainder() {
        tail = (tail ^ u64::from(t)).wrapping_mul(K[0]).rotate_left(31);
    }
    let folded = lanes[0]
        .wrapping_add(lanes[1].rotate_left(17))
        .wrapping_add(lanes[2].rotate_left(34))
        .wrapping_add(lanes[3].rotate_left(51))
        ^ tail
        ^ (tokens.len() as u64).wrapping_mul(K[3]);
    finish(folded)
}

/// The chained hashes of `tokens`' full blocks of `size`, into `out`.
pub fn chain(tokens: &[u32], size: usize, out: &mut Vec<u64>) {
    out.clear();
    if size == 0 {
        return;
    }
    let mut parent = ROOT;
    for b in tokens.chunks_exact(size) {
        parent = block(parent, b);
        out.push(parent);
    }
}

/// A `HashMap` hasher for keys that are already these hashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(K[0]);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`Prehashed`] hashers.
pub type BuildPrehashed = std::hash::BuildHasherDefault<Prehashed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_covers_the_tokens_their_order_and_the_parent() {
        let a: Vec<u32> = (0..64).collect();
        let mut b = a.clone();
        b.swap(3, 4);
        assert_ne!(block(ROOT, &a), block(ROOT, &b));
        assert_ne!(block(ROOT, &a), block(1, &a));
        assert_ne!(block(ROOT, &a[..63]), block(ROOT, &a));
        assert_eq!(block(ROOT, &a), block(ROOT, &a.clone()));
        let mut out = Vec::new();
        chain(&(0..200).collect::<Vec<u32>>(), 64, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], block(ROOT, &a));
        assert_eq!(out[1], block(out[0], &(64..128).collect::<Vec<u32>>()));
    }
}

//! Token ids of long stretches of text that prompts repeat: a system prompt,
//! the tools' schemas rendered into it. An agent sends the same ones on
//! every call, and tokenizing them was most of what a tool offered added to
//! a chat request. Text between two added (special) tokens is tokenized on
//! its own, whatever surrounds it, so its ids can be kept and reused
//! exactly.
//!
//! A stretch is kept the second time it is seen (one that comes once, a
//! user's message, never displaces those that repeat), up to
//! [`MAX_BYTES`] of kept text; past that the cache starts again empty.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Stretches shorter than this are tokenized every time (cheaper than a
/// lookup's hashing and locking would save).
pub(crate) const MIN_BYTES: usize = 256;

/// The most text kept, summed over the stretches.
const MAX_BYTES: usize = 4 << 20;

/// Stretches seen once, remembered by hash, before the set starts again.
const MAX_SEEN: usize = 16_384;

/// The cache (one per tokenizer).
#[derive(Debug, Default)]
pub(crate) struct Segments {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<u64>,
    kept: HashMap<u64, (Box<str>, Arc<[u32]>)>,
    bytes: usize,
}

fn hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl Segments {
    /// `text`'s ids: kept ones, or `encode`'s (kept if seen before).
    pub(crate) fn get_or_encode<E>(
        &self,
        text: &str,
        encode: impl FnOnce(&str) -> Result<Vec<u32>, E>,
    ) -> Result<Arc<[u32]>, E> {
        let key = hash(text);
        {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((kept, ids)) = inner.kept.get(&key) {
                if **kept == *text {
                    return Ok(ids.clone());
                }
            }
        }
        let ids: Arc<[u32]> = encode(text)?.into();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.seen.remove(&key) {
            if inner.bytes + text.len() > MAX_BYTES {
                inner.kept.clear();
                inner.bytes = 0;
            }
            inner.bytes += text.len();
            inner.kept.insert(key, (text.into(), ids.clone()));
        } else {
            if inner.seen.len() >= MAX_SEEN {
                inner.seen.clear();
            }
            inner.seen.insert(key);
        }
        Ok(ids)
    }

    /// Stretches kept, and their bytes.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.kept.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_stretch_is_kept_the_second_time_and_served_the_third() {
        let cache = Segments::default();
        let calls = Cell::new(0);
        let encode = |t: &str| -> Result<Vec<u32>, ()> {
            calls.set(calls.get() + 1);
            Ok(t.bytes().map(u32::from).collect())
        };
        let text = "x".repeat(300);
        for _ in 0..3 {
            let ids = cache.get_or_encode(&text, encode).unwrap();
            assert_eq!(ids.len(), 300);
        }
        assert_eq!(calls.get(), 2, "encoded on the first two sightings only");
        assert_eq!(cache.kept(), (1, 300));
        // Another stretch seen once displaces nothing.
        cache.get_or_encode(&"y".repeat(300), encode).unwrap();
        assert_eq!(cache.kept(), (1, 300));
    }

    #[test]
    fn kept_text_is_bounded() {
        let cache = Segments::default();
        let big = 1 << 20;
        for i in 0..10u8 {
            let text = String::from_utf8(vec![b'a' + i; big]).unwrap();
            for _ in 0..2 {
                cache
                    .get_or_encode(&text, |_| Ok::<_, ()>(vec![u32::from(i)]))
                    .unwrap();
            }
            assert!(cache.kept().1 <= MAX_BYTES);
        }
    }
}

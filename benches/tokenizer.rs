//! The router's text work per chat request: rendering the chat template,
//! tokenizing a 1 KiB prompt, and detokenizing 64 output tokens
//! incrementally, with the sample byte-level BPE tokenizer
//! (`switchyard::tokenizer::sample`, trained in-process: a small vocabulary,
//! so more tokens per KiB than a production tokenizer's), with the router's
//! allocator (jemalloc).
//!
//! Run with: `cargo bench --bench tokenizer` (it also tokenizes the prompt
//! with the `tokenizers` crate alone, for comparison with the router's fast
//! path). To measure a production tokenizer instead of the sample, point
//! `SWITCHYARD_BENCH_TOKENIZER` at its directory (`tokenizer.json` and
//! `tokenizer_config.json` in the Hugging Face format); docs/BENCHMARKS.md
//! says where the Llama 3 one measured there comes from.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, OnceLock};

use switchyard::tokenizer::{sample, ChatMessage, Detokenizer, ModelTokenizer};

// The router's allocator (src/main.rs): tokenizing allocates much.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    divan::main();
}

/// The tokenizer measured, as the router loads it, and the same
/// `tokenizer.json` as the `tokenizers` crate alone loads it.
fn tokenizers() -> &'static (Arc<ModelTokenizer>, tokenizers::Tokenizer) {
    static T: OnceLock<(Arc<ModelTokenizer>, tokenizers::Tokenizer)> = OnceLock::new();
    T.get_or_init(|| {
        let load = |dir: &std::path::Path| {
            (
                Arc::new(ModelTokenizer::load(dir).unwrap()),
                tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap(),
            )
        };
        if let Some(path) = std::env::var_os("SWITCHYARD_BENCH_TOKENIZER") {
            return load(path.as_ref());
        }
        let dir = tempfile::tempdir().unwrap();
        sample::write_sample(dir.path()).unwrap();
        load(dir.path())
    })
}

fn tokenizer() -> Arc<ModelTokenizer> {
    tokenizers().0.clone()
}

/// 1 KiB of English-like text with a few multi-byte characters.
fn prompt() -> String {
    let mut p = String::new();
    let mut i = 0;
    while p.len() < 1024 {
        p += sample::SAMPLE_TEXT[i % sample::SAMPLE_TEXT.len()];
        p.push(' ');
        i += 1;
    }
    p.truncate(
        p.char_indices()
            .take_while(|(at, _)| *at < 1024)
            .last()
            .map_or(0, |(at, c)| at + c.len_utf8()),
    );
    p
}

#[divan::bench]
fn tokenize_1kib_prompt(b: divan::Bencher) {
    let (t, p) = (tokenizer(), prompt());
    b.bench(|| t.encode(divan::black_box(&p), false).unwrap());
}

/// The same prompt the way the router tokenized it before its fast path
/// for byte-level BPE tokenizers: the `tokenizers` crate's `encode_fast`.
#[divan::bench]
fn tokenize_1kib_prompt_with_the_crate_alone(b: divan::Bencher) {
    let (t, p) = (&tokenizers().1, prompt());
    b.bench(|| t.encode_fast(divan::black_box(p.as_str()), false).unwrap());
}

#[divan::bench]
fn chat_template_1kib(b: divan::Bencher) {
    let t = tokenizer();
    let messages = vec![
        ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
            ..Default::default()
        },
        ChatMessage {
            role: "user".into(),
            content: prompt(),
            ..Default::default()
        },
    ];
    b.bench(|| {
        t.apply_chat_template("m", divan::black_box(&messages), true)
            .unwrap()
    });
}

#[divan::bench]
fn detokenize_64_tokens_incrementally(b: divan::Bencher) {
    let t = tokenizer();
    let ids: Vec<u32> = t
        .encode(&prompt(), false)
        .unwrap()
        .into_iter()
        .take(64)
        .collect();
    b.bench(|| {
        let mut d = Detokenizer::new(t.clone(), true);
        let mut n = 0;
        for id in &ids {
            n += d.push(std::slice::from_ref(id)).unwrap().len();
        }
        n + d.finish().unwrap().len()
    });
}

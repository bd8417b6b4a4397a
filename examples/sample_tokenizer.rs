//! Writes the sample tokenizer (a byte-level BPE trained in-process, with a
//! ChatML template; `switchyard::tokenizer::sample`) to a directory, for
//! demos and benchmarks without network.
//!
//! Run with: `cargo run --release --example sample_tokenizer -- DIR`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: sample_tokenizer DIR");
    switchyard::tokenizer::sample::write_sample(std::path::Path::new(&dir)).expect("write");
    println!("sample tokenizer written to {dir}");
}

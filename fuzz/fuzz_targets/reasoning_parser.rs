//! The reasoning parsers: any text, in any format, after a prompt that
//! opens the thought or not, split anywhere, splits without a panic into the
//! same thought and answer as the whole text; harmony's (gpt-oss) into the
//! same thought, answer and calls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::reasoning::harmony::{self, HarmonyParser};
use switchyard::reasoning::{Piece, ReasoningFormat, ReasoningParser};

/// The thought and the answer joined from a response's pieces.
fn joined(format: ReasoningFormat, prompt: &str, parts: &[&str]) -> (String, String) {
    let mut parser = ReasoningParser::new(format, prompt);
    let (mut thought, mut answer) = (String::new(), String::new());
    let pieces = parts
        .iter()
        .flat_map(|p| parser.push(p))
        .collect::<Vec<_>>()
        .into_iter()
        .chain(parser.finish());
    for piece in pieces {
        match piece {
            Piece::Reasoning(r) => thought.push_str(&r),
            Piece::Text(t) => answer.push_str(&t),
        }
    }
    (thought, answer)
}

/// Harmony's pieces, in order, joined where neighbours are of one kind.
fn harmony_joined(tools: bool, parts: &[&str]) -> Vec<harmony::Piece> {
    let mut parser = HarmonyParser::new(tools);
    let mut out: Vec<harmony::Piece> = Vec::new();
    let pieces = parts
        .iter()
        .flat_map(|p| parser.push(p))
        .collect::<Vec<_>>()
        .into_iter()
        .chain(parser.finish());
    for piece in pieces {
        use harmony::Piece as H;
        match (out.last_mut(), piece) {
            (Some(H::Reasoning(a)), H::Reasoning(b)) | (Some(H::Text(a)), H::Text(b)) => {
                a.push_str(&b)
            }
            (Some(H::Args { index: i, text: a }), H::Args { index, text: b }) if *i == index => {
                a.push_str(&b)
            }
            (_, piece) => out.push(piece),
        }
    }
    out
}

fuzz_target!(|input: (u8, u8, &str, Vec<u16>)| {
    let (format, prompt, text, cuts) = input;
    let format = ReasoningFormat::ALL[usize::from(format) % ReasoningFormat::ALL.len()];
    let prompt = ["", "<think>\n", "<think></think>", "◁think▷"][usize::from(prompt) % 4];
    let whole = joined(format, prompt, &[text]);
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (text.len() + 1))
        .filter(|&c| text.is_char_boundary(c))
        .collect();
    bounds.sort_unstable();
    let mut parts = Vec::new();
    let mut last = 0;
    for b in bounds.into_iter().chain([text.len()]) {
        parts.push(&text[last..b]);
        last = b;
    }
    assert_eq!(joined(format, prompt, &parts), whole, "split {parts:?}");
    let tools = prompt.len() % 2 == 0;
    assert_eq!(
        harmony_joined(tools, &parts),
        harmony_joined(tools, &[text]),
        "harmony split {parts:?}"
    );
});

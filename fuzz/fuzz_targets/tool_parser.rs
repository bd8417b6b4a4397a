//! The tool-call parsers: any text, in any format (and as the output of a
//! constrained `tool_choice`), split anywhere, parses without a panic to the
//! same content and calls as the whole text; every call's pieces arrive in
//! order (its start before its arguments).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::tools::{Piece, ToolFormat, ToolParser};

/// Content and calls (name, arguments) joined from a response's pieces.
fn joined(format: usize, parts: &[&str]) -> (String, Vec<(String, String)>) {
    let mut parser = match ToolFormat::ALL.get(format) {
        Some(f) => ToolParser::new(*f),
        None if format == ToolFormat::ALL.len() => ToolParser::array(),
        None => ToolParser::named("f"),
    };
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let pieces = parts
        .iter()
        .flat_map(|p| parser.push(p))
        .collect::<Vec<_>>()
        .into_iter()
        .chain(parser.finish());
    for piece in pieces {
        match piece {
            Piece::Text(t) => text.push_str(&t),
            Piece::Call { index, name } => {
                assert_eq!(index, calls.len(), "calls numbered in order");
                calls.push((name, String::new()));
            }
            Piece::Args { index, text } => calls[index].1.push_str(&text),
            // No call after all: its text is content.
            Piece::Void { index, text: t } => {
                calls[index].0.clear();
                text.push_str(&t);
            }
        }
    }
    calls.retain(|(name, _)| !name.is_empty());
    (text, calls)
}

fuzz_target!(|input: (u8, &str, Vec<u16>)| {
    let (format, text, cuts) = input;
    // The formats, then `required`'s array and a named function.
    let format = usize::from(format) % (ToolFormat::ALL.len() + 2);
    let whole = joined(format, &[text]);
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
    assert_eq!(joined(format, &parts), whole, "split {parts:?}");
});

//! A faster way through the `tokenizers` crate's own pieces for byte-level
//! BPE tokenizers (GPT-2's, Llama 3's, Qwen's and most others since), with
//! the same token ids.
//!
//! Such a tokenizer splits text into pieces with a regular expression that
//! ends in `\s+(?!\S)|\s+` (a run of spaces before a word leaves its last
//! space to the word). That look-ahead makes `tokenizers` run the whole
//! expression on `fancy-regex`'s backtracking engine, and its normalized
//! strings track an alignment per byte through each step: together most of
//! the time of tokenizing a prompt. Here the pieces are found by
//! `regex-automata` with the look-ahead done by hand (a run of whitespace
//! longer than one character, followed by a character that is not
//! whitespace, gives up its last character), each piece is mapped to the
//! byte-level alphabet with a table, and the crate's BPE model (with its
//! cache) turns it into ids. Added and special tokens are found by the
//! crate's own added vocabulary, and anything the post-processor, the
//! truncation or the padding would do is done by the crate.
//!
//! [`FastEncoder::for_tokenizer`] takes a tokenizer only when it is of that
//! shape: no normalizer, a BPE model without dropout, and a pre-tokenizer
//! that is `ByteLevel` (its own regex, no prefix space) or a `Split` of such
//! a regex (isolated, not inverted) followed by `ByteLevel` without its
//! regex. Any other tokenizer goes the crate's usual way.

use regex_automata::meta::Regex;

use super::segments::{self, Segments};
use regex_automata::{Anchored, Input};
use tokenizers::{
    Encoding, Model, ModelWrapper, NormalizerWrapper, OffsetReferential, OffsetType,
    PostProcessorWrapper, Tokenizer,
};

/// The look-ahead ending the byte-level pre-tokenizers' expressions.
const LOOKAHEAD_TAIL: &str = r"|\s+(?!\S)|\s+";

/// GPT-2's expression, which `ByteLevel` uses when `use_regex` is set.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The fast path for one tokenizer (see the module's documentation).
pub(crate) struct FastEncoder {
    /// Pattern 0: the expression before its look-ahead tail; pattern 1:
    /// `\s+`, whose match gives up its last character before a
    /// non-whitespace character.
    pieces: Regex,
    /// The byte-level alphabet: the character standing for each byte.
    bytes: [char; 256],
    /// Ids of long stretches between added tokens that prompts repeat.
    segments: Segments,
    /// Whether a call that adds special tokens must go through the
    /// post-processor (it adds some), and any call (truncation, padding).
    post_process_special: bool,
    post_process_always: bool,
}

impl FastEncoder {
    /// The fast path for `tokenizer`, if it has the shape this handles.
    pub(crate) fn for_tokenizer(tokenizer: &Tokenizer) -> Option<FastEncoder> {
        if tokenizer.get_normalizer().is_some() {
            return None;
        }
        match tokenizer.get_model() {
            ModelWrapper::BPE(bpe) if bpe.dropout.is_none() => {}
            _ => return None,
        }
        let pattern =
            byte_level_pattern(&serde_json::to_value(tokenizer.get_pre_tokenizer()?).ok()?)?;
        let head = pattern.strip_suffix(LOOKAHEAD_TAIL)?;
        // Every match must be at least one character, and the expression
        // must not look around (those are what the search below does not
        // reproduce).
        let hir = regex_automata::util::syntax::parse(head).ok()?;
        if hir.properties().minimum_len().unwrap_or(0) == 0
            || !hir.properties().look_set().is_empty()
        {
            return None;
        }
        let pieces = Regex::new_many(&[head, r"\s+"]).ok()?;
        Some(FastEncoder {
            pieces,
            segments: Segments::default(),
            bytes: byte_alphabet(),
            post_process_special: !matches!(
                tokenizer.get_post_processor(),
                None | Some(PostProcessorWrapper::ByteLevel(_))
            ),
            post_process_always: tokenizer.get_truncation().is_some()
                || tokenizer.get_padding().is_some(),
        })
    }

    /// The ids of `text`, as `tokenizer.encode_fast(text, special)` gives
    /// them.
    pub(crate) fn encode(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        special: bool,
    ) -> tokenizers::Result<Vec<u32>> {
        let split = tokenizer
            .get_added_vocabulary()
            .extract_and_normalize(None::<&NormalizerWrapper>, text);
        let model = tokenizer.get_model();
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut word = String::new();
        for (part, _, tokens) in split.get_splits(OffsetReferential::Original, OffsetType::None) {
            if let Some(tokens) = tokens {
                // An added token.
                ids.extend(tokens.iter().map(|t| t.id));
                continue;
            }
            if part.len() >= segments::MIN_BYTES {
                // Text between added tokens is tokenized on its own:
                // a stretch that prompts repeat is kept.
                let kept = self.segments.get_or_encode(part, |part| {
                    let mut out = Vec::with_capacity(part.len() / 3);
                    self.encode_part(model, part, &mut word, &mut out)?;
                    Ok::<_, tokenizers::Error>(out)
                })?;
                ids.extend_from_slice(&kept);
                continue;
            }
            self.encode_part(model, part, &mut word, &mut ids)?;
        }
        if self.post_process_always || (special && self.post_process_special) {
            return self.post_process(tokenizer, ids, special);
        }
        Ok(ids)
    }

    /// The ids of `part`, text with no added token in it, appended to `ids`
    /// (`word`: a buffer).
    fn encode_part(
        &self,
        model: &ModelWrapper,
        part: &str,
        word: &mut String,
        ids: &mut Vec<u32>,
    ) -> tokenizers::Result<()> {
        let mut at = 0;
        while at < part.len() {
            let (start, end) = self.next_piece(part, at);
            word.clear();
            word.extend(part[start..end].bytes().map(|b| self.bytes[b as usize]));
            ids.extend(model.tokenize(word)?.into_iter().map(|t| t.id));
            at = end;
        }
        Ok(())
    }

    /// The piece of `text` that starts at `at`: the next match, or the text
    /// before it when the expression skipped some.
    fn next_piece(&self, text: &str, at: usize) -> (usize, usize) {
        // Almost always a piece starts where the last one ended: an anchored
        // search finds it without searching backwards for its start.
        let input = Input::new(text).range(at..);
        let found = match self.pieces.search(&input.clone().anchored(Anchored::Yes)) {
            Some(found) => found,
            None => match self.pieces.search(&input) {
                Some(found) => found,
                None => return (at, text.len()),
            },
        };
        if found.start() > at {
            return (at, found.start());
        }
        let mut end = found.end();
        // `\s+(?!\S)`: before a non-whitespace character, a run of more
        // than one whitespace character leaves its last one to what follows.
        if found.pattern().as_usize() == 1
            && text[end..]
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace())
        {
            if let Some(last) = text[..end].chars().next_back() {
                if end - last.len_utf8() > found.start() {
                    end -= last.len_utf8();
                }
            }
        }
        (found.start(), end)
    }

    /// What the post-processor, truncation and padding make of `ids`.
    fn post_process(
        &self,
        tokenizer: &Tokenizer,
        ids: Vec<u32>,
        special: bool,
    ) -> tokenizers::Result<Vec<u32>> {
        let n = ids.len();
        let encoding = Encoding::new(
            ids,
            vec![0; n],
            vec![String::new(); n],
            vec![None; n],
            vec![(0, 0); n],
            vec![0; n],
            vec![1; n],
            Vec::new(),
            Default::default(),
        );
        Ok(tokenizer
            .post_process(encoding, None, special)?
            .get_ids()
            .to_vec())
    }
}

/// The splitting expression of a byte-level pre-tokenizer (serialized), if
/// it is one this handles.
fn byte_level_pattern(pre: &serde_json::Value) -> Option<String> {
    let byte_level = |v: &serde_json::Value, use_regex: bool| {
        v["type"] == "ByteLevel" && v["add_prefix_space"] == false && v["use_regex"] == use_regex
    };
    if byte_level(pre, true) {
        return Some(GPT2_PATTERN.to_string());
    }
    match pre["pretokenizers"].as_array()?.as_slice() {
        [split, last]
            if split["type"] == "Split"
                && split["behavior"] == "Isolated"
                && split["invert"] == false
                && byte_level(last, false) =>
        {
            split["pattern"]["Regex"].as_str().map(String::from)
        }
        _ => None,
    }
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the
/// others for the characters from U+0100 on, in order.
fn byte_alphabet() -> [char; 256] {
    let printable = |b: u32| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut out = ['\0'; 256];
    let mut next = 0x100;
    for (b, slot) in (0u32..).zip(out.iter_mut()) {
        *slot = if printable(b) {
            char::from_u32(b)
        } else {
            next += 1;
            char::from_u32(next - 1)
        }
        .unwrap_or('\0');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

    use super::*;

    /// Llama 3's expression (Qwen's differs only in `\p{N}` for
    /// `\p{N}{1,3}`).
    const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// Llama 3's pre-tokenizer shape: a `Split` by `pattern`, then
    /// `ByteLevel` without its own regex.
    fn split_then_byte_level(pattern: &str) -> PreTokenizerWrapper {
        PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Split(
                Split::new(
                    SplitPattern::Regex(pattern.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap(),
            ),
            PreTokenizerWrapper::ByteLevel(
                ByteLevel::default()
                    .add_prefix_space(false)
                    .use_regex(false),
            ),
        ]))
    }

    /// The sample tokenizer (GPT-2's shape), and the same vocabulary in
    /// Llama 3's shape: a `Split` before `ByteLevel`, and a post-processor
    /// that begins a sequence with a special token.
    fn tokenizers() -> &'static [Tokenizer; 2] {
        static T: std::sync::OnceLock<[Tokenizer; 2]> = std::sync::OnceLock::new();
        T.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            crate::tokenizer::sample::write_sample(dir.path()).unwrap();
            let gpt2 = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
            let mut llama = gpt2.clone();
            llama.with_pre_tokenizer(Some(split_then_byte_level(LLAMA3_PATTERN)));
            let start = llama.token_to_id("<|im_start|>").unwrap();
            llama.with_post_processor(Some(
                TemplateProcessing::builder()
                    .try_single("<|im_start|> $A")
                    .unwrap()
                    .special_tokens(vec![("<|im_start|>", start)])
                    .build()
                    .unwrap(),
            ));
            [gpt2, llama]
        })
    }

    fn same_ids(text: &str) {
        for (tokenizer, name) in tokenizers().iter().zip(["GPT-2", "Llama 3"]) {
            let fast = FastEncoder::for_tokenizer(tokenizer).expect(name);
            for special in [false, true] {
                let want = tokenizer.encode_fast(text, special).unwrap();
                let got = fast.encode(tokenizer, text, special).unwrap();
                assert_eq!(got, want.get_ids(), "{name}, special {special}: {text:?}");
            }
        }
    }

    /// A long stretch between special tokens that prompts repeat (a system
    /// prompt with tools) is kept after its second sighting: every prompt
    /// still gets the crate's ids, around it and in it.
    #[test]
    fn a_repeated_long_stretch_gets_the_crate_ids_when_kept() {
        let system = "You may call these functions:\n{\"name\": \"get_weather\", \"parameters\": \
                      {\"city\": {\"type\": \"string\"}}}\n "
            .repeat(6);
        for (tokenizer, name) in tokenizers().iter().zip(["GPT-2", "Llama 3"]) {
            let fast = FastEncoder::for_tokenizer(tokenizer).expect(name);
            for i in 0..4 {
                let text = format!(
                    "<|im_start|>system\n{system}<|im_end|><|im_start|>user\nquestion {i}<|im_end|>{system}"
                );
                let want = tokenizer.encode_fast(text.as_str(), false).unwrap();
                let got = fast.encode(tokenizer, &text, false).unwrap();
                assert_eq!(got, want.get_ids(), "{name}, prompt {i}");
            }
            // `system\n…` and the bare copy after the last special token.
            assert_eq!(fast.segments.kept().0, 2, "{name}: both stretches kept");
        }
    }

    #[test]
    fn runs_of_whitespace_numbers_contractions_and_special_tokens_split_as_the_crate_splits() {
        for text in [
            "",
            " ",
            "Hello, world! The router sends each request to a worker.",
            "  two spaces   three\n\n  newline then spaces \r\n\t tab",
            "x\u{a0}\u{a0}y \u{3000}z \u{2028} end   ",
            "1234567 it's THEY'LL don'T",
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            "日本語のテキスト 🚂🚃 e\u{301} -_-",
        ] {
            same_ids(text);
        }
    }

    #[test]
    fn the_crate_decides_for_the_tokenizers_this_does_not_handle() {
        let [gpt2, _] = tokenizers();
        let mut prefixed = gpt2.clone();
        prefixed.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(
            ByteLevel::default().add_prefix_space(true),
        )));
        assert!(FastEncoder::for_tokenizer(&prefixed).is_none());
        let mut other = gpt2.clone();
        other.with_pre_tokenizer(Some(split_then_byte_level(r"\w+(?=\s)|\s+(?!\S)|\s+")));
        assert!(FastEncoder::for_tokenizer(&other).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_gets_the_ids_the_crate_gives(parts in prop::collection::vec(prop::sample::select(vec![
            " ", "  ", "\n", "\r\n", "\t", "\u{a0}", "\u{3000}", "\u{2028}", "a", "Z", "é", "語",
            "1", "23", "٣", "'", "'s", "'LL", "!", "...", "🚂", "\u{301}", "-", "word",
            "<|im_start|>", "<|im_end|>",
        ]), 0..16)) {
            same_ids(&parts.concat());
        }
    }
}

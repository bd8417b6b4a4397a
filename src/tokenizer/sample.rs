//! A small real tokenizer for tests, demos and benchmarks: a byte-level BPE
//! trained here on a few sentences (with multi-byte characters), with a
//! ChatML chat template, written as a Hugging Face tokenizer directory.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, PreTokenizerWrapper};

use super::TokenizerError;

/// The sentences the sample tokenizer is trained on.
pub const SAMPLE_TEXT: &[&str] = &[
    "Hello, world! The router sends each request to a worker.",
    "Switchyard routes requests for large language models.",
    "A prefill worker and a decode worker share a bootstrap room.",
    "Café, naïve, jalapeño: accents are bytes too.",
    "日本語のテキストもトークンになります。",
    "Emoji travel in four bytes: 🚂🚃🚃 and 👍.",
    "The quick brown fox jumps over the lazy dog.",
];

/// A ChatML template, as many models ship.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Trains the sample tokenizer and writes `tokenizer.json` and
/// `tokenizer_config.json` (with the ChatML template) into `dir`.
pub fn write_sample(dir: &Path) -> Result<(), TokenizerError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| TokenizerError::Failed(e.to_string());
    let mut tokenizer = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(
        ByteLevel::default().add_prefix_space(false),
    )));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainer::builder()
            .vocab_size(600)
            .min_frequency(1)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![
                AddedToken::from("<|endoftext|>", true),
                AddedToken::from("<|im_start|>", true),
                AddedToken::from("<|im_end|>", true),
            ])
            .build(),
    );
    tokenizer
        .train(&mut trainer, SAMPLE_TEXT.iter().map(|s| s.to_string()))
        .map_err(failed)?;
    std::fs::create_dir_all(dir).map_err(|e| TokenizerError::Failed(e.to_string()))?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(failed)?;
    let config = serde_json::json!({
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "chat_template": CHATML_TEMPLATE,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string())
        .map_err(|e| TokenizerError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::{ChatMessage, Detokenizer, ModelTokenizer};
    use super::*;

    fn sample() -> Arc<ModelTokenizer> {
        let dir = tempfile::tempdir().unwrap();
        write_sample(dir.path()).unwrap();
        Arc::new(ModelTokenizer::load(dir.path()).unwrap())
    }

    #[test]
    fn round_trips_text_with_multibyte_characters() {
        let t = sample();
        for text in SAMPLE_TEXT {
            let ids = t.encode(text, false).unwrap();
            assert_eq!(&t.decode(&ids, true).unwrap(), text);
        }
    }

    #[test]
    fn renders_the_chat_template() {
        let t = sample();
        let prompt = t
            .apply_chat_template(
                "m",
                &[
                    ChatMessage {
                        role: "system".into(),
                        content: " Be brief. ".into(),
                        ..Default::default()
                    },
                    ChatMessage {
                        role: "user".into(),
                        content: "Hello".into(),
                        ..Default::default()
                    },
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
        // Special tokens in the rendered prompt are single tokens.
        let ids = t.encode(&prompt, false).unwrap();
        let start = t.encode("<|im_start|>", false).unwrap();
        assert_eq!(start.len(), 1);
        assert_eq!(ids[0], start[0]);
    }

    #[test]
    fn the_requests_template_variables_reach_the_template_and_replace_nothing() {
        let mut t = Arc::into_inner(sample()).unwrap();
        t.template = Some(
            "{{ messages | length }} {{ enable_thinking }} {{ reasoning_effort }}{% if add_generation_prompt %} +{% endif %}".into(),
        );
        let user = ChatMessage {
            role: "user".into(),
            content: "Hi".into(),
            ..Default::default()
        };
        let extra = serde_json::json!({
            "enable_thinking": false,
            "reasoning_effort": "low",
            "messages": [1, 2, 3],
            "add_generation_prompt": false,
        });
        let prompt = t
            .apply_chat_template_with("m", &[user], None, extra.as_object().unwrap(), true)
            .unwrap();
        // Booleans print as Python prints them, as in Jinja.
        assert_eq!(prompt, "1 False low +");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Streaming any token sequence in any chunking gives the text of
        /// the whole sequence.
        #[test]
        fn incremental_detokenization_equals_whole(
            picks in prop::collection::vec(0usize..10_000, 0..60),
            cuts in prop::collection::vec(1usize..5, 0..60),
        ) {
            let t = sample_shared();
            let vocab = t.inner.get_vocab_size(true) as u32;
            let ids: Vec<u32> = picks.iter().map(|p| *p as u32 % vocab).collect();
            for skip in [false, true] {
                let whole = t.decode(&ids, skip).unwrap();
                let mut d = Detokenizer::new(t.clone(), skip);
                let mut streamed = String::new();
                let mut at = 0;
                let mut cut = cuts.iter().cycle();
                while at < ids.len() {
                    let n = (*cut.next().unwrap_or(&1)).min(ids.len() - at);
                    let piece = d.push(&ids[at..at + n]).unwrap();
                    // Nothing is emitted before its character is whole.
                    let unfinished = piece.ends_with('\u{FFFD}') && !whole.contains('\u{FFFD}');
                    prop_assert!(!unfinished, "an unfinished character emitted");
                    streamed += &piece;
                    at += n;
                }
                streamed += &d.finish().unwrap();
                prop_assert_eq!(streamed, whole);
            }
        }
    }

    fn sample_shared() -> Arc<ModelTokenizer> {
        static SAMPLE: std::sync::OnceLock<Arc<ModelTokenizer>> = std::sync::OnceLock::new();
        SAMPLE.get_or_init(sample).clone()
    }
}

//! Incremental detokenization: text for token ids as they stream in, each
//! piece emitted once it is final.
//!
//! Decoding token by token goes wrong two ways: a multi-byte character
//! split across tokens decodes as U+FFFD until its last byte arrives, and
//! decoders that depend on context (a leading space, a word-piece `##`)
//! decode a token differently alone than after its neighbours. So, as
//! Hugging Face's text-generation-inference and vLLM do, the text is the
//! decoding of a window that starts a few tokens back (`prefix`); what it
//! adds beyond the window's previous decoding is emitted, unless it ends
//! in U+FFFD (an unfinished character: wait for more).
//!
//! A byte-level decoder (GPT-2's alphabet) has no context: its text is the
//! tokens' bytes joined and read as UTF-8. For such a tokenizer each
//! token's bytes are appended and every whole character is emitted, with
//! no decoding again.

use std::sync::Arc;

use super::{ModelTokenizer, TokenizerError};

/// Turns a stream of token ids into a stream of text pieces.
#[derive(Debug)]
pub struct Detokenizer {
    tokenizer: Arc<ModelTokenizer>,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// End of what has been emitted.
    read: usize,
    skip_special: bool,
    /// Byte-level decoding: the bytes of a character not yet whole.
    pending: Option<Vec<u8>>,
}

impl Detokenizer {
    /// A detokenizer with `tokenizer`; `skip_special` leaves special tokens
    /// out of the text.
    pub fn new(tokenizer: Arc<ModelTokenizer>, skip_special: bool) -> Self {
        Detokenizer {
            pending: tokenizer.decodes_byte_level().then(Vec::new),
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            skip_special,
        }
    }

    /// The text that `new_ids` completes (empty while a character is
    /// unfinished).
    pub fn push(&mut self, new_ids: &[u32]) -> Result<String, TokenizerError> {
        self.ids.extend_from_slice(new_ids);
        if let Some(pending) = &mut self.pending {
            // Byte-level: no context to decode again, only bytes to join.
            for &id in new_ids {
                self.tokenizer
                    .push_decoded_bytes(id, self.skip_special, pending);
            }
            return Ok(whole_characters(pending));
        }
        let before = self
            .tokenizer
            .decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let after = self
            .tokenizer
            .decode(&self.ids[self.prefix..], self.skip_special)?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            if let Some(delta) = after
                .get(before.len()..)
                .filter(|_| after.starts_with(&before))
            {
                let delta = delta.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                return Ok(delta);
            }
        }
        Ok(String::new())
    }

    /// What is left at the end of the stream (an unfinished character
    /// decodes as U+FFFD, as it would whole).
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        if let Some(pending) = &mut self.pending {
            let rest = String::from_utf8_lossy(pending).into_owned();
            pending.clear();
            return Ok(rest);
        }
        let before = self
            .tokenizer
            .decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let after = self
            .tokenizer
            .decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(match after.strip_prefix(&before) {
            Some(rest) => rest.to_string(),
            None => String::new(),
        })
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// The text of `bytes`' whole characters, taken out of it, as a lossy
/// reading of all of them would give it (an invalid sequence as U+FFFD);
/// an unfinished character at the end stays.
fn whole_characters(bytes: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut at = 0;
    loop {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(s) => {
                text.push_str(s);
                at = bytes.len();
                break;
            }
            Err(e) => {
                let valid = at + e.valid_up_to();
                // Valid by the check above.
                text.push_str(std::str::from_utf8(&bytes[at..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        text.push('\u{FFFD}');
                        at = valid + n;
                    }
                    None => {
                        at = valid;
                        break;
                    }
                }
            }
        }
    }
    bytes.drain(..at);
    text
}

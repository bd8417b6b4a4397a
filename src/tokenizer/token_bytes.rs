//! The bytes a token stands for, as OpenAI's log probabilities give them
//! (`bytes`): a character split over several tokens is whole again when
//! its tokens' bytes are joined, which their decoded texts (each with a
//! replacement character) cannot give.

use tokenizers::DecoderWrapper;

use super::ModelTokenizer;

/// The byte GPT-2's byte-level alphabet writes as `c`: printable bytes as
/// themselves, the other 68 as the code points from 256 on, in order.
fn byte_of(c: char) -> Option<u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let code = u32::from(c);
    if code < 256 {
        return printable(code).then_some(code as u8);
    }
    // The unprintable bytes, in order: 0..=32, 127..=160, 173.
    match code - 256 {
        n @ 0..=32 => Some(n as u8),
        n @ 33..=66 => Some((n - 33 + 127) as u8),
        67 => Some(173),
        _ => None,
    }
}

impl ModelTokenizer {
    /// Whether decoding is byte-level (GPT-2's alphabet): the text of ids
    /// is then the bytes of their tokens, joined, read as UTF-8.
    pub(crate) fn decodes_byte_level(&self) -> bool {
        matches!(self.inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)))
    }

    /// Appends the bytes of token `id` as a byte-level decoder gives them
    /// (nothing for an unknown id, or a special token when `skip_special`):
    /// its symbols mapped back to bytes, or its text's bytes when one of
    /// them is not a byte's symbol.
    pub(crate) fn push_decoded_bytes(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) {
        let Some(token) = self.inner.id_to_token(id) else {
            return;
        };
        if skip_special && self.inner.get_added_vocabulary().is_special_token(&token) {
            return;
        }
        let start = out.len();
        for c in token.chars() {
            match byte_of(c) {
                Some(b) => out.push(b),
                None => {
                    out.truncate(start);
                    out.extend_from_slice(token.as_bytes());
                    return;
                }
            }
        }
    }

    /// The bytes token `id` stands for: a byte-level BPE token's symbols
    /// mapped back to their bytes (Llama 3, Qwen, GPT-2-style tokenizers),
    /// a SentencePiece byte token `<0xHH>` as its byte, `▁` as a space;
    /// otherwise (special tokens among them) its text's bytes.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(token) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        if let Some(byte) = token
            .strip_prefix("<0x")
            .and_then(|t| t.strip_suffix('>'))
            .filter(|t| t.len() == 2)
            .and_then(|t| u8::from_str_radix(t, 16).ok())
        {
            return vec![byte];
        }
        let byte_level = matches!(self.inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        if byte_level && !self.inner.get_added_vocabulary().is_special_token(&token) {
            if let Some(bytes) = token.chars().map(byte_of).collect::<Option<Vec<u8>>>() {
                return bytes;
            }
        }
        token.replace('▁', " ").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_alphabet_maps_back() {
        assert_eq!(byte_of('a'), Some(b'a'));
        assert_eq!(byte_of('Ġ'), Some(b' '));
        assert_eq!(byte_of('Ċ'), Some(b'\n'));
        assert_eq!(byte_of('ÿ'), Some(0xff));
        assert_eq!(byte_of('\u{143}'), Some(0xad));
        assert_eq!(byte_of('\u{144}'), None);
    }

    #[test]
    fn a_character_split_over_tokens_is_whole_in_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        super::super::sample::write_sample(dir.path()).unwrap();
        let tok = ModelTokenizer::load(dir.path()).unwrap();
        let text = "Hello, 日本語 🚂 café";
        let ids = tok.encode(text, false).unwrap();
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), text);
    }
}

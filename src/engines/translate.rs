//! The engine-neutral pieces of translating `switchyard.v1` calls into an
//! engine's protocol: the prompt ([`Input`]), sampling ([`Sampling`]) and
//! why a call cannot be translated ([`TranslateError`]). Each engine's
//! file encodes its own `GenerateRequest` from them and decodes its
//! responses (the seam); the router's front does the rest
//! (`routers::translate`: tokenizing, detokenizing, stop strings). The field
//! mapping is the table in the README ("SGLang, vLLM, TensorRT-LLM and MLX workers").

use crate::worker::Engine;

/// Why a `switchyard.v1` request cannot go to an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The engine takes token ids only; the model's text needs a tokenizer
    /// the router does not have.
    #[error("model {model:?} is served by {engine} workers, which take token ids: send `token_ids`, or give the router the model's tokenizer ({reason})")]
    NeedsTokenizer {
        /// The model.
        model: String,
        /// Its workers' engine.
        engine: Engine,
        /// Why there is no tokenizer.
        reason: String,
    },
    /// Tokenizing failed.
    #[error("cannot tokenize the prompt for model {model:?}: {reason}")]
    Tokenize {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// A field the engine's protocol has no place for.
    #[error("sampling_params.{field} is not supported by {engine}'s gRPC protocol; leave it unset for this model")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// The engine.
        engine: Engine,
    },
    /// A value out of the engine's range.
    #[error("sampling_params.{field} = {value} is out of {engine}'s range ({range})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The engine.
        engine: Engine,
        /// What fits.
        range: &'static str,
    },
    /// The message does not decode.
    #[error("the message is not a valid switchyard.v1.GenerateRequest: {0}")]
    Invalid(String),
}

/// A prompt for an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Token ids (every engine).
    TokenIds(Vec<u32>),
    /// Text (engines whose seam `takes_text`).
    Text(String),
}

/// Sampling parameters, `None` for the engine's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k; −1 is off.
    pub top_k: Option<i32>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Stop strings (the router applies them too, on the text).
    pub stop: Vec<String>,
    /// Random seed.
    pub seed: Option<u64>,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
    /// The router cuts the text at the stop strings itself (it has the
    /// model's tokenizer): an engine that cannot stop on strings may leave
    /// them to it.
    pub router_stops: bool,
    /// Smallest probability, relative to the likeliest token's.
    pub min_p: Option<f32>,
    /// OpenAI's frequency penalty (−2 to 2).
    pub frequency_penalty: Option<f32>,
    /// OpenAI's presence penalty (−2 to 2).
    pub presence_penalty: Option<f32>,
    /// Repetition penalty (1 is off).
    pub repetition_penalty: Option<f32>,
    /// Fewest tokens to generate before a stop counts.
    pub min_tokens: Option<u32>,
    /// Token ids that stop generation.
    pub stop_token_ids: Vec<u32>,
    /// Go on past the end-of-sequence token.
    pub ignore_eos: bool,
    /// Bias added to these tokens' logits.
    pub logit_bias: Vec<(u32, f32)>,
    /// What the output must match, enforced by the engine.
    pub constraint: Option<Constraint>,
    /// Return each generated token's log probability and this many most
    /// likely alternatives at its position.
    pub logprobs: Option<u32>,
}

/// A constraint on the output the engine enforces while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema (its JSON text).
    JsonSchema(String),
    /// Text matching this regular expression.
    Regex(String),
    /// Text in this EBNF grammar.
    Grammar(String),
    /// Free text until a trigger, then calls held to their frames and
    /// their arguments to their schemas (an xgrammar structural tag, as
    /// JSON: strict tools in the model's own call format).
    StructuralTag(String),
}

/// `logit_bias` keyed by `i32` token id, as vLLM's and MLX's protocols take
/// it.
pub(crate) fn logit_bias(
    sampling: &Sampling,
    engine: Engine,
) -> Result<std::collections::HashMap<i32, f32>, TranslateError> {
    sampling
        .logit_bias
        .iter()
        .map(|(id, bias)| {
            i32::try_from(*id)
                .map(|id| (id, *bias))
                .map_err(|_| TranslateError::OutOfRange {
                    field: "logit_bias",
                    value: id.to_string(),
                    engine,
                    range: "token ids 0 to 2147483647",
                })
        })
        .collect()
}

//! Why a model has no usable tokenizer, or a text could not be
//! (de)tokenized.

use std::path::PathBuf;

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `tokenizer.json` is not a tokenizer the `tokenizers` crate loads.
    #[error("{path} is not a Hugging Face tokenizer: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Encoding or decoding failed.
    #[error("tokenizer failed: {0}")]
    Failed(String),
    /// The model has no chat template.
    #[error("model {0:?} has no chat template (tokenizer_config.json's chat_template, or chat_template.jinja)")]
    NoChatTemplate(String),
    /// The chat template did not render.
    #[error("the chat template failed: {0}")]
    Template(String),
    /// No tokenizer is configured for the model.
    #[error("no tokenizer for model {0:?}: start the router with --tokenizer {0}=PATH (a Hugging Face tokenizer directory)")]
    Missing(String),
    /// The model's tokenizer is being fetched from a worker.
    #[error("the tokenizer of model {model:?} is being fetched from its worker {url} (GetTokenizer); retry shortly")]
    Fetching {
        /// The model.
        model: String,
        /// The worker asked.
        url: String,
    },
    /// The model's tokenizer failed to load at startup.
    #[error("the tokenizer of model {model:?} could not be loaded: {reason}")]
    NotLoaded {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
}

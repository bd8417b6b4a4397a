//! Tokenizers for models whose workers take token ids (SGLang's gRPC mode):
//! the router tokenizes text prompts, renders chat templates and
//! detokenizes the engine's token ids incrementally, so the engine's GPU
//! loop does none of it.
//!
//! A model's tokenizer is a Hugging Face tokenizer directory (or its
//! `tokenizer.json` alone): `tokenizer.json` through the `tokenizers`
//! crate; `tokenizer_config.json` for the chat template and the special
//! tokens the template names; `chat_template.jinja`, when present, wins
//! over the config's template. Templates render with `minijinja` and its
//! Python-compatible methods (`.strip()`, `.startswith()`, ...), as
//! Hugging Face's Jinja templates expect.
//!
//! [`Tokenizers`] holds one per model, loaded once and shared: at startup
//! (`--tokenizer MODEL=PATH`), or fetched from the model's first SGLang or
//! vLLM worker (`fetch`). A model whose tokenizer failed to load keeps the
//! reason, which text requests for it are refused with.

mod detokenizer;
mod error;
mod fast;
pub mod fetch;
pub mod sample;
mod segments;
mod token_bytes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::engines::{self, Method};
use crate::worker::{
    ConnectionMode, RegistryListener, Worker, WorkerEvent, WorkerEventKind, WorkerRegistry,
};

use serde::Serialize;

pub use detokenizer::Detokenizer;
pub use error::TokenizerError;

/// One chat message, as templates see it (Hugging Face's shape: an
/// assistant's `tool_calls` with their arguments as objects, a tool
/// message's `tool_call_id` and `name`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// An assistant message's tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool message's call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A tool message's function name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's reasoning (templates that show earlier
    /// thoughts read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// A model's tokenizer and chat template.
pub struct ModelTokenizer {
    inner: tokenizers::Tokenizer,
    /// The quicker way to the same ids, for byte-level BPE tokenizers.
    fast: Option<fast::FastEncoder>,
    template: Option<String>,
    /// The template compiled, once, on first use (or why it does not
    /// compile).
    compiled: std::sync::OnceLock<Result<minijinja::Environment<'static>, String>>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("chat_template", &self.template.is_some())
            .field("fast_path", &self.fast.is_some())
            .finish()
    }
}

fn read(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|e| TokenizerError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A special token in `tokenizer_config.json`: a string, or an object
/// with `content`.
fn token_text(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl ModelTokenizer {
    /// Loads a tokenizer directory, or a `tokenizer.json` file alone.
    pub fn load(path: &Path) -> Result<ModelTokenizer, TokenizerError> {
        let (dir, file) = if path.is_dir() {
            (path.to_path_buf(), path.join("tokenizer.json"))
        } else {
            (
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
                path.to_path_buf(),
            )
        };
        let json = read(&file)?;
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| {
            TokenizerError::Invalid {
                path: file.clone(),
                reason: e.to_string(),
            }
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() {
            serde_json::from_str(&read(&config_path)?).map_err(|e| TokenizerError::Invalid {
                path: config_path.clone(),
                reason: e.to_string(),
            })?
        } else {
            serde_json::Value::Null
        };
        let template_file = dir.join("chat_template.jinja");
        let template = if template_file.exists() {
            Some(read(&template_file)?)
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(t)) => Some(t.clone()),
                // A list of named templates: the default one.
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(String::from),
                _ => None,
            }
        };
        Ok(ModelTokenizer {
            fast: fast::FastEncoder::for_tokenizer(&inner),
            inner,
            template,
            compiled: std::sync::OnceLock::new(),
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
        })
    }

    /// Token ids of `text`; `special` adds the tokenizer's special tokens
    /// (BOS and the like) as its post-processor says.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        match &self.fast {
            Some(fast) => fast.encode(&self.inner, text, special),
            None => self
                .inner
                .encode_fast(text, special)
                .map(|e| e.get_ids().to_vec()),
        }
        .map_err(|e| TokenizerError::Failed(e.to_string()))
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Failed(e.to_string()))
    }

    /// Whether the model has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// Renders `messages` with the model's chat template (`model` names it
    /// in errors), ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn apply_chat_template(
        &self,
        model: &str,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.apply_chat_template_with_tools(model, messages, None, add_generation_prompt)
    }

    /// [`apply_chat_template_with_tools`](Self::apply_chat_template_with_tools)
    /// with more variables for the template (a request's
    /// `chat_template_kwargs`, such as `enable_thinking`, and its
    /// `reasoning_effort`); they do not replace the messages, the tools or
    /// the special tokens.
    pub fn apply_chat_template_with(
        &self,
        model: &str,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        extra: &serde_json::Map<String, serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render(model, messages, tools, extra, add_generation_prompt)
    }

    /// [`apply_chat_template`](Self::apply_chat_template) with the tools the
    /// model may call (OpenAI's `tools`, as Hugging Face templates take
    /// them: `{"type": "function", "function": {...}}`).
    pub fn apply_chat_template_with_tools(
        &self,
        model: &str,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render(
            model,
            messages,
            tools,
            &serde_json::Map::new(),
            add_generation_prompt,
        )
    }

    fn render(
        &self,
        model: &str,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        extra: &serde_json::Map<String, serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self
            .template
            .as_deref()
            .ok_or_else(|| TokenizerError::NoChatTemplate(model.to_string()))?;
        let env = self
            .compiled
            .get_or_init(|| compile(template.to_string()))
            .as_ref()
            .map_err(|e| TokenizerError::Template(e.clone()))?;
        let rendered = env
            .get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                    tools => tools.map(|t| minijinja::Value::from(minijinja::value::Serde(t))),
                    add_generation_prompt => add_generation_prompt,
                    bos_token => self.bos_token.as_str(),
                    eos_token => self.eos_token.as_str(),
                    ..minijinja::Value::from(minijinja::value::Serde(extra))
                })
            })
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        Ok(rendered)
    }
}

/// A chat template compiled into its own environment (Python-compatible
/// methods, `raise_exception`), as `chat`.
fn compile(template: String) -> Result<minijinja::Environment<'static>, String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    env.add_template_owned("chat", template)
        .map_err(|e| e.to_string())?;
    Ok(env)
}

/// The tokenizers of the models the router tokenizes for: those given at
/// startup, and, for SGLang and vLLM models without one, the tokenizer
/// fetched from the first of their workers to be added (`GetTokenizer`; a
/// failed fetch is retried when another worker of the model is added).
#[derive(Debug)]
pub struct Tokenizers {
    entries: std::sync::RwLock<HashMap<String, Entry>>,
    /// Itself, for the fetch tasks its registry events start.
    me: Weak<Tokenizers>,
}

#[derive(Debug, Clone)]
enum Entry {
    /// Given at startup: loaded, or why not.
    Configured(Result<Arc<ModelTokenizer>, String>),
    /// Fetched from a worker.
    Fetched(Arc<ModelTokenizer>),
    /// Being fetched from this worker.
    Fetching(String),
    /// The last fetch failed, saying why.
    FetchFailed(String),
}

impl Tokenizers {
    /// Loads `(model, path)` pairs. A tokenizer that fails to load is
    /// remembered with the reason (and logged); its model's text requests
    /// are refused with it, token-id requests keep working.
    pub fn load(paths: &[(String, PathBuf)]) -> Arc<Tokenizers> {
        let entries = paths
            .iter()
            .map(|(model, path)| {
                let result = ModelTokenizer::load(path).map(Arc::new).map_err(|e| {
                    tracing::error!(model, error = %e, "cannot load the tokenizer");
                    e.to_string()
                });
                if result.is_ok() {
                    tracing::info!(model, path = %path.display(), "tokenizer loaded");
                }
                (model.clone(), Entry::Configured(result))
            })
            .collect();
        Arc::new_cyclic(|me| Tokenizers {
            entries: std::sync::RwLock::new(entries),
            me: me.clone(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The tokenizer of `model`, or why there is none.
    pub fn get(&self, model: &str) -> Result<Arc<ModelTokenizer>, TokenizerError> {
        match self.read().get(model) {
            Some(Entry::Configured(Ok(t)) | Entry::Fetched(t)) => Ok(t.clone()),
            Some(Entry::Configured(Err(reason))) | Some(Entry::FetchFailed(reason)) => {
                Err(TokenizerError::NotLoaded {
                    model: model.to_string(),
                    reason: reason.clone(),
                })
            }
            Some(Entry::Fetching(url)) => Err(TokenizerError::Fetching {
                model: model.to_string(),
                url: url.clone(),
            }),
            None => Err(TokenizerError::Missing(model.to_string())),
        }
    }

    /// Starts fetching `worker`'s tokenizer for its model if the model has
    /// none yet (nor one being fetched).
    fn fetch_from(self: &Arc<Self>, worker: &Arc<Worker>) {
        if worker.mode() != ConnectionMode::Grpc
            || engines::seam(worker.engine())
                .path(Method::GetTokenizer)
                .is_none()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let model = worker.model().to_string();
        {
            let mut entries = self.write();
            match entries.get(&model) {
                None | Some(Entry::FetchFailed(_)) => {}
                Some(_) => return,
            }
            entries.insert(model.clone(), Entry::Fetching(worker.url().to_string()));
        }
        let (this, worker) = (self.clone(), worker.clone());
        runtime.spawn(async move {
            let dir = std::env::temp_dir()
                .join("switchyard-tokenizers")
                .join(format!("{:016x}", rand::random::<u64>()));
            let loaded = match fetch::fetch(&worker, &dir).await {
                Ok(dir) => ModelTokenizer::load(&dir),
                Err(e) => Err(e),
            };
            // Loaded into memory (or failed): the files are not needed.
            let _ = std::fs::remove_dir_all(&dir);
            let entry = match loaded {
                Ok(t) => {
                    tracing::info!(model, worker = %worker.id(), "tokenizer fetched from the worker");
                    Entry::Fetched(Arc::new(t))
                }
                Err(e) => {
                    tracing::warn!(model, worker = %worker.id(), error = %e, "cannot fetch the tokenizer");
                    Entry::FetchFailed(format!(
                        "fetching it from {} failed: {e}; give the router --tokenizer {model}=PATH",
                        worker.url()
                    ))
                }
            };
            this.write().insert(model, entry);
        });
    }

    /// Fetches tokenizers for the workers `registry` has and gets from now
    /// on (models given one at startup keep theirs).
    pub fn follow(self: &Arc<Self>, registry: &WorkerRegistry) {
        let listener: Weak<dyn RegistryListener> =
            Arc::downgrade(&(self.clone() as Arc<dyn RegistryListener>));
        for worker in registry.subscribe(listener) {
            self.fetch_from(&worker);
        }
    }
}

/// Hears of added workers, to fetch their models' tokenizers.
impl RegistryListener for Tokenizers {
    fn on_event(&self, event: &WorkerEvent) {
        if event.kind == WorkerEventKind::Added {
            if let Some(this) = self.me.upgrade() {
                this.fetch_from(&event.worker);
            }
        }
    }
}

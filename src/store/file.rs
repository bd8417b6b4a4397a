//! `--state-file`: one router's runtime workers, kept across restarts.
//!
//! The file is JSON (`{"version": 1, "workers": [...]}`, each worker a
//! [`StoredWorker`]) and is rewritten whole on every change: written to a
//! temporary file beside it, synced, renamed over it, and the directory
//! synced, so a crash leaves the old file or the new one, never a mix. A
//! missing file is an empty one (the first start); a file that cannot be
//! read or parsed stops startup with its path and the problem, so a bad
//! file is never taken for an empty registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::record::{StoreError, StoredWorker};
use crate::worker::{RegistryError, Source, Worker, WorkerId, WorkerRegistry, WorkerSpec};

/// The format this router writes and reads.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    version: u32,
    workers: Vec<StoredWorker>,
}

/// Why a state file could not be used at startup.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {problem}; fix or remove the file (removing it forgets the workers it lists)")]
pub struct StateFileError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A state file and the lock that orders its writes.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Held across a registry change and the write that records it, so the
    /// file always follows the registry's order of changes.
    writing: tokio::sync::Mutex<()>,
}

impl StateFile {
    /// The state file at `path` (not read yet).
    pub fn new(path: PathBuf) -> Self {
        StateFile {
            path,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The workers it lists (none if it does not exist yet).
    pub fn load(&self) -> Result<Vec<(WorkerId, WorkerSpec)>, StateFileError> {
        let fail = |problem: String| StateFileError {
            path: self.path.display().to_string(),
            problem,
        };
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        };
        let contents: Contents = serde_json::from_slice(&text)
            .map_err(|e| fail(format!("not a Switchyard state file ({e})")))?;
        if contents.version != VERSION {
            return Err(fail(format!(
                "format version {} is not {VERSION}, the one this router reads",
                contents.version
            )));
        }
        contents
            .workers
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let url = w.url.clone();
                w.into_spec()
                    .map_err(|e| fail(format!("worker {} ({url}): {e}", i + 1)))
            })
            .collect()
    }

    /// Registers the workers [`load`](Self::load) read, under their ids;
    /// a worker whose URL a startup worker now has is left to the startup
    /// worker.
    pub fn restore(
        &self,
        registry: &WorkerRegistry,
        saved: Vec<(WorkerId, WorkerSpec)>,
    ) -> Result<(), StateFileError> {
        let count = saved.len();
        for (id, spec) in saved {
            let url = spec.url().to_string();
            match registry.add_with_id(spec, id) {
                Ok(_) => {}
                Err(RegistryError::AlreadyExists { .. }) if registry.get_by_url(&url).is_ok() => {
                    tracing::warn!(url, state_file = %self.path.display(), "a saved worker is also a startup worker; the startup worker's settings win");
                }
                Err(e) => {
                    return Err(StateFileError {
                        path: self.path.display().to_string(),
                        problem: format!("saved worker {url} cannot be registered: {e}"),
                    })
                }
            }
        }
        if count > 0 {
            tracing::info!(workers = count, state_file = %self.path.display(), "restored the workers added at runtime");
        }
        Ok(())
    }

    /// Registers `spec` and records it; if the record cannot be written the
    /// worker is unregistered again and the call fails.
    pub(super) async fn add(
        &self,
        registry: &Arc<WorkerRegistry>,
        spec: WorkerSpec,
    ) -> Result<Arc<Worker>, StoreError> {
        let _writing = self.writing.lock().await;
        let worker = registry.add(spec)?;
        if let Err(e) = self.write(registry.list(), None).await {
            let _ = registry.remove(worker.id().as_str());
            return Err(self.unwritable(e, "added"));
        }
        Ok(worker)
    }

    /// Records the registry without `worker`, then unregisters it; if the
    /// record cannot be written the worker stays and the call fails.
    pub(super) async fn remove(
        &self,
        registry: &Arc<WorkerRegistry>,
        worker: &Arc<Worker>,
    ) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        // Still registered? (Another call may have removed it meanwhile.)
        registry.get(worker.id().as_str())?;
        if let Err(e) = self.write(registry.list(), Some(worker.id())).await {
            return Err(self.unwritable(e, "removed"));
        }
        registry.remove(worker.id().as_str())?;
        Ok(())
    }

    fn unwritable(&self, e: std::io::Error, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "cannot write the state file {}: {e}; the worker was not {what}",
            self.path.display()
        ))
    }

    /// Writes every runtime-added worker of `workers` except `without`.
    async fn write(
        &self,
        workers: Vec<Arc<Worker>>,
        without: Option<&WorkerId>,
    ) -> std::io::Result<()> {
        let contents = Contents {
            version: VERSION,
            workers: workers
                .iter()
                .filter(|w| w.spec().source == Source::Added && Some(w.id()) != without)
                .map(|w| StoredWorker::new(w.id(), w.spec()))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&contents).map_err(std::io::Error::other)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Replaces `path` with `bytes`: the old contents or the new, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename itself survives a crash once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

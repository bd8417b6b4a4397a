//! A model's tokenizer fetched from one of its workers, for models the
//! router was given no `--tokenizer` for: the engine's `GetTokenizer`
//! streams a zip of the tokenizer directory in chunks, the last carrying the
//! SHA-256 of the whole. The download is capped, the digest verified, and
//! the archive unpacked with caps on its size and file count, refusing any
//! entry whose path would leave the directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::HeaderMap;
use prost::Message;
use sha2::{Digest, Sha256};

use super::error::TokenizerError;
use crate::engines::{self, Method};
use crate::pb::smg::grpc::common as smg;
use crate::transport::grpc::codec::Deframer;
use crate::transport::grpc::metadata::{grpc_timeout, GRPC_TIMEOUT};
use crate::worker::Worker;

/// The most bytes a tokenizer download may have.
pub const MAX_DOWNLOAD: usize = 64 << 20;
/// The most bytes its files may unpack to.
pub const MAX_UNPACKED: u64 = 256 << 20;
/// The most files it may hold.
pub const MAX_FILES: usize = 64;

fn failed(reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Failed(reason.into())
}

/// Downloads `worker`'s tokenizer and unpacks it into `dir` (created):
/// the directory to load.
pub async fn fetch(worker: &Worker, dir: &Path) -> Result<PathBuf, TokenizerError> {
    let path = engines::seam(worker.engine())
        .path(Method::GetTokenizer)
        .ok_or_else(|| failed("the worker's protocol has no GetTokenizer"))?;
    let mut headers = HeaderMap::with_capacity(1);
    let timeout = std::time::Duration::from_secs(60);
    headers.insert(GRPC_TIMEOUT, grpc_timeout(timeout));
    let download = async {
        let (_, mut stream) = worker
            .control()
            .call(path, headers, &smg::GetTokenizerRequest {}.encode_to_vec())
            .await
            .map_err(|e| failed(format!("GetTokenizer on {}: {}", worker.url(), e.failure)))?;
        let mut frames = Deframer::default();
        let mut zip = Vec::new();
        let mut digest = None;
        while let Some(chunk) = stream
            .chunk()
            .await
            .map_err(|f| failed(format!("GetTokenizer on {}: {f}", worker.url())))?
        {
            frames.push(&chunk);
            while let Some(message) = frames
                .next_message()
                .map_err(|e| failed(format!("GetTokenizer: {e}")))?
            {
                let part = smg::GetTokenizerChunk::decode(message)
                    .map_err(|_| failed("GetTokenizer: a chunk is not a GetTokenizerChunk"))?;
                if zip.len() + part.data.len() > MAX_DOWNLOAD {
                    return Err(failed(format!(
                        "the tokenizer archive is over the {MAX_DOWNLOAD}-byte limit"
                    )));
                }
                zip.extend_from_slice(&part.data);
                if !part.sha256.is_empty() {
                    digest = Some(part.sha256);
                }
            }
        }
        Ok::<_, TokenizerError>((Bytes::from(zip), digest))
    };
    let (zip, digest) = tokio::time::timeout(timeout, download)
        .await
        .map_err(|_| {
            failed(format!(
                "GetTokenizer on {} took over {timeout:?}",
                worker.url()
            ))
        })??;
    let digest = digest.ok_or_else(|| failed("the tokenizer archive came without its SHA-256"))?;
    verify(&zip, &digest)?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || unpack(&zip, &dir).map(|()| dir))
        .await
        .map_err(|e| failed(e.to_string()))?
}

/// Checks `data` against a hex SHA-256.
pub fn verify(data: &[u8], expected: &str) -> Result<(), TokenizerError> {
    let got: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !got.eq_ignore_ascii_case(expected.trim()) {
        return Err(failed(format!(
            "the tokenizer archive's SHA-256 is {got}, the worker said {expected}"
        )));
    }
    Ok(())
}

/// Unpacks a zip archive into `dir`, within the caps; entries whose path
/// would leave `dir` (absolute, `..`) are refused, as are links.
pub fn unpack(data: &[u8], dir: &Path) -> Result<(), TokenizerError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(data))
        .map_err(|e| failed(format!("the tokenizer archive is not a zip: {e}")))?;
    if archive.len() > MAX_FILES {
        return Err(failed(format!(
            "the tokenizer archive has {} entries; the limit is {MAX_FILES}",
            archive.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| failed(format!("the tokenizer archive: {e}")))?;
        let name = entry
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| format!("#{i}"));
        let Some(relative) = entry.enclosed_name() else {
            return Err(failed(format!(
                "the tokenizer archive's entry {name:?} would leave its directory"
            )));
        };
        if entry.is_symlink() {
            return Err(failed(format!(
                "the tokenizer archive's entry {name:?} is a link"
            )));
        }
        let target = dir.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| failed(e.to_string()))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(e.to_string()))?;
        }
        // Read at most what is left of the cap (the declared size may lie).
        let mut contents = Vec::new();
        (&mut entry)
            .take(MAX_UNPACKED - total + 1)
            .read_to_end(&mut contents)
            .map_err(|e| failed(format!("the tokenizer archive's entry {name:?}: {e}")))?;
        total += contents.len() as u64;
        if total > MAX_UNPACKED {
            return Err(failed(format!(
                "the tokenizer archive unpacks to over {MAX_UNPACKED} bytes"
            )));
        }
        std::fs::write(&target, contents).map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

/// Zips the files of `dir` (not recursing), for a worker's `GetTokenizer`:
/// the archive and its hex SHA-256.
pub fn pack(dir: &Path) -> Result<(Vec<u8>, String), TokenizerError> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    let entries = std::fs::read_dir(dir).map_err(|e| failed(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| failed(e.to_string()))?;
        if !entry.path().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        out.start_file(name, options)
            .map_err(|e| failed(e.to_string()))?;
        let data = std::fs::read(entry.path()).map_err(|e| failed(e.to_string()))?;
        std::io::Write::write_all(&mut out, &data).map_err(|e| failed(e.to_string()))?;
    }
    let zip = out
        .finish()
        .map_err(|e| failed(e.to_string()))?
        .into_inner();
    let digest = Sha256::digest(&zip)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((zip, digest))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            out.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(data).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn packs_and_unpacks_a_tokenizer_directory() {
        let from = tempfile::tempdir().unwrap();
        super::super::sample::write_sample(from.path()).unwrap();
        let (zip, digest) = pack(from.path()).unwrap();
        verify(&zip, &digest).unwrap();
        let to = tempfile::tempdir().unwrap();
        unpack(&zip, to.path()).unwrap();
        super::super::ModelTokenizer::load(to.path()).unwrap();
    }

    #[test]
    fn refuses_escaping_paths_bad_digests_and_too_many_files() {
        let to = tempfile::tempdir().unwrap();
        for evil in ["../evil.json", "a/../../evil.json"] {
            let err = unpack(&archive(&[(evil, b"{}")]), &to.path().join("t")).unwrap_err();
            assert!(err.to_string().contains("would leave"), "{evil}: {err}");
        }
        assert!(!to.path().join("evil.json").exists());
        // An absolute name stays inside too (the root is dropped) or is
        // refused; either way nothing is written outside.
        let inside = to.path().join("abs");
        let _ = unpack(&archive(&[("/tmp/switchyard-evil.json", b"{}")]), &inside);
        assert!(!Path::new("/tmp/switchyard-evil.json").exists());
        let zip = archive(&[("tokenizer.json", b"{}")]);
        let err = verify(&zip, &"0".repeat(64)).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
        let names: Vec<String> = (0..=MAX_FILES).map(|i| format!("f{i}")).collect();
        let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let err = unpack(&archive(&many), to.path()).unwrap_err();
        assert!(err.to_string().contains("entries"), "{err}");
    }
}

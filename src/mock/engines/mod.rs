//! The mock as an engine's worker: one file per engine implementing that
//! engine's own gRPC service from the published definitions, over the one
//! mock core (`MockService`: pacing, failure knobs, `Abort`, the PD roles).
//! This file holds what every engine mode shares.

use tonic::Status;

use super::{MockConfig, MockService, SeenRequest};
use crate::pb;
use crate::pb::smg::grpc::common as smg;

pub(super) type Stream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// What every engine's `Generate` records about a call.
pub(super) fn seen(
    metadata: &tonic::metadata::MetadataMap,
    request_id: &str,
    token_ids: Vec<u32>,
    disaggregated: Option<pb::DisaggregatedParams>,
    kv_transfer_params: Option<String>,
) -> SeenRequest {
    SeenRequest {
        request_id: request_id.to_string(),
        model: String::new(),
        x_request_id: metadata
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        timeout: metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::transport::grpc::metadata::parse_grpc_timeout),
        unknown_fields: bytes::Bytes::new(),
        metadata: metadata
            .clone()
            .into_headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        disaggregated,
        token_ids,
        kv_transfer_params,
        sampling: None,
    }
}

impl MockService {
    /// Refuses calls while the engine is warming up, as engines do.
    pub(super) fn warm(&self) -> Result<(), Status> {
        if self.warming() {
            return Err(Status::unavailable(
                "mock engine is warming up: not serving yet",
            ));
        }
        Ok(())
    }

    pub(super) fn max_tokens(config: &MockConfig, requested: Option<u32>) -> u32 {
        match requested.filter(|n| *n > 0) {
            // A reply that ends by itself ends there, as at the model's end
            // of turn, however many tokens were allowed.
            Some(n) if config.reply_ends => n.min(config.tokens),
            Some(n) => n,
            None => config.tokens,
        }
    }

    /// Model facts, the same for both engines.
    pub(super) fn model_name(&self) -> String {
        self.config.load().model.clone()
    }

    pub(super) fn model_path(&self) -> String {
        let config = self.config.load();
        config
            .model_path
            .clone()
            .unwrap_or_else(|| format!("/models/{}", config.model))
    }

    /// `GetTokenizer`: the tokenizer directory (the model path, when it is
    /// one) zipped ([`tokenizer_chunks`]).
    pub(super) fn tokenizer_chunks(&self) -> Result<Stream<smg::GetTokenizerChunk>, Status> {
        let dir = std::path::PathBuf::from(self.model_path());
        if !dir.is_dir() {
            return Err(Status::unimplemented(
                "this mock has no tokenizer (start it with --tokenizer DIR)",
            ));
        }
        tokenizer_chunks(&dir)
    }

    pub(super) fn scheduler_load(&self) -> (i32, i32) {
        let running = i32::try_from(self.running().len()).unwrap_or(i32::MAX);
        let waiting = i32::try_from(self.config.load().reported_waiting).unwrap_or(i32::MAX);
        (running, waiting)
    }
}

/// `GetTokenizer`'s answer: `dir` zipped, in 16 KiB chunks, the last with
/// the SHA-256 (the mock engines' and the simulated engine's).
pub(crate) fn tokenizer_chunks(
    dir: &std::path::Path,
) -> Result<Stream<smg::GetTokenizerChunk>, Status> {
    let (zip, digest) =
        crate::tokenizer::fetch::pack(dir).map_err(|e| Status::internal(e.to_string()))?;
    let pieces: Vec<Vec<u8>> = zip.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let last = pieces.len().saturating_sub(1);
    let chunks: Vec<Result<smg::GetTokenizerChunk, Status>> = pieces
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            Ok(smg::GetTokenizerChunk {
                data,
                sha256: if i == last {
                    digest.clone()
                } else {
                    String::new()
                },
            })
        })
        .collect();
    Ok(Box::pin(tokio_stream::iter(chunks)))
}

mod mlx;
mod sglang;
mod trtllm;
mod vllm;

/// The log probabilities the mock reports for its token `i` when asked for
/// `top` alternatives: the token's own, −(i mod 4 + 1)/8, and alternatives
/// (the token first, then the ids after it) each one lower:
/// `(logprob, id, [(logprob, id)])`.
pub(super) fn mock_logprobs(id: u32, i: u32, top: u32) -> (f32, Vec<(f32, u32)>) {
    let own = -((i % 4) as f32 + 1.0) / 8.0;
    let alternatives = (0..top)
        .map(|k| (own - k as f32, id.wrapping_add(k)))
        .collect();
    (own, alternatives)
}

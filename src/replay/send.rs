//! Sending one replayed request and timing it: over SGLang's gRPC protocol
//! (to a router's gRPC listener or an engine), or as HTTP `POST /generate`
//! with `input_ids` and SSE (SGLang's native API, as another router serves
//! it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::pb::sglang_scheduler as sgl;

/// The response header (gRPC metadata) naming the worker that served a
/// call, as Switchyard's README documents it; the replay is a client and
/// reads it as one.
const WORKER_ID_HEADER: &str = "x-switchyard-worker-id";

/// How one request went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Scheduled arrival, seconds from the replay's start.
    pub at: f64,
    /// Time to the first token, seconds (absent when it failed first).
    pub ttft: Option<f64>,
    /// Whole request, seconds.
    pub e2e: Option<f64>,
    /// Prompt tokens.
    pub prompt: usize,
    /// Prompt tokens the engine served from its cache.
    pub cached: u64,
    /// Tokens received.
    pub output: u64,
    /// The worker that served it, when the router says
    /// (`x-switchyard-worker-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// Mean time between tokens after the first, seconds.
    pub fn itl(&self) -> Option<f64> {
        match (self.ttft, self.e2e) {
            (Some(t), Some(e)) if self.output > 1 => Some((e - t) / (self.output - 1) as f64),
            _ => None,
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// SGLang's `Generate` over gRPC, round-robin over the channels.
    Grpc(Vec<tonic::transport::Channel>),
    /// `POST {base}/generate`.
    Http(Box<HttpTarget>),
}

/// An HTTP target.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The client.
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
    /// `http://host:port`.
    base: String,
    /// The `model` field of each request, if any.
    model: Option<String>,
}

impl Target {
    /// Reaches `url`: `grpc://` (8 connections) or `http://` (naming
    /// `model` in each request body when given).
    pub async fn connect(url: &str, model: Option<String>) -> Result<Target, String> {
        if let Some(rest) = url.strip_prefix("grpc://") {
            let mut channels = Vec::new();
            for _ in 0..8 {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{rest}"))
                    .map_err(|e| format!("{url}: {e}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot reach {url}: {e}"))?;
                channels.push(channel);
            }
            Ok(Target::Grpc(channels))
        } else if url.starts_with("http://") {
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            connector.set_nodelay(true);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(1024)
                    .build(connector);
            Ok(Target::Http(Box::new(HttpTarget {
                client,
                base: url.trim_end_matches('/').to_string(),
                model,
            })))
        } else {
            Err(format!("{url}: use grpc://HOST:PORT or http://HOST:PORT"))
        }
    }

    /// Sends request `n` and times it from `start`.
    pub async fn send(&self, n: usize, prompt: Vec<u32>, max_new: u32, start: Instant) -> Outcome {
        let mut outcome = Outcome {
            prompt: prompt.len(),
            ..Default::default()
        };
        let result = match self {
            Target::Grpc(channels) => {
                let channel = channels[n % channels.len()].clone();
                grpc(channel, n, prompt, max_new, start, &mut outcome).await
            }
            Target::Http(t) => {
                let body = http_body(t.model.as_deref(), prompt, max_new);
                http(&t.client, &t.base, body, start, &mut outcome).await
            }
        };
        if let Err(e) = result {
            outcome.error = Some(e);
        } else {
            outcome.e2e = Some(start.elapsed().as_secs_f64());
        }
        outcome
    }
}

async fn grpc(
    channel: tonic::transport::Channel,
    n: usize,
    prompt: Vec<u32>,
    max_new: u32,
    start: Instant,
    outcome: &mut Outcome,
) -> Result<(), String> {
    let mut client = sgl::sglang_scheduler_client::SglangSchedulerClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024);
    let request = sgl::GenerateRequest {
        request_id: format!("replay-{n}"),
        tokenized: Some(sgl::TokenizedInput {
            input_ids: prompt,
            ..Default::default()
        }),
        sampling_params: Some(sgl::SamplingParams {
            max_new_tokens: Some(max_new),
            ignore_eos: true,
            ..Default::default()
        }),
        stream: true,
        ..Default::default()
    };
    let response = client
        .generate(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    outcome.worker = response
        .metadata()
        .get(WORKER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut stream = response.into_inner();
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
    {
        use sgl::generate_response::Response as R;
        match message.response {
            Some(R::Chunk(chunk)) => {
                if outcome.ttft.is_none() && !chunk.token_ids.is_empty() {
                    outcome.ttft = Some(start.elapsed().as_secs_f64());
                }
                outcome.output = u64::from(chunk.completion_tokens);
                outcome.cached = u64::from(chunk.cached_tokens);
            }
            Some(R::Complete(done)) => {
                outcome.output = u64::from(done.completion_tokens);
                outcome.cached = u64::from(done.cached_tokens);
                if outcome.ttft.is_none() {
                    outcome.ttft = Some(start.elapsed().as_secs_f64());
                }
                return Ok(());
            }
            None => {}
        }
    }
    Err("the stream ended before it completed".into())
}

/// SGLang's native `/generate` body for a token-id prompt.
fn http_body(model: Option<&str>, prompt: Vec<u32>, max_new: u32) -> serde_json::Value {
    let mut body = serde_json::json!({
        "input_ids": prompt,
        "sampling_params": {"max_new_tokens": max_new, "ignore_eos": true, "temperature": 0},
        "stream": true,
    });
    if let Some(model) = model {
        body["model"] = model.into();
    }
    body
}

async fn http(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
    base: &str,
    body: serde_json::Value,
    start: Instant,
    outcome: &mut Outcome,
) -> Result<(), String> {
    let request = http::Request::post(format!("{base}/generate"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(600), client.request(request))
        .await
        .map_err(|_| "no response in 600 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    outcome.worker = response
        .headers()
        .get(WORKER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = response.into_body();
    let mut buf = Vec::new();
    if !status.is_success() {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
            }
        }
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&buf)));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&event);
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(());
            }
            let value: serde_json::Value = serde_json::from_str(data)
                .map_err(|e| format!("not a JSON event ({e}): {data:.200}"))?;
            if let Some(error) = value.get("error") {
                return Err(error.to_string());
            }
            let meta = &value["meta_info"];
            let completion = meta["completion_tokens"].as_u64().unwrap_or(0);
            if outcome.ttft.is_none() && completion > 0 {
                outcome.ttft = Some(start.elapsed().as_secs_f64());
            }
            outcome.output = completion;
            outcome.cached = meta["cached_tokens"].as_u64().unwrap_or(outcome.cached);
        }
    }
    if outcome.ttft.is_none() {
        return Err("the stream ended with no token".into());
    }
    Ok(())
}

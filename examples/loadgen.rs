//! Run with: `cargo run --release --example loadgen -- --target 127.0.0.1:50051 --concurrency 64 --duration-secs 10 --tokens 256`
//!
//! A load generator for `switchyard.v1.Inference/Generate` (with
//! `--protocol sglang|vllm`, the engines' own `Generate`; with `--http`,
//! `POST /generate`) against any target: a worker directly, the
//! router, or another proxy. Closed loop at a fixed concurrency, or open
//! loop at a fixed rate (`--rate`), for a duration or a request count.
//! Prompts come in `--groups` groups, each a shared prefix of
//! `--prefix-bytes` plus a unique suffix, so cache-aware routing has
//! something to find. Prints throughput, latency and time-to-first-token
//! percentiles, tokens/s and errors by status; `--json` for machines.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard::pb;
use switchyard::pb::inference_client::InferenceClient;
use switchyard::pb::sglang_scheduler::sglang_scheduler_client::SglangSchedulerClient;
use switchyard::pb::vllm_engine::vllm_engine_client::VllmEngineClient;
use switchyard::pb::{sglang_scheduler as sgl, vllm_engine as vllm};
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(about = "Load generator for Switchyard and other Generate targets")]
struct Args {
    /// host:port of the target.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// Speak HTTP (`POST /generate`, streamed) instead of gRPC.
    #[arg(long)]
    http: bool,
    /// With `--http`: OpenAI chat (`POST /v1/chat/completions`, streamed,
    /// the prompt as one user message) instead of `/generate`.
    #[arg(long)]
    chat: bool,
    /// The gRPC protocol: switchyard (`switchyard.v1.Inference`, a text
    /// prompt), sglang (`SglangScheduler`) or vllm (`VllmEngine`), whose
    /// prompts are token ids, one per 4 bytes of the text prompt.
    #[arg(long, default_value = "switchyard")]
    protocol: Protocol,
    /// Model to request ("" = the target's only model).
    #[arg(long, default_value = "")]
    model: String,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Start requests at this many per second instead (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Run this long.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Or stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Tokens per response (sent as max_new_tokens).
    #[arg(long, default_value_t = 1)]
    tokens: u32,
    /// Give each gRPC call this deadline (`grpc-timeout`); none by default.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Prompt groups sharing a prefix.
    #[arg(long, default_value_t = 16)]
    groups: usize,
    /// Bytes of each group's shared prefix.
    #[arg(long, default_value_t = 2048)]
    prefix_bytes: usize,
    /// Bytes of each prompt's unique suffix.
    #[arg(long, default_value_t = 64)]
    suffix_bytes: usize,
    /// gRPC connections to spread the load over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Send `authorization: Bearer KEY` (gRPC); also read from
    /// SWITCHYARD_CLIENT_KEY.
    #[arg(long, env = "SWITCHYARD_CLIENT_KEY")]
    api_key: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 5.0)]
    progress_secs: f64,
}

/// One finished request.
struct Sample {
    latency: Duration,
    ttft: Option<Duration>,
    tokens: u64,
}

#[derive(Default)]
struct Results {
    samples: Vec<Sample>,
    errors: BTreeMap<String, u64>,
}

struct Prompts {
    prefixes: Vec<String>,
    suffix_bytes: usize,
    next: AtomicU64,
}

impl Prompts {
    fn new(args: &Args) -> Self {
        let prefixes = (0..args.groups.max(1))
            .map(|g| {
                let unit = format!("[group {g:03}] shared system prompt text. ");
                unit.repeat(args.prefix_bytes / unit.len() + 1)[..args.prefix_bytes].to_string()
            })
            .collect();
        Prompts {
            prefixes,
            suffix_bytes: args.suffix_bytes,
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let prefix = &self.prefixes[n as usize % self.prefixes.len()];
        let suffix = format!(" request {n:020} ");
        let suffix = suffix.repeat(self.suffix_bytes / suffix.len() + 1);
        format!("{prefix}{}", &suffix[..self.suffix_bytes.min(suffix.len())])
    }
}

enum Client {
    Grpc(Vec<InferenceClient<Channel>>),
    Sglang(Vec<SglangSchedulerClient<Channel>>),
    Vllm(Vec<VllmEngineClient<Channel>>),
    Http(reqwest::Client, String),
}

/// A text prompt as token ids: one per 4 bytes, as a tokenizer might make.
fn token_ids(prompt: &str) -> Vec<u32> {
    prompt
        .as_bytes()
        .chunks(4)
        .map(|c| {
            c.iter()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(*b)))
                % 32_000
        })
        .collect()
}

/// The model as `x-switchyard-model` metadata, if one is named.
fn with_model<T>(message: T, args: &Args) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !args.model.is_empty() {
        if let Ok(v) = args.model.parse() {
            request.metadata_mut().insert("x-switchyard-model", v);
        }
    }
    if let Some(ms) = args.deadline_ms {
        request.set_timeout(Duration::from_millis(ms));
    }
    with_key(&mut request, args);
    request
}

/// `authorization: Bearer KEY`, when a key is given.
fn with_key<T>(request: &mut tonic::Request<T>, args: &Args) {
    if let Some(key) = &args.api_key {
        if let Ok(v) = format!("Bearer {key}").parse() {
            request.metadata_mut().insert("authorization", v);
        }
    }
}

impl Client {
    async fn one(&self, i: usize, args: &Args, prompt: String) -> Result<Sample, String> {
        let started = Instant::now();
        let mut ttft = None;
        let mut tokens = 0;
        match self {
            Client::Grpc(clients) => {
                let mut client = clients[i % clients.len()].clone();
                let request = pb::GenerateRequest {
                    model: args.model.clone(),
                    input: Some(pb::generate_request::Input::Text(prompt)),
                    sampling_params: Some(pb::SamplingParams {
                        max_new_tokens: args.tokens,
                        ..Default::default()
                    }),
                    stream: true,
                    ..Default::default()
                };
                let mut request = tonic::Request::new(request);
                if let Some(ms) = args.deadline_ms {
                    request.set_timeout(Duration::from_millis(ms));
                }
                with_key(&mut request, args);
                let mut stream = client
                    .generate(request)
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                    .into_inner();
                while let Some(message) = stream
                    .message()
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                {
                    if let Some(pb::generate_response::Response::Chunk(_)) = message.response {
                        ttft.get_or_insert_with(|| started.elapsed());
                        tokens += 1;
                    }
                }
            }
            Client::Sglang(clients) => {
                let mut client = clients[i % clients.len()].clone();
                let request = sgl::GenerateRequest {
                    tokenized: Some(sgl::TokenizedInput {
                        original_text: String::new(),
                        input_ids: token_ids(&prompt),
                    }),
                    sampling_params: Some(sgl::SamplingParams {
                        temperature: 1.0,
                        top_p: 1.0,
                        top_k: -1,
                        max_new_tokens: Some(args.tokens),
                        ..Default::default()
                    }),
                    stream: true,
                    ..Default::default()
                };
                let mut stream = client
                    .generate(with_model(request, args))
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                    .into_inner();
                while let Some(message) = stream
                    .message()
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                {
                    if let Some(sgl::generate_response::Response::Chunk(_)) = message.response {
                        ttft.get_or_insert_with(|| started.elapsed());
                        tokens += 1;
                    }
                }
            }
            Client::Vllm(clients) => {
                let mut client = clients[i % clients.len()].clone();
                let request = vllm::GenerateRequest {
                    input: Some(vllm::generate_request::Input::Tokenized(
                        vllm::TokenizedInput {
                            original_text: String::new(),
                            input_ids: token_ids(&prompt),
                        },
                    )),
                    sampling_params: Some(vllm::SamplingParams {
                        max_tokens: Some(args.tokens),
                        ..Default::default()
                    }),
                    stream: true,
                    ..Default::default()
                };
                let mut stream = client
                    .generate(with_model(request, args))
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                    .into_inner();
                while let Some(message) = stream
                    .message()
                    .await
                    .map_err(|s| format!("{:?}", s.code()))?
                {
                    if let Some(vllm::generate_response::Response::Chunk(_)) = message.response {
                        ttft.get_or_insert_with(|| started.elapsed());
                        tokens += 1;
                    }
                }
            }
            Client::Http(client, url) => {
                let body = if args.chat {
                    serde_json::json!({
                        "model": args.model, "stream": true, "max_tokens": args.tokens,
                        "messages": [{"role": "user", "content": prompt}],
                    })
                } else {
                    serde_json::json!({
                        "model": args.model, "text": prompt, "stream": true,
                        "sampling_params": {"max_new_tokens": args.tokens},
                    })
                };
                let mut response = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status().as_u16()));
                }
                let mut pending = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| format!("body: {e}"))? {
                    ttft.get_or_insert_with(|| started.elapsed());
                    pending.extend_from_slice(&chunk);
                    // Count complete SSE events carrying text.
                    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                        let event: Vec<u8> = pending.drain(..end + 2).collect();
                        let empty: &[u8] = if args.chat {
                            b"\"finish_reason\":\""
                        } else {
                            b"\"text\":\"\""
                        };
                        if event.starts_with(b"data: {")
                            && !event.windows(empty.len()).any(|w| w == empty)
                        {
                            tokens += 1;
                        }
                    }
                }
            }
        }
        Ok(Sample {
            latency: started.elapsed(),
            ttft,
            tokens,
        })
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    let client = Arc::new(if args.http {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency.max(1))
            .tcp_nodelay(true)
            .build()?;
        let path = if args.chat {
            "/v1/chat/completions"
        } else {
            "/generate"
        };
        Client::Http(http, format!("http://{}{path}", args.target))
    } else {
        let mut channels = Vec::new();
        for _ in 0..args.connections.max(1) {
            let channel = Channel::from_shared(format!("http://{}", args.target))?
                .tcp_nodelay(true)
                .connect()
                .await?;
            channels.push(channel);
        }
        match args.protocol {
            Protocol::Switchyard => Client::Grpc(
                channels
                    .into_iter()
                    .map(|c| InferenceClient::new(c).max_decoding_message_size(64 << 20))
                    .collect(),
            ),
            Protocol::Sglang => Client::Sglang(
                channels
                    .into_iter()
                    .map(SglangSchedulerClient::new)
                    .collect(),
            ),
            Protocol::Vllm => {
                Client::Vllm(channels.into_iter().map(VllmEngineClient::new).collect())
            }
        }
    });
    let prompts = Arc::new(Prompts::new(&args));
    let results = Arc::new(Mutex::new(Results::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration_secs);
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let budget = args.requests.unwrap_or(u64::MAX);

    let progress = {
        let (done, every) = (done.clone(), args.progress_secs);
        tokio::spawn(async move {
            if every <= 0.0 {
                return;
            }
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs_f64(every)).await;
                let now = done.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>6.1}s] {now} requests, {:.0}/s",
                    started.elapsed().as_secs_f64(),
                    (now - last) as f64 / every
                );
                last = now;
            }
        })
    };

    let run_one = {
        let (client, args, prompts, results, done) = (
            client.clone(),
            args.clone(),
            prompts.clone(),
            results.clone(),
            done.clone(),
        );
        move |i: usize| {
            let (client, args, prompts, results, done) = (
                client.clone(),
                args.clone(),
                prompts.clone(),
                results.clone(),
                done.clone(),
            );
            async move {
                let outcome = client.one(i, &args, prompts.next()).await;
                let mut r = results.lock().await;
                match outcome {
                    Ok(sample) => r.samples.push(sample),
                    Err(code) => *r.errors.entry(code).or_default() += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    match args.rate {
        Some(rate) if rate > 0.0 => {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut i = 0;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < budget {
                ticker.tick().await;
                tasks.spawn(run_one(i));
                i += 1;
            }
        }
        _ => {
            for i in 0..args.concurrency.max(1) {
                let (run_one, issued) = (run_one.clone(), issued.clone());
                tasks.spawn(async move {
                    while Instant::now() < deadline
                        && issued.fetch_add(1, Ordering::Relaxed) < budget
                    {
                        run_one(i).await;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();

    let r = results.lock().await;
    let mut latency: Vec<Duration> = r.samples.iter().map(|s| s.latency).collect();
    let mut ttft: Vec<Duration> = r.samples.iter().filter_map(|s| s.ttft).collect();
    latency.sort();
    ttft.sort();
    let tokens: u64 = r.samples.iter().map(|s| s.tokens).sum();
    let ok = r.samples.len() as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let report = serde_json::json!({
        "target": args.target, "protocol": if args.http { "http" } else { "grpc" },
        "concurrency": args.concurrency, "rate": args.rate, "tokens_per_request": args.tokens,
        "elapsed_s": elapsed, "requests_ok": r.samples.len(), "errors": r.errors,
        "throughput_rps": ok / elapsed, "tokens_per_s": tokens as f64 / elapsed,
        "latency_ms": {"p50": ms(pct(&latency, 0.5)), "p90": ms(pct(&latency, 0.9)), "p99": ms(pct(&latency, 0.99)), "max": ms(latency.last().copied().unwrap_or_default())},
        "ttft_ms": {"p50": ms(pct(&ttft, 0.5)), "p90": ms(pct(&ttft, 0.9)), "p99": ms(pct(&ttft, 0.99)), "max": ms(ttft.last().copied().unwrap_or_default())},
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "target {} ({}), concurrency {}, {} tokens per request, {elapsed:.1}s",
            args.target, report["protocol"], args.concurrency, args.tokens
        );
        println!(
            "  requests ok     {:>10}   errors {:?}",
            r.samples.len(),
            r.errors
        );
        println!(
            "  throughput      {:>10.0} req/s   {:>12.0} tokens/s",
            ok / elapsed,
            tokens as f64 / elapsed
        );
        println!(
            "  latency ms      p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3}  max {:>8.3}",
            ms(pct(&latency, 0.5)),
            ms(pct(&latency, 0.9)),
            ms(pct(&latency, 0.99)),
            ms(latency.last().copied().unwrap_or_default())
        );
        println!(
            "  ttft ms         p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3}",
            ms(pct(&ttft, 0.5)),
            ms(pct(&ttft, 0.9)),
            ms(pct(&ttft, 0.99))
        );
    }
    Ok(())
}

/// The gRPC protocols the load generator speaks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Protocol {
    /// `switchyard.v1.Inference`.
    Switchyard,
    /// SGLang's `SglangScheduler`.
    Sglang,
    /// vLLM's `VllmEngine`.
    Vllm,
}

//! `mock-worker`: a fake inference worker for tests, demos and benchmarks.
//!
//! Run with: `cargo run --bin mock-worker -- --listen 127.0.0.1:7001 --name alpha`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard::mock::MockEngine;
use switchyard::mock::{MockConfig, MockRole, MockWorker};

/// A fake inference worker (switchyard.v1, SGLang or vLLM over gRPC, or
/// SGLang/OpenAI over HTTP) with failure knobs.
#[derive(Debug, Parser)]
#[command(
    name = "mock-worker",
    version,
    about = "A fake inference worker for Switchyard's tests, demos and benchmarks: switchyard.v1, SGLang or vLLM over gRPC, or SGLang/OpenAI over HTTP, with failure knobs"
)]
struct Args {
    /// Address to serve on (port 0 picks a free one; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Appears in the text of every generated token.
    #[arg(long, default_value = "mock")]
    name: String,
    /// Tokens per request (unless the request sets max_new_tokens).
    #[arg(long, default_value_t = 8)]
    tokens: u32,
    /// Pause before each token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Probability (0 to 1) of failing a call with UNAVAILABLE before any response.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Fail with INTERNAL after this many tokens.
    #[arg(long)]
    fail_after: Option<u32>,
    /// Accept calls and never answer them.
    #[arg(long)]
    hang: bool,
    /// Report NOT_SERVING on grpc.health.v1.
    #[arg(long)]
    unhealthy: bool,
    /// Exit the process (status 3) when this many calls have arrived.
    #[arg(long)]
    exit_after_calls: Option<u64>,
    /// regular, prefill (needs --bootstrap-port) or decode.
    #[arg(long, default_value = "regular", value_parser = ["regular", "prefill", "decode"])]
    role: String,
    /// Prefill only: the rendezvous port decode workers connect to (0 picks a free one).
    #[arg(long)]
    bootstrap_port: Option<u16>,
    /// Serve the HTTP API (SGLang /generate, OpenAI /v1/completions and
    /// /v1/chat/completions with SSE, /health, /v1/models) instead of gRPC.
    #[arg(long)]
    http: bool,
    /// How long the prefill/decode rendezvous waits for the other side, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    rendezvous_timeout_ms: u64,
    // Its help lists every mode in `MockEngine::ALL`.
    #[arg(long, default_value = "switchyard", help = engine_help())]
    engine: MockEngine,
    /// The served model name the engine modes report in GetModelInfo.
    #[arg(long, default_value = "mock-model")]
    model: String,
    /// Report NOT_SERVING and refuse calls for this long after start, in
    /// milliseconds, as a warming engine does.
    #[arg(long, default_value_t = 0)]
    warmup_ms: u64,
    /// Requests sglang and vllm report waiting in GetLoads on top of their
    /// own (as an engine shared with other clients would).
    #[arg(long, default_value_t = 0)]
    reported_waiting: u32,
    /// sglang and vllm: a Hugging Face tokenizer directory; the generated
    /// tokens are then those of a reply text naming the worker, so a router
    /// with the same tokenizer shows real text.
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<std::path::PathBuf>,
    /// With --tokenizer: generate the tokens of this text instead, once
    /// (unless the request's max_new_tokens asks for another count): a tool
    /// call, say, in a model's format.
    #[arg(long, value_name = "TEXT", requires = "tokenizer")]
    reply: Option<String>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (gRPC mock).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    sim: SimArgs,
}

/// A simulated engine (`--sim`): a paged KV cache with prefix reuse, a
/// continuous-batching scheduler and step times from a model of
/// Llama-3.1-8B on one H100 (docs/ARCHITECTURE.md), with vLLM's knob names.
#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Simulate an engine (SGLang's protocol) instead of the plain mock.
    #[arg(long)]
    sim: bool,
    /// Engines to serve, on consecutive ports from --listen's.
    #[arg(long, default_value_t = 1, requires = "sim")]
    count: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 64, requires = "sim")]
    block_size: usize,
    /// KV blocks in all (the cache's capacity).
    #[arg(long, default_value_t = 6_200, requires = "sim")]
    num_gpu_blocks: usize,
    /// Sequences running at once.
    #[arg(long, default_value_t = 256, requires = "sim")]
    max_num_seqs: usize,
    /// Tokens one scheduler step computes.
    #[arg(long, default_value_t = 8_192, requires = "sim")]
    max_num_batched_tokens: usize,
    /// Reuse cached prompt blocks.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, requires = "sim")]
    enable_prefix_caching: bool,
    /// Compute a long prompt over several steps.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, requires = "sim")]
    enable_chunked_prefill: bool,
    /// Divide every simulated duration by this.
    #[arg(long, default_value_t = 1.0, requires = "sim")]
    speedup_ratio: f64,
    /// Tokens per streamed message after the first (SGLang's stream_interval).
    #[arg(long, default_value_t = 1, requires = "sim")]
    stream_interval: u32,
    /// Seeds the generated token ids (engine i uses seed + i).
    #[arg(long, default_value_t = 0, requires = "sim")]
    seed: u64,
}

/// Serves `args.count` simulated engines until Ctrl-C.
async fn simulate(args: &Args, reply_ids: Option<std::sync::Arc<Vec<u32>>>) -> ExitCode {
    let sim = &args.sim;
    if args.engine != MockEngine::Sglang && args.engine != MockEngine::Switchyard {
        eprintln!(
            "mock-worker: --sim speaks SGLang's protocol; drop --engine or use --engine sglang"
        );
        return ExitCode::FAILURE;
    }
    if sim.count == 0 || sim.block_size == 0 || sim.num_gpu_blocks == 0 || sim.max_num_seqs == 0 {
        eprintln!("mock-worker: --count, --block-size, --num-gpu-blocks and --max-num-seqs must be at least 1");
        return ExitCode::FAILURE;
    }
    if sim.max_num_batched_tokens < sim.block_size
        || sim.speedup_ratio.is_nan()
        || sim.speedup_ratio <= 0.0
    {
        eprintln!("mock-worker: --max-num-batched-tokens must hold a block and --speedup-ratio must be positive");
        return ExitCode::FAILURE;
    }
    let config = switchyard::mock::sim::SimConfig {
        sched: switchyard::mock::sim::SchedConfig {
            block_size: sim.block_size,
            num_gpu_blocks: sim.num_gpu_blocks,
            max_num_seqs: sim.max_num_seqs,
            max_num_batched_tokens: sim.max_num_batched_tokens,
            enable_prefix_caching: sim.enable_prefix_caching,
            enable_chunked_prefill: sim.enable_chunked_prefill,
            ..Default::default()
        },
        speedup_ratio: sim.speedup_ratio,
        stream_interval: sim.stream_interval,
        model: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        seed: sim.seed,
        reply_ids,
        ..Default::default()
    };
    let fleet = match switchyard::mock::sim::SimWorker::fleet(args.listen, sim.count, &config).await
    {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("mock-worker: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    for (i, worker) in fleet.iter().enumerate() {
        println!(
            "mock-worker {}-{i} listening on {}",
            args.name,
            worker.url()
        );
    }
    let _ = tokio::signal::ctrl_c().await;
    for (i, worker) in fleet.iter().enumerate() {
        let (prompt, cached) = worker.engine().hit_counts();
        eprintln!(
            "mock-worker {}-{i}: prompt_tokens={prompt} cached_tokens={cached}",
            args.name
        );
    }
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.fail_rate) {
        eprintln!("mock-worker: --fail-rate must be between 0 and 1");
        return ExitCode::FAILURE;
    }
    let role = match (args.role.as_str(), args.bootstrap_port) {
        ("prefill", Some(bootstrap_port)) => MockRole::Prefill { bootstrap_port },
        ("prefill", None) => {
            eprintln!("mock-worker: --role prefill needs --bootstrap-port PORT");
            return ExitCode::FAILURE;
        }
        (_, Some(_)) => {
            eprintln!("mock-worker: --bootstrap-port applies to --role prefill only");
            return ExitCode::FAILURE;
        }
        ("decode", None) => MockRole::Decode,
        _ => MockRole::Regular,
    };
    let reply_ids = match &args.tokenizer {
        Some(path) => {
            let tokenizer = match switchyard::tokenizer::ModelTokenizer::load(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("mock-worker: --tokenizer: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let text = args
                .reply
                .clone()
                .unwrap_or_else(|| switchyard::mock::reply_text(&args.name));
            match tokenizer.encode(&text, false) {
                Ok(ids) => Some(std::sync::Arc::new(ids)),
                Err(e) => {
                    eprintln!("mock-worker: --tokenizer: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    if args.sim.sim {
        return simulate(&args, reply_ids).await;
    }
    let config = MockConfig {
        name: args.name.clone(),
        // A given reply is generated once.
        tokens: match (&args.reply, &reply_ids) {
            (Some(_), Some(ids)) => u32::try_from(ids.len()).unwrap_or(u32::MAX),
            _ => args.tokens,
        },
        reply_ends: args.reply.is_some(),
        token_delay: Duration::from_millis(args.token_delay_ms),
        fail_rate: args.fail_rate,
        fail_after: args.fail_after,
        hang: args.hang,
        unhealthy: args.unhealthy,
        exit_after_calls: args.exit_after_calls,
        role,
        rendezvous_timeout: Duration::from_millis(args.rendezvous_timeout_ms),
        engine: args.engine,
        model: args.model.clone(),
        warmup: Duration::from_millis(args.warmup_ms),
        reported_waiting: args.reported_waiting,
        reply_ids,
        model_path: args.tokenizer.as_ref().map(|p| p.display().to_string()),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(switchyard::mock::MockTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            }),
            _ => None,
        },
    };
    if args.http && args.engine != MockEngine::Switchyard {
        eprintln!("mock-worker: --engine applies to the gRPC mock; drop --http or --engine");
        return ExitCode::FAILURE;
    }
    let started = if args.http {
        MockWorker::start_http(args.listen, config).await
    } else {
        MockWorker::start(args.listen, config).await
    };
    let worker = match started {
        Ok(w) => w,
        Err(e) => {
            eprintln!("mock-worker: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match worker.bootstrap_port() {
        Some(port) => println!(
            "mock-worker {} listening on {} bootstrap-port {port}",
            args.name,
            worker.url()
        ),
        None => println!("mock-worker {} listening on {}", args.name, worker.url()),
    }
    let code = tokio::select! {
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        _ = worker.exit_requested() => ExitCode::from(3),
    };
    let stats = worker.stats();
    eprintln!(
        "mock-worker {}: calls={} aborts={} cancelled={} completed={}",
        args.name,
        stats.calls(),
        stats.aborts(),
        stats.cancelled(),
        stats.completed()
    );
    code
}

/// `--engine`'s help: every mode with the service it serves.
fn engine_help() -> String {
    let modes: Vec<String> = MockEngine::ALL
        .iter()
        .map(|e| format!("{e} ({})", e.service()))
        .collect();
    format!("The gRPC protocol to serve: {}", modes.join(", "))
}

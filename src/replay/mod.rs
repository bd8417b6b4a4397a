//! `switchyard bench replay`: replays a Mooncake-format trace against a
//! router (or engine) and measures what its users would feel: time to first
//! token, time between tokens, whole requests, throughput, and the fleet's
//! prefix-cache hit rate beside what one fleet-wide cache would hit.
//! `switchyard bench plot` overlays several runs' TTFT CDFs.

pub mod report;
pub mod send;
pub mod trace;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

/// `switchyard bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// What `switchyard bench` runs.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Replay a Mooncake-format trace (JSONL) against a router.
    Replay(ReplayArgs),
    /// Draw the TTFT CDFs of several replays' JSON reports as one SVG.
    Plot {
        /// Reports written by `replay --out`.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// The SVG to write.
        #[arg(long, default_value = "ttft-cdf.svg")]
        out: PathBuf,
    },
}

/// `switchyard bench replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace: one JSON object a line (timestamp ms, input_length,
    /// output_length, hash_ids of 512-token blocks).
    pub trace: PathBuf,
    /// Where to send: grpc://HOST:PORT (SGLang's Generate, as the router
    /// relays it) or http://HOST:PORT (POST /generate with input_ids).
    /// Repeatable: request n goes to target n mod the number of targets
    /// (several routers in front of one fleet).
    #[arg(long, default_value = "grpc://127.0.0.1:50051")]
    pub target: Vec<String>,
    /// Multiply measured latencies by this to report them in the engines'
    /// simulated time (their --speedup-ratio); throughput is divided by it.
    #[arg(long, default_value_t = 1.0)]
    pub engine_speedup: f64,
    /// Divide the trace's arrival times by this.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Replay only the first N requests.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Stop sending after this many seconds of wall time (in-flight
    /// requests are still awaited).
    #[arg(long)]
    pub duration: Option<f64>,
    /// The fleet's KV capacity in tokens, for the practical hit-rate bound
    /// (default: 8 engines of 6,200 blocks of 64 tokens).
    #[arg(long, default_value_t = 8 * 6_200 * 64)]
    pub fleet_tokens: usize,
    /// The engines' KV block size in tokens (hits are whole blocks).
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// The model to name in HTTP requests (a gateway serving several
    /// models routes by it; SGLang's own /generate ignores it).
    #[arg(long)]
    pub model: Option<String>,
    /// Name of the run in the report and plots.
    #[arg(long, default_value = "replay")]
    pub label: String,
    /// Write the report as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
}

/// Runs `switchyard bench ...`.
pub async fn run(args: BenchArgs) -> ExitCode {
    let result = match args.command {
        BenchCommand::Replay(args) => replay(args).await,
        BenchCommand::Plot { reports, out } => plot(&reports, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plot(paths: &[PathBuf], out: &PathBuf) -> Result<(), String> {
    let mut reports = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let r: report::Report = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a report: {e}", p.display()))?;
        reports.push(r);
    }
    std::fs::write(out, report::cdf_svg(&reports))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

async fn replay(args: ReplayArgs) -> Result<(), String> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.speedup) || !positive(args.engine_speedup) || args.block_size == 0 {
        return Err(
            "--speedup and --engine-speedup must be positive and --block-size at least 1".into(),
        );
    }
    let requests = trace::read(&args.trace, args.limit)?;
    if requests.is_empty() {
        return Err(format!("{}: no requests", args.trace.display()));
    }
    let bounds = trace::bounds(&requests, args.fleet_tokens, args.block_size);
    let mut targets = Vec::new();
    for url in &args.target {
        targets.push(send::Target::connect(url, args.model.clone()).await?);
    }
    let targets = Arc::new(targets);
    let total = requests.len();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let stop_at = args.duration.map(Duration::from_secs_f64);
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let progress = tokio::spawn(progress_line(total, done.clone(), failed.clone()));
    let mut tokens = trace::Tokens::default();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, request) in requests.iter().enumerate() {
        let at = Duration::from_secs_f64(request.timestamp as f64 / 1000.0 / args.speedup);
        if stop_at.is_some_and(|s| at > s) {
            break;
        }
        tokio::time::sleep_until((start + at).into()).await;
        let prompt = tokens.prompt(request);
        let (targets, done, failed) = (targets.clone(), done.clone(), failed.clone());
        let max_new = request.output_length.max(1);
        tasks.spawn(async move {
            let sent = Instant::now();
            let target = &targets[n % targets.len()];
            let mut outcome = tokio::time::timeout(timeout, target.send(n, prompt, max_new, sent))
                .await
                .unwrap_or_else(|_| send::Outcome {
                    error: Some(format!("no answer in {} s", timeout.as_secs_f64())),
                    ..Default::default()
                });
            outcome.at = at.as_secs_f64();
            if outcome.error.is_some() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
            (n, outcome)
        });
    }
    let sent = tasks.len();
    let mut outcomes = vec![send::Outcome::default(); sent];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((n, outcome)) = joined {
            outcomes[n] = outcome;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.abort();
    eprintln!();
    let scale = args.engine_speedup;
    for o in &mut outcomes {
        o.ttft = o.ttft.map(|t| t * scale);
        o.e2e = o.e2e.map(|t| t * scale);
    }
    let report = report::Report::new(
        &args.label,
        &args.target.join(","),
        &outcomes,
        seconds * scale,
        bounds,
    );
    println!("{}", report.table());
    for e in &report.errors {
        println!("  error: {e}");
    }
    if let Some(out) = &args.out {
        let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        std::fs::write(out, json).map_err(|e| format!("{}: {e}", out.display()))?;
        println!("  wrote {}", out.display());
    }
    Ok(())
}

async fn progress_line(total: usize, done: Arc<AtomicUsize>, failed: Arc<AtomicUsize>) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{:>6.0} s  {}/{} done, {} failed   ",
            start.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed),
            total,
            failed.load(Ordering::Relaxed)
        );
        let _ = err.flush();
    }
}

//! The `switchyard` binary: parse the command line, build, serve until a signal.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command, DemoArgs, LogFormat};
use switchyard::mock::{MockConfig, MockWorker};
use switchyard::{App, Config};
use tokio::net::TcpListener;

/// jemalloc instead of glibc malloc: the proxy allocates per call, and
/// glibc's free lists slow down as the heap grows (measured: with 10,000
/// registered workers, malloc/free took ~13% of the router's CPU).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        // Colour codes only where a person reads them.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let result = match cli.command {
        Command::Serve(args) => match args.to_config() {
            Ok(config) => {
                runtime(config.worker_threads).and_then(|rt| rt.block_on(run(config, None)))
            }
            Err(e) => Err(e.to_string()),
        },
        Command::Demo(args) => runtime(None).and_then(|rt| rt.block_on(demo(args))),
        Command::Workers(args) => {
            return client_runtime().map_or(ExitCode::FAILURE, |rt| {
                rt.block_on(switchyard::ctl::workers(args))
            })
        }
        Command::Tenants(args) => {
            return client_runtime().map_or(ExitCode::FAILURE, |rt| {
                rt.block_on(switchyard::ctl::tenants(args))
            })
        }
        Command::Generate(args) => {
            return client_runtime().map_or(ExitCode::FAILURE, |rt| {
                rt.block_on(switchyard::ctl::generate(args))
            })
        }
        Command::Bench(args) => {
            return runtime(None).map_or(ExitCode::FAILURE, |rt| {
                rt.block_on(switchyard::replay::run(args))
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("switchyard: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A small runtime for the admin CLI's calls.
fn client_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("switchyard: cannot start the runtime: {e}"))
        .ok()
}

/// The tokio runtime: one worker thread per core unless configured; a
/// single thread runs the current-thread scheduler (no cross-thread wakeups).
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

async fn run(config: Config, banner: Option<String>) -> Result<(), String> {
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    let addr = app.config().grpc_listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let http = match app.config().http_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let admin = match app.config().admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    println!("switchyard listening on {local}");
    if let Some(http) = &http {
        let addr = http.local_addr().map_err(|e| e.to_string())?;
        println!("switchyard http listening on {addr}");
    }
    if let Some(admin) = &admin {
        let addr = admin.local_addr().map_err(|e| e.to_string())?;
        println!("switchyard admin listening on {addr}");
    }
    if let Some(banner) = banner {
        println!("{}", banner.replace("{ADDR}", &local.to_string()));
    }
    let listeners = switchyard::app::Listeners {
        grpc: listener,
        http,
        admin,
    };
    // The first signal starts a graceful shutdown; a second one ends the
    // process at once.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let mut signals = Signals::new().map_err(|e| format!("cannot handle signals: {e}"))?;
    tokio::spawn(async move {
        signals.next().await;
        let _ = first_tx.send(());
        signals.next().await;
        eprintln!("switchyard: second signal, exiting now");
        std::process::exit(130);
    });
    app.serve(listeners, async {
        let _ = first_rx.await;
    })
    .await
    .map_err(|e| e.to_string())
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from creation on.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let mut workers = Vec::new();
    for name in ["alpha", "beta"] {
        let config = MockConfig {
            name: name.into(),
            tokens: args.tokens,
            token_delay: args.token_delay(),
            ..MockConfig::default()
        };
        let worker = MockWorker::start("127.0.0.1:0".parse().map_err(|_| "bad address")?, config)
            .await
            .map_err(|e| format!("cannot start mock worker: {e}"))?;
        workers.push(worker);
    }
    let mut config = Config {
        grpc_listen: args.grpc_listen,
        // Nothing polls a demo's health: Ctrl-C stops it without the grace.
        shutdown: switchyard::config::ShutdownConfig {
            grace_ms: 0,
            ..Default::default()
        },
        ..Config::default()
    };
    for w in &workers {
        config.workers.push(switchyard::config::StartupWorker {
            url: w.url(),
            model_id: "demo".into(),
            engine: None,
            role: Default::default(),
            bootstrap_port: None,
            labels: Default::default(),
        });
    }
    let banner = format!(
        r#"
Two mock workers serve model "demo": alpha at {alpha}, beta at {beta}.
Round-robin alternates between them; each token's text names the worker.

With grpcurl (uses server reflection):
  grpcurl -plaintext {{ADDR}} list
  grpcurl -plaintext -d '{{"model":"demo","text":"Hello"}}' {{ADDR}} switchyard.v1.Inference/Generate
  grpcurl -plaintext -d '{{}}' {{ADDR}} switchyard.v1.WorkerManagement/ListWorkers
  grpcurl -plaintext -d '{{"service":"switchyard.v1.Inference"}}' {{ADDR}} grpc.health.v1.Health/Check

With Python (pip install -r clients/python/requirements.txt):
  python3 clients/python/switchyard_client.py --router {{ADDR}} generate --model demo "Hello"
  python3 clients/python/switchyard_client.py --router {{ADDR}} list
  python3 clients/python/switchyard_client.py --router {{ADDR}} health

Ctrl-C stops the demo."#,
        alpha = workers[0].url(),
        beta = workers[1].url(),
    );
    let result = run(config, Some(banner)).await;
    for w in workers {
        w.stop().await;
    }
    result
}

//! The admin CLI: `switchyard workers list|get|add|remove|watch`,
//! `switchyard tenants list` and `switchyard generate`, talking to a running router over gRPC with the
//! generated clients. Tables for people, `--json` for scripts (one JSON
//! document, or one object a line for `watch` and `generate`).
//!
//! Exit codes scripts can rely on: 0 done; 1 the router answered with an
//! error (its gRPC code and message are printed); 2 bad usage (clap);
//! 3 the router could not be reached.

mod print;
mod tenants;

pub use tenants::{tenants, TenantsArgs, TenantsCommand};

use print::{get_target, health_of, print_json, print_table, url_of, worker_json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::pb;
use crate::pb::inference_client::InferenceClient;
use crate::pb::worker_management_client::WorkerManagementClient;

/// The environment variable an API key is read from (never a flag: flags
/// show in `ps`).
pub const API_KEY_ENV: &str = "SWITCHYARD_API_KEY";

/// How to reach the router.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// The router's gRPC address (`host:port`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub router: String,
    /// Print JSON for scripts instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Connect over TLS, trusting this CA bundle (PEM).
    #[arg(long, value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// Present this client certificate (PEM; with --key): worker management
    /// on a router with tls.client_ca needs one.
    #[arg(long, value_name = "PEM", requires = "key", global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "PEM", requires = "cert", global = true)]
    pub key: Option<PathBuf>,
}

/// `switchyard workers ...`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: WorkersCommand,
    // How to reach the router.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub router: RouterArgs,
}

/// The worker subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Every registered worker (all pages).
    List {
        /// Only workers of this model.
        #[arg(long, value_name = "ID")]
        model: Option<String>,
    },
    /// One worker, by id or URL.
    Get {
        /// `w-...` id or the worker's URL.
        worker: String,
    },
    /// Registers a worker; it is routable when this returns.
    Add {
        /// `grpc://host:port`, `http://host:port` (`grpcs`/`https` for TLS).
        url: String,
        /// The model it serves (SGLang and vLLM workers: asked when absent).
        #[arg(long, value_name = "ID", default_value = "")]
        model: String,
        /// The engine (its help names every engine in `engines::ALL`).
        #[arg(long, value_name = "ENGINE", value_parser = crate::engines::by_name,
              help = format!("{} (detected when absent)", crate::engines::names(" or ")))]
        engine: Option<crate::worker::Engine>,
        /// regular, prefill or decode.
        #[arg(long, value_name = "ROLE", default_value = "regular", value_parser = ["regular", "prefill", "decode"])]
        role: String,
        /// A prefill worker's KV bootstrap port.
        #[arg(long, value_name = "PORT")]
        bootstrap_port: Option<u32>,
        /// An operator label, KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Unregisters a worker, by id or URL; no new call goes to it once this
    /// returns.
    Remove {
        /// `w-...` id or the worker's URL.
        worker: String,
    },
    /// Prints the current workers, then every change, until interrupted.
    Watch,
}

/// `switchyard generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt.
    pub prompt: String,
    /// The model (may be left out when the router serves one model).
    #[arg(long, value_name = "ID", default_value = "")]
    pub model: String,
    /// Tokens to generate at most (0: the worker's default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_tokens: u32,
    // How to reach the router.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub router: RouterArgs,
}

/// Why a command failed, and its exit code.
enum Failed {
    /// The router answered with an error.
    Status(tonic::Status),
    /// The router could not be reached, or the arguments were unusable.
    Unreachable(String),
    Usage(String),
}

impl From<tonic::Status> for Failed {
    fn from(status: tonic::Status) -> Self {
        Failed::Status(status)
    }
}

/// Runs `switchyard workers ...`.
pub async fn workers(args: WorkersArgs) -> ExitCode {
    let outcome = async {
        let channel = connect(&args.router).await?;
        let mut client = WorkerManagementClient::new(channel);
        let json = args.router.json;
        let key = api_key();
        match args.command {
            WorkersCommand::List { model } => {
                let mut all = Vec::new();
                let mut token = String::new();
                loop {
                    let page = client
                        .list_workers(keyed(
                            pb::ListWorkersRequest {
                                model_id: model.clone(),
                                page_token: token,
                                ..Default::default()
                            },
                            &key,
                        ))
                        .await?
                        .into_inner();
                    all.extend(page.workers);
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                match json {
                    true => print_json(&Value::Array(all.iter().map(worker_json).collect())),
                    false => print_table(&all),
                }
            }
            WorkersCommand::Get { worker } => {
                let info = client
                    .get_worker(keyed(
                        pb::GetWorkerRequest {
                            target: Some(get_target(&worker)),
                        },
                        &key,
                    ))
                    .await?
                    .into_inner();
                match json {
                    true => print_json(&worker_json(&info)),
                    false => print_table(&[info]),
                }
            }
            WorkersCommand::Add {
                url,
                model,
                engine,
                role,
                bootstrap_port,
                labels,
            } => {
                let labels = labels
                    .iter()
                    .map(|l| {
                        l.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| {
                                Failed::Usage(format!("--label {l:?}: expected KEY=VALUE"))
                            })
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()?;
                let role = match role.as_str() {
                    "prefill" => pb::WorkerRole::Prefill,
                    "decode" => pb::WorkerRole::Decode,
                    _ => pb::WorkerRole::Regular,
                };
                let engine = crate::engines::to_wire(engine);
                let added = client
                    .add_worker(keyed(
                        pb::AddWorkerRequest {
                            worker: Some(pb::WorkerSpec {
                                url,
                                model_id: model,
                                role: role as i32,
                                bootstrap_port,
                                labels: labels.into_iter().collect(),
                                engine: engine as i32,
                            }),
                        },
                        &key,
                    ))
                    .await?
                    .into_inner()
                    .worker
                    .unwrap_or_default();
                match json {
                    true => print_json(&worker_json(&added)),
                    false => print_table(&[added]),
                }
            }
            WorkersCommand::Remove { worker } => {
                let target = match get_target(&worker) {
                    pb::get_worker_request::Target::Id(id) => {
                        pb::remove_worker_request::Target::Id(id)
                    }
                    pb::get_worker_request::Target::Url(url) => {
                        pb::remove_worker_request::Target::Url(url)
                    }
                };
                let removed = client
                    .remove_worker(keyed(
                        pb::RemoveWorkerRequest {
                            target: Some(target),
                        },
                        &key,
                    ))
                    .await?
                    .into_inner()
                    .worker
                    .unwrap_or_default();
                match json {
                    true => print_json(&worker_json(&removed)),
                    false => println!("removed {} ({})", removed.id, url_of(&removed)),
                }
            }
            WorkersCommand::Watch => {
                let mut events = client
                    .watch_workers(keyed(pb::WatchWorkersRequest {}, &key))
                    .await?
                    .into_inner();
                while let Some(event) = events.message().await? {
                    let kind = pb::worker_event::Kind::try_from(event.kind)
                        .map(|k| k.as_str_name().trim_start_matches("KIND_").to_lowercase())
                        .unwrap_or_else(|_| "unknown".into());
                    let worker = event.worker.unwrap_or_default();
                    match json {
                        true => print_json(&json!({
                            "kind": kind,
                            "sequence": event.sequence,
                            "initial": event.initial,
                            "worker": worker_json(&worker),
                        })),
                        false => println!(
                            "{:<8} {:<16} {:<20} {} {}",
                            event.sequence,
                            kind,
                            worker.id,
                            url_of(&worker),
                            health_of(&worker)
                        ),
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        }
        Ok(())
    };
    exit(&args.router.router, outcome.await)
}

/// Runs `switchyard generate`: the reply's text as it streams.
pub async fn generate(args: GenerateArgs) -> ExitCode {
    let outcome = async {
        let channel = connect(&args.router).await?;
        let mut client = InferenceClient::new(channel);
        let request = pb::GenerateRequest {
            model: args.model.clone(),
            input: Some(pb::generate_request::Input::Text(args.prompt.clone())),
            sampling_params: Some(pb::SamplingParams {
                max_new_tokens: args.max_tokens,
                ..Default::default()
            }),
            stream: true,
            ..Default::default()
        };
        let response = client.generate(keyed(request, &api_key())).await?;
        let worker = response
            .metadata()
            .get(crate::routers::WORKER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut stream = response.into_inner();
        let mut out = std::io::stdout();
        while let Some(message) = stream.message().await? {
            match message.response {
                Some(pb::generate_response::Response::Chunk(chunk)) => {
                    match args.router.json {
                        true => {
                            print_json(&json!({"text": chunk.text, "token_ids": chunk.token_ids}))
                        }
                        false => {
                            let _ = write!(out, "{}", chunk.text);
                        }
                    }
                    let _ = out.flush();
                }
                Some(pb::generate_response::Response::Complete(done)) => match args.router.json {
                    true => print_json(&json!({
                        "finish_reason": done.finish_reason,
                        "prompt_tokens": done.prompt_tokens,
                        "completion_tokens": done.completion_tokens,
                        "request_id": message.request_id,
                        "worker": worker,
                    })),
                    false => {
                        let _ = writeln!(out);
                        eprintln!(
                            "[{} · {} prompt + {} completion tokens · worker {worker} · request {}]",
                            done.finish_reason,
                            done.prompt_tokens,
                            done.completion_tokens,
                            message.request_id
                        );
                    }
                },
                Some(pb::generate_response::Response::Error(error)) => {
                    return Err(Failed::Status(tonic::Status::new(
                        tonic::Code::from_i32(error.code as i32),
                        error.message,
                    )));
                }
                None => {}
            }
        }
        Ok(())
    };
    exit(&args.router.router, outcome.await)
}

fn exit(router: &str, outcome: Result<(), Failed>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Status(status)) => {
            eprintln!(
                "switchyard: the router answered {:?}: {}{}",
                status.code(),
                status.message(),
                hint(status.code())
            );
            ExitCode::from(1)
        }
        Err(Failed::Usage(message)) => {
            eprintln!("switchyard: {message}");
            ExitCode::from(2)
        }
        Err(Failed::Unreachable(message)) => {
            eprintln!(
                "switchyard: cannot reach the router at {router}: {message} (is it running? \
                 give its gRPC address with --router HOST:PORT)"
            );
            ExitCode::from(3)
        }
    }
}

/// What to do about an error code the router answered.
fn hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => {
            " (set SWITCHYARD_API_KEY to an admin key; with client certificates required, pass --ca, --cert and --key)"
        }
        tonic::Code::PermissionDenied => " (this needs an admin key in SWITCHYARD_API_KEY)",
        tonic::Code::Unavailable => " (the router or its workers are not serving now; try again)",
        _ => "",
    }
}

async fn connect(args: &RouterArgs) -> Result<Channel, Failed> {
    let tls = args.ca.is_some() || args.cert.is_some();
    let scheme = if tls { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", args.router))
        .map_err(|e| Failed::Usage(format!("--router {:?}: {e}", args.router)))?;
    if tls {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &args.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| Failed::Usage(format!("TLS: {e}")))?;
    }
    endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let part = s.to_string();
                // Layers often repeat their source's words.
                if !text.contains(&part) {
                    text = format!("{text}: {part}");
                }
                source = s.source();
            }
            Failed::Unreachable(text)
        })
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Failed> {
    std::fs::read(path).map_err(|e| Failed::Usage(format!("cannot read {}: {e}", path.display())))
}

fn api_key() -> Option<String> {
    std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty())
}

fn keyed<T>(message: T, key: &Option<String>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        if let Ok(value) = format!("Bearer {key}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }
    request
}

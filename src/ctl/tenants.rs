//! `switchyard tenants list`: the router's tenants, their limits as it
//! enforces them and what each has used there.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{api_key, connect, exit, keyed, print::print_json, Failed, RouterArgs};
use crate::pb;
use crate::pb::worker_management_client::WorkerManagementClient;

/// `switchyard tenants ...`.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TenantsCommand,
    // How to reach the router.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub router: RouterArgs,
}

/// The tenant subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Every tenant: class, weight, limits, calls in flight, calls, tokens
    /// and refusals since the router started.
    List,
}

fn tenant_json(t: &pb::TenantInfo) -> Value {
    json!({
        "name": t.name,
        "priority": t.priority,
        "weight": t.weight,
        "requests_per_second": t.requests_per_second,
        "prompt_tokens_per_minute": t.prompt_tokens_per_minute,
        "output_tokens_per_minute": t.output_tokens_per_minute,
        "max_concurrent": t.max_concurrent,
        "routers": t.routers,
        "in_flight": t.in_flight,
        "calls": t.calls,
        "prompt_tokens": t.prompt_tokens,
        "output_tokens": t.output_tokens,
        "refused": t.refused,
    })
}

fn limit<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn print_table(tenants: &[pb::TenantInfo]) {
    println!(
        "{:<16} {:<11} {:>6} {:>9} {:>12} {:>12} {:>8} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "NAME",
        "PRIORITY",
        "WEIGHT",
        "REQ/S",
        "PROMPT/MIN",
        "OUTPUT/MIN",
        "MAX CONC",
        "IN FLT",
        "CALLS",
        "PROMPT TOK",
        "OUTPUT TOK",
        "REFUSED"
    );
    for t in tenants {
        println!(
            "{:<16} {:<11} {:>6} {:>9} {:>12} {:>12} {:>8} {:>8} {:>10} {:>12} {:>12} {:>8}",
            t.name,
            t.priority,
            t.weight,
            limit(t.requests_per_second),
            limit(t.prompt_tokens_per_minute),
            limit(t.output_tokens_per_minute),
            limit(t.max_concurrent),
            t.in_flight,
            t.calls,
            t.prompt_tokens,
            t.output_tokens,
            t.refused.values().sum::<u64>(),
        );
    }
    if let Some(t) = tenants.first().filter(|t| t.routers > 1) {
        println!(
            "({} routers share these limits: this one enforces 1/{} of each)",
            t.routers, t.routers
        );
    }
}

/// Runs `switchyard tenants ...`.
pub async fn tenants(args: TenantsArgs) -> ExitCode {
    let outcome = async {
        let channel = connect(&args.router).await?;
        let mut client = WorkerManagementClient::new(channel);
        match args.command {
            TenantsCommand::List => {
                let listed = client
                    .list_tenants(keyed(pb::ListTenantsRequest {}, &api_key()))
                    .await?
                    .into_inner();
                match args.router.json {
                    true => print_json(&Value::Array(
                        listed.tenants.iter().map(tenant_json).collect(),
                    )),
                    false => print_table(&listed.tenants),
                }
            }
        }
        Ok::<(), Failed>(())
    }
    .await;
    exit(&args.router.router, outcome)
}

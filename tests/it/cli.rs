//! The admin CLI as a script uses it: the real `switchyard` binary against
//! a running router, `--json` output parsed, exit codes checked (0 done,
//! 1 the router refused, 3 unreachable).

use std::process::Output;

use crate::common::*;
use serde_json::Value;

async fn run(args: Vec<String>) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .await
        .unwrap()
}

fn args(router: &Router, words: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    all.extend(["--router".to_string(), router.addr.to_string()]);
    all
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn workers_and_generate_from_the_command_line() {
    let router = start_router().await;
    let worker = mock("cli").await;
    let url = worker.url();

    let added = json(
        &run(args(
            &router,
            &[
                "workers", "add", &url, "--model", MODEL, "--label", "zone=a", "--json",
            ],
        ))
        .await,
    );
    assert_eq!(added["url"], url.as_str());
    assert_eq!(added["labels"]["zone"], "a");
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(router.list().await.len(), 1, "registered on the router");

    let listed = json(&run(args(&router, &["workers", "list", "--json"])).await);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["health"], "healthy");
    let table = run(args(&router, &["workers", "list"])).await;
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("ID"), "{text}");
    assert!(text.contains(&id) && text.contains(&url), "{text}");
    let got = json(&run(args(&router, &["workers", "get", &url, "--json"])).await);
    assert_eq!(got["id"], id.as_str());

    let reply = run(args(&router, &["generate", "hello", "--model", MODEL])).await;
    assert!(reply.status.success());
    assert!(
        String::from_utf8(reply.stdout).unwrap().contains("cli:"),
        "the mock's tokens"
    );

    // Refusals: exit 1 with the router's words.
    let refused = run(args(
        &router,
        &["workers", "add", "grpc://x", "--model", MODEL],
    ))
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidArgument"));
    let missing = run(args(&router, &["workers", "get", "w-0000000000000000"])).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    let removed = json(&run(args(&router, &["workers", "remove", &id, "--json"])).await);
    assert_eq!(removed["id"], id.as_str());
    assert!(router.list().await.is_empty());

    // No router there: exit 3, saying what to do.
    let nowhere = run(vec![
        "workers".into(),
        "list".into(),
        "--router".into(),
        "127.0.0.1:1".into(),
    ])
    .await;
    assert_eq!(nowhere.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("--router"));
}

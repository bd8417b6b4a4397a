//! `switchyard bench replay` as a user runs it: the binary replays a small
//! Mooncake-format trace through a `kv_aware` router to two simulated
//! SGLang engines over real sockets, and its JSON report says, per
//! request, which worker served it and what the engine reported cached,
//! with the run's hit rate beside the trace's bounds; a bad trace line is
//! refused by its line number.

use crate::kv_events::{add_sglang, kv_router, sim, until_blocks, BLOCK};

/// Two conversations in 512-token trace blocks: A grows over three turns,
/// B over two; each turn comes after the last one ended.
const TRACE: &str = r#"{"timestamp": 0, "input_length": 512, "output_length": 4, "hash_ids": [1]}
{"timestamp": 0, "input_length": 512, "output_length": 4, "hash_ids": [10]}
{"timestamp": 1000, "input_length": 1024, "output_length": 4, "hash_ids": [1, 2]}
{"timestamp": 1000, "input_length": 1000, "output_length": 4, "hash_ids": [10, 11]}
{"timestamp": 2000, "input_length": 1536, "output_length": 4, "hash_ids": [1, 2, 3]}
"#;

async fn replay(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("bench")
        .arg("replay")
        .args(args)
        .output()
        .await
        .expect("switchyard runs")
}

#[tokio::test]
async fn a_replay_reports_each_requests_worker_and_cached_tokens_beside_the_bounds() {
    let router = kv_router().await;
    let (a, b) = (sim(4096).await, sim(4096).await);
    let ids = [
        add_sglang(&router, &a.url()).await,
        add_sglang(&router, &b.url()).await,
    ];
    for id in &ids {
        until_blocks(&router, id, 0).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (trace, out) = (dir.path().join("t.jsonl"), dir.path().join("r.json"));
    std::fs::write(&trace, TRACE).unwrap();
    let output = replay(&[
        trace.to_str().unwrap(),
        "--target",
        &format!("grpc://{}", router.addr),
        "--speedup",
        "5",
        "--block-size",
        &BLOCK.to_string(),
        "--label",
        "kv",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("kv: 5 requests (0 failed)"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let outcomes = report["outcomes"].as_array().expect("per-request outcomes");
    assert_eq!(outcomes.len(), 5);
    let worker = |i: usize| {
        outcomes[i]["worker"]
            .as_str()
            .expect("worker id")
            .to_string()
    };
    let cached = |i: usize| outcomes[i]["cached"].as_u64().unwrap();
    for (i, o) in outcomes.iter().enumerate() {
        assert!(ids.contains(&worker(i)), "{o:?}");
        assert_eq!(o["output"], 4, "{o:?}");
        assert!(o["ttft"].as_f64().unwrap() > 0.0, "{o:?}");
    }
    // Each conversation stays where its prefix is, and is served from it.
    assert_eq!(worker(2), worker(0));
    assert_eq!(worker(4), worker(0));
    assert_eq!(worker(3), worker(1));
    assert_eq!([cached(0), cached(1)], [0, 0]);
    assert_eq!([cached(2), cached(3), cached(4)], [512, 512, 1024]);
    // Every reachable hit was had: the run's rate is the bound's.
    let prompt = 512 + 512 + 1024 + 1000 + 1536;
    let hit = report["hit_rate"].as_f64().unwrap();
    assert!((hit - 2048.0 / prompt as f64).abs() < 1e-9, "{hit}");
    assert!((report["bounds"]["practical"].as_f64().unwrap() - hit).abs() < 1e-9);
    assert_eq!(report["ttfts"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_bad_trace_line_is_refused_by_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let bad = r#"{"timestamp": 5, "input_length": 600, "output_length": 4, "hash_ids": [1]}"#;
    std::fs::write(
        &trace,
        format!("{}{bad}\n", TRACE.lines().next().unwrap().to_owned() + "\n"),
    )
    .unwrap();
    // No router is needed: the trace is read before anything is sent.
    let output = replay(&[trace.to_str().unwrap(), "--target", "grpc://127.0.0.1:9"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("t.jsonl:2: input_length 600 does not fit 1 blocks of 512"),
        "{stderr}"
    );
}

//! Churn: hundreds of concurrent AddWorker/RemoveWorker calls while Generate
//! calls run. Every call succeeds or fails with UNAVAILABLE, and no call that
//! started after a worker's RemoveWorker returned is served by that worker.
//! Then the router binary under thousands of them as fast as they go:
//! the same, and its memory stays flat.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::common::*;
use switchyard::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_churn_never_routes_to_a_removed_worker() {
    let router = Arc::new(start_router().await);
    let mut mocks = Vec::new();
    for i in 0..8 {
        mocks.push(mock(&format!("m{i}")).await);
    }
    let urls: Arc<Vec<String>> = Arc::new(mocks.iter().map(|m| m.url()).collect());
    let removed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    let mut churners = Vec::new();
    for t in 0..4usize {
        let router = router.clone();
        let urls = urls.clone();
        let removed_at = removed_at.clone();
        churners.push(tokio::spawn(async move {
            let mut client = router.management();
            for i in 0..50usize {
                let url = &urls[(t * 7 + i * 3) % urls.len()];
                match router.try_add(url, MODEL).await {
                    Ok(_) => {}
                    Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
                }
                let victim = &urls[(t * 5 + i * 11 + 1) % urls.len()];
                let result = client
                    .remove_worker(pb::RemoveWorkerRequest {
                        target: Some(pb::remove_worker_request::Target::Url(victim.clone())),
                    })
                    .await;
                match result {
                    Ok(r) => {
                        let now = Instant::now();
                        let id = r.into_inner().worker.unwrap().id;
                        removed_at.lock().unwrap().insert(id, now);
                    }
                    Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
                }
            }
        }));
    }

    let mut callers = Vec::new();
    for _ in 0..8 {
        let router = router.clone();
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..50 {
                let started = Instant::now();
                match router.generate(request(MODEL, "churn")).await {
                    Ok(out) => {
                        assert_eq!(
                            out.finish_reason().as_deref(),
                            Some("length"),
                            "stream cut short"
                        );
                        outcomes.push((started, Some(out.worker)));
                    }
                    // Between a removal and an add no worker may serve the
                    // model (NOT_FOUND), or none may be ready (UNAVAILABLE).
                    Err(status) => {
                        assert!(
                            matches!(status.code(), Code::Unavailable | Code::NotFound),
                            "{status:?}"
                        );
                        outcomes.push((started, None));
                    }
                }
            }
            outcomes
        }));
    }

    for c in churners {
        c.await.unwrap();
    }
    let removed_at = removed_at.lock().unwrap().clone();
    let mut calls = Vec::new();
    for c in callers {
        calls.extend(
            c.await
                .unwrap()
                .into_iter()
                .filter_map(|(started, worker)| Some((started, worker?))),
        );
    }
    let served = served_none_after_removal(calls, &removed_at);
    assert!(served > 0, "some calls should have been served");
    assert!(
        removed_at.len() > 20,
        "the churn should have removed many workers"
    );
    // The router is still healthy and consistent afterwards.
    let listed = router.list().await;
    assert!(listed.iter().all(|w| w.in_flight == 0));
    assert!(listed.len() <= urls.len());
}

/// Asserts that no call (when it started, the worker that served it)
/// started after its worker's removal returned (`removed_at`); how many
/// calls were served.
fn served_none_after_removal(
    calls: Vec<(Instant, String)>,
    removed_at: &HashMap<String, Instant>,
) -> usize {
    for (started, worker) in &calls {
        if let Some(removed) = removed_at.get(worker) {
            assert!(
                started < removed,
                "a call started {:?} after worker {worker} was removed was routed to it",
                *started - *removed
            );
        }
    }
    calls.len()
}

/// The router binary's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_adds_and_removes_under_load_keep_memory_flat() {
    // The router binary (SWITCHYARD_BIN overrides it, for a release
    // build's rate) with 8 mock workers registered and removed 5,000
    // times over, by 8 management clients (one worker each) as fast as they go, while 8
    // clients call Generate. Every call ends well or UNAVAILABLE/NOT_FOUND
    // (no worker at that moment); none that started after its worker's
    // removal returned is served by it; RSS after the last 4,000 cycles is
    // within 16 MiB of what it was after the first 1,000.
    let bin = std::env::var("SWITCHYARD_BIN").unwrap_or(env!("CARGO_BIN_EXE_switchyard").into());
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--grpc-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let addr = lines
        .next_line()
        .await
        .unwrap()
        .and_then(|l| l.strip_prefix("switchyard listening on ").map(String::from))
        .expect("the router prints its address");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut mocks = Vec::new();
    for i in 0..8 {
        mocks.push(mock(&format!("c{i}")).await);
    }
    let removed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let mut callers = Vec::new();
    for _ in 0..8 {
        let mut client = pb::inference_client::InferenceClient::new(channel.clone());
        let done = done.clone();
        callers.push(tokio::spawn(async move {
            let mut served = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.generate(request(MODEL, "churn")).await {
                    Ok(response) => {
                        let worker = header(response.metadata(), "x-switchyard-worker-id");
                        let mut stream = response.into_inner();
                        let mut last = None;
                        while let Some(m) = stream.message().await.expect("no stream is cut") {
                            last = Some(m);
                        }
                        assert!(last.is_some());
                        served.push((started, worker));
                    }
                    Err(status) => assert!(
                        matches!(status.code(), Code::Unavailable | Code::NotFound),
                        "{status:?}"
                    ),
                }
            }
            served
        }));
    }

    let mocks_count = mocks.len();
    let churn = |cycles: usize| {
        let mut tasks = Vec::new();
        for mock in &mocks {
            let mut management =
                pb::worker_management_client::WorkerManagementClient::new(channel.clone());
            let url = mock.url();
            let removed_at = removed_at.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..cycles / mocks_count {
                    let added = management
                        .add_worker(pb::AddWorkerRequest {
                            worker: Some(pb::WorkerSpec {
                                url: url.clone(),
                                model_id: MODEL.into(),
                                engine: pb::Engine::Switchyard as i32,
                                ..Default::default()
                            }),
                        })
                        .await;
                    let id = added.expect("AddWorker").into_inner().worker.unwrap().id;
                    management
                        .remove_worker(pb::RemoveWorkerRequest {
                            target: Some(pb::remove_worker_request::Target::Id(id.clone())),
                        })
                        .await
                        .expect("RemoveWorker of the worker this task added");
                    removed_at.lock().unwrap().insert(id, Instant::now());
                }
            }));
        }
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };

    let started = Instant::now();
    churn(1_000).await;
    let warm = rss_kib(pid);
    churn(4_000).await;
    let elapsed = started.elapsed();
    let end = rss_kib(pid);
    done.store(true, Ordering::Relaxed);
    let cycles = removed_at.lock().unwrap().len();
    eprintln!(
        "{cycles} add+remove cycles in {elapsed:?} ({:.0} operations/s); RSS {warm} KiB after the first 1,000, {end} KiB at the end",
        2.0 * cycles as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(cycles, 5_000, "every cycle ran");

    let removed_at = removed_at.lock().unwrap().clone();
    let mut calls = Vec::new();
    for c in callers {
        calls.extend(c.await.unwrap());
    }
    let served = served_none_after_removal(calls, &removed_at);
    assert!(served > 0, "calls were served during the churn");
    assert!(
        end < warm + 16 * 1024,
        "RSS grew from {warm} KiB to {end} KiB over 4,000 more add/remove cycles"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the router is still running"
    );
}

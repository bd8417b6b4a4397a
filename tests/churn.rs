//! Churn: hundreds of concurrent AddWorker/RemoveWorker calls while Generate
//! calls run. Every call succeeds or fails with UNAVAILABLE, and no call that
//! started after a worker's RemoveWorker returned is served by that worker.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
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
    let mut served = 0;
    let removed_at = removed_at.lock().unwrap().clone();
    for c in callers {
        for (started, worker) in c.await.unwrap() {
            let Some(worker) = worker else { continue };
            served += 1;
            if let Some(removed) = removed_at.get(&worker) {
                assert!(
                    started < *removed,
                    "a call started {:?} after worker {worker} was removed was routed to it",
                    started - *removed
                );
            }
        }
    }
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

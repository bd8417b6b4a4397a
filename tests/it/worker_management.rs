//! WorkerManagement over real gRPC: add, get, list with filters, remove,
//! watch, and every error code with a message a person can act on.

use std::time::Duration;

use crate::common::*;
use switchyard::pb;
use switchyard::pb::worker_management_client::WorkerManagementClient;
use tonic::transport::Channel;
use tonic::Code;

fn spec(
    url: &str,
    model: &str,
    role: pb::WorkerRole,
    bootstrap: Option<u32>,
) -> pb::AddWorkerRequest {
    pb::AddWorkerRequest {
        worker: Some(pb::WorkerSpec {
            url: url.into(),
            model_id: model.into(),
            role: role as i32,
            bootstrap_port: bootstrap,
            labels: [("zone".to_string(), "a".to_string())].into(),
            // Registered without contacting the (absent) worker.
            engine: if url.starts_with("grpc://") {
                pb::Engine::Switchyard
            } else {
                pb::Engine::Unspecified
            } as i32,
        }),
    }
}

async fn add_err(
    client: &mut WorkerManagementClient<Channel>,
    req: pb::AddWorkerRequest,
) -> tonic::Status {
    client.add_worker(req).await.unwrap_err()
}

#[tokio::test]
async fn add_get_list_remove_round_trip() {
    let router = start_router().await;
    let mut client = router.management();
    let added = client
        .add_worker(spec(
            "grpc://127.0.0.1:7001",
            "llama",
            pb::WorkerRole::Regular,
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert!(added.id.starts_with("w-"));
    assert_eq!(added.connection_mode, pb::ConnectionMode::Grpc as i32);
    assert_eq!(added.health, pb::HealthStatus::Healthy as i32);
    assert_eq!(added.spec.as_ref().unwrap().labels["zone"], "a");
    client
        .add_worker(spec(
            "grpc://127.0.0.1:7002",
            "llama-pd",
            pb::WorkerRole::Prefill,
            Some(9000),
        ))
        .await
        .unwrap();
    client
        .add_worker(spec(
            "http://127.0.0.1:8001",
            "qwen",
            pb::WorkerRole::Regular,
            None,
        ))
        .await
        .unwrap();

    let by_id = client
        .get_worker(pb::GetWorkerRequest {
            target: Some(pb::get_worker_request::Target::Id(added.id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id, added);
    // Another spelling of the same URL finds the same worker.
    let by_url = client
        .get_worker(pb::GetWorkerRequest {
            target: Some(pb::get_worker_request::Target::Url(
                "GRPC://127.0.0.1:7001/".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_url.id, added.id);

    let lister = client.clone();
    let list = |filter: pb::ListWorkersRequest| {
        let mut c = lister.clone();
        async move { c.list_workers(filter).await.unwrap().into_inner().workers }
    };
    assert_eq!(list(Default::default()).await.len(), 3);
    let llama = list(pb::ListWorkersRequest {
        model_id: Some("llama".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(llama.len(), 1);
    assert_eq!(llama[0].id, added.id);
    let prefill = list(pb::ListWorkersRequest {
        role: Some(pb::WorkerRole::Prefill as i32),
        ..Default::default()
    })
    .await;
    assert_eq!(prefill.len(), 1);
    assert_eq!(prefill[0].spec.as_ref().unwrap().bootstrap_port, Some(9000));
    let http = list(pb::ListWorkersRequest {
        connection_mode: Some(pb::ConnectionMode::Http as i32),
        ..Default::default()
    })
    .await;
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].spec.as_ref().unwrap().url, "http://127.0.0.1:8001");

    let removed = client
        .remove_worker(pb::RemoveWorkerRequest {
            target: Some(pb::remove_worker_request::Target::Url(
                "grpc://127.0.0.1:7001".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(removed.id, added.id);
    assert_eq!(list(Default::default()).await.len(), 2);
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_a_useful_message() {
    let router = start_router().await;
    let mut client = router.management();
    let cases = [
        (
            spec("127.0.0.1:7001", "m", pb::WorkerRole::Regular, None),
            "scheme",
        ),
        (
            spec("ftp://127.0.0.1:7001", "m", pb::WorkerRole::Regular, None),
            "unsupported scheme \"ftp\"",
        ),
        (
            spec("grpc://127.0.0.1", "m", pb::WorkerRole::Regular, None),
            "needs a port",
        ),
        (
            spec("grpc://127.0.0.1:7001", "", pb::WorkerRole::Regular, None),
            "model_id is required",
        ),
        (
            spec("grpc://127.0.0.1:7001", "m", pb::WorkerRole::Prefill, None),
            "prefill worker needs one",
        ),
        (
            spec(
                "grpc://127.0.0.1:7001",
                "m",
                pb::WorkerRole::Decode,
                Some(1),
            ),
            "only prefill workers",
        ),
    ];
    for (req, needle) in cases {
        let err = add_err(&mut client, req).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{needle}");
        assert!(
            err.message().contains(needle),
            "{needle}: {}",
            err.message()
        );
    }
    let mut bad_role = spec("grpc://127.0.0.1:7001", "m", pb::WorkerRole::Regular, None);
    bad_role.worker.as_mut().unwrap().role = 9;
    let err = add_err(&mut client, bad_role).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("role"), "{}", err.message());
    let err = add_err(&mut client, pb::AddWorkerRequest { worker: None }).await;
    assert_eq!(err.code(), Code::InvalidArgument);

    // Duplicate: refused, and the first registration is untouched.
    let first = router.add("grpc://127.0.0.1:7001", "m").await;
    let err = router
        .try_add("grpc://127.0.0.1:7001/", "other")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first.id), "{}", err.message());
    let all = router.list().await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].spec.as_ref().unwrap().model_id, "m");

    // Unknown id / url.
    let err = client
        .remove_worker(pb::RemoveWorkerRequest {
            target: Some(pb::remove_worker_request::Target::Id(
                "w-0000000000000000".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get_worker(pb::GetWorkerRequest {
            target: Some(pb::get_worker_request::Target::Url(
                "grpc://10.9.9.9:1".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .remove_worker(pb::RemoveWorkerRequest { target: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .list_workers(pb::ListWorkersRequest {
            connection_mode: Some(42),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // And the process still serves.
    assert_eq!(router.list().await.len(), 1);
}

#[tokio::test]
async fn watch_sends_the_current_set_then_every_change_in_order() {
    let router = start_router().await;
    let a = router.add("grpc://127.0.0.1:7001", "m").await;
    let mut watch = router
        .management()
        .watch_workers(pb::WatchWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    let initial = watch.message().await.unwrap().unwrap();
    assert!(initial.initial);
    assert_eq!(initial.kind, pb::worker_event::Kind::Added as i32);
    assert_eq!(initial.worker.unwrap().id, a.id);

    let b = router.add("grpc://127.0.0.1:7002", "m").await;
    router.remove(&a.id).await;
    let mut events = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.push(e);
    }
    assert_eq!(events[0].kind, pb::worker_event::Kind::Added as i32);
    assert_eq!(events[0].worker.as_ref().unwrap().id, b.id);
    assert_eq!(events[1].kind, pb::worker_event::Kind::Removed as i32);
    assert_eq!(events[1].worker.as_ref().unwrap().id, a.id);
    assert!(events[0].sequence > initial.sequence);
    assert!(events[1].sequence > events[0].sequence);
    assert!(!events[0].initial);
}

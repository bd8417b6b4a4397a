//! Kubernetes discovery against a small fake API server that speaks the
//! list-and-watch HTTP API as the real one does: a list with a resource
//! version, then a streamed watch of ADDED/MODIFIED/DELETED events with
//! bookmarks, and a 410 Gone that forces a fresh list. The pods' workers
//! are real mock workers on loopback.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{json, Value};
use switchyard::config::{DiscoveryConfig, DiscoveryKind};
use switchyard::pb;
use switchyard::Config;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Code;

const NAMESPACE: &str = "inference";

#[derive(Default)]
struct Fake {
    /// Pods by name.
    pods: BTreeMap<String, Value>,
    revision: u64,
    /// Open watch streams.
    watchers: Vec<mpsc::Sender<Bytes>>,
    /// The label selector of every list.
    lists: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<Fake>>);

impl FakeApi {
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(pods))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Sets a pod (created or changed); watchers hear it unless `silently`.
    fn set_pod(&self, name: &str, port: u16, ready: bool, silently: bool) {
        let mut fake = self.0.lock().unwrap();
        fake.revision += 1;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"),
                "resourceVersion": fake.revision.to_string(),
                "labels": {"app": "worker", "switchyard.io/model": "m", "switchyard.io/engine": "switchyard"},
                "annotations": {"switchyard.io/port": port.to_string()},
            },
            "status": {
                "phase": "Running", "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        });
        let kind = if fake.pods.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        fake.pods.insert(name.to_string(), pod.clone());
        if !silently {
            fake.send(json!({"type": kind, "object": pod}));
        }
    }

    fn delete_pod(&self, name: &str, silently: bool) {
        let mut fake = self.0.lock().unwrap();
        fake.revision += 1;
        let mut pod = fake.pods.remove(name).unwrap();
        pod["metadata"]["resourceVersion"] = json!(fake.revision.to_string());
        if !silently {
            fake.send(json!({"type": "DELETED", "object": pod}));
        }
    }

    fn bookmark(&self) {
        let mut fake = self.0.lock().unwrap();
        let revision = fake.revision.to_string();
        fake.send(json!({"type": "BOOKMARK", "object": {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"resourceVersion": revision},
        }}));
    }

    /// What the API server says when a watch's resource version was
    /// compacted away: 410 Gone, and the watch ends.
    fn gone(&self) {
        let mut fake = self.0.lock().unwrap();
        fake.send(json!({"type": "ERROR", "object": {
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410,
        }}));
        fake.watchers.clear();
    }

    fn lists(&self) -> Vec<String> {
        self.0.lock().unwrap().lists.clone()
    }
}

impl Fake {
    fn send(&mut self, event: Value) {
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        self.watchers.retain(|w| w.try_send(line.clone()).is_ok());
    }
}

async fn pods(
    State(api): State<FakeApi>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(ns, NAMESPACE, "the configured namespace");
    let mut fake = api.0.lock().unwrap();
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let (tx, rx) = mpsc::channel(64);
        fake.watchers.push(tx);
        let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
        return Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
    }
    fake.lists
        .push(query.get("labelSelector").cloned().unwrap_or_default());
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": fake.revision.to_string()},
        "items": fake.pods.values().collect::<Vec<_>>(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(list.to_string()))
        .unwrap()
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: fake\n    user: test\ncurrent-context: test\n"
        ),
    )
    .unwrap();
    path
}

async fn urls(router: &Router) -> Vec<String> {
    let mut urls: Vec<String> = router
        .list()
        .await
        .into_iter()
        .map(|w| w.spec.unwrap().url)
        .collect();
    urls.sort();
    urls
}

async fn until_urls(router: &Router, expected: &[&str], what: &str) {
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    eventually(Duration::from_secs(15), what, || {
        let expected = expected.clone();
        async move { urls(router).await == expected }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pods_come_and_go_as_workers_through_list_watch_bookmarks_and_410() {
    let (a, b, c) = (mock("a").await, mock("b").await, mock("c").await);
    let port = |w: &switchyard::mock::MockWorker| {
        w.url().rsplit(':').next().unwrap().parse::<u16>().unwrap()
    };
    let api = FakeApi::default();
    let server = api.serve().await;
    api.set_pod("a", port(&a), true, false);
    api.set_pod("b", port(&b), false, false);

    let dir = tempfile::tempdir().unwrap();
    let router = start_router_with(Config {
        discovery: DiscoveryConfig {
            kind: Some(DiscoveryKind::Kubernetes),
            selector: "app=worker".into(),
            namespace: Some(NAMESPACE.into()),
            kubeconfig: Some(kubeconfig(dir.path(), &server)),
            ..DiscoveryConfig::default()
        },
        ..test_config()
    })
    .await;

    // Listed: the Ready pod is a routable worker, the other is not.
    until_urls(&router, &[&a.url()], "pod a discovered").await;
    assert_eq!(api.lists(), ["app=worker"], "listed with the selector");
    let listed = router.list().await;
    assert_eq!(
        listed[0].spec.as_ref().unwrap().labels["k8s_pod"],
        "inference/a"
    );
    assert!(router.generate(request("m", "hi")).await.is_ok());

    // Watched: b turns Ready (after a bookmark), is added; turns unready,
    // is removed; Ready again, added again.
    api.bookmark();
    api.set_pod("b", port(&b), true, false);
    until_urls(&router, &[&a.url(), &b.url()], "pod b added when Ready").await;
    api.set_pod("b", port(&b), false, false);
    until_urls(&router, &[&a.url()], "pod b removed when not Ready").await;
    api.set_pod("b", port(&b), true, false);
    until_urls(&router, &[&a.url(), &b.url()], "pod b back").await;

    // Discovered workers cannot be removed by hand, over gRPC or HTTP.
    let id = router
        .list()
        .await
        .into_iter()
        .find(|w| w.spec.as_ref().unwrap().url == a.url())
        .unwrap()
        .id;
    let refused = router
        .management()
        .remove_worker(pb::RemoveWorkerRequest {
            target: Some(pb::remove_worker_request::Target::Id(id.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("Kubernetes") && refused.message().contains("inference/a"),
        "{}",
        refused.message()
    );
    let http = reqwest::Client::new()
        .delete(router.http_url(&format!("/workers/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 409);
    assert_eq!(urls(&router).await.len(), 2, "still both");

    // A deleted pod's worker leaves.
    api.delete_pod("a", false);
    until_urls(&router, &[&b.url()], "pod a removed when deleted").await;

    // Changes the watch never reported, then 410 Gone: the router lists
    // afresh and ends with what the list says.
    api.delete_pod("b", true);
    api.set_pod("c", port(&c), true, true);
    api.gone();
    until_urls(&router, &[&c.url()], "re-listed after 410 Gone").await;
    assert!(api.lists().len() >= 2, "listed again: {:?}", api.lists());
    let served = router.generate(request("m", "hi")).await.unwrap();
    assert!(served.text().contains("c:"), "{}", served.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_flags_without_a_selector_are_refused() {
    let config = Config {
        discovery: DiscoveryConfig {
            kind: Some(DiscoveryKind::Kubernetes),
            selector: "app".into(),
            ..DiscoveryConfig::default()
        },
        ..test_config()
    };
    let err = switchyard::App::build(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("KEY=VALUE"), "{err}");
}

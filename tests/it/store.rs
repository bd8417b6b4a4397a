//! Where runtime-added workers live: a registry shared by several routers
//! through a real etcd (Debian's `etcd-server`, started here on loopback
//! ports in a temporary directory; `scripts/test.sh` installs it), and a
//! state file that keeps one router's workers across restarts.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use switchyard::config::RegistryConfig;
use switchyard::pb;
use switchyard::{App, Config};
use tonic::Code;

/// A real etcd server on two free loopback ports.
pub(crate) struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    pub(crate) async fn start() -> Etcd {
        let mut etcd = Etcd {
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.resume().await;
        etcd
    }

    /// (Re)starts the server on the same ports and data.
    async fn resume(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is not installed: scripts/test.sh installs Debian's etcd-server");
        self.child = Some(child);
        let health = format!("{client}/health");
        eventually(Duration::from_secs(20), "etcd answers /health", || {
            let health = health.clone();
            async move {
                reqwest::get(&health)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The registry URL for routers sharing `prefix`.
    pub(crate) fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.client_port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn shared_config(url: &str) -> Config {
    Config {
        registry: RegistryConfig {
            url: Some(url.to_string()),
            ..RegistryConfig::default()
        },
        ..test_config()
    }
}

async fn routers(url: &str, n: usize) -> Vec<Router> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(start_router_with(shared_config(url)).await);
    }
    all
}

async fn ids(router: &Router) -> Vec<String> {
    let mut ids: Vec<String> = router.list().await.into_iter().map(|w| w.id).collect();
    ids.sort();
    ids
}

/// A call for `model` on `router` lands on `worker`.
async fn routes_to(router: &Router, model: &str, worker: &str) -> bool {
    router
        .generate(request(model, "hi"))
        .await
        .is_ok_and(|g| g.worker == worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_added_on_one_router_is_routable_on_all_and_removed_from_all() {
    let etcd = Etcd::start().await;
    let r = routers(&etcd.url("share"), 3).await;
    let worker = mock("shared").await;

    let added = r[0].add(&worker.url(), "m").await;
    // Routable on the router that added it the moment AddWorker returns.
    assert!(routes_to(&r[0], "m", &added.id).await);
    // And on the others, under the same id, through their watches.
    for other in &r[1..] {
        eventually(Duration::from_secs(5), "the others route to it", || {
            routes_to(other, "m", &added.id)
        })
        .await;
        assert_eq!(ids(other).await, std::slice::from_ref(&added.id));
    }

    // Removed on another router: never chosen there once RemoveWorker
    // returns, and gone from every router soon after.
    r[1].remove(&added.id).await;
    let err = r[1].generate(request("m", "hi")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for router in &r {
        eventually(Duration::from_secs(5), "every router forgot it", || async {
            router.list().await.is_empty()
        })
        .await;
        assert!(router.generate(request("m", "hi")).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_racing_to_add_one_url_give_one_success_and_one_already_exists() {
    let etcd = Etcd::start().await;
    let r = routers(&etcd.url("race"), 2).await;
    for i in 0..20 {
        let url = format!("grpc://127.0.0.1:{}", 20_000 + i);
        let (a, b) = tokio::join!(r[0].try_add(&url, "m"), r[1].try_add(&url, "m"));
        let (ok, err) = match (a, b) {
            (Ok(ok), Err(err)) | (Err(err), Ok(ok)) => (ok, err),
            (a, b) => panic!("{url}: expected one success and one refusal, got {a:?} and {b:?}"),
        };
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        assert!(err.message().contains(&ok.id), "{}", err.message());
    }
    for router in &r {
        eventually(Duration::from_secs(5), "both list all 20 once", || async {
            router.list().await.len() == 20
        })
        .await;
    }
    assert_eq!(ids(&r[0]).await, ids(&r[1]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_comes_back_with_the_full_set() {
    let etcd = Etcd::start().await;
    let url = etcd.url("restart");
    let first = start_router_with(shared_config(&url)).await;
    for port in [21_001, 21_002, 21_003] {
        first.add(&format!("grpc://127.0.0.1:{port}"), "m").await;
    }
    let before = ids(&first).await;
    first.stop().await;

    // A router that never saw the adds, and one started after the first
    // one stopped: both have the full set, under the same ids.
    let again = start_router_with(shared_config(&url)).await;
    assert_eq!(ids(&again).await, before, "listed before serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_stopped_routing_continues_management_is_refused_and_all_converge_after() {
    let mut etcd = Etcd::start().await;
    let r = routers(&etcd.url("outage"), 2).await;
    let worker = mock("kept").await;
    let added = r[0].add(&worker.url(), "m").await;
    eventually(Duration::from_secs(5), "both route to it", || {
        routes_to(&r[1], "m", &added.id)
    })
    .await;

    etcd.stop();
    // Management calls are refused, saying why; nothing changes.
    eventually(Duration::from_secs(10), "AddWorker is refused", || async {
        let refused = r[0].try_add("grpc://127.0.0.1:22001", "m").await;
        matches!(refused, Err(e) if e.code() == Code::Unavailable)
    })
    .await;
    let refused = r[1]
        .try_add("grpc://127.0.0.1:22002", "m")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        refused.message().contains("etcd") && refused.message().contains("unreachable"),
        "{}",
        refused.message()
    );
    let removal = r[1]
        .management()
        .remove_worker(pb::RemoveWorkerRequest {
            target: Some(pb::remove_worker_request::Target::Id(added.id.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(removal.code(), Code::Unavailable);
    // Routing goes on with the last known set.
    for router in &r {
        assert!(routes_to(router, "m", &added.id).await);
        assert_eq!(ids(router).await, std::slice::from_ref(&added.id));
    }

    etcd.resume().await;
    // Both routers take changes again, and both see each other's.
    let other = mock("after").await;
    let after = within(Duration::from_secs(15), "AddWorker works again", async {
        loop {
            match r[1].try_add(&other.url(), "n").await {
                Ok(info) => break info,
                Err(e) if e.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the first router converges",
        || routes_to(&r[0], "n", &after.id),
    )
    .await;
    r[0].remove(&added.id).await;
    eventually(
        Duration::from_secs(5),
        "the second router converges",
        || async { ids(&r[1]).await == [after.id.clone()] },
    )
    .await;
}

/// A gRPC proxy in front of etcd that can hold `Watch` calls (every other
/// call passes at once): a router behind it lists, and its watch reaches
/// etcd only when the test lets it, after etcd has moved on.
struct WatchGate {
    addr: std::net::SocketAddr,
    /// While true, Watch calls wait.
    hold: tokio::sync::watch::Sender<bool>,
    /// Watch calls seen so far (held or passed).
    watches: tokio::sync::watch::Receiver<usize>,
}

impl WatchGate {
    async fn start(etcd_port: u16) -> WatchGate {
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, held) = tokio::sync::watch::channel(true);
        let (seen, watches) = tokio::sync::watch::channel(0usize);
        let client: Client<_, hyper::body::Incoming> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (client, held, seen) = (client.clone(), held.clone(), seen.clone());
                let service = hyper::service::service_fn(
                    move |mut request: http::Request<hyper::body::Incoming>| {
                        let (client, mut held, seen) = (client.clone(), held.clone(), seen.clone());
                        async move {
                            if request.uri().path() == "/etcdserverpb.Watch/Watch" {
                                seen.send_modify(|n| *n += 1);
                                held.wait_for(|hold| !hold).await.unwrap();
                            }
                            *request.uri_mut() =
                                format!("http://127.0.0.1:{etcd_port}{}", request.uri().path())
                                    .parse()
                                    .unwrap();
                            client.request(request).await
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service),
                );
            }
        });
        WatchGate {
            addr,
            hold,
            watches,
        }
    }
}

/// etcd's own JSON gateway: its current revision, then a compaction at it.
async fn compact(etcd: &Etcd) -> i64 {
    let base = format!("http://127.0.0.1:{}/v3/kv", etcd.client_port);
    let http = reqwest::Client::new();
    let range: serde_json::Value = http
        .post(format!("{base}/range"))
        .json(&serde_json::json!({ "key": "AA==" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revision: i64 = range["header"]["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let compacted = http
        .post(format!("{base}/compaction"))
        .json(&serde_json::json!({ "revision": revision.to_string(), "physical": true }))
        .send()
        .await
        .unwrap();
    assert!(compacted.status().is_success(), "{compacted:?}");
    revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_fell_behind_a_compaction_lists_afresh() {
    let etcd = Etcd::start().await;
    let gate = WatchGate::start(etcd.client_port).await;
    let direct = start_router_with(shared_config(&etcd.url("compact"))).await;
    let gone = direct.add("grpc://127.0.0.1:23001", "m").await;

    // The second router lists (and so knows `gone`), then its watch waits
    // at the gate.
    let behind = start_router_with(shared_config(&format!("etcd://{}/compact", gate.addr))).await;
    assert_eq!(ids(&behind).await, std::slice::from_ref(&gone.id));
    let mut watches = gate.watches.clone();
    within(
        Duration::from_secs(10),
        "its watch reaches the gate",
        async {
            watches.wait_for(|n| *n >= 1).await.unwrap();
        },
    )
    .await;

    // Meanwhile the fleet changes and etcd compacts those changes away: a
    // watch from the revision the router listed at cannot replay them.
    direct.remove(&gone.id).await;
    let kept = direct.add("grpc://127.0.0.1:23002", "m").await;
    compact(&etcd).await;
    assert_eq!(ids(&behind).await, std::slice::from_ref(&gone.id));

    // Let the watch through: etcd answers that its start was compacted, and
    // the router lists afresh (then watches again, from the new list).
    gate.hold.send_replace(false);
    eventually(
        Duration::from_secs(10),
        "the router behind converges",
        || async { ids(&behind).await == std::slice::from_ref(&kept.id) },
    )
    .await;
    within(Duration::from_secs(10), "it watches again", async {
        watches.wait_for(|n| *n >= 2).await.unwrap();
    })
    .await;
    // And follows later changes through that watch.
    let later = direct.add("grpc://127.0.0.1:23003", "m").await;
    eventually(Duration::from_secs(5), "it follows on", || async {
        ids(&behind).await.contains(&later.id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_stops_startup_unless_optional() {
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}/down");
    let err = App::build(shared_config(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reach etcd") && err.contains("--registry-optional"),
        "{err}"
    );

    // Optional: starts with no shared workers, refuses changes, and picks
    // up etcd when it comes up on that address.
    let mut config = shared_config(&url);
    config.registry.optional = true;
    let router = start_router_with(config).await;
    let refused = router
        .try_add("grpc://127.0.0.1:23001", "m")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let mut etcd = Etcd {
        dir: tempfile::tempdir().unwrap(),
        client_port: port,
        peer_port: free_port(),
        child: None,
    };
    etcd.resume().await;
    within(
        Duration::from_secs(15),
        "AddWorker works once etcd is up",
        async {
            while router.try_add("grpc://127.0.0.1:23001", "m").await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_registry_url_is_refused_with_its_shape() {
    let err = App::build(shared_config("etcd://127.0.0.1/nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs a port") && err.contains("etcd://HOST:PORT"),
        "{err}"
    );
}

fn file_config(path: &Path) -> Config {
    Config {
        registry: RegistryConfig {
            state_file: Some(path.to_path_buf()),
            ..RegistryConfig::default()
        },
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_keeps_runtime_workers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workers.json");
    let startup = mock("startup").await;
    let mut config = file_config(&path);
    config.workers.push(switchyard::config::StartupWorker {
        url: startup.url(),
        model_id: "m".into(),
        engine: None,
        role: Default::default(),
        bootstrap_port: None,
        labels: Default::default(),
    });

    let router = start_router_with(config.clone()).await;
    let kept = router.add("grpc://127.0.0.1:24001", "m").await;
    let gone = router.add("grpc://127.0.0.1:24002", "m").await;
    // Over HTTP too.
    let http = reqwest::Client::new()
        .post(router.http_url("/workers"))
        .json(&serde_json::json!({"url": "grpc://127.0.0.1:24003", "model_id": "m", "engine": "switchyard"}))
        .send()
        .await
        .unwrap();
    assert!(http.status().is_success(), "{:?}", http.text().await);
    let by_http: serde_json::Value = http.json().await.unwrap();
    router.remove(&gone.id).await;
    let mut expected = vec![kept.id.clone(), by_http["id"].as_str().unwrap().to_string()];
    expected.sort();
    router.stop().await;

    // The file lists the two runtime workers, not the startup one.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(&startup.url()) && !text.contains(&gone.id),
        "{text}"
    );

    let again = start_router_with(config).await;
    let workers = again.list().await;
    let mut restored: Vec<String> = workers
        .iter()
        .filter(|w| w.spec.as_ref().unwrap().url != startup.url())
        .map(|w| w.id.clone())
        .collect();
    restored.sort();
    assert_eq!(restored, expected, "same ids after the restart");
    assert_eq!(workers.len(), 3, "and the startup worker: {workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_stops_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workers.json");
    for (contents, needle) in [
        ("{\"version\": 1, \"workers\": [", "not a Switchyard state file"),
        ("{\"version\": 7, \"workers\": []}", "format version 7"),
        (
            "{\"version\": 1, \"workers\": [{\"id\": \"x\", \"url\": \"grpc://h:1\", \"model_id\": \"m\", \"role\": \"regular\"}]}",
            "not a worker id",
        ),
    ] {
        std::fs::write(&path, contents).unwrap();
        let err = App::build(file_config(&path))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(needle),
            "{contents}: {err}"
        );
        // The file is left as it was, for the operator to look at.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), contents);
    }
    // An unreadable path (a directory) too.
    let err = App::build(file_config(dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read it"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_be_written_refuses_the_change_and_keeps_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let nested: PathBuf = dir.path().join("sub");
    std::fs::create_dir(&nested).unwrap();
    let router = start_router_with(file_config(&nested.join("workers.json"))).await;
    let worker = mock("kept").await;
    let kept = router.add(&worker.url(), "m").await;
    // The directory disappears under the router.
    std::fs::remove_dir_all(&nested).unwrap();
    let err = router
        .try_add("grpc://127.0.0.1:25002", "m")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("state file"), "{}", err.message());
    let removal = router
        .management()
        .remove_worker(pb::RemoveWorkerRequest {
            target: Some(pb::remove_worker_request::Target::Id(kept.id.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(removal.code(), Code::Unavailable);
    // Nothing changed: the refused add is not routable, the kept worker is.
    assert_eq!(ids(&router).await, std::slice::from_ref(&kept.id));
    assert!(routes_to(&router, "m", &kept.id).await);
    // Once the file can be written again, changes are taken again.
    std::fs::create_dir(&nested).unwrap();
    router.add("grpc://127.0.0.1:25002", "m").await;
    assert_eq!(router.list().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_whether_etcd_is_reachable() {
    let mut etcd = Etcd::start().await;
    let app = App::build(shared_config(&etcd.url("ready"))).await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let readyz = format!("http://{}/readyz", admin.local_addr().unwrap());
    let _serving = tokio::spawn(app.serve(
        switchyard::app::Listeners {
            grpc,
            http: None,
            admin: Some(admin),
        },
        std::future::pending(),
    ));
    let registry = || async {
        let body: serde_json::Value = reqwest::get(&readyz).await.unwrap().json().await.unwrap();
        body["registry"].clone()
    };
    let now = registry().await;
    assert_eq!(now["kind"], "etcd", "{now}");
    assert_eq!(now["reachable"], true, "{now}");

    etcd.stop();
    eventually(
        Duration::from_secs(10),
        "readiness shows etcd lost",
        || async { registry().await["reachable"] == false },
    )
    .await;
    let lost = registry().await;
    assert!(
        lost["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{lost}"
    );
    assert!(
        lost["note"].as_str().unwrap().contains("routing continues"),
        "{lost}"
    );

    etcd.resume().await;
    eventually(
        Duration::from_secs(15),
        "readiness shows etcd back",
        || async { registry().await["reachable"] == true },
    )
    .await;
}

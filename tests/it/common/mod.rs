//! Helpers shared by the integration tests: a real router on 127.0.0.1:0,
//! real mock workers, and real tonic clients.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use switchyard::config::{HealthCheckConfig, ShutdownConfig};
use switchyard::mock::{MockConfig, MockWorker};
use switchyard::pb;
use switchyard::pb::inference_client::InferenceClient;
use switchyard::pb::worker_management_client::WorkerManagementClient;
use switchyard::{App, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

pub const MODEL: &str = "test-model";

/// A router running in this process.
pub struct Router {
    pub addr: SocketAddr,
    /// The HTTP listener's address (tests always serve HTTP too).
    pub http_addr: SocketAddr,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), switchyard::AppError>>>,
}

/// Health checks fast enough for tests: a worker flips after 2 checks 50 ms apart.
pub fn fast_health() -> HealthCheckConfig {
    HealthCheckConfig {
        interval_ms: 50,
        timeout_ms: 40,
        unhealthy_threshold: 2,
        healthy_threshold: 2,
        service: String::new(),
        // A worker added without contact is routable at once, so a test
        // may add a dead address on purpose and see calls fail on it;
        // `tests/it/health.rs` checks the default.
        trust_unchecked: true,
        loads_interval_ms: 50,
    }
}

/// A config for tests: fast health checks (see [`fast_health`]), and a
/// shutdown without the NOT_SERVING grace (tests of the grace set their own).
pub fn test_config() -> Config {
    Config {
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        health_check: fast_health(),
        shutdown: ShutdownConfig {
            grace_ms: 0,
            ..ShutdownConfig::default()
        },
        ..Config::default()
    }
}

/// A router whose health checks will not take a dead worker out of
/// rotation during a test (one round at startup, the next in a minute), so
/// that calls really are offered to it.
pub async fn router_without_health_checks() -> Router {
    start_router_with(Config {
        health_check: HealthCheckConfig {
            interval_ms: 60_000,
            ..fast_health()
        },
        ..test_config()
    })
    .await
}

pub async fn start_router() -> Router {
    start_router_with(test_config()).await
}

pub async fn start_router_with(config: Config) -> Router {
    let app = App::build(config).await.expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = switchyard::app::Listeners {
        grpc: listener,
        http: Some(http),
        admin: None,
    };
    let task = tokio::spawn(app.serve(listeners, async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Router {
        addr,
        http_addr,
        channel,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl Router {
    /// `http://addr{path}` on the router's HTTP listener.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    pub fn management(&self) -> WorkerManagementClient<Channel> {
        WorkerManagementClient::new(self.channel.clone())
    }

    pub fn inference(&self) -> InferenceClient<Channel> {
        InferenceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    pub async fn add(&self, url: &str, model: &str) -> pb::WorkerInfo {
        self.try_add(url, model).await.expect("AddWorker")
    }

    /// Adds a worker; a grpc:// one as a `switchyard` worker, which the
    /// router does not contact (it may be a dead address on purpose).
    pub async fn try_add(&self, url: &str, model: &str) -> Result<pb::WorkerInfo, tonic::Status> {
        let engine = if url.starts_with("grpc://") {
            pb::Engine::Switchyard
        } else {
            pb::Engine::Unspecified
        };
        self.try_add_spec(pb::WorkerSpec {
            url: url.into(),
            model_id: model.into(),
            engine: engine as i32,
            ..Default::default()
        })
        .await
    }

    /// Adds a worker by its url alone (the router asks it its engine,
    /// model and role).
    pub async fn add_found(&self, url: &str) -> pb::WorkerInfo {
        self.try_add_spec(pb::WorkerSpec {
            url: url.into(),
            ..Default::default()
        })
        .await
        .expect("AddWorker")
    }

    pub async fn try_add_spec(
        &self,
        spec: pb::WorkerSpec,
    ) -> Result<pb::WorkerInfo, tonic::Status> {
        let response = self
            .management()
            .add_worker(pb::AddWorkerRequest { worker: Some(spec) })
            .await?;
        Ok(response.into_inner().worker.unwrap())
    }

    pub async fn remove(&self, id: &str) -> pb::WorkerInfo {
        self.management()
            .remove_worker(pb::RemoveWorkerRequest {
                target: Some(pb::remove_worker_request::Target::Id(id.into())),
            })
            .await
            .expect("RemoveWorker")
            .into_inner()
            .worker
            .unwrap()
    }

    pub async fn list(&self) -> Vec<pb::WorkerInfo> {
        self.management()
            .list_workers(pb::ListWorkersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    /// `grpc.health.v1` status of `service` on the router.
    pub async fn health_of(&self, service: &str) -> i32 {
        self.health()
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    }

    /// One whole Generate call: (worker id from metadata, responses).
    pub async fn generate(&self, request: pb::GenerateRequest) -> Result<Generated, tonic::Status> {
        let response = self.inference().generate(request).await?;
        let worker = header(response.metadata(), "x-switchyard-worker-id");
        let request_id = header(response.metadata(), "x-request-id");
        let mut stream = response.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(message);
        }
        Ok(Generated {
            worker,
            request_id,
            messages,
        })
    }

    /// Asserts that the router still serves: a fresh worker of another
    /// model answers through it.
    pub async fn assert_still_serves(&self) {
        let worker = mock("still-serving").await;
        self.add(&worker.url(), "other").await;
        assert!(self.generate(request("other", "x")).await.is_ok());
    }

    /// Starts the router's shutdown (as a first SIGTERM does) without
    /// waiting for it; `stopped` then waits for `serve` to return.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `serve` to return after [`Self::begin_shutdown`].
    pub async fn stopped(&mut self) {
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A metadata entry as a string ("" when absent or not ASCII).
pub fn header(metadata: &tonic::metadata::MetadataMap, name: &str) -> String {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// What one Generate call returned.
#[derive(Debug)]
pub struct Generated {
    pub worker: String,
    pub request_id: String,
    pub messages: Vec<pb::GenerateResponse>,
}

impl Generated {
    /// The concatenated token text.
    pub fn text(&self) -> String {
        self.messages
            .iter()
            .filter_map(|m| match &m.response {
                Some(pb::generate_response::Response::Chunk(c)) => Some(c.text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The finish reason of the final message, if the stream completed.
    pub fn finish_reason(&self) -> Option<String> {
        self.messages.iter().find_map(|m| match &m.response {
            Some(pb::generate_response::Response::Complete(c)) => Some(c.finish_reason.clone()),
            _ => None,
        })
    }
}

pub fn request(model: &str, text: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.into(),
        input: Some(pb::generate_request::Input::Text(text.into())),
        ..Default::default()
    }
}

pub async fn mock(name: &str) -> MockWorker {
    mock_with(MockConfig {
        name: name.into(),
        tokens: 4,
        ..MockConfig::default()
    })
    .await
}

/// A worker that accepts calls and never answers them (until aborted).
pub async fn hung_mock() -> MockWorker {
    mock_with(MockConfig {
        name: "hung".into(),
        hang: true,
        ..MockConfig::default()
    })
    .await
}

pub async fn mock_with(config: MockConfig) -> MockWorker {
    MockWorker::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// `future`'s output, or a panic naming `what` if it takes longer than
/// `limit`: a regression test of something that used to hang fails
/// instead of hanging.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("still waiting after {limit:?}: {what}"))
}

/// Polls `check` until it holds, or panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `stream` until it fails; returns the messages read before the
/// error and the error. Panics if the stream ends cleanly.
pub async fn messages_until_error<T>(stream: &mut tonic::Streaming<T>) -> (usize, tonic::Status) {
    let mut messages = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => messages += 1,
            Ok(None) => panic!("the stream ended without an error after {messages} messages"),
            Err(status) => return (messages, status),
        }
    }
}

/// A "worker" that accepts connections and never says a word (a hung
/// host): its `grpc://` URL, and the task holding its sockets.
pub async fn silent_worker() -> (String, JoinHandle<()>) {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("grpc://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    (url, held)
}

/// A host gone dark: a listener whose accept queue is full, so the kernel
/// drops further connection attempts and connecting hangs. Its `grpc://`
/// URL, and what keeps it so (drop it to end).
pub async fn dark_host() -> (String, (tokio::net::TcpListener, tokio::net::TcpStream)) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
    (format!("grpc://{addr}"), (listener, filler))
}

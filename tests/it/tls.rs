//! TLS, with certificates made here (rcgen): the router's listeners serve
//! TLS and pick up a new certificate on a file change or SIGHUP; a client
//! that trusts another CA is refused and the router keeps serving; worker
//! management needs a client certificate when the router verifies them
//! (a missing one is refused with a message, an expired one or one from
//! another CA at the handshake); `grpcs://` and `https://` workers are
//! reached with the configured CA bundle and client certificate, and a
//! worker signed by another CA, with an expired certificate, or wanting a
//! client certificate the router lacks is refused with a message that says
//! which.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use switchyard::config::{ServerTlsConfig, WorkerTlsConfig};
use switchyard::mock::MockConfig;
use switchyard::pb;
use switchyard::pb::inference_client::InferenceClient;
use switchyard::pb::worker_management_client::WorkerManagementClient;
use switchyard::{App, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

/// A CA that signs certificates into files in a temporary directory.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: Arc<tempfile::TempDir>,
    name: &'static str,
}

/// A certificate and key written to files.
#[derive(Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// The certificate as issued (the file may have been replaced since).
    der: Vec<u8>,
}

impl Files {
    fn identity(&self) -> Identity {
        Identity::from_pem(
            std::fs::read(&self.cert).unwrap(),
            std::fs::read(&self.key).unwrap(),
        )
    }
}

impl Ca {
    fn new(name: &'static str, dir: &Arc<tempfile::TempDir>) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = Ca {
            issuer,
            dir: dir.clone(),
            name,
        };
        std::fs::write(ca.bundle(), ca.issuer.pem()).unwrap();
        ca
    }

    /// The CA certificate's file.
    fn bundle(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    fn pem(&self) -> Certificate {
        Certificate::from_pem(self.issuer.pem())
    }

    /// A certificate for 127.0.0.1 and localhost, written as `file`.
    fn issue(&self, file: &str) -> Files {
        self.issue_with(file, |_| {})
    }

    fn issue_with(&self, file: &str, change: impl FnOnce(&mut CertificateParams)) -> Files {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file.to_string());
        change(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = Files {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
            der: cert.der().to_vec(),
        };
        write_atomically(&files.cert, cert.pem().as_bytes());
        write_atomically(&files.key, key.serialize_pem().as_bytes());
        files
    }
}

/// Writes through a rename, as a certificate manager does, so a reader
/// never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn expired(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
}

struct TlsRouter {
    grpc: SocketAddr,
    http: SocketAddr,
    /// Its listeners' TLS: how many reloads it made and refused.
    tls: Option<Arc<switchyard::services::tls::ServerTls>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TlsRouter {
    async fn start(config: Config) -> TlsRouter {
        let app = App::build(config).await.expect("valid config");
        let tls = app.server_tls().cloned();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listeners = switchyard::app::Listeners {
            grpc,
            http: Some(http),
            admin: None,
        };
        tokio::spawn(app.serve(listeners, async {
            let _ = rx.await;
        }));
        TlsRouter {
            grpc: grpc_addr,
            http: http_addr,
            tls,
            _shutdown: tx,
        }
    }

    /// A gRPC channel over TLS trusting `ca`, presenting `identity`.
    async fn channel(
        &self,
        ca: &Ca,
        identity: Option<&Files>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(ca.pem())
            .domain_name("localhost");
        if let Some(files) = identity {
            tls = tls.identity(files.identity());
        }
        Channel::from_shared(format!("https://{}", self.grpc))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }
}

fn tls_config(server: &Files, client_ca: Option<&Ca>) -> ServerTlsConfig {
    ServerTlsConfig {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: client_ca.map(Ca::bundle),
        reload_check_ms: 100,
    }
}

/// A TLS client config trusting `ca` (ALPN `alpn`), presenting `identity`.
fn rustls_client(ca: &Ca, identity: Option<&Files>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let tls = switchyard::transport::tls::WorkerTls::new(
        Some(&ca.bundle()),
        identity.map(|f| (f.cert.as_path(), f.key.as_path())),
    )
    .unwrap();
    let mut config = (*tls.http).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// Connects over TLS to `addr`: the certificate the server presented.
async fn server_certificate(addr: SocketAddr, ca: &Ca, alpn: &[u8]) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = switchyard::transport::tls::connect(rustls_client(ca, None, alpn), "localhost", tcp)
        .await?;
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    Ok(certs[0].to_vec())
}

/// One HTTP/1.1 request over TLS: the response's status line and body.
async fn https(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Files>,
    request: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = switchyard::transport::tls::connect(
        rustls_client(ca, identity, b"http/1.1"),
        "localhost",
        tcp,
    )
    .await?;
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn der(files: &Files) -> Vec<u8> {
    files.der.clone()
}

#[tokio::test]
async fn listeners_serve_tls_and_take_a_new_certificate_when_the_files_change() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ca = Ca::new("router", &dir);
    let first = ca.issue("router");
    let router = TlsRouter::start(Config {
        tls: Some(tls_config(&first, None)),
        ..test_config()
    })
    .await;
    let worker = mock("w").await;

    let channel = router.channel(&ca, None).await.unwrap();
    WorkerManagementClient::new(channel.clone())
        .add_worker(pb::AddWorkerRequest {
            worker: Some(pb::WorkerSpec {
                url: worker.url(),
                model_id: MODEL.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut stream = InferenceClient::new(channel.clone())
        .generate(request(MODEL, "over TLS"))
        .await
        .unwrap()
        .into_inner();
    let mut chunks = 0;
    while stream.message().await.unwrap().is_some() {
        chunks += 1;
    }
    assert!(chunks > 0);
    let health = https(
        router.http,
        &ca,
        None,
        "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_eq!(
        server_certificate(router.grpc, &ca, b"h2").await.unwrap(),
        der(&first)
    );

    // A renewed certificate, written over the old files: new connections
    // get it on both listeners without a restart; the open channel keeps
    // working.
    let renewed = ca.issue("router");
    assert_ne!(der(&renewed), der(&first));
    eventually(
        Duration::from_secs(10),
        "the renewed certificate",
        || async {
            server_certificate(router.grpc, &ca, b"h2").await.unwrap() == der(&renewed)
                && server_certificate(router.http, &ca, b"http/1.1")
                    .await
                    .unwrap()
                    == der(&renewed)
        },
    )
    .await;
    let listed = WorkerManagementClient::new(channel)
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.into_inner().workers.len(), 1);

    // A broken file is not taken: the renewed certificate stays in use.
    let tls = router.tls.clone().unwrap();
    let refused = tls.reloads().1;
    std::fs::write(&renewed.key, "not a key").unwrap();
    eventually(
        Duration::from_secs(10),
        "a reload of the broken file is refused",
        || async { tls.reloads().1 > refused },
    )
    .await;
    assert_eq!(
        server_certificate(router.grpc, &ca, b"h2").await.unwrap(),
        der(&renewed)
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ca = Ca::new("router", &dir);
    let first = ca.issue("router");
    let router = TlsRouter::start(Config {
        tls: Some(ServerTlsConfig {
            // Only a signal reloads.
            reload_check_ms: 0,
            ..tls_config(&first, None)
        }),
        ..test_config()
    })
    .await;
    assert_eq!(
        server_certificate(router.grpc, &ca, b"h2").await.unwrap(),
        der(&first)
    );
    let renewed = ca.issue("router");
    assert_eq!(
        server_certificate(router.grpc, &ca, b"h2").await.unwrap(),
        der(&first),
        "no reload without a signal"
    );
    let tls = router.tls.clone().unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually(
        Duration::from_secs(10),
        "the certificate after SIGHUP",
        || async { server_certificate(router.grpc, &ca, b"h2").await.unwrap() == der(&renewed) },
    )
    .await;
    // The signal's reload was the only one: the changed files made none
    // (reload_check_ms = 0 polls nothing).
    assert_eq!(tls.reloads(), (1, 0));
}

#[tokio::test]
async fn clients_that_trust_another_ca_or_speak_plaintext_are_refused_and_others_served() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ca = Ca::new("router", &dir);
    let other = Ca::new("other", &dir);
    let router = TlsRouter::start(Config {
        tls: Some(tls_config(&ca.issue("router"), None)),
        ..test_config()
    })
    .await;

    let wrong = server_certificate(router.grpc, &other, b"h2")
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("UnknownIssuer"),
        "a client that trusts another CA cannot verify the router: {wrong}"
    );
    // Plaintext HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(router.http).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plaintext served");

    // The router serves the next client as before.
    let channel = router.channel(&ca, None).await.unwrap();
    WorkerManagementClient::new(channel)
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn worker_management_needs_a_client_certificate_when_the_router_verifies_them() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ca = Ca::new("router", &dir);
    let clients = Ca::new("clients", &dir);
    let other = Ca::new("other", &dir);
    let router = TlsRouter::start(Config {
        tls: Some(tls_config(&ca.issue("router"), Some(&clients))),
        ..test_config()
    })
    .await;
    let worker = mock("w").await;
    let add = || pb::AddWorkerRequest {
        worker: Some(pb::WorkerSpec {
            url: worker.url(),
            model_id: MODEL.into(),
            ..Default::default()
        }),
    };

    // No client certificate: inference and health are served, management
    // is refused with a message that names the fix.
    let anonymous = router.channel(&ca, None).await.unwrap();
    let refused = WorkerManagementClient::new(anonymous.clone())
        .add_worker(add())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );
    let http_refused = https(
        router.http,
        &ca,
        None,
        "GET /workers HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(http_refused.starts_with("HTTP/1.1 401"), "{http_refused}");
    assert!(
        http_refused.contains("client certificate"),
        "{http_refused}"
    );

    // An expired certificate, or one from another CA, ends the handshake.
    let stale = clients.issue_with("stale-admin", expired);
    let foreign = other.issue("foreign-admin");
    for files in [&stale, &foreign] {
        let refused = match router.channel(&ca, Some(files)).await {
            Err(_) => true,
            Ok(channel) => WorkerManagementClient::new(channel)
                .list_workers(pb::ListWorkersRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "{} was accepted", files.cert.display());
    }
    let refused_http = https(
        router.http,
        &ca,
        Some(&stale),
        "GET /workers HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        refused_http.as_ref().is_err() || refused_http.as_ref().unwrap().is_empty(),
        "{refused_http:?}"
    );
    WorkerManagementClient::new(anonymous.clone())
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .expect_err("still refused");

    // With one: management is served on both listeners.
    let admin = clients.issue("admin");
    let channel = router.channel(&ca, Some(&admin)).await.unwrap();
    WorkerManagementClient::new(channel)
        .add_worker(add())
        .await
        .unwrap();
    let listed = https(
        router.http,
        &ca,
        Some(&admin),
        "GET /workers HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(listed.contains(&worker.url()), "{listed}");
    // Inference needs none.
    let mut stream = InferenceClient::new(anonymous)
        .generate(request(MODEL, "no certificate"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

async fn tls_mock(
    files: &Files,
    client_ca: Option<&Ca>,
    http: bool,
) -> switchyard::mock::MockWorker {
    let config = MockConfig {
        name: "tls".into(),
        tls: Some(switchyard::mock::MockTls {
            cert: files.cert.clone(),
            key: files.key.clone(),
            client_ca: client_ca.map(Ca::bundle),
        }),
        ..MockConfig::default()
    };
    let addr = "127.0.0.1:0".parse().unwrap();
    match http {
        true => switchyard::mock::MockWorker::start_http(addr, config).await,
        false => switchyard::mock::MockWorker::start(addr, config).await,
    }
    .unwrap()
}

async fn router_trusting(ca: &Ca, identity: Option<&Files>) -> Router {
    start_router_with(Config {
        worker_tls: WorkerTlsConfig {
            ca: Some(ca.bundle()),
            cert: identity.map(|f| f.cert.clone()),
            key: identity.map(|f| f.key.clone()),
        },
        ..test_config()
    })
    .await
}

#[tokio::test]
async fn tls_workers_are_reached_with_the_configured_ca_and_refused_with_reasons() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let workers = Ca::new("workers", &dir);
    let other = Ca::new("other", &dir);
    let good = tls_mock(&workers.issue("worker"), None, false).await;
    assert!(good.url().starts_with("grpcs://"), "{}", good.url());

    let router = router_trusting(&workers, None).await;
    router.add(&good.url(), MODEL).await;
    let generated = router
        .generate(request(MODEL, "to a TLS worker"))
        .await
        .unwrap();
    assert!(generated.text().contains("tls"), "{}", generated.text());

    // Another CA's worker, an expired certificate, a worker that wants a
    // client certificate: refused, each saying why; nothing registered.
    let foreign = tls_mock(&other.issue("foreign"), None, false).await;
    let stale = tls_mock(&workers.issue_with("stale", expired), None, false).await;
    let strict_clients = Ca::new("router-clients", &dir);
    let strict = tls_mock(&workers.issue("strict"), Some(&strict_clients), false).await;
    for (worker, says) in [
        (&foreign, "not signed by a trusted CA"),
        (&stale, "expired"),
        (&strict, "client certificate"),
    ] {
        let refused = router.try_add(&worker.url(), MODEL).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains(says), "{refused:?}");
    }
    assert_eq!(router.list().await.len(), 1);
    // Plaintext to a TLS port, and TLS to a plaintext one, are refused too.
    let plain = mock("plain").await;
    let as_tls = plain.url().replace("grpc://", "grpcs://");
    let refused = router.try_add(&as_tls, MODEL).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("TLS"), "{refused:?}");

    // With a client certificate the strict worker takes the router.
    let identity = strict_clients.issue("router-client");
    let with_identity = router_trusting(&workers, Some(&identity)).await;
    with_identity.add(&strict.url(), MODEL).await;
    let generated = with_identity
        .generate(request(MODEL, "mutual TLS"))
        .await
        .unwrap();
    assert!(!generated.text().is_empty());
}

#[tokio::test]
async fn https_workers_serve_the_http_router() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let workers = Ca::new("workers", &dir);
    let worker = tls_mock(&workers.issue("http-worker"), None, true).await;
    assert!(worker.url().starts_with("https://"), "{}", worker.url());
    let router = router_trusting(&workers, None).await;
    router.add(&worker.url(), MODEL).await;
    let client = reqwest::Client::new();
    let response = client
        .post(router.http_url("/generate"))
        .json(&serde_json::json!({"model": MODEL, "text": "hello over https"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("tls"), "{body}");
    // Health checks reach it too (past the one when it was added): it
    // stays healthy.
    let probed = worker.stats().health_probes();
    eventually(
        Duration::from_secs(10),
        "two more health checks",
        || async { worker.stats().health_probes() >= probed + 2 },
    )
    .await;
    assert_eq!(
        router.list().await[0].health,
        pb::HealthStatus::Healthy as i32
    );

    // A router that trusts only the system's roots refuses it when it is
    // added, saying why; nothing is registered.
    let untrusting = start_router().await;
    let refused = untrusting.try_add(&worker.url(), MODEL).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("not signed by a trusted CA"),
        "{refused:?}"
    );
    assert!(untrusting.list().await.is_empty());
}

#[tokio::test]
async fn unusable_tls_files_stop_startup_with_the_file_named() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ca = Ca::new("router", &dir);
    let files = ca.issue("router");
    let missing = dir.path().join("missing.pem");
    let wrong_key = ca.issue("another");
    let cases = [
        (
            ServerTlsConfig {
                cert: missing.clone(),
                ..tls_config(&files, None)
            },
            "missing.pem",
        ),
        (
            ServerTlsConfig {
                key: files.cert.clone(),
                ..tls_config(&files, None)
            },
            "private key",
        ),
        (
            ServerTlsConfig {
                key: wrong_key.key.clone(),
                ..tls_config(&files, None)
            },
            "does not match",
        ),
    ];
    for (tls, says) in cases {
        let error = App::build(Config {
            tls: Some(tls),
            ..test_config()
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains(says), "{error}");
    }
    let error = App::build(Config {
        worker_tls: WorkerTlsConfig {
            ca: Some(missing),
            ..WorkerTlsConfig::default()
        },
        ..test_config()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("missing.pem"), "{error}");
}

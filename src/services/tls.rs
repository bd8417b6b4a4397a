//! TLS on the router's listeners: the certificate, key and client CA of
//! `[tls]`, read at startup and again on `SIGHUP` or when a file changes,
//! and the accept loop both listeners share ([`Accepting`]).
//!
//! A reload that fails (a half-written file, a key that does not match)
//! keeps the certificate in use and logs why; connections already open
//! keep theirs. With a client CA, clients may present a certificate signed
//! by it (one signed by another CA, or expired, ends the handshake); a call
//! to worker management must come over a connection that presented one.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::either::Either;

use crate::config::ServerTlsConfig;
use crate::transport::tls::{certificates, private_key, provider, roots, TlsError};

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server configs of both listeners, swapped whole on a reload.
#[derive(Debug)]
struct Configs {
    /// ALPN `h2`.
    grpc: Arc<ServerConfig>,
    /// ALPN `http/1.1`.
    http: Arc<ServerConfig>,
}

/// The listeners' TLS, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    config: ServerTlsConfig,
    current: ArcSwap<Configs>,
    /// The files' modification times when last read.
    stamps: Mutex<Vec<Option<SystemTime>>>,
    /// Reloads [`ServerTls::watch`] made, and those it refused (the files
    /// did not make a certificate: the one in use stayed).
    reloads: (AtomicU64, AtomicU64),
}

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The gRPC listener (HTTP/2).
    Grpc,
    /// The HTTP listener (HTTP/1.1).
    Http,
}

impl ServerTls {
    /// Reads the files of `config`; an error names the file and the problem.
    pub fn load(config: &ServerTlsConfig) -> Result<Arc<Self>, TlsError> {
        let tls = ServerTls {
            config: config.clone(),
            current: ArcSwap::from_pointee(build(config)?),
            stamps: Mutex::new(stamps(config)),
            reloads: (AtomicU64::new(0), AtomicU64::new(0)),
        };
        Ok(Arc::new(tls))
    }

    /// Whether worker management needs a client certificate.
    pub fn verifies_clients(&self) -> bool {
        self.config.client_ca.is_some()
    }

    /// How many reloads a signal or a file change made, and how many of
    /// them were refused.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads.0.load(Ordering::Relaxed),
            self.reloads.1.load(Ordering::Relaxed),
        )
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps(&self.config);
        let configs = build(&self.config)?;
        self.current.store(Arc::new(configs));
        if let Ok(mut seen) = self.stamps.lock() {
            *seen = stamps;
        }
        Ok(())
    }

    /// Reloads on `SIGHUP`, and whenever a file's modification time
    /// changes (checked every `reload_check_ms`), until `stop` resolves.
    pub async fn watch(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: TLS files reload only when they change");
                None
            }
        };
        let every = Duration::from_millis(self.config.reload_check_ms.max(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let polling = self.config.reload_check_ms > 0;
        loop {
            let why = tokio::select! {
                _ = &mut stop => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = ticker.tick(), if polling => {
                    let changed = self
                        .stamps
                        .lock()
                        .is_ok_and(|seen| *seen != stamps(&self.config));
                    if !changed {
                        continue;
                    }
                    "a file changed"
                }
            };
            self.reloads.0.fetch_add(1, Ordering::Relaxed);
            match self.reload() {
                Ok(()) => {
                    tracing::info!(reason = why, cert = %self.config.cert.display(), "TLS certificate reloaded")
                }
                Err(error) => {
                    self.reloads.1.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(reason = why, %error, "TLS files not reloaded: keeping the certificate in use")
                }
            }
        }
    }

    fn acceptor(&self, protocol: Protocol) -> tokio_rustls::TlsAcceptor {
        let configs = self.current.load();
        tokio_rustls::TlsAcceptor::from(match protocol {
            Protocol::Grpc => configs.grpc.clone(),
            Protocol::Http => configs.http.clone(),
        })
    }
}

fn files(config: &ServerTlsConfig) -> impl Iterator<Item = &PathBuf> {
    [&config.cert, &config.key]
        .into_iter()
        .chain(config.client_ca.as_ref())
}

fn stamps(config: &ServerTlsConfig) -> Vec<Option<SystemTime>> {
    files(config)
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

fn build(config: &ServerTlsConfig) -> Result<Configs, TlsError> {
    let chain = certificates(&config.cert)?;
    let key = private_key(&config.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            path: config.cert.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    // Inference needs no certificate; worker management does
                    // (checked per call).
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Invalid {
                        path: ca.clone(),
                        reason: format!("not a usable client CA: {e}"),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut grpc = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid {
            path: config.key.clone(),
            reason: format!("does not match {}: {e}", config.cert.display()),
        })?;
    let mut http = grpc.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Configs {
        grpc: Arc::new(grpc),
        http: Arc::new(http),
    })
}

/// An accepted connection: plain TCP, or TLS over it.
pub type Io = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// It presented a client certificate that the client CA verified.
    pub client_cert: bool,
}

/// A listener's accepted connections, TLS-terminated if configured.
/// Handshakes run concurrently, so a slow one holds up no other client.
#[derive(Debug)]
pub struct Accepting {
    tcp: TcpListener,
    tls: Option<(Arc<ServerTls>, Protocol)>,
    handshakes: JoinSet<Option<(Io, Peer)>>,
}

impl Accepting {
    /// Connections on `tcp`, over TLS if `tls` is given.
    pub fn new(tcp: TcpListener, tls: Option<(Arc<ServerTls>, Protocol)>) -> Self {
        Accepting {
            tcp,
            tls,
            handshakes: JoinSet::new(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection ready to serve. Cancel-safe: a handshake under
    /// way when the caller stops waiting is kept for the next call.
    pub async fn next(&mut self) -> (Io, Peer) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        // Without it, small response frames wait for Nagle (~40 ms).
                        let _ = tcp.set_nodelay(true);
                        let Some((tls, protocol)) = &self.tls else {
                            return (Either::Left(tcp), Peer { addr, client_cert: false });
                        };
                        let acceptor = tls.acceptor(*protocol);
                        self.handshakes.spawn(handshake(acceptor, tcp, addr));
                    }
                    Err(error) => {
                        // Out of file descriptors, say: keep serving the
                        // connections there are and try again shortly.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(Io, Peer)> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let client_cert = tls.get_ref().1.peer_certificates().is_some();
            Some((Either::Right(tls), Peer { addr, client_cert }))
        }
        Ok(Err(error)) => {
            // A client's mistake (wrong CA, expired certificate, plain
            // text on a TLS port), not the router's.
            tracing::info!(peer = %addr, %error, "TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::info!(peer = %addr, "TLS handshake not completed within {HANDSHAKE_TIMEOUT:?}");
            None
        }
    }
}

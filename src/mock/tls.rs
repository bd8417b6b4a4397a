//! TLS on a mock worker's listener: its own files (`MockTls`), served by
//! tonic (gRPC) or by a small accept loop here (HTTP), so the mock needs
//! nothing of the router's listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::transport::tls::{certificates, private_key, provider, roots};

/// A mock's certificate, key and (optional) client CA, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// tonic's server TLS from the mock's files: a client CA makes client
/// certificates required.
pub(super) fn tonic_tls(files: &MockTls) -> std::io::Result<tonic::transport::ServerTlsConfig> {
    let cert = std::fs::read(&files.cert)?;
    let key = std::fs::read(&files.key)?;
    let mut tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(std::fs::read(ca)?));
    }
    Ok(tls)
}

/// An HTTP/1.1 listener that completes each connection's TLS handshake
/// before axum sees it; a failed handshake drops that connection only.
pub(super) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// `tcp` with TLS from `files` (client certificates required when a
    /// client CA is set).
    pub(super) fn new(tcp: TcpListener, files: &MockTls) -> std::io::Result<Self> {
        let chain = certificates(&files.cert).map_err(std::io::Error::other)?;
        let key = private_key(&files.key).map_err(std::io::Error::other)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let roots = roots(ca).map_err(std::io::Error::other)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(std::io::Error::other)?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // Without it, small responses wait for Nagle (~40 ms).
            let _ = tcp.set_nodelay(true);
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

//! TLS: the PEM files both sides read, the client side of `grpcs://` and
//! `https://` workers, and what a failed handshake means in the router's
//! words.
//!
//! One crypto provider (rustls on `ring`), chosen explicitly rather than
//! through rustls' process-wide default. A worker is trusted when its
//! certificate chains to the configured CA bundle (`worker_tls.ca`), or to
//! the system's roots when none is configured; the router presents a client
//! certificate (mTLS) only when one is configured.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TLS file that cannot be used, named, with why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds nothing usable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every certificate in a PEM file (a certificate and its chain, or a CA
/// bundle); at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            path,
            "holds no PEM certificate (BEGIN CERTIFICATE)",
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(path, format!("holds no usable PEM private key ({e})")))
}

/// A root store of every certificate in a PEM CA bundle.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| invalid(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The crypto provider every TLS config of the router uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The client side of TLS to workers: one config per protocol (ALPN `h2`
/// for gRPC; none for HTTP, whose connector adds `http/1.1`), the same
/// trust and identity.
#[derive(Debug, Clone)]
pub struct WorkerTls {
    /// For `grpcs://` workers.
    pub grpc: Arc<ClientConfig>,
    /// For `https://` workers.
    pub http: Arc<ClientConfig>,
}

impl WorkerTls {
    /// Trusts the CA bundle at `ca` (the system's roots if `None`) and
    /// presents the certificate and key at `identity`, if given.
    pub fn new(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let roots = match ca {
            Some(path) => roots(path)?,
            None => system_roots(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(Path::new("(TLS)"), e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| invalid(key, format!("does not match {}: {e}", cert.display())))?,
            None => builder.with_no_client_auth(),
        };
        // The HTTP client's TLS layer (hyper-rustls) sets ALPN itself.
        let http = config.clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(WorkerTls {
            grpc: Arc::new(config),
            http: Arc::new(http),
        })
    }

    /// The default: the system's roots, no client certificate. Read once.
    pub fn system() -> Self {
        static SYSTEM: OnceLock<WorkerTls> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                WorkerTls::new(None, None)
                    .unwrap_or_else(|_| unreachable!("no file to read without a CA or identity"))
            })
            .clone()
    }
}

/// The system's trusted roots (empty if none can be read: every TLS worker
/// is then refused as untrusted, which names the fix).
fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "reading the system's CA certificates");
    }
    let (added, _) = store.add_parsable_certificates(found.certs);
    tracing::debug!(added, "system CA certificates");
    store
}

/// The TLS name of a host as an authority writes it (`[::1]` is `::1`).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsFailure> {
    ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|_| TlsFailure::Other)
}

/// Completes a TLS handshake over `tcp` to `host`.
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = server_name(host).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Why a TLS handshake with a worker failed, in terms an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    /// The certificate does not chain to a trusted CA.
    #[error(
        "the worker's TLS certificate is not signed by a trusted CA (set worker_tls.ca to the \
         CA bundle that signed it)"
    )]
    Untrusted,
    /// The certificate is outside its validity period.
    #[error("the worker's TLS certificate has expired or is not yet valid")]
    Expired,
    /// The certificate does not name the host in the worker's URL.
    #[error("the worker's TLS certificate is not valid for the host name in its URL")]
    WrongName,
    /// The worker ended the handshake: it wants a client certificate the
    /// router did not present, or refused the one it did.
    #[error(
        "the worker refused the TLS connection (does it require a client certificate? set \
         worker_tls.cert and worker_tls.key)"
    )]
    Refused,
    /// The worker does not speak the protocol over TLS (no ALPN `h2` for
    /// gRPC).
    #[error("the worker does not offer HTTP/2 over TLS (ALPN h2)")]
    NoHttp2,
    /// Anything else (not TLS at all, say).
    #[error("the TLS handshake failed (does the worker serve TLS on that port?)")]
    Other,
}

impl TlsFailure {
    /// The failure behind a handshake's I/O error, if it is a TLS one.
    pub fn from_io(error: &std::io::Error) -> Option<Self> {
        let inner = error.get_ref()?;
        // Some layers wrap the handshake's I/O error in another.
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Self::from_io(io);
        }
        let tls = inner.downcast_ref::<rustls::Error>()?;
        Some(match tls {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                _ => TlsFailure::Untrusted,
            },
            rustls::Error::AlertReceived(_) => TlsFailure::Refused,
            rustls::Error::NoApplicationProtocol => TlsFailure::NoHttp2,
            _ => TlsFailure::Other,
        })
    }
}

//! TLS for the gRPC server, done here rather than by tonic so that the certificate, its key
//! and the client CA are loaded again when their files change (see [`crate::reload`]):
//! streams already open keep their connection, new connections get the new certificate.
//!
//! rustls with the ring provider; TLS 1.3 and 1.2 only; ALPN `h2` (gRPC clients such as
//! grpc-go require it). With a client CA (`--redis-sync-client-ca-path`) every client must
//! present a certificate that CA signed (mutual TLS), or the handshake fails.
//!
//! The accept loop never waits for a handshake: each runs in its own task with a time limit,
//! and a failed one is logged and forgotten.

use crate::conn::{Acceptor, Guarded, Protocol};
use crate::reload::{read, Reloading};
use anyhow::{bail, Context};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; connections beyond are closed at once, so a flood of
/// silent connections cannot hold more than this many sockets for [`HANDSHAKE_TIMEOUT`].
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The files the server's TLS configuration is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The server's TLS configuration, current as of the files.
pub struct ServerTls {
    config: Reloading<ServerConfig>,
}

impl ServerTls {
    /// Loads the files now: an unreadable or invalid file is a start-up error.
    pub fn load(files: &ServerTlsFiles) -> anyhow::Result<Self> {
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        paths.extend(files.client_ca.clone());
        let mtls = files.client_ca.is_some();
        let config = Reloading::new("gRPC TLS certificate", paths, move |p| {
            server_config(&p[0], &p[1], mtls.then(|| p[2].as_path()))
        })?;
        Ok(ServerTls { config })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.get()
    }
}

/// Builds a rustls server configuration from PEM files.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(cert, "--redis-sync-cert-path")?;
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| {
        anyhow::anyhow!(
            "--redis-sync-key-path {}: no PEM private key found ({e})",
            key.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("choosing TLS versions")?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca, "--redis-sync-client-ca-path")? {
                roots.add(c).with_context(|| {
                    format!(
                        "--redis-sync-client-ca-path {}: not a usable CA certificate",
                        ca.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("--redis-sync-client-ca-path: building the client verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "--redis-sync-cert-path {} and --redis-sync-key-path {} do not make a usable pair",
            cert.display(),
            key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: invalid PEM ({e})", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no PEM certificate found", path.display());
    }
    Ok(certs)
}

/// Accepts TCP connections and yields those that completed the TLS handshake, until
/// `stop` is cancelled (the listener is closed then). `refused` counts the others
/// (`reason` = `tls_handshake` or `handshake_limit`).
pub fn incoming(
    mut acceptor: Acceptor,
    tls: Arc<ServerTls>,
    stop: CancellationToken,
    refused: Counter<u64>,
) -> ReceiverStream<Result<Guarded<TlsStream<TcpStream>>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        let mut over_limit = crate::conn::RateLimited::default();
        loop {
            let (tcp, peer, slot) = tokio::select! {
                a = acceptor.accept() => a,
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                // Closed unanswered; said at most once a second, with the count.
                refused.add(1, &[KeyValue::new("reason", "handshake_limit")]);
                if let Some(n) = over_limit.due() {
                    warn!(
                        refused = n,
                        "{MAX_PENDING_HANDSHAKES} TLS handshakes already in progress: closing new connections"
                    );
                }
                continue;
            };
            let tls_acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let failed = || refused.add(1, &[KeyValue::new("reason", "tls_handshake")]);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls_acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        // The first request's clock starts once the handshake is done.
                        let stream = Guarded::new(stream, slot, Protocol::Http2, peer);
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        // Port probes (a TCP health check) close before saying anything.
                        debug!(%peer, "connection closed before the TLS handshake");
                    }
                    Ok(Err(e)) => {
                        failed();
                        info!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        failed();
                        info!(
                            %peer,
                            "TLS handshake not completed within {HANDSHAKE_TIMEOUT:?}; connection closed"
                        );
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

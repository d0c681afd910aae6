//! Wires the parts together and owns start-up and shutdown.
//!
//! Start-up binds every listener first (a port in use fails at once, before anything
//! else happens), then starts the watcher and the servers. Shutdown, on the future given
//! to [`run`]: readiness goes false, every stream ends with UNAVAILABLE, the gRPC servers
//! drain for at most the grace period, then the watcher and the management server stop.

use crate::config::Config;
use crate::grpc::SyncService;
use crate::hub::Hub;
use crate::source::{OnConnect, Watcher};
use crate::start_error::StartError;
use crate::status::Status;
use crate::telemetry::Telemetry;
use crate::wire::{server, string_struct, FILE_DESCRIPTOR_SET};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::{error, info, warn};

/// The gRPC server's HTTP/2 keepalive: ping idle connections, drop dead ones.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Limits on what a client can make the gRPC server hold (the clients are not trusted).
/// Requests are a selector and an id: a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// HTTP/2 header list (the selector, a token, user agents).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Concurrent HTTP/2 streams on one connection (clients use one or two).
const MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Unary calls (GetMetadata, FetchAllFlags) answer at once; SyncFlags is not affected
/// (only the time to its response headers counts).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared parts every server and watcher hold.
#[derive(Clone)]
struct Parts {
    status: Arc<Status>,
    hub: Arc<Hub>,
    fleet: Arc<crate::fleet::Fleet>,
    telemetry: Arc<Telemetry>,
    metrics: crate::telemetry::Metrics,
}

/// Everything bound before anything starts (a port in use fails at once).
struct Listeners {
    /// None with `--redis-sync-port 0` (gRPC on the Unix socket only).
    grpc: Option<TcpListener>,
    mgmt: Option<TcpListener>,
    unix: Option<UnixListener>,
}

/// The stop signals, cancelled in this order at shutdown.
#[derive(Default)]
struct Stops {
    streams: CancellationToken,
    watchers: CancellationToken,
    mgmt: CancellationToken,
}

/// What runs, to be stopped in order.
struct Running {
    tcp: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    unix: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    health: JoinHandle<()>,
    watchers: Vec<JoinHandle<()>>,
    mgmt: Option<JoinHandle<std::io::Result<()>>>,
}

/// Runs the service until `shutdown` resolves, then shuts down within the grace period.
/// An error is a start-up error, classified (configuration or failure) for the exit code.
pub async fn run(
    cfg: Config,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let parts = Parts::new(&cfg, telemetry);
    let _fleet_metrics = crate::fleet::metrics(
        &parts.telemetry.provider,
        parts.fleet.clone(),
        parts.hub.clone(),
    );
    // Certificates and tokens first: a bad file fails before any port is open.
    let (tls, auth) = load_security(&cfg, &parts)?;
    let listeners = Listeners::bind(&cfg).await?;
    warn_if_redis_unverified(&cfg);
    let stops = Stops::default();
    preload_snapshot(&cfg, &parts.hub);
    let watchers = start_watchers(&cfg, &parts, &stops.watchers);
    let (tcp, unix, health) = start_grpc(
        &cfg,
        &parts,
        (tls, auth),
        (listeners.grpc, listeners.unix),
        &stops.streams,
    )?;
    let mgmt = start_management(listeners.mgmt, &parts, &stops.mgmt)?;
    shutdown.await;
    let running = Running {
        tcp,
        unix,
        health,
        watchers,
        mgmt,
    };
    shut_down(&cfg, &parts, running, &stops).await;
    Ok(())
}

impl Parts {
    fn new(cfg: &Config, telemetry: Telemetry) -> Self {
        let telemetry = Arc::new(telemetry);
        let context = (!cfg.context.is_empty()).then(|| string_struct(&cfg.context));
        let names = cfg.redis.sources.iter().map(|s| s.name.clone()).collect();
        Parts {
            status: Arc::new(Status::default()),
            hub: Arc::new(Hub::new(names, context).with_max_bytes(cfg.documents.max_bytes)),
            fleet: crate::fleet::Fleet::new(),
            metrics: telemetry.metrics.clone(),
            telemetry,
        }
    }
}

/// The gRPC server's TLS (certificates loaded) and the token check. Every failure is a
/// configuration error: the files are named by options (garbage PEM, a certificate and
/// key that are not a pair, an unreadable or empty token file).
fn load_security(
    cfg: &Config,
    parts: &Parts,
) -> Result<(Option<Arc<crate::tls::ServerTls>>, crate::auth::Auth), StartError> {
    let tls = match &cfg.tls {
        Some(files) => Some(Arc::new(
            crate::tls::ServerTls::load(files).map_err(StartError::config)?,
        )),
        None => None,
    };
    let tokens = match &cfg.auth_token_file {
        Some(path) => Some(Arc::new(
            crate::auth::Tokens::load(path.clone()).map_err(StartError::config)?,
        )),
        None => None,
    };
    Ok((
        tls,
        crate::auth::Auth::new(tokens, parts.metrics.grpc_refused.clone()),
    ))
}

impl Listeners {
    /// A bind error is classified by its kind ([`crate::start_error::io_kind`]).
    async fn bind(cfg: &Config) -> Result<Self, StartError> {
        // Management first, gRPC last: whoever sees the gRPC port accept (a probe, a
        // test) finds the management port bound too.
        let mgmt_listener = match cfg.management_port {
            Some(port) => {
                let addr = std::net::SocketAddr::new(cfg.grpc_addr.ip(), port);
                Some(TcpListener::bind(addr).await.map_err(|e| {
                    StartError::io(
                        e,
                        format!("--management-port: cannot listen for management HTTP on {addr}"),
                    )
                })?)
            }
            None => None,
        };
        // Port 0: gRPC on the Unix socket only (the configuration requires one then).
        let grpc_listener = match cfg.grpc_addr.port() {
            0 => None,
            _ => Some(TcpListener::bind(cfg.grpc_addr).await.map_err(|e| {
                StartError::io(
                    e,
                    format!(
                        "--redis-sync-port: cannot listen for gRPC on {}",
                        cfg.grpc_addr
                    ),
                )
            })?),
        };
        let unix_listener = match &cfg.socket_path {
            Some(path) => Some(bind_unix(path).await?),
            None => None,
        };
        Ok(Listeners {
            grpc: grpc_listener,
            mgmt: mgmt_listener,
            unix: unix_listener,
        })
    }
}

fn warn_if_redis_unverified(cfg: &Config) {
    if cfg.redis.tls.insecure {
        warn!(
            redis = %cfg.redis,
            "--redis-tls-insecure: the Redis server's certificate is NOT verified; anyone on the \
             network path can pose as Redis and serve flags. Development only"
        );
    }
}

/// `--snapshot-path`: serve the saved document until Redis answers.
fn preload_snapshot(cfg: &Config, hub: &Hub) {
    if let Some(path) = &cfg.snapshot_path {
        match crate::snapshot::load(path, &cfg.documents) {
            Ok(Some(doc)) => {
                info!(path = %path.display(), digest = %doc.digest.short(), flags = doc.flag_count,
                    "serving the snapshot saved on disk until Redis answers");
                hub.preload(doc);
            }
            Ok(None) => info!(path = %path.display(), "no snapshot saved yet"),
            Err(e) => warn!(path = %path.display(), error = %e, "ignoring an unreadable snapshot"),
        }
    }
}

/// One watcher (one Redis connection) for all sources; on a Cluster, one per hash slot
/// the keys use (keyspace events are node-local; hash-tag the keys to share one). Each
/// runs the doctor's checks on its connection after every connect.
fn start_watchers(cfg: &Config, parts: &Parts, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    let on_connect: OnConnect = {
        let (documents, status, metrics) =
            (cfg.documents, parts.status.clone(), parts.metrics.clone());
        Arc::new(move |con, target| {
            crate::doctor::spawn_session_checks(con, target, documents, &status, &metrics)
        })
    };
    crate::source::groups(&cfg.redis)
        .into_iter()
        .map(|group| {
            let watcher = Watcher::new(
                cfg,
                group,
                parts.hub.clone(),
                parts.status.clone(),
                parts.metrics.clone(),
                Some(on_connect.clone()),
            );
            tokio::spawn(watcher.run(stop.clone()))
        })
        .collect()
}

/// gRPC: the sync services, health mirroring readiness, reflection; on TCP (TLS when
/// configured) and on the Unix socket.
fn start_grpc(
    cfg: &Config,
    parts: &Parts,
    (tls, auth): (Option<Arc<crate::tls::ServerTls>>, crate::auth::Auth),
    (grpc_listener, unix_listener): (Option<TcpListener>, Option<UnixListener>),
    streams_stop: &CancellationToken,
) -> Result<GrpcTasks, StartError> {
    // gRPC: the sync services, health mirroring readiness, reflection.
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut ready_rx = parts.status.ready_watch();
    let health_task = tokio::spawn(async move {
        loop {
            let ready = *ready_rx.borrow_and_update();
            let serving = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health_reporter.set_service_status("", serving).await;
            health_reporter
                .set_service_status("flagd.sync.v1.FlagSyncService", serving)
                .await;
            if ready_rx.changed().await.is_err() {
                return;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            StartError::failure(anyhow::Error::new(e).context("building the reflection service"))
        })?;
    let svc = SyncService::new(
        parts.hub.clone(),
        parts.status.clone(),
        parts.metrics.clone(),
        streams_stop.clone(),
        cfg,
    )
    .with_fleet(parts.fleet.clone());
    let builder = || {
        Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .timeout(REQUEST_TIMEOUT)
    };
    // Everything but health is behind the token check (when --auth-token-file is set).
    let routes = |b: &mut Server| {
        use server::legacy;
        b.add_service(health_service.clone())
            .add_service(InterceptedService::new(reflection.clone(), auth.clone()))
            .add_service(InterceptedService::new(
                // SyncFlags without a per-stream copy of the document (src/grpc/frames.rs).
                crate::grpc::frames::FlagdSync::new(svc.clone(), MAX_REQUEST_BYTES),
                auth.clone(),
            ))
            .add_service(InterceptedService::new(
                legacy::flag_sync_service_server::FlagSyncServiceServer::new(svc.clone())
                    .max_decoding_message_size(MAX_REQUEST_BYTES),
                auth.clone(),
            ))
    };
    let grpc_addr = match &grpc_listener {
        Some(l) => Some(l.local_addr().map_err(StartError::failure)?),
        None => None,
    };
    let stop = streams_stop.clone();
    let open_files = crate::conn::raise_open_files_limit();
    let max_connections = cfg
        .max_connections
        .unwrap_or_else(|| crate::conn::default_max_connections(open_files));
    info!(
        max_connections,
        open_files, "gRPC connection budget (--max-connections)"
    );
    let refused = parts.metrics.grpc_refused.clone();
    let grpc_acceptor = grpc_listener.map(|l| {
        crate::conn::Acceptor::new(l, max_connections, "gRPC", move || {
            refused.add(
                1,
                &[opentelemetry::KeyValue::new("reason", "connection_limit")],
            )
        })
    });
    let mut tcp_builder = builder();
    let tcp_server = match (grpc_acceptor, &tls) {
        (None, _) => None,
        // Handshakes done here, so that rotated certificates are picked up.
        (Some(acceptor), Some(tls)) => {
            let incoming = crate::tls::incoming(
                acceptor,
                tls.clone(),
                stop.clone(),
                parts.metrics.grpc_refused.clone(),
            );
            Some(tokio::spawn(
                routes(&mut tcp_builder)
                    .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
            ))
        }
        (Some(acceptor), None) => {
            let incoming = crate::conn::incoming(acceptor, stop.clone());
            Some(tokio::spawn(
                routes(&mut tcp_builder)
                    .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
            ))
        }
    };
    let unix_server = match unix_listener {
        Some(listener) => {
            let stop = streams_stop.clone();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            // No TLS on the Unix socket: it is local, and file permissions (0660) decide
            // who may connect. The token check applies as on TCP.
            let mut b = builder();
            Some(tokio::spawn(
                routes(&mut b)
                    .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
            ))
        }
        None => None,
    };
    parts.status.set_grpc_listening();
    parts.status.refresh_ready(parts.hub.ready());
    info!(
        grpc = %grpc_addr.map_or_else(|| "off (socket only)".to_string(), |a| a.to_string()),
        tls = cfg.tls.is_some(),
        mtls = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        token_auth = cfg.auth_token_file.is_some(),
        socket = ?cfg.socket_path,
        redis = %cfg.redis,
        poll_seconds = cfg.poll_interval.as_secs(),
        version = env!("CARGO_PKG_VERSION"),
        "flagd-redis-sync listening"
    );
    Ok((tcp_server, unix_server, health_task))
}

/// The gRPC servers (TCP, Unix socket) and the health mirroring task.
type GrpcTasks = (
    Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    JoinHandle<()>,
);

/// Management HTTP: /healthz, /readyz, /metrics, /fleet, /changes.
fn start_management(
    mgmt_listener: Option<TcpListener>,
    parts: &Parts,
    mgmt_stop: &CancellationToken,
) -> Result<Option<JoinHandle<std::io::Result<()>>>, StartError> {
    let mgmt_task = match mgmt_listener {
        Some(listener) => {
            let addr = listener.local_addr().map_err(StartError::failure)?;
            info!(addr = %addr, "management endpoints: /healthz /readyz /metrics /fleet /changes");
            let app = crate::http::router(crate::http::Mgmt {
                status: parts.status.clone(),
                hub: parts.hub.clone(),
                telemetry: parts.telemetry.clone(),
                fleet: parts.fleet.clone(),
            });
            let stop = mgmt_stop.clone();
            let listener = crate::conn::ManagementListener(crate::conn::Acceptor::new(
                listener,
                crate::conn::MANAGEMENT_MAX_CONNECTIONS,
                "management",
                || {},
            ));
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        None => None,
    };
    Ok(mgmt_task)
}

/// Readiness off, streams ended with UNAVAILABLE, gRPC drained for at most the grace
/// period, then the watchers, the management server, the socket file, telemetry.
async fn shut_down(cfg: &Config, parts: &Parts, running: Running, stops: &Stops) {
    info!(
        grace_seconds = cfg.shutdown_grace.as_secs(),
        "shutting down: readiness off, ending streams with UNAVAILABLE"
    );
    parts.status.set_shutting_down();
    stops.streams.cancel();
    let drain = async {
        if let Some(tcp) = running.tcp {
            if let Err(e) = tcp
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r.map_err(Into::into))
            {
                error!(error = %e, "gRPC server ended with an error");
            }
        }
        if let Some(unix) = running.unix {
            let _ = unix.await;
        }
    };
    if tokio::time::timeout(cfg.shutdown_grace, drain)
        .await
        .is_err()
    {
        warn!("grace period over with connections still open; exiting anyway");
    }
    stops.watchers.cancel();
    for t in running.watchers {
        let _ = t.await;
    }
    running.health.abort();
    stops.mgmt.cancel();
    if let Some(t) = running.mgmt {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    if let Some(path) = &cfg.socket_path {
        let _ = std::fs::remove_file(path);
    }
    // Flushes OTLP metrics and spans: blocking, so off the async workers, and bounded so
    // an unreachable collector cannot hold up the exit.
    let flush = parts.telemetry.clone();
    let flushed = tokio::task::spawn_blocking(move || flush.shutdown());
    if tokio::time::timeout(Duration::from_secs(5), flushed)
        .await
        .is_err()
    {
        warn!("telemetry flush still running after 5 s; exiting anyway");
    }
    info!("stopped");
}

/// Binds a Unix socket with mode 0660. A socket file left by a crashed process is
/// replaced; one that a live process still serves is an error (a failure, like a port in
/// use); a path that is not a socket is a configuration error.
async fn bind_unix(path: &std::path::Path) -> Result<UnixListener, StartError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(StartError::config(anyhow::anyhow!(
                "--redis-sync-socket-path {shown} exists and is not a socket; refusing to replace it"
            )));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(StartError::failure(anyhow::anyhow!(
                "--redis-sync-socket-path {shown} is in use by another process"
            )));
        }
        std::fs::remove_file(path).map_err(|e| {
            StartError::io(
                e,
                format!("--redis-sync-socket-path: cannot remove stale socket {shown}"),
            )
        })?;
        info!(path = %shown, "removed a stale socket file");
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        StartError::io(
            e,
            format!("--redis-sync-socket-path: cannot listen on socket {shown}"),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        StartError::io(
            e,
            format!("--redis-sync-socket-path: cannot set permissions on {shown}"),
        )
    })?;
    Ok(listener)
}

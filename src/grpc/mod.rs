//! `flagd.sync.v1.FlagSyncService` (and the legacy `sync.v1` service on the same port).
//!
//! A stream sends the current document at once, then the newest document after each
//! change, and never ends with status OK: shutdown ends it with `UNAVAILABLE`, so every
//! client (the Node provider in particular) reconnects instead of keeping stale flags.

pub mod frames;

use crate::config::Config;
use crate::fleet::{Client, Fleet, Registration};
use crate::hub::{Hub, View};
use crate::selector::Selector;
use crate::status::Status as Health;
use crate::telemetry::Metrics;
use crate::wire::server::{flagd, legacy};
use crate::wire::{string_struct, EncodedLegacySyncFlagsResponse, EncodedSyncFlagsResponse};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

/// The header flagd's clients use for the selector; it wins over the request body.
const SELECTOR_HEADER: &str = "flagd-selector";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Shared by both services.
#[derive(Clone)]
pub struct SyncService {
    hub: Arc<Hub>,
    health: Arc<Health>,
    metrics: Metrics,
    /// Cancelled at shutdown: every open stream ends with UNAVAILABLE.
    shutdown: CancellationToken,
    /// `GetMetadata`'s answer, built once.
    metadata: prost_types::Struct,
    /// `--max-streams`.
    max_streams: Option<u64>,
    /// `--max-stream-duration`.
    max_duration: Option<Duration>,
    /// Every open stream (the fleet view).
    fleet: Arc<Fleet>,
}

impl SyncService {
    pub fn new(
        hub: Arc<Hub>,
        health: Arc<Health>,
        metrics: Metrics,
        shutdown: CancellationToken,
        cfg: &Config,
    ) -> Self {
        SyncService {
            hub,
            health,
            metrics,
            shutdown,
            metadata: string_struct(&cfg.context),
            max_streams: cfg.max_streams,
            max_duration: cfg.max_stream_duration,
            fleet: Fleet::new(),
        }
    }

    /// Registers streams in `fleet` (shared with `/fleet` and the metrics).
    pub fn with_fleet(mut self, fleet: Arc<Fleet>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Counts a `source=` selector naming no configured source (flagd answers it with an
    /// empty set, and so do we), and logs each such name once.
    fn note_unknown_source(&self, selector: &Selector) {
        if let Selector::Source(name) = selector {
            if !self.hub.names.contains(name) {
                self.metrics.unknown_source.add(1, &[]);
                if self.hub.first_unknown_source(name) {
                    warn!(selector = ?name, sources = ?self.hub.names,
                        "a client asked for a source that is not configured; it gets an empty flag set");
                }
            }
        }
    }

    /// Refuses a new stream beyond `--max-streams`.
    fn admit(&self) -> Result<(), Status> {
        match self.max_streams {
            Some(max) if self.health.streams() >= max as i64 => Err(Status::resource_exhausted(format!(
                "this flagd-redis-sync instance serves its maximum of {max} streams (--max-streams); retry another instance or later"
            ))),
            _ => Ok(()),
        }
    }

    /// The recycling deadline of a new stream: 80-100% of `--max-stream-duration`, so
    /// streams opened together do not all reconnect together.
    fn recycle_at(&self) -> Option<Pin<Box<tokio::time::Sleep>>> {
        use rand::Rng;
        self.max_duration.map(|d| {
            let jittered = d.mul_f64(rand::rng().random_range(0.8..=1.0));
            Box::pin(tokio::time::sleep(jittered))
        })
    }

    /// Streams `pick(view)` for the selector: the current view at once (or the first
    /// one as soon as it exists), then each changed view.
    fn updates<T: Send + 'static>(
        &self,
        selector: Selector,
        client: Client,
        pick: fn(&View) -> T,
    ) -> BoxStream<T> {
        let fleet = self.fleet.register(client, selector.clone());
        self.note_unknown_source(&selector);
        // Subscribe before reading the current snapshot: nothing can slip between.
        let rx = self.hub.subscribe();
        let first = self.hub.current();
        let state = StreamState {
            fleet,
            hub: self.hub.clone(),
            rx,
            first,
            selector,
            last: None,
            shutdown: self.shutdown.clone(),
            recycle: self.recycle_at(),
            ended: false,
            _guard: StreamGuard::new(self.health.clone(), self.metrics.clone()),
        };
        Box::pin(futures::stream::unfold(state, move |mut st| async move {
            if st.ended {
                return None;
            }
            st.fleet.stream.taken();
            loop {
                let snap = match st.first.take() {
                    Some(s) => s,
                    None => tokio::select! {
                        biased;
                        _ = st.shutdown.cancelled() => {
                            st.ended = true;
                            return Some((Err(Status::unavailable("flagd-redis-sync is shutting down; reconnect")), st));
                        }
                        _ = until(&mut st.recycle) => {
                            st.ended = true;
                            return Some((Err(Status::deadline_exceeded("stream recycled (--max-stream-duration); reconnect")), st));
                        }
                        s = Hub::newest(&mut st.rx) => match s {
                            Some(s) => s,
                            None => {
                                st.ended = true;
                                return Some((Err(Status::unavailable("flag source closed")), st));
                            }
                        },
                    },
                };
                let view = snap.view(&st.hub, &st.selector);
                if st.last == Some(view.digest) {
                    continue;
                }
                st.last = Some(view.digest);
                st.fleet.stream.handed(&view.digest);
                st._guard.metrics.pushes.add(1, &[]);
                return Some((Ok(pick(&view)), st));
            }
        }))
    }

    fn fetch(&self, selector: Selector) -> Result<String, Status> {
        self.note_unknown_source(&selector);
        let snap = self
            .hub
            .current()
            .ok_or_else(|| Status::unavailable("no flag document loaded yet"))?;
        Ok(snap.view(&self.hub, &selector).json.to_string())
    }
}

struct StreamState {
    fleet: Registration,
    hub: Arc<Hub>,
    rx: tokio::sync::broadcast::Receiver<Arc<crate::hub::Snapshot>>,
    first: Option<Arc<crate::hub::Snapshot>>,
    selector: Selector,
    last: Option<crate::flags::Digest>,
    shutdown: CancellationToken,
    recycle: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
    _guard: StreamGuard,
}

/// Resolves when the deadline passes; never without one.
async fn until(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Counts a stream as open for as long as it lives.
struct StreamGuard {
    health: Arc<Health>,
    metrics: Metrics,
}

impl StreamGuard {
    fn new(health: Arc<Health>, metrics: Metrics) -> Self {
        health.stream_opened();
        metrics.active_streams.add(1, &[]);
        StreamGuard { health, metrics }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.health.stream_closed();
        self.metrics.active_streams.add(-1, &[]);
    }
}

/// Who opened a stream: peer address (or the Unix socket), provider id, user agent.
fn client<T>(req: &Request<T>, provider_id: &str) -> Client {
    let peer = match req.remote_addr() {
        Some(a) => a.to_string(),
        None if req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .is_some() =>
        {
            "unix".to_string()
        }
        None => String::new(),
    };
    let user_agent = req
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Client {
        peer,
        provider_id: provider_id.to_string(),
        user_agent,
    }
}

/// The selector from the `flagd-selector` header, else from the request body.
fn selector<T>(req: &Request<T>, body: &str) -> Result<Selector, Status> {
    let header = req
        .metadata()
        .get(SELECTOR_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| Status::invalid_argument("flagd-selector header is not valid ASCII"))
        })
        .transpose()?;
    let raw = header.filter(|h| !h.is_empty()).unwrap_or(body);
    Selector::parse(raw).map_err(Status::invalid_argument)
}

#[tonic::async_trait]
impl flagd::flag_sync_service_server::FlagSyncService for SyncService {
    type SyncFlagsStream = BoxStream<EncodedSyncFlagsResponse>;

    #[tracing::instrument(name = "flagd.sync.v1.FlagSyncService/SyncFlags", skip_all)]
    async fn sync_flags(
        &self,
        request: Request<flagd::SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        self.admit()?;
        let sel = selector(&request, &request.get_ref().selector)?;
        debug!(provider_id = %request.get_ref().provider_id, selector = ?sel, "SyncFlags stream opened");
        let who = client(&request, &request.get_ref().provider_id);
        Ok(Response::new(self.updates(sel, who, |v| v.v1.clone())))
    }

    #[tracing::instrument(name = "flagd.sync.v1.FlagSyncService/FetchAllFlags", skip_all)]
    async fn fetch_all_flags(
        &self,
        request: Request<flagd::FetchAllFlagsRequest>,
    ) -> Result<Response<flagd::FetchAllFlagsResponse>, Status> {
        let sel = selector(&request, &request.get_ref().selector)?;
        Ok(Response::new(flagd::FetchAllFlagsResponse {
            flag_configuration: self.fetch(sel)?,
        }))
    }

    #[tracing::instrument(name = "flagd.sync.v1.FlagSyncService/GetMetadata", skip_all)]
    async fn get_metadata(
        &self,
        _request: Request<flagd::GetMetadataRequest>,
    ) -> Result<Response<flagd::GetMetadataResponse>, Status> {
        Ok(Response::new(flagd::GetMetadataResponse {
            metadata: Some(self.metadata.clone()),
        }))
    }
}

#[tonic::async_trait]
impl legacy::flag_sync_service_server::FlagSyncService for SyncService {
    type SyncFlagsStream = BoxStream<EncodedLegacySyncFlagsResponse>;

    #[tracing::instrument(name = "sync.v1.FlagSyncService/SyncFlags", skip_all)]
    async fn sync_flags(
        &self,
        request: Request<legacy::SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        self.admit()?;
        let sel = selector(&request, &request.get_ref().selector)?;
        let who = client(&request, &request.get_ref().provider_id);
        Ok(Response::new(self.updates(sel, who, |v| v.legacy.clone())))
    }

    #[tracing::instrument(name = "sync.v1.FlagSyncService/FetchAllFlags", skip_all)]
    async fn fetch_all_flags(
        &self,
        request: Request<legacy::FetchAllFlagsRequest>,
    ) -> Result<Response<legacy::FetchAllFlagsResponse>, Status> {
        let sel = selector(&request, &request.get_ref().selector)?;
        Ok(Response::new(legacy::FetchAllFlagsResponse {
            flag_configuration: self.fetch(sel)?,
        }))
    }
}

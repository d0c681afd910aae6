//! Where payloads come from: one RESP3 connection to Redis that carries the keyspace
//! subscription (pushes), the reads and the liveness PINGs.
//!
//! One session, repeated for as long as the service runs:
//! 1. connect (with a timeout), merge the needed letters into `notify-keyspace-events`;
//! 2. SUBSCRIBE to the key's keyspace channel, **then** read the key (a change between
//!    the two is caught either by the event or by the read);
//! 3. on each event, drain every event already queued and read once (bursts coalesce);
//!    every `--redis-interval` poll (cheap: a server-side hash, see [`reader`]); PING
//!    every few seconds so a dead or black-holed connection is noticed;
//! 4. on any connection error, back off (capped exponential with jitter) and go to 1.
//!
//! Events are hints; the value read is the truth. Every read goes through
//! [`crate::flags::parse`] and [`crate::hub::Hub::publish`], which drops duplicates.

mod backoff;
mod notify;
mod reader;

pub use backoff::Backoff;
/// Which `notify-keyspace-events` letters are missing (for the doctor).
pub(crate) use notify::merged as notify_merged;

use crate::config::{Config, OnMissingKey, RedisTarget};
use crate::flags::{self, DocumentError};
use crate::hub::Hub;
use crate::status::{KeyState, RedisState, Status, Trigger};
use crate::telemetry::Metrics;
use reader::{Fetched, Reader};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushKind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Timeouts and cadences of the Redis session.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Fallback poll interval (`--redis-interval`).
    pub poll: Duration,
    /// Interval between liveness PINGs.
    pub ping: Duration,
    /// Limit for connecting, and for any single command's reply.
    pub timeout: Duration,
    /// First and largest reconnect delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Timing {
    pub fn from_config(cfg: &Config) -> Self {
        Timing {
            poll: cfg.poll_interval,
            ping: cfg.redis_ping_interval,
            timeout: cfg.redis_timeout,
            backoff_min: Duration::from_millis(100),
            // Flags should come back soon after Redis does; jitter spreads the fleet.
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// Connecting failed; `hint` says what the usual cause is (TLS to a plain port…).
    #[error("{source}{hint}")]
    Connect {
        source: redis::RedisError,
        hint: String,
    },
    #[error("connection lost")]
    Disconnected,
    #[error("no reply to PING within {0:?}")]
    PingTimeout(Duration),
}

/// Watches one key and publishes every valid change into the hub.
pub struct Watcher {
    target: RedisTarget,
    hub: Arc<Hub>,
    status: Arc<Status>,
    metrics: Metrics,
    documents: flags::Options,
    timing: Timing,
    on_missing: OnMissingKey,
    /// Saves accepted documents (`--snapshot-path`).
    snapshot: Option<tokio::sync::watch::Sender<Option<Arc<str>>>>,
    /// Raw-payload digest of the last refused document, so a bad document left in
    /// Redis is logged once, not at every poll.
    last_refused: Option<flags::Digest>,
    /// Warn about a refused CONFIG only once per process.
    config_warned: bool,
    /// Warn about refused CLIENT TRACKING only once per process.
    tracking_warned: bool,
}

impl Watcher {
    pub fn new(cfg: &Config, hub: Arc<Hub>, status: Arc<Status>, metrics: Metrics) -> Self {
        Watcher {
            target: cfg.redis.clone(),
            hub,
            status,
            metrics,
            documents: cfg.documents,
            timing: Timing::from_config(cfg),
            on_missing: cfg.on_missing_key,
            snapshot: cfg.snapshot_path.clone().map(crate::snapshot::spawn_writer),
            last_refused: None,
            config_warned: false,
            tracking_warned: false,
        }
    }

    /// Runs sessions until `shutdown` is cancelled.
    #[tracing::instrument(name = "watcher", skip_all, fields(redis = %self.target))]
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.timing.backoff_min, self.timing.backoff_max);
        loop {
            let result = tokio::select! {
                r = self.session(&mut backoff) => r,
                _ = shutdown.cancelled() => return,
            };
            let e = match result {
                Ok(()) => return,
                Err(e) => e,
            };
            self.metrics.redis_up.record(0, &[]);
            let message = e.to_string();
            let was_connected = self.status.get().redis == RedisState::Connected;
            self.status.update(|s| {
                s.redis = RedisState::Down;
                s.redis_error = Some(message.clone());
            });
            let delay = backoff.next_delay();
            if was_connected {
                warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "redis connection lost; serving the last good flags and reconnecting");
            } else {
                warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "cannot connect to redis; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            self.metrics.reconnects.add(1, &[]);
        }
    }

    async fn session(&mut self, backoff: &mut Backoff) -> Result<(), SessionError> {
        let (push_tx, mut pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timing.timeout))
            .set_response_timeout(Some(self.timing.timeout))
            .set_push_sender(push_tx);
        let client = self.target.client()?;
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| SessionError::Connect {
                hint: self.target.connect_hint(&source, self.timing.timeout),
                source,
            })?;

        let mut trigger = notify::ensure(&mut con, &self.timing, &mut self.config_warned).await;
        let channel = self.target.keyspace_channel();
        con.subscribe(&channel).await?;
        if trigger != Trigger::Keyspace {
            // Needs no CONFIG: invalidations for every write to keys with this prefix
            // (other keys sharing it cost a cheap hash read), and FLUSHALL too.
            if notify::track(&mut con, &self.target.key, &mut self.tracking_warned).await {
                trigger = Trigger::Tracking;
            }
        }
        self.status.update(|s| {
            s.redis = RedisState::Connected;
            s.redis_error = None;
            s.trigger = trigger;
        });
        self.metrics.redis_up.record(1, &[]);
        info!(channel = %channel, trigger = ?trigger, "connected to redis and subscribed");
        backoff.reset();
        // Production-readiness checks on this connection, in the background; they end with the session.
        let _doctor = crate::doctor::spawn_session_checks(
            &con,
            &self.target,
            self.documents,
            &self.status,
            &self.metrics,
        );

        let mut reader = Reader::new(self.target.key.clone());
        self.read(&mut con, &mut reader, None).await?;

        let start = tokio::time::Instant::now();
        let mut poll = tokio::time::interval_at(start + self.timing.poll, self.timing.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval_at(start + self.timing.ping, self.timing.ping);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return Err(SessionError::Disconnected) };
                    let seen = Instant::now();
                    let mut event = false;
                    // Coalesce: everything already queued is covered by one read.
                    let mut next = Some(push);
                    while let Some(p) = next {
                        match p.kind {
                            PushKind::Disconnection => return Err(SessionError::Disconnected),
                            PushKind::Message | PushKind::Invalidate => {
                                self.metrics.notifications.add(1, &[]);
                                event = true;
                            }
                            other => debug!(kind = ?other, "redis push"),
                        }
                        next = pushes.try_recv().ok();
                    }
                    if event {
                        self.read(&mut con, &mut reader, Some(seen)).await?;
                    }
                }
                _ = poll.tick() => {
                    self.metrics.polls.add(1, &[]);
                    self.read(&mut con, &mut reader, Some(Instant::now())).await?;
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        self.timing.timeout,
                        redis::cmd("PING").query_async::<redis::Value>(&mut con),
                    ).await;
                    match pong {
                        Err(_) => return Err(SessionError::PingTimeout(self.timing.timeout)),
                        Ok(Err(e)) => return Err(e.into()),
                        Ok(Ok(_)) => {}
                    }
                }
            }
        }
    }

    /// Reads the key and publishes it if it changed. Connection errors end the session;
    /// errors about the key or the document are reported and the session goes on.
    /// One span per read: exported over OTLP, it times Redis round trip + validation.
    #[tracing::instrument(name = "read_flag_key", skip_all)]
    async fn read(
        &mut self,
        con: &mut MultiplexedConnection,
        reader: &mut Reader,
        seen: Option<Instant>,
    ) -> Result<(), SessionError> {
        let fetched = match reader.fetch(con).await {
            Ok(f) => f,
            Err(e) if is_connection_error(&e) => return Err(e.into()),
            Err(e) => {
                let reason = e.to_string();
                if self.status.get().key != KeyState::Refused(reason.clone()) {
                    error!(key = %self.target.key, error = %reason, "cannot read the flag key; serving the last good flags");
                }
                self.status.update(|s| s.key = KeyState::Refused(reason));
                self.metrics.refused("read_error");
                return Ok(());
            }
        };
        match fetched {
            Fetched::Unchanged => {
                self.metrics.duplicates.add(1, &[]);
            }
            Fetched::Missing => {
                let first = self.status.get().key != KeyState::Missing;
                self.status.update(|s| s.key = KeyState::Missing);
                match self.on_missing {
                    OnMissingKey::Keep => {
                        if first {
                            let serving = self.serving();
                            warn!(key = %self.target.key, serving = %serving,
                                "flag key does not exist (deleted, expired, evicted or renamed away); serving the last good flags");
                        }
                    }
                    OnMissingKey::Empty => {
                        if first {
                            warn!(key = %self.target.key,
                                "flag key does not exist; pushing an empty flag set (--on-missing-key=empty)");
                        }
                        let empty = flags::parse(br#"{"flags":{}}"#, &self.documents)
                            .expect("the empty set is valid");
                        self.publish(empty, seen);
                        self.status.update(|s| s.key = KeyState::Missing);
                    }
                }
            }
            Fetched::Value(bytes) => self.consider(&bytes, seen),
        }
        Ok(())
    }

    /// Validates a payload and publishes it, or refuses it with a log line.
    fn consider(&mut self, bytes: &[u8], seen: Option<Instant>) {
        match flags::parse(bytes, &self.documents) {
            Ok(doc) => {
                self.last_refused = None;
                self.publish(doc, seen);
            }
            Err(e) => self.refuse(bytes, e),
        }
    }

    /// Publishes a valid document (a no-op for unchanged content) and saves it.
    fn publish(&mut self, doc: flags::Document, seen: Option<Instant>) {
        let (digest, size, count) = (doc.digest, doc.canonical.len(), doc.flag_count);
        let saved: Option<Arc<str>> = self
            .snapshot
            .is_some()
            .then(|| doc.canonical.as_str().into());
        if self.hub.publish(doc) {
            self.metrics.accepted.add(1, &[]);
            self.metrics.document_bytes.record(size as u64, &[]);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.metrics.last_change.record(now.as_secs_f64(), &[]);
            if let Some(seen) = seen {
                self.metrics
                    .propagation
                    .record(seen.elapsed().as_secs_f64(), &[]);
            }
            info!(key = %self.target.key, digest = %digest.short(), bytes = size, flags = count, "flag document accepted and published");
            if let (Some(writer), Some(json)) = (&self.snapshot, saved) {
                writer.send_replace(Some(json));
            }
        } else {
            self.metrics.duplicates.add(1, &[]);
            debug!(key = %self.target.key, digest = %digest.short(), "flag document unchanged");
        }
        self.status.update(|s| s.key = KeyState::Valid);
        self.status.refresh_ready(true);
    }

    fn refuse(&mut self, bytes: &[u8], e: DocumentError) {
        self.metrics.refused(e.reason());
        let raw = flags::Digest::of(bytes);
        if self.last_refused != Some(raw) {
            let serving = self.serving();
            error!(key = %self.target.key, reason = %e, serving = %serving,
                "flag document refused; clients keep the last good flags");
            self.last_refused = Some(raw);
        }
        self.status
            .update(|s| s.key = KeyState::Refused(e.to_string()));
    }
}

impl Watcher {
    /// The short digest of the document clients hold, for log lines.
    fn serving(&self) -> String {
        self.hub
            .current()
            .map_or_else(|| "none".into(), |s| s.doc.digest.short())
    }
}

/// Whether an error means the connection is unusable (reconnect) rather than a refusal
/// by the server that reconnecting would not fix.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

//! Where payloads come from: one RESP3 connection to Redis that carries the keyspace
//! subscriptions (pushes), the reads and the liveness checks, for every source key.
//!
//! One session, repeated for as long as the service runs:
//! 1. find the node (the URI's, the Sentinel master, the Cluster slot owner: see
//!    [`crate::redis::topology`]), connect (with a timeout), confirm its role, merge the needed letters
//!    into `notify-keyspace-events`;
//! 2. SUBSCRIBE to each key's keyspace channel, **then** read the keys (a change between
//!    the two is caught either by the event or by the read);
//! 3. on each event, drain every event already queued and read each key named once
//!    (bursts coalesce into one snapshot); every `--redis-interval` poll every key
//!    (cheap: a server-side hash, see [`reader`]); every few seconds check the node
//!    (PING; ROLE on Sentinel; slot ownership on Cluster) so a dead, black-holed or
//!    demoted node is noticed;
//! 4. on any connection error or move, back off (capped exponential with jitter) and go
//!    to 1.
//!
//! Events are hints; the value read is the truth. Every read goes through
//! [`crate::flags::parse`] and [`crate::hub::Hub::publish`], which drops duplicates.

mod backoff;
mod notify;
mod reader;

pub use backoff::Backoff;

use crate::config::{Config, OnMissingKey};
use crate::flags::{self, DocumentError};
use crate::hub::Hub;
use crate::redis::connect::connect;
use crate::redis::reply::as_string;
use crate::redis::topology::{self, key_slot, Placement};
use crate::redis::{RedisAddr, RedisTarget, SourceSpec, Storage};
use crate::status::{KeyState, RedisState, Status, Trigger};
use crate::telemetry::Metrics;
use reader::{Fetched, Reader};
use redis::aio::MultiplexedConnection;
use redis::PushKind;
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
    #[error("no reply to the liveness check within {0:?}")]
    PingTimeout(Duration),
    /// The node stopped being the one to watch (failover, resharding).
    #[error("{0}")]
    Moved(String),
}

/// Why a read happens.
#[derive(Clone, Copy)]
enum ReadCause {
    /// The first read of a session.
    First,
    /// The poll timer, at this instant.
    Polled(Instant),
    /// A keyspace notification (or tracking invalidation) seen at this instant: the key
    /// changed, read it whole.
    Notified(Instant),
}

/// One source watched by a [`Watcher`].
struct Source {
    /// Its index among all sources (the hub's order).
    index: usize,
    spec: SourceSpec,
    /// Raw-payload digest of the last refused document, so a bad document left in
    /// Redis is logged once, not at every poll.
    last_refused: Option<flags::Digest>,
    /// Its last accepted document's flags, validated: a change to one flag re-validates
    /// that flag only (see `flags::Memo`).
    memo: flags::Memo,
}

/// The sources' indexes grouped by the connection that watches them: all together,
/// except on a Cluster, where keys in different hash slots live on different nodes.
pub fn groups(target: &RedisTarget) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..target.sources.len()).collect();
    if !matches!(target.addr, RedisAddr::Cluster { .. }) {
        return vec![all];
    }
    let mut by_slot: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for i in all {
        by_slot
            .entry(key_slot(target.sources[i].key.as_bytes()))
            .or_default()
            .push(i);
    }
    by_slot.into_values().collect()
}

/// Work started on each session's connection once it is subscribed (the doctor's
/// production-readiness checks, handed in by `app.rs` so that this layer knows nothing
/// of them); the returned handle ends it with the session.
pub type OnConnect = Arc<
    dyn Fn(&MultiplexedConnection, &RedisTarget) -> tokio_util::task::AbortOnDropHandle<()>
        + Send
        + Sync,
>;

/// Watches some source keys on one connection and publishes every valid change.
pub struct Watcher {
    target: RedisTarget,
    sources: Vec<Source>,
    hub: Arc<Hub>,
    status: Arc<Status>,
    metrics: Metrics,
    documents: flags::Options,
    timing: Timing,
    on_missing: OnMissingKey,
    /// Saves accepted documents (`--snapshot-path`).
    snapshot: Option<tokio::sync::watch::Sender<Option<Arc<String>>>>,
    /// Warn about a refused CONFIG only once per process.
    config_warned: bool,
    /// Warn about refused CLIENT TRACKING only once per process.
    tracking_warned: bool,
    /// Started on every connect (see [`OnConnect`]).
    on_connect: Option<OnConnect>,
}

impl Watcher {
    /// A watcher for the sources at `indexes` (see [`groups`]).
    pub fn new(
        cfg: &Config,
        indexes: Vec<usize>,
        hub: Arc<Hub>,
        status: Arc<Status>,
        metrics: Metrics,
        on_connect: Option<OnConnect>,
    ) -> Self {
        let sources: Vec<Source> = indexes
            .into_iter()
            .map(|index| Source {
                index,
                spec: cfg.redis.sources[index].clone(),
                last_refused: None,
                memo: flags::Memo::new(cfg.documents),
            })
            .collect();
        // This watcher's view of the target: its own keys (on a Cluster, one slot's).
        let mut target = cfg.redis.clone();
        target.sources = sources.iter().map(|s| s.spec.clone()).collect();
        target.key = target.sources[0].key.clone();
        Watcher {
            target,
            sources,
            hub,
            status,
            metrics,
            documents: cfg.documents,
            timing: Timing::from_config(cfg),
            on_missing: cfg.on_missing_key,
            snapshot: cfg.snapshot_path.clone().map(crate::snapshot::spawn_writer),
            config_warned: false,
            tracking_warned: false,
            on_connect,
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
            // Tried: the other watchers' sources are served without these.
            let mine: Vec<usize> = self.sources.iter().map(|s| s.index).collect();
            self.hub.settle(&mine);
            let message = e.to_string();
            let was_connected = self.status.get().redis == RedisState::Connected;
            self.status.update(|s| {
                s.redis = RedisState::Down;
                s.redis_error = Some(message.clone());
            });
            let delay = backoff.next_delay();
            let retry_in_ms = delay.as_millis() as u64;
            if let SessionError::Moved(_) = e {
                info!(reason = %message, retry_in_ms, "the flag keys' node changed (failover or resharding); finding it again");
            } else if was_connected {
                warn!(error = %message, retry_in_ms, "redis connection lost; serving the last good flags and reconnecting");
            } else {
                warn!(error = %message, retry_in_ms, "cannot connect to redis; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            self.metrics.reconnects.add(1, &[]);
        }
    }

    /// One session: connect, arm the change triggers, announce, read everything, then
    /// follow events, polls and liveness checks until something breaks.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<(), SessionError> {
        let (node, placement, mut con, pushes) = self.connect().await?;
        let (channels, trigger) = self.arm_triggers(&node, &mut con).await?;
        self.announce_connected(&node, &channels, trigger);
        backoff.reset();
        // The connect hook (the doctor's checks), in the background; it ends with the session.
        let _on_connect = self
            .on_connect
            .as_ref()
            .map(|hook| hook(&con, &self.target));
        let mut readers: Vec<Reader> = self
            .sources
            .iter()
            .map(|s| Reader::new(s.spec.key.clone(), s.spec.storage))
            .collect();
        let everything: Vec<usize> = (0..self.sources.len()).collect();
        self.read(
            &mut con,
            &mut readers,
            &everything,
            &placement,
            ReadCause::First,
        )
        .await?;
        self.follow(con, pushes, &channels, &placement, readers)
            .await
    }

    /// Finds the node (Sentinel master, Cluster slot owner…), connects with pushes sent to
    /// the returned receiver, and confirms the node is the one to watch.
    async fn connect(
        &mut self,
    ) -> Result<
        (
            RedisTarget,
            Placement,
            MultiplexedConnection,
            mpsc::UnboundedReceiver<redis::PushInfo>,
        ),
        SessionError,
    > {
        let first_key = self.sources[0].spec.key.clone();
        let resolved = topology::resolve(&self.target, &first_key, self.timing.timeout)
            .await
            .map_err(|source| SessionError::Connect {
                hint: String::new(),
                source,
            })?;
        let (node, placement) = (resolved.node, resolved.placement);
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let mut con = connect(&node, self.timing.timeout, Some(push_tx))
            .await
            .map_err(|source| SessionError::Connect {
                hint: node.connect_hint(&source, self.timing.timeout),
                source,
            })?;
        self.check_placement(&placement, &mut con, None).await?;
        Ok((node, placement, con, pushes))
    }

    /// Keyspace notifications (merged into `notify-keyspace-events`), the subscriptions,
    /// and CLIENT TRACKING where notifications cannot be confirmed. Returns the channels
    /// (one per source, in order) and what triggers reads.
    async fn arm_triggers(
        &mut self,
        node: &RedisTarget,
        con: &mut MultiplexedConnection,
    ) -> Result<(Vec<String>, Trigger), SessionError> {
        let needed = if self.sources.iter().any(|s| s.spec.storage == Storage::Hash) {
            crate::redis::keyspace::NEEDED_HASH
        } else {
            crate::redis::keyspace::NEEDED
        };
        let mut trigger = notify::ensure(con, &self.timing, needed, &mut self.config_warned).await;
        let channels: Vec<String> = self
            .sources
            .iter()
            .map(|s| node.channel_of(&s.spec.key))
            .collect();
        for channel in &channels {
            con.subscribe(channel).await?;
        }
        if trigger != Trigger::Keyspace {
            // Needs no CONFIG: invalidations for every write to keys with these prefixes
            // (other keys sharing one cost a cheap hash read), and FLUSHALL too.
            let keys: Vec<&str> = self.sources.iter().map(|s| s.spec.key.as_str()).collect();
            if notify::track(con, &keys, &mut self.tracking_warned).await {
                trigger = Trigger::Tracking;
            }
        }
        Ok((channels, trigger))
    }

    /// Status, metric and log line for a connected, subscribed session.
    fn announce_connected(&self, node: &RedisTarget, channels: &[String], trigger: Trigger) {
        self.status.update(|s| {
            s.redis = RedisState::Connected;
            s.redis_error = None;
            s.trigger = trigger;
        });
        self.metrics.redis_up.record(1, &[]);
        info!(node = %node, channels = ?channels, trigger = ?trigger, "connected to redis and subscribed");
    }

    /// The session's loop: events (coalesced), Sentinel's failover hint, polls, liveness
    /// checks. Returns only with the error that ends the session.
    async fn follow(
        &mut self,
        mut con: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
        channels: &[String],
        placement: &Placement,
        mut readers: Vec<Reader>,
    ) -> Result<(), SessionError> {
        let everything: Vec<usize> = (0..self.sources.len()).collect();
        // Sentinel's failover announcement, as a hint to move at once.
        let (mut hint_con, mut hints) = match placement.switch_hint(self.timing.timeout).await {
            Some((c, rx)) => (Some(c), Some(rx)),
            None => (None, None),
        };
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
                    let which = self.drain_events(push, &mut pushes, channels)?;
                    if !which.is_empty() {
                        self.read(&mut con, &mut readers, &which, placement, ReadCause::Notified(seen)).await?;
                    }
                }
                hint = recv_hint(&mut hints) => {
                    match hint {
                        Some(p) if placement.is_our_switch(&p) => {
                            return Err(SessionError::Moved("sentinel announced +switch-master".into()));
                        }
                        Some(_) => {}
                        // The sentinel connection ended: ROLE checks still follow a failover.
                        None => {
                            hints = None;
                            hint_con = None;
                        }
                    }
                }
                _ = poll.tick() => {
                    self.metrics.polls.add(1, &[]);
                    self.read(&mut con, &mut readers, &everything, placement, ReadCause::Polled(Instant::now())).await?;
                }
                _ = ping.tick() => self.check_placement(placement, &mut con, hint_con.as_mut()).await?,
            }
        }
    }

    /// The sources to read for `first` and every push already queued behind it
    /// (bursts coalesce into one read per key).
    fn drain_events(
        &mut self,
        first: redis::PushInfo,
        pushes: &mut mpsc::UnboundedReceiver<redis::PushInfo>,
        channels: &[String],
    ) -> Result<Vec<usize>, SessionError> {
        let mut dirty = vec![false; self.sources.len()];
        let mut next = Some(first);
        while let Some(p) = next {
            match p.kind {
                PushKind::Disconnection => return Err(SessionError::Disconnected),
                PushKind::Message => {
                    self.metrics.notifications.add(1, &[]);
                    let channel = p.data.first().and_then(as_string);
                    for (i, c) in channels.iter().enumerate() {
                        if channel.as_deref() == Some(c.as_str()) {
                            dirty[i] = true;
                        }
                    }
                }
                PushKind::Invalidate => {
                    self.metrics.notifications.add(1, &[]);
                    self.mark_invalidated(&p.data, &mut dirty);
                }
                other => debug!(kind = ?other, "redis push"),
            }
            next = pushes.try_recv().ok();
        }
        Ok((0..dirty.len()).filter(|&i| dirty[i]).collect())
    }

    /// Checks the node is alive and still the one to watch, under the timeout.
    async fn check_placement(
        &self,
        placement: &Placement,
        con: &mut MultiplexedConnection,
        sentinel: Option<&mut MultiplexedConnection>,
    ) -> Result<(), SessionError> {
        match tokio::time::timeout(self.timing.timeout, placement.verify(con, sentinel)).await {
            Err(_) => Err(SessionError::PingTimeout(self.timing.timeout)),
            Ok(Err(topology::VerifyError::Redis(e))) => Err(e.into()),
            Ok(Err(topology::VerifyError::Moved(m))) => Err(SessionError::Moved(m)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Marks the sources a tracking invalidation names (all of them for FLUSHALL's null).
    fn mark_invalidated(&self, data: &[redis::Value], dirty: &mut [bool]) {
        let keys: Option<Vec<String>> = match data.first() {
            Some(redis::Value::Array(items)) => Some(items.iter().filter_map(as_string).collect()),
            _ => None,
        };
        for (i, s) in self.sources.iter().enumerate() {
            dirty[i] |= keys.as_ref().is_none_or(|k| k.contains(&s.spec.key));
        }
    }

    /// Reads the sources at positions `which` and publishes what changed as one snapshot.
    /// Connection errors (and Cluster redirections) end the session; errors about a key
    /// or its document are reported and the session goes on.
    /// One span per read: exported over OTLP, it times the Redis round trips + validation.
    #[tracing::instrument(name = "read_flag_key", skip_all)]
    async fn read(
        &mut self,
        con: &mut MultiplexedConnection,
        readers: &mut [Reader],
        which: &[usize],
        placement: &Placement,
        cause: ReadCause,
    ) -> Result<(), SessionError> {
        let seen = match cause {
            ReadCause::First => None,
            ReadCause::Polled(at) | ReadCause::Notified(at) => Some(at),
        };
        let mut updates = Vec::new();
        let mut valid = Vec::new();
        let mut missing = false;
        for &i in which {
            let fetched = match cause {
                ReadCause::Notified(_) => readers[i].fetch_changed(con).await,
                _ => readers[i].fetch(con).await,
            };
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) if is_connection_error(&e) => return Err(e.into()),
                Err(e) if topology::is_redirect(&e) => {
                    return Err(SessionError::Moved(format!(
                        "reading {}: {e}",
                        self.sources[i].spec.key
                    )))
                }
                Err(e) => {
                    // Ask what the key holds rather than parse the error's text.
                    match key_type(con, &self.sources[i].spec.key).await {
                        Some(found) if !holds(self.sources[i].spec.storage, &found) => {
                            self.wrong_type(i, &found)
                        }
                        _ => self.read_failed(i, &e),
                    }
                    continue;
                }
            };
            let before = self.status.source(&self.sources[i].spec.name);
            match fetched {
                // The same bytes as the last read: its state (valid or refused) stands.
                Fetched::Unchanged => {
                    self.metrics.duplicates.add(1, &[]);
                }
                Fetched::Missing => {
                    missing = true;
                    if let Some(empty) = self.key_missing(i) {
                        updates.push((i, empty));
                    }
                }
                Fetched::Value(bytes) => {
                    if before == KeyState::Missing {
                        let s = &self.sources[i].spec;
                        info!(key = %s.key, source = %s.name, bytes = bytes.len(),
                            "flag key exists again");
                    }
                    if let Some(doc) = self.consider(i, &bytes) {
                        updates.push((i, doc));
                        valid.push(i);
                    }
                }
            }
        }
        if missing && placement != &Placement::Standalone {
            // On a Cluster a key "disappears" when its slot migrates away (`del`): check
            // at once whether to follow it rather than wait for the next check.
            self.check_placement(placement, con, None).await?;
        }
        let read: Vec<usize> = which.iter().map(|&i| self.sources[i].index).collect();
        let described: Vec<(usize, flags::Digest, usize, usize)> = updates
            .iter()
            .map(|(i, d)| (*i, d.digest, d.canonical.len(), d.flag_count))
            .collect();
        let published = self.hub.announce_sources(
            updates
                .into_iter()
                .map(|(i, d)| (self.sources[i].index, d))
                .collect(),
            &read,
        );
        let took = seen.map(|at| at.elapsed());
        // The streams just woken run once this task yields (Hub::announce_sources): they
        // send first, the change history and the log lines come after (measured: 40 µs
        // of about 100 µs over the GET floor for an 11 KB document).
        if !published.changed.is_empty() {
            tokio::task::yield_now().await;
        }
        let changed = published.record(&self.hub);
        self.published(described, &changed, took);
        // After publishing: whoever sees "valid" finds the document served.
        for i in valid {
            let name = self.sources[i].spec.name.clone();
            self.status.set_source(&name, KeyState::Valid);
        }
        self.status.refresh_ready(self.hub.ready());
        Ok(())
    }

    fn read_failed(&mut self, i: usize, e: &redis::RedisError) {
        let reason = e.to_string();
        let source = &self.sources[i].spec;
        if self.status.source(&source.name) != KeyState::Refused(reason.clone()) {
            let hint = if crate::redis::codes::is_wrong_type(e) {
                match source.storage {
                    Storage::String => {
                        " (the key is not a string: for a hash of flags use type=hash)"
                    }
                    Storage::Hash => " (the key is not a hash: for a JSON string drop type=hash)",
                }
            } else {
                ""
            };
            error!(key = %source.key, source = %source.name, error = %format!("{reason}{hint}"),
                "cannot read the flag key; serving the last good flags");
        }
        self.status
            .set_source(&source.name, KeyState::Refused(reason));
        self.metrics.refused("read_error");
    }

    /// The key holds a value of another type (`found`, as TYPE says): one line, once.
    fn wrong_type(&mut self, i: usize, found: &str) {
        let source = &self.sources[i].spec;
        let reason = match source.storage {
            Storage::String => format!(
                "the key holds a {found}, not a string{}",
                if found == "hash" {
                    " (for a hash of flags use type=hash)"
                } else {
                    ""
                }
            ),
            Storage::Hash => format!(
                "the key holds a {found}, not a hash{}",
                if found == "string" {
                    " (for a JSON string drop type=hash)"
                } else {
                    ""
                }
            ),
        };
        if self.status.source(&source.name) != KeyState::Refused(reason.clone()) {
            let serving = self.serving();
            error!(key = %source.key, source = %source.name, found = %found, serving = %serving,
                "flag key holds a {found}, not a flag document; serving the last good flags");
        }
        self.status
            .set_source(&source.name, KeyState::Refused(reason));
        self.metrics.refused("wrong_type");
    }

    /// Handles a missing key; returns the empty document to publish, if configured.
    fn key_missing(&mut self, i: usize) -> Option<flags::Document> {
        let source = &self.sources[i].spec;
        let first = self.status.source(&source.name) != KeyState::Missing;
        self.status.set_source(&source.name, KeyState::Missing);
        match self.on_missing {
            OnMissingKey::Keep => {
                if first {
                    let serving = self.serving();
                    warn!(key = %source.key, source = %source.name, serving = %serving,
                        "flag key does not exist (deleted, expired, evicted or renamed away); serving the last good flags");
                }
                None
            }
            OnMissingKey::Empty => {
                if first {
                    warn!(key = %source.key, source = %source.name,
                        "flag key does not exist; pushing an empty flag set (--on-missing-key=empty)");
                }
                Some(
                    flags::parse(br#"{"flags":{}}"#, &self.documents)
                        .expect("the empty set is valid"),
                )
            }
        }
    }

    /// Validates a payload; refuses it with a log line, or returns the document.
    fn consider(&mut self, i: usize, bytes: &[u8]) -> Option<flags::Document> {
        let source = &mut self.sources[i];
        let before = source.memo.stats;
        let parsed = match source.spec.storage {
            Storage::String => source.memo.parse(bytes),
            Storage::Hash => source.memo.parse_hash(bytes),
        };
        let after = source.memo.stats;
        for (scope, n) in [
            ("flag", after.validated - before.validated),
            ("document", after.whole - before.whole),
        ] {
            self.metrics.validated(scope, n);
        }
        match parsed {
            Ok(doc) => {
                self.sources[i].last_refused = None;
                if !doc.warnings.is_empty() {
                    let s = &self.sources[i].spec;
                    warn!(key = %s.key, source = %s.name, problems = %doc.warnings,
                        "flag document accepted by --validation basic; strict validation would refuse it");
                }
                Some(doc)
            }
            Err(e) => {
                self.refuse(i, bytes, e);
                None
            }
        }
    }

    /// Logs and counts what a publish did (unchanged content was a no-op) and saves the
    /// result.
    fn published(
        &mut self,
        described: Vec<(usize, flags::Digest, usize, usize)>,
        changed: &[usize],
        took: Option<Duration>,
    ) {
        for (i, digest, size, count) in described {
            let source = &self.sources[i].spec;
            if changed.contains(&self.sources[i].index) {
                self.metrics.accepted.add(1, &[]);
                self.metrics.document_bytes.record(size as u64, &[]);
                info!(key = %source.key, source = %source.name, digest = %digest.short(), bytes = size, flags = count, "flag document accepted and published");
            } else {
                self.metrics.duplicates.add(1, &[]);
                debug!(key = %source.key, source = %source.name, digest = %digest.short(), "flag document unchanged");
            }
        }
        if !changed.is_empty() {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.metrics.last_change.record(now.as_secs_f64(), &[]);
            if let Some(took) = took {
                self.metrics.propagation.record(took.as_secs_f64(), &[]);
            }
            if let (Some(writer), Some(snap)) = (&self.snapshot, self.hub.current()) {
                writer.send_replace(Some(snap.doc.canonical.clone()));
            }
        }
    }

    fn refuse(&mut self, i: usize, bytes: &[u8], e: DocumentError) {
        self.metrics.refused(e.reason());
        let raw = flags::Digest::of(bytes);
        let source = &self.sources[i];
        if source.last_refused != Some(raw) {
            let serving = self.serving();
            error!(key = %source.spec.key, source = %source.spec.name, reason = %e, serving = %serving,
                "flag document refused; clients keep the last good flags");
            self.sources[i].last_refused = Some(raw);
        }
        let name = self.sources[i].spec.name.clone();
        self.status
            .set_source(&name, KeyState::Refused(e.to_string()));
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

/// What TYPE says the key holds (`string`, `list`, `none`…), or `None` if it cannot tell.
async fn key_type(con: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("TYPE").arg(key).query_async(con).await.ok()
}

/// Whether a key of TYPE `found` is one a source stored as `storage` can be read from
/// (`none`: the key vanished meanwhile, which the next read reports as missing).
fn holds(storage: Storage, found: &str) -> bool {
    let expected = match storage {
        Storage::String => "string",
        Storage::Hash => "hash",
    };
    found == expected || found == "none"
}

/// The next `+switch-master` message, or never when there is no subscription.
async fn recv_hint(
    hints: &mut Option<mpsc::UnboundedReceiver<redis::PushInfo>>,
) -> Option<redis::PushInfo> {
    match hints {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether an error means the connection is unusable (reconnect) rather than a refusal
/// by the server that reconnecting would not fix.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_types_are_wrong() {
        assert!(holds(Storage::String, "string"));
        assert!(holds(Storage::Hash, "hash"));
        assert!(holds(Storage::String, "none"));
        assert!(!holds(Storage::String, "list"));
        assert!(!holds(Storage::String, "hash"));
        assert!(!holds(Storage::Hash, "string"));
        assert!(!holds(Storage::Hash, "stream"));
    }
}

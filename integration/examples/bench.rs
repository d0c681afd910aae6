//! `make bench` / `make bench-quick`: how fast a change in Redis reaches N clients, next to
//! the two floors it cannot beat, measured in the same run.
//!
//! The bench starts its own `redis-server`, the **release** binary and, for the gRPC floor,
//! a second copy of itself (`bench floor-server`): a minimal tonic server that broadcasts a
//! pre-built message. It opens N client streams, each on its own HTTP/2 connection, and
//! times every change from just before the `SET` to the arrival of the message at every
//! client. All timestamps are `Instant`s of this one process (CLOCK_MONOTONIC): the writer
//! takes one before the `SET`, each client task one as soon as tonic hands it a message.
//!
//! Phases: latency matrix (service vs gRPC floor vs Redis floor), idle memory per stream,
//! encodings vs pushes, Redis bytes per poll, write bursts, start-up to ready. Results go
//! to `<out>/results.json`, `<out>/*.svg` and the generated part of the markdown report.
//!
//! Usage: `bench [--quick] [--out DIR] [--doc FILE]`; `bench floor-server` is internal.

use anyhow::{bail, ensure, Context, Result};
use bytes::{Buf, BufMut};
use flagd_redis_sync::wire::client::flagd::SyncFlagsRequest;
use integration::{
    metric_value, proc_status_kib, target_binary, workspace_root, Launch, RedisServer, Service,
};
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};

#[path = "bench/shapes.rs"]
mod shapes;

const KEY: &str = "flags";
const FLOOR_KEY: &str = "bench-floor";
/// Clients connecting at once.
const CONNECT_BATCH: usize = 200;
/// The longest one change may take to reach every client before the bench gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
const KB: usize = 1024;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("floor-server") {
        return rt.block_on(floor::serve());
    }
    if args.first().map(String::as_str) == Some("get-floor-server") {
        return rt.block_on(shapes::serve_get_floor(&args));
    }
    // Profiling aid: `bench hold PORT N SECONDS` holds N idle streams to a running server.
    if args.first().map(String::as_str) == Some("hold") {
        let num = |i: usize| -> Result<u64> {
            Ok(args.get(i).context("bench hold PORT N SECONDS")?.parse()?)
        };
        let (port, n, secs) = (num(1)? as u16, num(2)? as usize, num(3)?);
        return rt.block_on(async move {
            let mut fleet = Fleet::new(port);
            fleet.grow_any(n).await?;
            eprintln!("bench: holding {n} streams for {secs} s");
            tokio::time::sleep(Duration::from_secs(secs)).await;
            fleet.close().await;
            Ok(())
        });
    }
    let mut opts = Opts {
        quick: false,
        out: workspace_root().join("docs/bench"),
        doc: Some(workspace_root().join("docs/benchmarks.md")),
        nofile,
        only: None,
        shapes: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--out" => opts.out = PathBuf::from(it.next().context("--out DIR")?),
            "--doc" => opts.doc = Some(PathBuf::from(it.next().context("--doc FILE")?)),
            "--no-doc" => opts.doc = None,
            // Profiling aid: one payload size, the latency phase only. SIZE:N:ROUNDS[,N:ROUNDS]
            "--only" => {
                let spec = it.next().context("--only SIZE:N:ROUNDS")?;
                let (size, steps) = spec.split_once(':').context("--only SIZE:N:ROUNDS")?;
                let steps = steps
                    .split(',')
                    .map(|st| {
                        let (n, r) = st.split_once(':').context("N:ROUNDS")?;
                        anyhow::Ok((n.parse()?, r.parse()?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                opts.only = Some(Case {
                    size: size.parse()?,
                    steps,
                });
            }
            // The document-shapes phase only: ROUNDS[:NAME-PART], e.g. 30:2,500
            "--shapes" => {
                let spec = it.next().context("--shapes ROUNDS[:NAME]")?;
                let (rounds, name) = spec
                    .split_once(':')
                    .map_or((spec.as_str(), None), |(r, n)| (r, Some(n.to_string())));
                opts.shapes = Some((rounds.parse()?, name));
            }
            other => bail!(
                "unknown argument {other:?} (bench [--quick] [--out DIR] [--doc FILE|--no-doc])"
            ),
        }
    }
    rt.block_on(run(opts))
}

struct Opts {
    quick: bool,
    out: PathBuf,
    doc: Option<PathBuf>,
    nofile: u64,
    only: Option<Case>,
    /// `--shapes`: the document-shapes phase only (rounds, shape name filter).
    shapes: Option<(usize, Option<String>)>,
}

/// The release binary (`FLAGD_REDIS_SYNC_BIN` wins).
fn release_binary() -> PathBuf {
    std::env::var("FLAGD_REDIS_SYNC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_binary("release"))
}

/// Raises the soft open-files limit to the hard one; children inherit it.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------------------
// Documents

/// A valid flag document of about `size` bytes whose `bench-marker` flag carries `marker`
/// (keys sorted, compact: the service's canonical form is the same size).
fn make_doc(marker: u32, size: usize) -> String {
    let mut s = String::with_capacity(size + 256);
    write!(
        s,
        r#"{{"flags":{{"bench-marker":{{"defaultVariant":"v","state":"ENABLED","variants":{{"v":"MARK{marker:09}"}}}}"#
    )
    .unwrap();
    let mut i = 0;
    while s.len() + 2 < size {
        write!(
            s,
            r#","f{i:06}":{{"defaultVariant":"off","state":"ENABLED","variants":{{"off":false,"on":true}}}}"#
        )
        .unwrap();
        i += 1;
    }
    s.push_str("}}");
    s
}

/// The marker in the first few KB of a document.
fn find_marker(bytes: &[u8]) -> Option<u32> {
    let head = &bytes[..bytes.len().min(4096)];
    let at = memchr::memmem::find(head, b"MARK")? + 4;
    std::str::from_utf8(head.get(at..at + 9)?)
        .ok()?
        .parse()
        .ok()
}

/// A `SyncFlagsResponse` decoder that reads the marker and skips the rest: no UTF-8 check,
/// no copy into a `String`, so the clients measure the server rather than themselves.
#[derive(Clone, Debug, Default, PartialEq)]
struct Marked {
    marker: Option<u32>,
}

impl prost::Message for Marked {
    fn encode_raw(&self, _: &mut impl BufMut) {}
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            // The length varint, then the JSON (tonic hands over one contiguous buffer).
            let chunk = buf.chunk();
            let start = chunk
                .iter()
                .position(|b| b & 0x80 == 0)
                .map_or(0, |p| p + 1);
            self.marker = find_marker(&chunk[start.min(chunk.len())..]);
        }
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        0
    }
    fn clear(&mut self) {
        self.marker = None;
    }
}

// ---------------------------------------------------------------------------------------
// Clients

enum Event {
    Msg { marker: u32, at: Instant },
    Failed { client: usize, error: String },
}

/// N client streams, each on its own connection, reporting every arrival.
struct Fleet {
    port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Fleet {
    fn new(port: u16) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Fleet {
            port,
            tasks: Vec::new(),
            tx,
            rx,
        }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Opens clients until there are `n`, `CONNECT_BATCH` at a time, and waits until each
    /// new one received the current document (`marker`).
    async fn grow(&mut self, n: usize, marker: u32) -> Result<()> {
        let started = Instant::now();
        let new = n.saturating_sub(self.len());
        let gate = Arc::new(Semaphore::new(CONNECT_BATCH));
        for id in self.len()..n {
            let permit = gate.clone().acquire_owned().await?;
            let (port, tx) = (self.port, self.tx.clone());
            self.tasks.push(tokio::spawn(async move {
                client(id, port, tx, permit).await;
            }));
        }
        let got = self.collect(marker, new, started).await?;
        ensure!(
            got.len() == new,
            "only {} of {new} clients connected",
            got.len()
        );
        Ok(())
    }

    /// Opens clients until there are `n`, whatever document they get first.
    async fn grow_any(&mut self, n: usize) -> Result<()> {
        let gate = Arc::new(Semaphore::new(CONNECT_BATCH));
        let new = n.saturating_sub(self.len());
        for id in self.len()..n {
            let permit = gate.clone().acquire_owned().await?;
            let (port, tx) = (self.port, self.tx.clone());
            self.tasks.push(tokio::spawn(client(id, port, tx, permit)));
        }
        for _ in 0..new {
            match self.rx.recv().await {
                Some(Event::Failed { client, error }) => bail!("client {client}: {error}"),
                None => bail!("clients gone"),
                Some(Event::Msg { .. }) => {}
            }
        }
        Ok(())
    }

    /// Waits for `n` arrivals of `marker`; returns each one's delay after `t0`.
    async fn collect(&mut self, marker: u32, n: usize, t0: Instant) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => bail!(
                    "{} of {n} clients got marker {marker} within {ROUND_TIMEOUT:?}",
                    out.len()
                ),
                Ok(None) => bail!("clients gone"),
                Ok(Some(Event::Failed { client, error })) => bail!("client {client}: {error}"),
                Ok(Some(Event::Msg { marker: m, at })) => {
                    if m == marker {
                        out.push(at.saturating_duration_since(t0).as_secs_f64());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Counts arrivals until `quiet` passes without one; returns the markers in order.
    async fn drain(&mut self, quiet: Duration) -> Vec<(u32, Instant)> {
        let mut out = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            if let Event::Msg { marker, at } = ev {
                out.push((marker, at));
            }
        }
        out
    }

    async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn client(
    id: usize,
    port: u16,
    tx: mpsc::UnboundedSender<Event>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut permit = Some(permit);
    let result = async {
        let mut attempt = 0;
        let channel = loop {
            let ep = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                .connect_timeout(Duration::from_secs(20))
                .tcp_nodelay(true)
                .http2_adaptive_window(true);
            match ep.connect().await {
                Ok(c) => break c,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(anyhow::Error::from(e).context("connecting")),
            }
        };
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<SyncFlagsRequest, Marked>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/flagd.sync.v1.FlagSyncService/SyncFlags",
        );
        let req = SyncFlagsRequest {
            provider_id: format!("bench-{id}"),
            selector: String::new(),
        };
        let mut stream = grpc
            .server_streaming(tonic::Request::new(req), path, codec)
            .await?
            .into_inner();
        loop {
            match stream.message().await? {
                Some(m) => {
                    let at = Instant::now();
                    permit.take();
                    let marker = m.marker.unwrap_or(u32::MAX);
                    if tx.send(Event::Msg { marker, at }).is_err() {
                        return Ok(());
                    }
                }
                None => bail!("stream ended with status OK"),
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Event::Failed {
            client: id,
            error: format!("{e:#}"),
        });
    }
}

// ---------------------------------------------------------------------------------------
// The service (integration::Service) and the floor servers as child processes

/// A floor server's process and the file its stderr goes to.
struct Proc {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
    fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
    /// What the process wrote to stderr so far.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn rss_kb(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:").unwrap_or(0)
}

/// Idle RSS: `pid`'s RSS once it has stopped moving (the same for 1.5 s; the allocator
/// hands freed pages back 1 s after the last change, docs/decisions.md), or after 10 s.
/// (VmRSS, RssAnon) in KiB.
async fn settled_rss_kb(pid: u32) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (rss_kb(pid), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kb(pid);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(1500) || Instant::now() > deadline {
            return (now, proc_status_kib(pid, "RssAnon:").unwrap_or(0));
        }
    }
}

/// The release binary, started as the integration tests start it but at the service's
/// own log level; returns once /readyz answers 200, with the time from spawn to then.
async fn start_service(redis: &RedisServer, extra: &[&str]) -> Result<(Service, Duration)> {
    let launch = Launch {
        rust_log: None,
        poll: Duration::from_millis(1),
        ..Launch::of(release_binary())
    };
    let mut svc = Service::launch(&launch, &redis.uri(KEY), extra).await?;
    let took = svc.ready_after_spawn(Duration::from_secs(20)).await?;
    Ok((svc, took))
}

/// The service's /metrics text ("" if it does not answer).
async fn metrics(svc: &Service) -> String {
    svc.http_get("/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// The gRPC floor server (this binary, `floor-server`), driven over stdin/stdout.
/// A RESP3 connection to the Redis on `port`, subscribed to `key`'s keyspace events (db
/// 0), and the receiver of its pushes: what both floors start from.
async fn keyspace_subscriber(
    port: u16,
    key: &str,
) -> Result<(
    redis::aio::MultiplexedConnection,
    mpsc::UnboundedReceiver<redis::PushInfo>,
)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/?protocol=resp3"))?;
    let (tx, pushes) = mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    con.subscribe(format!("__keyspace@0__:{key}")).await?;
    Ok((con, pushes))
}

/// Starts this binary as a floor server (`args`: the mode and its arguments) and reads
/// the port it listens on from its first line (`listening PORT`); its stdin and the rest
/// of its stdout are the caller's.
async fn spawn_floor(
    args: &[&str],
    log: PathBuf,
) -> Result<(
    Proc,
    u16,
    tokio::process::ChildStdin,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
)> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = stdout
        .next_line()
        .await?
        .with_context(|| format!("{} said nothing", args[0]))?;
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("{}: {line}", args[0]))?;
    Ok((Proc { child, log }, port, stdin, stdout))
}

struct FloorServer {
    proc: Proc,
    port: u16,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl FloorServer {
    async fn start(tmp: &Path) -> Result<Self> {
        let (proc, port, stdin, stdout) =
            spawn_floor(&["floor-server"], tmp.join("floor.log")).await?;
        Ok(FloorServer {
            proc,
            port,
            stdin,
            stdout,
        })
    }

    async fn command(&mut self, cmd: &str) -> Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn expect_ok(&mut self) -> Result<()> {
        let line = self
            .stdout
            .next_line()
            .await?
            .with_context(|| format!("floor server gone: {}", self.proc.log_text()))?;
        ensure!(line == "ok", "floor server: {line}");
        Ok(())
    }

    /// Builds (and encodes) the next message in the floor process, outside the timing.
    async fn prepare(&mut self, marker: u32, size: usize) -> Result<()> {
        self.command(&format!("prep {marker} {size}")).await?;
        self.expect_ok().await
    }
}

mod floor {
    //! The gRPC floor: tonic, a tokio broadcast, a pre-encoded message. Nothing else.
    use super::*;
    use flagd_redis_sync::wire::server::flagd::flag_sync_service_server::{
        FlagSyncService, FlagSyncServiceServer,
    };
    use flagd_redis_sync::wire::server::flagd::{
        FetchAllFlagsRequest, FetchAllFlagsResponse, GetMetadataRequest, GetMetadataResponse,
        SyncFlagsRequest,
    };
    use flagd_redis_sync::wire::EncodedSyncFlagsResponse;
    use std::pin::Pin;
    use std::sync::Mutex;
    use tokio::sync::broadcast;
    use tonic::{Request, Response, Status};

    pub(super) type Msg = EncodedSyncFlagsResponse;

    #[derive(Clone)]
    pub(super) struct Floor {
        pub(super) tx: broadcast::Sender<Msg>,
        pub(super) current: Arc<Mutex<Msg>>,
    }

    #[tonic::async_trait]
    impl FlagSyncService for Floor {
        type SyncFlagsStream =
            Pin<Box<dyn futures::Stream<Item = Result<Msg, Status>> + Send + 'static>>;

        async fn sync_flags(
            &self,
            _: Request<SyncFlagsRequest>,
        ) -> Result<Response<Self::SyncFlagsStream>, Status> {
            let rx = self.tx.subscribe();
            let first = self.current.lock().unwrap().clone();
            let rest = futures::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(m) => return Some((Ok(m), rx)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            use futures::StreamExt;
            Ok(Response::new(Box::pin(
                futures::stream::once(async move { Ok(first) }).chain(rest),
            )))
        }

        async fn fetch_all_flags(
            &self,
            _: Request<FetchAllFlagsRequest>,
        ) -> Result<Response<FetchAllFlagsResponse>, Status> {
            Err(Status::unimplemented("floor"))
        }

        async fn get_metadata(
            &self,
            _: Request<GetMetadataRequest>,
        ) -> Result<Response<GetMetadataResponse>, Status> {
            Err(Status::unimplemented("floor"))
        }
    }

    fn encode(marker: u32, size: usize) -> Msg {
        use prost::Message;
        let (v1, _) = flagd_redis_sync::wire::encode_responses(&make_doc(marker, size), None);
        let _ = v1.encoded_len();
        v1
    }

    /// Serves `floor` on a free port (in the background); returns the port.
    pub(super) async fn listen(floor: Floor) -> Result<u16> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FlagSyncServiceServer::new(floor).max_encoding_message_size(64 << 20))
                .serve_with_incoming(incoming),
        );
        Ok(port)
    }

    pub async fn serve() -> Result<()> {
        let (tx, _) = broadcast::channel(16);
        let floor = Floor {
            tx: tx.clone(),
            current: Arc::new(Mutex::new(encode(0, KB))),
        };
        let current = floor.current.clone();
        let port = listen(floor).await?;
        println!("listening {port}");
        let mut prepared = None;
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["prep", marker, size] => {
                    prepared = Some(encode(marker.parse()?, size.parse()?));
                    println!("ok");
                }
                ["send"] => {
                    let m = prepared.take().context("send before prep")?;
                    *current.lock().unwrap() = m.clone();
                    let _ = tx.send(m);
                }
                ["quit"] => break,
                _ => bail!("unknown command {line:?}"),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
    min: f64,
}

impl Stats {
    /// Nearest-rank percentiles of seconds.
    fn of(v: &[f64]) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Stats {
            n: s.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: s[s.len() - 1],
            min: s[0],
        }
    }
    fn json(&self) -> Value {
        json!({"n": self.n, "p50_ms": ms(self.p50), "p99_ms": ms(self.p99), "max_ms": ms(self.max), "min_ms": ms(self.min)})
    }
}

fn ms(s: f64) -> f64 {
    (s * 1e6).round() / 1e3
}

fn fmt_ms(s: f64) -> String {
    if s == 0.0 {
        "–".into()
    } else if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 0.1 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

fn fmt_size(b: usize) -> String {
    if b >= KB * KB {
        format!("{} MB", b / (KB * KB))
    } else {
        format!("{} KB", b / KB)
    }
}

// ---------------------------------------------------------------------------------------
// The plan

struct Case {
    size: usize,
    /// (N, rounds) in ascending N: the fleet grows from one to the next.
    steps: Vec<(usize, usize)>,
}

fn plan(quick: bool) -> (Vec<Case>, usize) {
    let redis_rounds = if quick { 100 } else { 300 };
    let cases = if quick {
        vec![
            Case {
                size: KB,
                steps: vec![(1, 150), (100, 30), (1000, 15), (10_000, 10)],
            },
            Case {
                size: 100 * KB,
                steps: vec![(1, 30), (100, 10)],
            },
            Case {
                size: KB * KB,
                steps: vec![(1, 20), (100, 5)],
            },
        ]
    } else {
        vec![
            Case {
                size: KB,
                steps: vec![(1, 400), (100, 100), (1000, 50), (10_000, 30)],
            },
            Case {
                size: 100 * KB,
                steps: vec![(1, 150), (100, 50), (1000, 20), (10_000, 8)],
            },
            // 1 MB to 10,000 clients is 10 GB per change through one 2-core machine's
            // loopback and client process: not run (see docs/benchmarks.md).
            Case {
                size: KB * KB,
                steps: vec![(1, 60), (100, 20), (1000, 8)],
            },
        ]
    };
    (cases, redis_rounds)
}

/// Pause between changes, so one change's tail never overlaps the next.
fn gap(n: usize, size: usize) -> Duration {
    let bytes = n * size;
    Duration::from_millis(2 + (bytes / (4 * KB * KB)) as u64)
}

// ---------------------------------------------------------------------------------------
// Phases

struct Marker(u32);
impl Marker {
    fn next(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

async fn run(opts: Opts) -> Result<()> {
    let bin = release_binary();
    ensure!(
        bin.exists(),
        "no release binary at {} (make build, or set FLAGD_REDIS_SYNC_BIN)",
        bin.display()
    );
    let tmp = tempfile::tempdir()?;
    let begun = Instant::now();
    let mut report = json!({
        "date": cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "mode": if opts.quick { "quick" } else { "full" },
        "command": if opts.quick { "make bench-quick" } else { "make bench" },
        "machine": machine(),
        "load_before": loadavg(),
        "nofile_limit": opts.nofile,
        "binary": bin.display().to_string(),
    });
    eprintln!(
        "bench: {} mode, load {}",
        report["mode"], report["load_before"]
    );
    let (cases, redis_rounds) = plan(opts.quick);
    let mut marker = Marker(0);
    if let Some((rounds, name)) = &opts.shapes {
        let rows = shapes::run(&mut marker, tmp.path(), *rounds, name.as_deref()).await?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        println!("{}", shapes::markdown(&rows));
        return Ok(());
    }
    if let Some(only) = opts.only {
        let (rows, mem, enc) = latency_case(&only, 50, &mut marker, tmp.path()).await?;
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"latency": rows, "memory": mem, "encodings": enc})
            )?
        );
        return Ok(());
    }

    let mut latency = Vec::new();
    let mut memory = Value::Null;
    let mut encodings = Vec::new();
    for case in &cases {
        let (rows, mem, enc) = latency_case(case, redis_rounds, &mut marker, tmp.path()).await?;
        latency.extend(rows);
        if case.size == KB {
            memory = mem;
        }
        encodings.push(enc);
    }
    report["latency"] = Value::Array(latency);
    report["memory"] = memory;
    report["encodings"] = Value::Array(encodings);
    report["shapes"] = shapes::run(
        &mut marker,
        tmp.path(),
        if opts.quick { 20 } else { 300 },
        None,
    )
    .await?;
    report["poll_cost"] = poll_cost(&mut marker, opts.quick).await?;
    report["burst"] = burst(&mut marker).await?;
    report["startup"] = startup(&mut marker, if opts.quick { 5 } else { 15 }).await?;
    report["load_after"] = json!(loadavg());
    report["duration_s"] = json!(begun.elapsed().as_secs());
    report["targets"] = targets(&report);

    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(
        opts.out.join("results.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    plots(&report, &opts.out)?;
    let md = markdown(&report, &opts.out, opts.doc.as_deref());
    match &opts.doc {
        Some(doc) => {
            splice(doc, &md)?;
            eprintln!("bench: wrote {} and {}", doc.display(), opts.out.display());
        }
        None => {
            std::fs::write(opts.out.join("results.md"), &md)?;
            eprintln!("bench: wrote {}", opts.out.display());
        }
    }
    println!("{md}");
    Ok(())
}

/// One payload size: the Redis floor, then the service at each N, then the gRPC floor at
/// each N. Also the idle memory ramp and the encodings count.
async fn latency_case(
    case: &Case,
    redis_rounds: usize,
    marker: &mut Marker,
    tmp: &Path,
) -> Result<(Vec<Value>, Value, Value)> {
    let size = case.size;
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kg$xe"])?;
    let writer_client = redis.client();
    let mut writer = writer_client.get_multiplexed_async_connection().await?;

    // Redis floor: SET -> keyspace notification at a bare subscriber -> GET done.
    eprintln!(
        "bench: {}: Redis floor, {redis_rounds} changes",
        fmt_size(size)
    );
    let redis_floor = redis_floor(&redis, &mut writer, size, redis_rounds, marker).await?;

    // The service.
    let first = marker.next();
    let _: () = writer.set(KEY, make_doc(first, size)).await?;
    let (svc, _) = start_service(&redis, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = metrics(&svc).await;
    let idle_rss = rss_kb(svc.pid());
    let mut ramp = vec![json!({"streams": 0, "service_rss_kb": idle_rss})];
    let mut fleet = Fleet::new(svc.grpc_port);
    let mut current = first;
    let mut service_rows = Vec::new();
    let mut redis_conns = Vec::new();
    for &(n, rounds) in &case.steps {
        eprintln!("bench: {}: service, N = {n}: connecting", fmt_size(size));
        let t = Instant::now();
        fleet.grow(n, current).await?;
        let connect_s = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        ramp.push(json!({"streams": n, "service_rss_kb": rss_kb(svc.pid())}));
        // The service's Redis connections: every client but the bench's writer.
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut writer)
            .await?;
        let clients = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        redis_conns.push(json!({"streams": n, "service_redis_connections": clients - 1}));
        eprintln!(
            "bench: {}: service, N = {n}: {rounds} changes",
            fmt_size(size)
        );
        let (all, last, first_arrivals) = rounds_service(
            &mut fleet,
            &mut writer,
            n,
            size,
            rounds,
            marker,
            &mut current,
        )
        .await?;
        service_rows.push((n, rounds, all, last, first_arrivals, connect_s));
    }
    let after = metrics(&svc).await;
    let delta = |name: &str| {
        metric_value(&after, name).unwrap_or(0.0) - metric_value(&base, name).unwrap_or(0.0)
    };
    let enc = json!({
        "payload_bytes": size,
        "max_streams": fleet.len(),
        "changes_published": delta("flagd_redis_sync_documents_accepted_total"),
        "encodings": delta("flagd_redis_sync_encodings_total"),
        "pushes": delta("flagd_redis_sync_pushes_total"),
        "encodings_metric_present": metric_value(&after, "flagd_redis_sync_encodings_total").is_some(),
        "redis_connections": redis_conns,
    });
    fleet.close().await;
    drop(svc);

    // The gRPC floor, same client, same N.
    let mut floor = FloorServer::start(tmp).await?;
    let fm = marker.next();
    floor.prepare(fm, size).await?;
    floor.command("send").await?;
    let floor_idle = floor.proc.rss_kb();
    let mut floor_ramp = vec![json!({"streams": 0, "floor_rss_kb": floor_idle})];
    let mut fleet = Fleet::new(floor.port);
    let mut current = fm;
    let mut floor_rows = Vec::new();
    for &(n, rounds) in &case.steps {
        eprintln!("bench: {}: gRPC floor, N = {n}", fmt_size(size));
        fleet.grow(n, current).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        floor_ramp.push(json!({"streams": n, "floor_rss_kb": floor.proc.rss_kb()}));
        let mut last = Vec::new();
        let mut all = Vec::new();
        for _ in 0..rounds + 2 {
            let m = marker.next();
            floor.prepare(m, size).await?;
            tokio::time::sleep(gap(n, size)).await;
            let t0 = Instant::now();
            floor.command("send").await?;
            let got = fleet.collect(m, n, t0).await?;
            current = m;
            last.push(got.iter().cloned().fold(0.0, f64::max));
            all.extend(got);
        }
        // The first two were warm-up.
        floor_rows.push((n, Stats::of(&all[2 * n..]), Stats::of(&last[2..])));
    }
    fleet.close().await;
    floor.command("quit").await.ok();
    floor.proc.stop().await;

    let mut rows = Vec::new();
    for ((n, rounds, all, last, firsts, connect_s), (_, fall, flast)) in
        service_rows.into_iter().zip(floor_rows)
    {
        rows.push(json!({
            "payload_bytes": size,
            "n": n,
            "rounds": rounds,
            "service_all": all.json(),
            "service_last": last.json(),
            "service_first": firsts.json(),
            "grpc_floor_all": fall.json(),
            "grpc_floor_last": flast.json(),
            "redis_floor": redis_floor.json(),
            "last_p99_over_floor": if flast.p99 > 0.0 { (last.p99 / flast.p99 * 100.0).round() / 100.0 } else { 0.0 },
            "connect_s": (connect_s * 10.0).round() / 10.0,
        }));
    }
    let mem = json!({"service": ramp, "floor": floor_ramp, "service_idle_rss_kb": idle_rss});
    Ok((rows, mem, enc))
}

async fn redis_floor(
    redis: &RedisServer,
    writer: &mut redis::aio::MultiplexedConnection,
    size: usize,
    rounds: usize,
    marker: &mut Marker,
) -> Result<Stats> {
    let (mut sub, mut pushes) = keyspace_subscriber(redis.port, FLOOR_KEY).await?;
    let mut out = Vec::new();
    for i in 0..rounds + 5 {
        let value = make_doc(marker.next(), size);
        tokio::time::sleep(Duration::from_millis(2)).await;
        while pushes.try_recv().is_ok() {}
        let t0 = Instant::now();
        let set = async {
            let _: () = writer.clone().set(FLOOR_KEY, value).await?;
            anyhow::Ok(())
        };
        let seen = async {
            loop {
                let p = pushes.recv().await.context("subscriber gone")?;
                if p.kind == redis::PushKind::Message {
                    break;
                }
            }
            let v: Vec<u8> = sub.get(FLOOR_KEY).await?;
            anyhow::Ok((Instant::now(), v.len()))
        };
        let (s, r) = tokio::join!(set, seen);
        s?;
        let (done, len) = r?;
        ensure!(len >= size - 200, "GET returned {len} bytes");
        if i >= 5 {
            out.push(done.duration_since(t0).as_secs_f64());
        }
    }
    Ok(Stats::of(&out))
}

/// Returns (all arrivals, last arrival per change, first arrival per change).
async fn rounds_service(
    fleet: &mut Fleet,
    writer: &mut redis::aio::MultiplexedConnection,
    n: usize,
    size: usize,
    rounds: usize,
    marker: &mut Marker,
    current: &mut u32,
) -> Result<(Stats, Stats, Stats)> {
    let mut all = Vec::with_capacity(n * rounds);
    let mut last = Vec::with_capacity(rounds);
    let mut first = Vec::with_capacity(rounds);
    let warmup = 2;
    for i in 0..rounds + warmup {
        let m = marker.next();
        let doc = make_doc(m, size);
        tokio::time::sleep(gap(n, size)).await;
        let t0 = Instant::now();
        let _: () = writer.set(KEY, doc).await?;
        let got = fleet.collect(m, n, t0).await?;
        *current = m;
        if i >= warmup {
            last.push(got.iter().cloned().fold(0.0, f64::max));
            first.push(got.iter().cloned().fold(f64::MAX, f64::min));
            all.extend(got);
        }
    }
    Ok((Stats::of(&all), Stats::of(&last), Stats::of(&first)))
}

/// Redis traffic of polls of an unchanged 1 MB document (`--redis-interval 1`), from the
/// server's own byte counters.
async fn poll_cost(marker: &mut Marker, quick: bool) -> Result<Value> {
    eprintln!("bench: poll cost");
    let redis = RedisServer::start()?;
    let size = KB * KB;
    redis.set(KEY, &make_doc(marker.next(), size))?;
    let (svc, _) = start_service(&redis, &["--redis-interval", "1"]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut con = redis.client().get_multiplexed_async_connection().await?;
    let stats = |s: &str, k: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let polls0 = svc.metric("flagd_redis_sync_polls_total").await;
    let a: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut con)
        .await?;
    let secs = if quick { 6 } else { 12 };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let b: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut con)
        .await?;
    let polls = svc.metric("flagd_redis_sync_polls_total").await - polls0;
    // Take out our own INFO: reply A (written after A's counters were read) and command B.
    let info_reply = (a.len() + format!("${}\r\n\r\n", a.len()).len()) as f64;
    let info_cmd = "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n".len() as f64;
    let out =
        stats(&b, "total_net_output_bytes") - stats(&a, "total_net_output_bytes") - info_reply;
    let inp = stats(&b, "total_net_input_bytes") - stats(&a, "total_net_input_bytes") - info_cmd;
    let dup = svc
        .metric("flagd_redis_sync_documents_duplicates_total")
        .await;
    drop(svc);
    ensure!(polls > 0.0, "no polls counted");
    Ok(json!({
        "document_bytes": size,
        "seconds": secs,
        "polls": polls,
        "redis_out_bytes_per_poll": (out / polls).round(),
        "redis_in_bytes_per_poll": (inp / polls).round(),
        "note": "INFO stats deltas over the window, less the bench's own INFO; includes the service's liveness PINGs (one per 5 s)",
        "duplicates_total": dup,
    }))
}

/// 1,000 writes paced over one second, then 1,000 back-to-back (pipelined): how many
/// pushes reach a client, whether the last one is the last document, how long after the
/// last write it arrives.
async fn burst(marker: &mut Marker) -> Result<Value> {
    eprintln!("bench: bursts");
    let redis = RedisServer::start()?;
    let size = KB;
    let m0 = marker.next();
    redis.set(KEY, &make_doc(m0, size))?;
    let (svc, _) = start_service(&redis, &[]).await?;
    let mut fleet = Fleet::new(svc.grpc_port);
    fleet.grow(1, m0).await?;
    let mut con = redis.client().get_multiplexed_async_connection().await?;
    let mut out = Vec::new();
    for paced in [true, false] {
        let docs: Vec<(u32, String)> = (0..1000)
            .map(|_| {
                let m = marker.next();
                (m, make_doc(m, size))
            })
            .collect();
        let last_marker = docs.last().unwrap().0;
        let notif0 = svc.metric("flagd_redis_sync_notifications_total").await;
        let t0 = Instant::now();
        if paced {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for (_, d) in &docs {
                tick.tick().await;
                let _: () = con.set(KEY, d).await?;
            }
        } else {
            let mut pipe = redis::pipe();
            for (_, d) in &docs {
                pipe.set(KEY, d).ignore();
            }
            let _: () = pipe.query_async(&mut con).await?;
        }
        let writes_done = Instant::now();
        let got = fleet.drain(Duration::from_millis(1000)).await;
        let notifications = svc.metric("flagd_redis_sync_notifications_total").await - notif0;
        let (final_marker, final_at) = got.last().cloned().unwrap_or((0, writes_done));
        let mut in_order = true;
        for w in got.windows(2) {
            in_order &= w[0].0 < w[1].0;
        }
        out.push(json!({
            "pattern": if paced { "1,000 SETs paced 1 ms apart (about 1 s)" } else { "1,000 SETs back to back in one pipeline" },
            "writes": 1000,
            "write_seconds": (writes_done - t0).as_secs_f64(),
            "notifications_seen": notifications,
            "pushes_received": got.len(),
            "ends_in_last_document": final_marker == last_marker,
            "in_order": in_order,
            "last_write_to_last_push_ms": ms(final_at.saturating_duration_since(writes_done).as_secs_f64()),
        }));
    }
    fleet.close().await;
    let rss = rss_kb(svc.pid());
    drop(svc);
    Ok(json!({"runs": out, "service_rss_kb_after": rss}))
}

/// Spawn to /readyz 200 with a 1 MB document already in Redis; and the idle RSS.
async fn startup(marker: &mut Marker, runs: usize) -> Result<Value> {
    eprintln!("bench: start-up");
    let redis = RedisServer::start()?;
    redis.set(KEY, &make_doc(marker.next(), KB * KB))?;
    let mut times = Vec::new();
    let mut rss_1mb = 0;
    for run in 0..runs {
        let (svc, took) = start_service(&redis, &[]).await?;
        times.push(took.as_secs_f64());
        if run + 1 == runs {
            rss_1mb = settled_rss_kb(svc.pid()).await.0;
        }
        drop(svc);
    }
    redis.set(KEY, &make_doc(marker.next(), KB))?;
    let (svc, _) = start_service(&redis, &[]).await?;
    let rss_1kb = settled_rss_kb(svc.pid()).await.0;
    drop(svc);
    Ok(json!({
        "document_bytes": KB * KB,
        "spawn_to_ready": Stats::of(&times).json(),
        "idle_rss_kb_1kb_doc": rss_1kb,
        "idle_rss_kb_1mb_doc": rss_1mb,
    }))
}

// ---------------------------------------------------------------------------------------
// Targets

fn find_row(r: &Value, size: usize, n: usize) -> Option<&Value> {
    r["latency"].as_array()?.iter().find(|x| {
        x["payload_bytes"].as_u64() == Some(size as u64) && x["n"].as_u64() == Some(n as u64)
    })
}

fn per_stream_kb(mem: &Value, key: &str, to: u64) -> Option<f64> {
    let pts = mem.as_array()?;
    let at = |n: u64| {
        pts.iter()
            .find(|p| p["streams"].as_u64() == Some(n))
            .and_then(|p| p[key].as_f64())
    };
    let max_n = pts
        .iter()
        .filter_map(|p| p["streams"].as_u64())
        .filter(|&n| n <= to)
        .max()?;
    Some((at(max_n)? - at(0)?) / max_n as f64)
}

fn targets(r: &Value) -> Value {
    let mut t = Vec::new();
    let mut add = |name: &str, measured: String, met: Option<bool>| {
        t.push(json!({"target": name, "measured": measured, "met": met}));
    };
    if let Some(row) = find_row(r, KB, 1) {
        let p50 = row["service_all"]["p50_ms"].as_f64().unwrap_or(0.0);
        let p99 = row["service_all"]["p99_ms"].as_f64().unwrap_or(0.0);
        let floor = row["redis_floor"]["p50_ms"].as_f64().unwrap_or(0.0);
        let over = (p50 - floor) * 1000.0;
        add(
            "N = 1, 1 KB: SET -> client p50 within 150 µs of the Redis floor",
            format!(
                "p50 {:.0} µs, Redis floor p50 {:.0} µs: +{over:.0} µs",
                p50 * 1e3,
                floor * 1e3
            ),
            Some(over <= 150.0),
        );
        add(
            "N = 1, 1 KB: p99 under 1 ms",
            format!("p99 {:.0} µs", p99 * 1e3),
            Some(p99 < 1.0),
        );
    }
    let big = r["latency"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter(|x| x["payload_bytes"].as_u64() == Some(KB as u64))
                .map(|x| x["n"].as_u64().unwrap_or(0))
                .max()
        })
        .unwrap_or(0) as usize;
    if let Some(row) = find_row(r, KB, big) {
        let p99 = row["service_last"]["p99_ms"].as_f64().unwrap_or(0.0);
        let fp99 = row["grpc_floor_last"]["p99_ms"].as_f64().unwrap_or(0.0);
        let ratio = row["last_p99_over_floor"].as_f64().unwrap_or(0.0);
        add(
            &format!("N = {big}, 1 KB: SET -> last client p99 under 100 ms"),
            format!("{p99:.1} ms"),
            Some(p99 < 100.0 && big >= 10_000),
        );
        add(
            &format!("N = {big}, 1 KB: within 1.25x of the gRPC floor"),
            format!("{ratio:.2}x (floor last-client p99 {fp99:.1} ms)"),
            Some(ratio <= 1.25 && big >= 10_000),
        );
    }
    let mem = &r["memory"]["service"];
    if let Some(kb) = per_stream_kb(mem, "service_rss_kb", 10_000) {
        let floor = per_stream_kb(&r["memory"]["floor"], "floor_rss_kb", 10_000).unwrap_or(0.0);
        add(
            "RSS per idle stream (own connection), 0 -> 10,000 streams, under 16 KB",
            format!("{kb:.1} KB (gRPC floor server: {floor:.1} KB)"),
            Some(kb < 16.0),
        );
    }
    let idle = r["startup"]["idle_rss_kb_1kb_doc"].as_f64().unwrap_or(0.0) / 1024.0;
    let idle_1mb = r["startup"]["idle_rss_kb_1mb_doc"].as_f64().unwrap_or(0.0) / 1024.0;
    add(
        "Idle RSS of the service under 15 MB",
        format!("{idle:.1} MB with a 1 KB document ({idle_1mb:.1} MB with 1 MB)"),
        Some(idle > 0.0 && idle < 15.0),
    );
    if let Some(encs) = r["encodings"].as_array() {
        let ok = encs.iter().all(|e| {
            e["encodings_metric_present"].as_bool() == Some(true)
                && e["encodings"].as_f64() == e["changes_published"].as_f64()
        });
        let text = encs
            .iter()
            .map(|e| {
                format!(
                    "{}: {} changes, {} encodings, {} pushes (up to {} streams)",
                    fmt_size(e["payload_bytes"].as_u64().unwrap_or(0) as usize),
                    e["changes_published"],
                    e["encodings"],
                    e["pushes"],
                    e["max_streams"]
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        add("Each change serialised once whatever N", text, Some(ok));
    }
    if let Some(encs) = r["encodings"].as_array() {
        let conns: Vec<(u64, i64)> = encs
            .iter()
            .flat_map(|e| {
                e["redis_connections"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|c| {
                (
                    c["streams"].as_u64().unwrap_or(0),
                    c["service_redis_connections"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        let max_n = conns.iter().map(|c| c.0).max().unwrap_or(0);
        let distinct: std::collections::BTreeSet<i64> = conns.iter().map(|c| c.1).collect();
        add(
            "Redis connections constant in N",
            format!("{:?} connection(s) at every N from 1 to {max_n}", distinct),
            Some(distinct.len() == 1),
        );
    }
    let out = r["poll_cost"]["redis_out_bytes_per_poll"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let inp = r["poll_cost"]["redis_in_bytes_per_poll"]
        .as_f64()
        .unwrap_or(0.0);
    add(
        "Unchanged 1 MB document: under 100 bytes per poll (Redis reply)",
        format!("{out:.0} bytes out of Redis per poll ({inp:.0} bytes of request)"),
        Some(out < 100.0),
    );
    if let Some(runs) = r["burst"]["runs"].as_array() {
        let ok = runs.iter().all(|b| {
            b["ends_in_last_document"].as_bool() == Some(true)
                && b["in_order"].as_bool() == Some(true)
                && b["last_write_to_last_push_ms"].as_f64().unwrap_or(1e9) < 100.0
        });
        let text = runs
            .iter()
            .map(|b| {
                format!(
                    "{}: {} pushes, last doc {} ms after last write",
                    b["pattern"].as_str().unwrap_or(""),
                    b["pushes_received"],
                    b["last_write_to_last_push_ms"]
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        add(
            "Burst of 1,000 writes: bounded pushes ending in the last document",
            text,
            Some(ok),
        );
    }
    let st = r["startup"]["spawn_to_ready"]["p50_ms"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let stmax = r["startup"]["spawn_to_ready"]["max_ms"]
        .as_f64()
        .unwrap_or(f64::MAX);
    add(
        "Start-up to ready (1 MB document) under 100 ms",
        format!("median {st:.1} ms, max {stmax:.1} ms"),
        Some(stmax < 100.0),
    );
    for (name, measured, met) in shapes::targets(&r["shapes"]) {
        add(&name, measured, Some(met));
    }
    Value::Array(t)
}

// ---------------------------------------------------------------------------------------
// Reports

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": mem,
        "kernel": cmd_out("uname", &["-sr"]),
        "redis": cmd_out("redis-server", &["--version"]),
        "rustc": cmd_out("rustc", &["--version"]),
    })
}

fn md_ms(v: &Value) -> String {
    v.as_f64().map(|x| fmt_ms(x / 1e3)).unwrap_or_default()
}

fn markdown(r: &Value, out: &Path, doc: Option<&Path>) -> String {
    let rel = |name: &str| -> String {
        let p = out.join(name);
        match doc.and_then(|d| d.parent()) {
            Some(dir) => p
                .strip_prefix(dir)
                .map(|x| x.display().to_string())
                .unwrap_or(p.display().to_string()),
            None => name.to_string(),
        }
    };
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        s,
        "Measured {} with `{}` ({} s; {} mode).\n",
        r["date"].as_str().unwrap_or(""),
        r["command"].as_str().unwrap_or(""),
        r["duration_s"],
        r["mode"].as_str().unwrap_or("")
    );
    let _ = writeln!(s, "Machine: {}, {} cores, {}, {}; {}; {}. Load average (1/5/15 min) {} before, {} after. All traffic on 127.0.0.1; service, clients, gRPC floor server and redis-server share the 2 cores.\n",
        m["cpu"].as_str().unwrap_or(""), m["cores"], m["memory"].as_str().unwrap_or(""), m["kernel"].as_str().unwrap_or(""),
        m["redis"].as_str().unwrap_or("").split(" sha").next().unwrap_or(""), m["rustc"].as_str().unwrap_or(""),
        r["load_before"].as_str().unwrap_or(""), r["load_after"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "### Targets\n\n| Target | Measured | Met |\n|---|---|---|"
    );
    for t in r["targets"].as_array().into_iter().flatten() {
        let met = match t["met"].as_bool() {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "–",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {met} |",
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(s, "\n### Latency: SET -> message at the client\n");
    let _ = writeln!(s, "\"all\" pools every client's arrival of every change; \"last\" is the arrival at the last of the N clients, one value per change. Floors: Redis = SET -> keyspace notification at a bare subscriber + GET; gRPC = a minimal tonic server broadcasting a pre-encoded message to the same N clients (timed from the bench's command to it).\n");
    let _ = writeln!(s, "| Payload | N | Changes | Service all p50 / p99 | Service last p50 / p99 / max | gRPC floor last p50 / p99 / max | Last p99 / floor | Redis floor p50 / p99 |\n|---|---|---|---|---|---|---|---|");
    for row in r["latency"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} | {} / {} / {} | {} / {} / {} | {:.2}x | {} / {} |",
            fmt_size(row["payload_bytes"].as_u64().unwrap_or(0) as usize),
            row["n"],
            row["rounds"],
            md_ms(&row["service_all"]["p50_ms"]),
            md_ms(&row["service_all"]["p99_ms"]),
            md_ms(&row["service_last"]["p50_ms"]),
            md_ms(&row["service_last"]["p99_ms"]),
            md_ms(&row["service_last"]["max_ms"]),
            md_ms(&row["grpc_floor_last"]["p50_ms"]),
            md_ms(&row["grpc_floor_last"]["p99_ms"]),
            md_ms(&row["grpc_floor_last"]["max_ms"]),
            row["last_p99_over_floor"].as_f64().unwrap_or(0.0),
            md_ms(&row["redis_floor"]["p50_ms"]),
            md_ms(&row["redis_floor"]["p99_ms"])
        );
    }
    let _ = writeln!(
        s,
        "\n![Latency to the last client, by N]({})\n",
        rel("latency.svg")
    );
    let _ = writeln!(s, "### Memory: RSS with idle streams (1 KB document, each stream its own connection)\n\n| Streams | Service RSS | gRPC floor server RSS |\n|---|---|---|");
    let svc_pts = r["memory"]["service"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let floor_pts = r["memory"]["floor"].as_array().cloned().unwrap_or_default();
    for (i, p) in svc_pts.iter().enumerate() {
        let f = floor_pts
            .get(i)
            .and_then(|f| f["floor_rss_kb"].as_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            s,
            "| {} | {:.1} MB | {:.1} MB |",
            p["streams"],
            p["service_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            f / 1024.0
        );
    }
    let _ = writeln!(s, "\n![RSS by idle streams]({})\n", rel("memory.svg"));
    let _ = writeln!(s, "### Serialisation: encodings vs pushes\n\n| Payload | Streams (max) | Changes published | Encodings | Pushes |\n|---|---|---|---|---|");
    for e in r["encodings"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            fmt_size(e["payload_bytes"].as_u64().unwrap_or(0) as usize),
            e["max_streams"],
            e["changes_published"],
            e["encodings"],
            e["pushes"]
        );
    }
    let pc = &r["poll_cost"];
    let _ = writeln!(s, "\n### Redis cost of a poll (unchanged 1 MB document, `--redis-interval 1`)\n\n{} polls in {} s: **{} bytes** out of Redis and {} bytes into it per poll (a GET would send 1,048,576+). {}.\n",
        pc["polls"], pc["seconds"], pc["redis_out_bytes_per_poll"], pc["redis_in_bytes_per_poll"], pc["note"].as_str().unwrap_or(""));
    let _ = writeln!(s, "### Bursts (1 KB documents, one client)\n\n| Pattern | Write time | Notifications seen | Pushes received | Ends in last document | In order | Last write -> last push |\n|---|---|---|---|---|---|---|");
    for b in r["burst"]["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {:.0} ms | {} | {} | {} | {} | {} |",
            b["pattern"].as_str().unwrap_or(""),
            b["write_seconds"].as_f64().unwrap_or(0.0) * 1e3,
            b["notifications_seen"],
            b["pushes_received"],
            b["ends_in_last_document"],
            b["in_order"],
            md_ms(&b["last_write_to_last_push_ms"])
        );
    }
    let st = &r["startup"];
    let _ = writeln!(s, "\n### Start-up and idle memory\n\nSpawn -> `/readyz` 200 with a 1 MB document in Redis ({} runs): median {}, max {}. Idle RSS: {:.1} MB (1 KB document), {:.1} MB (1 MB document).\n",
        st["spawn_to_ready"]["n"], md_ms(&st["spawn_to_ready"]["p50_ms"]), md_ms(&st["spawn_to_ready"]["max_ms"]),
        st["idle_rss_kb_1kb_doc"].as_f64().unwrap_or(0.0) / 1024.0, st["idle_rss_kb_1mb_doc"].as_f64().unwrap_or(0.0) / 1024.0);
    if r["shapes"].is_array() {
        s.push_str(&shapes::markdown(&r["shapes"]));
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "Raw figures: [{}]({}).",
        rel("results.json"),
        rel("results.json")
    );
    s
}

const BEGIN: &str = "<!-- BEGIN GENERATED by `make bench`: do not edit by hand -->";
const END: &str = "<!-- END GENERATED -->";

/// Replaces the generated section of the report (or appends one).
fn splice(doc: &Path, md: &str) -> Result<()> {
    let text = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let block = format!("{BEGIN}\n{md}{END}");
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &text[..a], block, &text[b + END.len()..]),
        _ => format!("{text}\n## Latest results\n\n{block}\n"),
    };
    std::fs::write(doc, new)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Plots: hand-written SVG, log-log lines.

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

fn line_chart(title: &str, xlabel: &str, ylabel: &str, log_y: bool, series: &[Series]) -> String {
    let (w, h, l, r, t, b) = (760.0, 440.0, 80.0, 220.0, 40.0, 60.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().cloned())
        .filter(|p| p.0 > 0.0 && p.1 > 0.0)
        .collect();
    if pts.is_empty() {
        return String::new();
    }
    let lx = |x: f64| x.max(1.0).log10();
    let ly = |y: f64| if log_y { y.log10() } else { y };
    let (x0, x1) = (
        lx(pts.iter().map(|p| p.0).fold(f64::MAX, f64::min)).floor(),
        lx(pts.iter().map(|p| p.0).fold(0.0, f64::max))
            .ceil()
            .max(1.0),
    );
    let (mut y0, mut y1) = (
        ly(pts.iter().map(|p| p.1).fold(f64::MAX, f64::min)),
        ly(pts.iter().map(|p| p.1).fold(0.0, f64::max)),
    );
    if log_y {
        y0 = y0.floor();
        y1 = y1.ceil();
    } else {
        y0 = 0.0;
        y1 *= 1.1;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| l + (lx(x) - x0) / (x1 - x0).max(1e-9) * (w - l - r);
    let py = |y: f64| h - b - (ly(y) - y0) / (y1 - y0) * (h - t - b);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        (w - r + l) / 2.0
    );
    // Axes and grid.
    let mut e = x0 as i32;
    while e as f64 <= x1 {
        let x = px(10f64.powi(e));
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{t}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            h - b,
            h - b + 16.0,
            fmt_count(10f64.powi(e))
        );
        e += 1;
    }
    if log_y {
        let mut e = y0 as i32;
        while e as f64 <= y1 {
            let v = 10f64.powi(e);
            let y = py(v);
            let _ = write!(
                s,
                r##"<line x1="{l}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                w - r,
                l - 6.0,
                y + 4.0,
                fmt_axis(v)
            );
            e += 1;
        }
    } else {
        for i in 0..=5 {
            let v = y0 + (y1 - y0) * i as f64 / 5.0;
            let y = py(v);
            let _ = write!(
                s,
                r##"<line x1="{l}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{:.0}</text>"##,
                w - r,
                l - 6.0,
                y + 4.0,
                v
            );
        }
    }
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="#333"/>"##,
        h - b,
        w - r,
        h - b,
        h - b
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{xlabel}</text><text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{ylabel}</text>"#,
        (w - r + l) / 2.0,
        h - 18.0,
        (h - b + t) / 2.0,
        (h - b + t) / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            se.color,
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap();
            let _ = write!(
                s,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                se.color
            );
        }
        let ly_ = t + 10.0 + i as f64 * 20.0;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly_}" x2="{}" y2="{ly_}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            w - r + 12.0,
            w - r + 40.0,
            se.color,
            w - r + 46.0,
            ly_ + 4.0,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_count(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v}")
    }
}

fn fmt_axis(ms_: f64) -> String {
    if ms_ < 1.0 {
        format!("{} µs", ms_ * 1000.0)
    } else if ms_ >= 1000.0 {
        format!("{} s", ms_ / 1000.0)
    } else {
        format!("{ms_} ms")
    }
}

fn plots(r: &Value, out: &Path) -> Result<()> {
    let rows = r["latency"].as_array().cloned().unwrap_or_default();
    let mut sizes: Vec<u64> = rows
        .iter()
        .filter_map(|x| x["payload_bytes"].as_u64())
        .collect();
    sizes.dedup();
    let mut series = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let pick = |k: &str| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|x| x["payload_bytes"].as_u64() == Some(*size))
                .map(|x| {
                    (
                        x["n"].as_f64().unwrap_or(0.0),
                        x[k]["p99_ms"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        };
        series.push(Series {
            name: format!("service {}", fmt_size(*size as usize)),
            color: COLORS[i % 6],
            dashed: false,
            points: pick("service_last"),
        });
        series.push(Series {
            name: format!("gRPC floor {}", fmt_size(*size as usize)),
            color: COLORS[i % 6],
            dashed: true,
            points: pick("grpc_floor_last"),
        });
    }
    std::fs::write(
        out.join("latency.svg"),
        line_chart(
            "SET -> last client, p99",
            "client streams (N), each its own connection",
            "latency (log)",
            true,
            &series,
        ),
    )?;
    let mut mem = Vec::new();
    for (i, (key, name, field)) in [
        ("service", "flagd-redis-sync", "service_rss_kb"),
        ("floor", "gRPC floor server", "floor_rss_kb"),
    ]
    .iter()
    .enumerate()
    {
        let pts: Vec<(f64, f64)> = r["memory"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["streams"].as_u64().unwrap_or(0) > 0)
            .map(|p| {
                (
                    p["streams"].as_f64().unwrap_or(0.0),
                    p[field].as_f64().unwrap_or(0.0) / 1024.0,
                )
            })
            .collect();
        mem.push(Series {
            name: name.to_string(),
            color: COLORS[i],
            dashed: i == 1,
            points: pts,
        });
    }
    std::fs::write(
        out.join("memory.svg"),
        line_chart(
            "RSS with idle streams",
            "idle streams, each its own connection",
            "RSS (MB)",
            false,
            &mem,
        ),
    )?;
    Ok(())
}

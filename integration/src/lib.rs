//! Test support: real `redis-server` processes on probed ports in temp dirs, the real
//! `flagd-redis-sync` binary, and a real gRPC sync client. Nothing here assumes a Redis
//! on 6379, and nothing is shared between tests.

use anyhow::{bail, Context, Result};
use flagd_redis_sync::wire::client::flagd::flag_sync_service_client::FlagSyncServiceClient;
use flagd_redis_sync::wire::client::flagd::{SyncFlagsRequest, SyncFlagsResponse};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub use fixture::{start_server, Fixture, Started};
pub use flagd_redis_sync::wire::client;

pub mod fixture;
pub mod proxy;
pub mod realistic;
pub mod script;
pub mod setup;
pub mod topology;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A port nobody listens on right now (the OS picks it). Callers retry on a bind race.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probing a free port")
}

/// Polls `f` until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of a file in `integration/testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// A test data file, parsed.
pub fn testdata_json(name: &str) -> serde_json::Value {
    let path = testdata(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("testdata is JSON")
}

/// The flagd testbed files: every `*.json` directly in `integration/testdata/`, sorted
/// by name, with their paths.
pub fn testbed_files() -> Vec<(String, PathBuf)> {
    let dir = testdata("");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), p))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the testbed files in {}, found {}",
        dir.display(),
        files.len()
    );
    files
}

/// Testbed files that carry flags broken on purpose (the providers' conformance suites
/// check that evaluating them errors: an unknown operator, a `$ref` to no shared rule, a
/// rule returning a name that is no variant, a negative fractional weight, sem_ver
/// versions the schema does not allow). `--validation strict` (the default) refuses
/// them; `--validation basic` accepts them, which is how the round-trip tests serve them.
pub const TESTBED_BROKEN_ON_PURPOSE: [&str; 5] = [
    "custom-ops.json",
    "edge-case-flags.json",
    "evaluator-refs.json",
    "testkit-flags.json",
    "zero-flags.json",
];

/// A flag document with one string flag `name` whose default variant has `value`.
pub fn doc(name: &str, value: &str) -> String {
    format!(
        r#"{{"flags":{{"{name}":{{"state":"ENABLED","variants":{{"v":"{value}","other":"x"}},"defaultVariant":"v"}}}}}}"#
    )
}

/// A `redis-server` of our own, killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts redis-server on a given port (for a server that appears after the service).
    pub fn start_on(port: u16, extra: &[&str]) -> Result<Self> {
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir()?,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts redis-server with extra arguments (e.g. `["--rename-command", "CONFIG", ""]`).
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut server = RedisServer {
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().is_ok() {
                return Ok(server);
            }
        }
        bail!("could not start redis-server: {}", server.log())
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server (is it installed? apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("redis-server exited with {status}");
            }
            if let Ok(mut con) = self.client().get_connection() {
                match redis::cmd("PING").query::<String>(&mut con) {
                    Ok(_) => return Ok(()),
                    // Up, but wants a password (--requirepass): that is up.
                    Err(e) if e.code() == Some("NOAUTH") => return Ok(()),
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not answer PING", self.port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("valid url")
    }

    /// `redis://127.0.0.1:PORT/0?key=KEY`
    pub fn uri(&self, key: &str) -> String {
        format!("redis://127.0.0.1:{}/0?key={key}", self.port)
    }

    /// Runs one command on a fresh connection.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> Result<T> {
        let mut con = self.client().get_connection()?;
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        Ok(c.query(&mut con)?)
    }

    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        let mut con = self.client().get_connection()?;
        Ok(redis::cmd("SET").arg(key).arg(value).query(&mut con)?)
    }

    /// Kills the server with SIGKILL (no chance to say goodbye to clients).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        let deadline = Instant::now() + WAIT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The workspace root (the service's crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where cargo puts the service binary of a build `profile` (`debug`, `release`),
/// whether or not it is there.
pub fn target_binary(profile: &str) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
        .join(profile)
        .join("flagd-redis-sync")
}

/// The service binary, built once per test process if needed.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("FLAGD_REDIS_SYNC_BIN") {
            return PathBuf::from(p);
        }
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            // --workspace: the feature set of the test build, so after `cargo nextest
            // run` this is a no-op rather than a rebuild of the binary.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building flagd-redis-sync failed");
        target_binary("debug")
    })
    .clone()
}

/// How [`Service`] runs the binary. [`Launch::of`] gives what the tests want.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    /// `RUST_LOG` for the child; `None` leaves it unset, so the service logs at its own
    /// default level (the benchmark: debug logging would be measured too).
    pub rust_log: Option<String>,
    /// Extra environment variables (e.g. `OTEL_*`).
    pub envs: Vec<(String, String)>,
    /// How often the start-up waits poll (the benchmark times start-up to 1 ms).
    pub poll: Duration,
}

impl Launch {
    /// `binary` with debug logs (the tests read them), no extra environment, 10 ms polls.
    pub fn of(binary: PathBuf) -> Self {
        Launch {
            binary,
            rust_log: Some("info,flagd_redis_sync=debug".into()),
            envs: Vec::new(),
            poll: Duration::from_millis(10),
        }
    }
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`) in KiB; `None` when the process
/// or the line is not there.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A running `flagd-redis-sync` process, killed on drop.
pub struct Service {
    pub grpc_port: u16,
    pub mgmt_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    spawned: Instant,
    poll: Duration,
}

impl Service {
    /// Starts the binary for `redis_uri` with extra arguments and waits until its gRPC
    /// port accepts connections.
    pub async fn start(redis_uri: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(redis_uri, extra, &[]).await
    }

    /// [`Service::start`] with extra environment variables (e.g. `OTEL_*`).
    pub async fn start_with_env(
        redis_uri: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let launch = Launch {
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Launch::of(binary())
        };
        Self::launch(&launch, redis_uri, extra).await
    }

    /// [`Service::start`] as `launch` says (another binary, its own log level).
    pub async fn launch(launch: &Launch, redis_uri: &str, extra: &[&str]) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let ports = (free_port(), free_port());
            match Self::try_start_on(launch, redis_uri, extra, ports).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    /// Starts the binary on given ports (e.g. a restart where the previous one listened),
    /// retrying a few times while a port is still held by the process that had it.
    pub async fn start_on_ports(
        redis_uri: &str,
        grpc_port: u16,
        mgmt_port: u16,
        extra: &[&str],
    ) -> Result<Self> {
        let launch = Launch::of(binary());
        let mut last = None;
        for _ in 0..5 {
            match Self::try_start_on(&launch, redis_uri, extra, (grpc_port, mgmt_port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.expect("tried"))
    }

    async fn try_start_on(
        launch: &Launch,
        redis_uri: &str,
        extra: &[&str],
        (grpc_port, mgmt_port): (u16, u16),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("service.log"))?;
        let mut command = Command::new(&launch.binary);
        command
            .args(["--redis-uri", redis_uri])
            .args(["--redis-sync-host", "127.0.0.1"])
            .args(["--redis-sync-port", &grpc_port.to_string()])
            .args(["--management-port", &mgmt_port.to_string()])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("REDIS_URI")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(level) = &launch.rust_log {
            command.env("RUST_LOG", level);
        }
        // After RUST_LOG, so that a test's own RUST_LOG wins.
        command.envs(launch.envs.iter().map(|(k, v)| (k, v)));
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", launch.binary.display()))?;
        let mut svc = Service {
            grpc_port,
            mgmt_port,
            child: Some(child),
            dir,
            spawned,
            poll: launch.poll,
        };
        let deadline = Instant::now() + WAIT;
        let up = loop {
            if svc.exited() {
                break false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
                .await
                .is_ok()
            {
                break true;
            }
            if Instant::now() > deadline {
                bail!(
                    "the gRPC port did not accept connections within {WAIT:?}:\n{}",
                    svc.logs()
                );
            }
            tokio::time::sleep(svc.poll).await;
        };
        if !up {
            bail!("flagd-redis-sync exited at start-up:\n{}", svc.logs());
        }
        Ok(svc)
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.pid(), libc::SIGTERM);
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("flagd-redis-sync did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> Result<FlagSyncServiceClient<Channel>> {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", self.grpc_port))?
            .connect_timeout(WAIT)
            .connect()
            .await?;
        Ok(FlagSyncServiceClient::new(ch))
    }

    /// Opens a SyncFlags stream with `selector` (body) on its own connection.
    pub async fn stream(&self, selector: &str) -> Result<SyncStream> {
        let mut c = self.client().await?;
        let s = tokio::time::timeout(
            WAIT,
            c.sync_flags(SyncFlagsRequest {
                provider_id: "it".into(),
                selector: selector.into(),
            }),
        )
        .await
        .context("SyncFlags call timed out")??;
        Ok(SyncStream(s.into_inner()))
    }

    /// GETs a management path; returns (status code, body).
    pub async fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.mgmt_port, path).await
    }

    /// The value of an unlabelled metric on /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await.expect("/metrics");
        metric_value(&body, name).unwrap_or(0.0)
    }

    /// Waits until a metric reaches at least `at_least`.
    pub async fn metric_reaches(&self, name: &str, at_least: f64) {
        eventually(WAIT, name, || async {
            (self.metric(name).await >= at_least).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; logs:\n{}", self.logs()));
    }

    /// The parsed /readyz body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.http_get("/readyz").await.expect("/readyz");
        (code, serde_json::from_str(&body).expect("/readyz is JSON"))
    }

    /// Waits until the /readyz body matches `pred`.
    pub async fn readyz_until(&self, what: &str, pred: impl Fn(u16, &serde_json::Value) -> bool) {
        let pred = &pred;
        let result = eventually(WAIT, what, || async move {
            let (code, v) = self.readyz().await;
            pred(code, &v).then_some(())
        })
        .await;
        if let Err(e) = result {
            let last = self.readyz().await;
            panic!("{e}; last /readyz {last:?}; logs:\n{}", self.logs());
        }
    }

    /// Waits until `/readyz` answers 200, up to `within`, polling as often as the
    /// [`Launch`] says; returns the time from the spawn to that answer (the start-up time
    /// the benchmark reports).
    pub async fn ready_after_spawn(&mut self, within: Duration) -> Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, _)) = http_get(self.mgmt_port, "/readyz").await {
                return Ok(self.spawned.elapsed());
            }
            if self.exited() {
                bail!("flagd-redis-sync exited:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                bail!(
                    "/readyz did not answer 200 within {within:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> Result<()> {
        let port = self.mgmt_port;
        eventually(WAIT, "/readyz to answer 200", || async move {
            matches!(http_get(port, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- flagd-redis-sync log ---\n{}", self.logs());
        }
    }
}

/// Sends a signal to a process (std has no safe way; the service crate forbids unsafe).
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A minimal HTTP/1.1 GET on 127.0.0.1 (no extra client crate needed).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code: u16 = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .context("bad HTTP status line")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .context("HTTP request timed out")?
}

/// A SyncFlags stream whose every read is under a timeout.
pub struct SyncStream(pub tonic::Streaming<SyncFlagsResponse>);

impl SyncStream {
    /// The next message, failing if none comes within `WAIT`.
    pub async fn next(&mut self) -> Result<SyncFlagsResponse> {
        match tokio::time::timeout(WAIT, self.0.message()).await {
            Err(_) => bail!("no message within {WAIT:?}"),
            Ok(Err(status)) => bail!("stream ended with {status:?}"),
            Ok(Ok(None)) => bail!("stream ended with status OK"),
            Ok(Ok(Some(m))) => Ok(m),
        }
    }

    /// The next document's JSON.
    pub async fn next_json(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &self.next().await?.flag_configuration,
        )?)
    }

    /// Asserts that nothing arrives within `quiet`. Only used to show that something
    /// did NOT happen, after an event that would have caused it was awaited.
    pub async fn expect_silence(&mut self, quiet: Duration) -> Result<()> {
        match tokio::time::timeout(quiet, self.0.message()).await {
            Err(_) => Ok(()),
            Ok(m) => bail!("expected no message, got {m:?}"),
        }
    }

    /// The status the stream ends with (error if it ends OK or stays open).
    pub async fn end_status(&mut self) -> Result<tonic::Status> {
        loop {
            match tokio::time::timeout(WAIT, self.0.message()).await {
                Err(_) => bail!("stream still open after {WAIT:?}"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => bail!("stream ended with status OK"),
                Ok(Err(status)) => return Ok(status),
            }
        }
    }
}

/// The value of the default variant of `flag` in a document.
pub fn default_value(doc: &serde_json::Value, flag: &str) -> Option<String> {
    let f = doc.get("flags")?.get(flag)?;
    let dv = f.get("defaultVariant")?.as_str()?;
    f.get("variants")?.get(dv)?.as_str().map(str::to_string)
}

/// The documents of `integration/validation/<which>/` (`accepted` or `refused`): written
/// for this project to pin what strict validation refuses and accepts.
pub fn validation_corpus(which: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("validation")
        .join(which);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: too few documents", dir.display());
    files
}

/// Whether a whole document is valid against the flagd schemas vendored in
/// `src/flags/schemas` (flags.json, or flagd.json for the array form), checked here
/// independently of the service's per-part checks.
pub fn schema_valid(doc: &serde_json::Value) -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/flags/schemas");
    let load = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join(name)).expect("vendored schema");
        serde_json::from_str(&text).expect("schema JSON")
    };
    let registry = jsonschema::Registry::new()
        .add(
            "https://flagd.dev/schema/v0/targeting.json",
            load("targeting.json"),
        )
        .and_then(|r| r.add("https://flagd.dev/schema/v0/flags.json", load("flags.json")))
        .and_then(|r| r.add("https://flagd.dev/schema/v0/flagd.json", load("flagd.json")))
        .and_then(|r| r.prepare())
        .expect("registry");
    let root = if doc["flags"].is_array() {
        "https://flagd.dev/schema/v0/flagd.json"
    } else {
        "https://flagd.dev/schema/v0/flags.json"
    };
    jsonschema::options()
        .offline()
        .with_registry(&registry)
        .build(&serde_json::json!({ "$ref": root }))
        .expect("schema compiles")
        .is_valid(doc)
}

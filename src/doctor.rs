//! `flagd-redis-sync doctor`: is the Redis behind the service fit for production?
//!
//! One [`Finding`] per check, each with a stable id (`check`), a [`Level`], the reason and,
//! when something should change, the exact setting to change (`fix`). The same checks run
//! inside the service after every (re)connect, on the session's own connection
//! ([`spawn_session_checks`]): findings are logged once, listed in `/readyz` and exported as
//! `flagd_redis_sync_doctor_findings{check,level}`. docs/doctor.md describes every check.
//!
//! Levels:
//! - `fail`: the service cannot serve these flags as configured (no connection, no key,
//!   wrong type, refused document, no right to GET or SUBSCRIBE, a replica cut off from
//!   its master…).
//! - `warn`: it works, but a risk the production guides warn about is present (evictable
//!   key, no persistence, TTL on the key, notifications off, no password…).
//! - `skipped`: **could not check**: the command was refused or is not available (managed
//!   Redis restricts CONFIG, INFO, ACL…), or the check does not apply (no key to look at).
//!   The message says what could not be checked and why. Skipped findings do not change
//!   the exit code: a managed Redis that hides its configuration is not an error of the
//!   operator's, and a CI gate that can never pass would be switched off.
//! - `ok`.
//!
//! Exit code of the subcommand: 2 if any check fails, else 1 if any warns, else 0.
//!
//! No check writes anything: rights are probed with `ACL DRYRUN` where available, and the
//! subcommand's SUBSCRIBE probe is on its own connection.

use crate::config::{RedisAddr, RedisTarget, RedisTls, Storage};
use crate::flags;
use crate::source::notify_merged;
use crate::status::Status;
use crate::telemetry::Metrics;
use opentelemetry::KeyValue;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, ServerErrorKind, Value};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, info, warn, Instrument};

/// gRPC clients (flagd, Go, Java, Python, Node) refuse messages above this by default.
pub const CLIENT_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// A replica that has not heard from its master for longer than this is lagging.
pub const REPLICA_LAG_WARN_SECONDS: i64 = 10;
/// Memory or client use above this fraction of the limit is a warning.
const NEAR_LIMIT: f64 = 0.9;
/// A document above this fraction of the payload limit is a warning.
const SIZE_WARN: f64 = 0.75;

/// `flagd-redis-sync doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The Redis to check, as for the service: redis://[user:password@]host[:port][/db]?key=NAME,
    /// rediss:// for TLS, or unix:///path/to/redis.sock?db=N&key=NAME.
    #[arg(long, env = "REDIS_URI", hide_env_values = true)]
    pub redis_uri: String,
    /// Report format: one line per check, or one JSON object.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// The service's payload limit, against which the key's size is judged.
    #[arg(long, env = "REDIS_SYNC_MAX_PAYLOAD_BYTES", default_value_t = flags::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
    /// Validate the document as stored, without rewriting it into the map form.
    #[arg(long, env = "REDIS_SYNC_NO_NORMALIZE")]
    pub no_normalize: bool,
    /// How strictly documents are judged: strict (flagd's JSON schema, operators, $refs,
    /// variant names in rules) or basic (shape only; strict findings logged as warnings).
    #[arg(long, env = "REDIS_SYNC_VALIDATION", value_enum, default_value_t = crate::flags::Validation::Strict)]
    pub validation: crate::flags::Validation,
    /// Seconds allowed to connect and for each reply.
    #[arg(long, env = "REDIS_TIMEOUT", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub redis_timeout: u64,
    /// File holding the Redis password, as for the service (REDIS_PASSWORD does the same).
    #[arg(long, env = "REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub redis_password_file: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) of the Redis server (rediss:// only), as for the service.
    #[arg(long, env = "REDIS_CA_PATH", value_name = "FILE")]
    pub redis_ca_path: Option<std::path::PathBuf>,
    /// PEM client certificate for Redis (rediss:// only), as for the service.
    #[arg(
        long,
        env = "REDIS_CERT_PATH",
        value_name = "FILE",
        requires = "redis_key_path"
    )]
    pub redis_cert_path: Option<std::path::PathBuf>,
    /// PEM private key for --redis-cert-path.
    #[arg(
        long,
        env = "REDIS_KEY_PATH",
        value_name = "FILE",
        requires = "redis_cert_path"
    )]
    pub redis_key_path: Option<std::path::PathBuf>,
    /// Accept any Redis server certificate, as the service's development-only option
    /// (reported as a warning).
    #[arg(long, env = "REDIS_TLS_INSECURE")]
    pub redis_tls_insecure: bool,
}

impl DoctorArgs {
    /// The target as the service would build it from the same options: the password from
    /// --redis-password-file or REDIS_PASSWORD, the TLS files. Errors are usage errors.
    pub fn target(&self, env: impl Fn(&str) -> Option<String>) -> Result<RedisTarget, String> {
        let mut target = RedisTarget::parse(&self.redis_uri).map_err(|e| e.to_string())?;
        match (&self.redis_password_file, env("REDIS_PASSWORD")) {
            (Some(_), Some(_)) => {
                return Err(
                    "REDIS_PASSWORD and --redis-password-file are both set: give only one".into(),
                )
            }
            (Some(path), None) => {
                let text = crate::files::read_secret_string(path).map_err(|e| {
                    format!("--redis-password-file: cannot read {}: {e}", path.display())
                })?;
                let pw = text.trim_end_matches(['\n', '\r']);
                if pw.is_empty() {
                    return Err(format!("--redis-password-file {} is empty", path.display()));
                }
                target.password = Some(pw.to_string());
            }
            (None, Some(pw)) if !pw.is_empty() => target.password = Some(pw),
            _ => {}
        }
        let tls = RedisTls {
            ca: self.redis_ca_path.clone(),
            client: self
                .redis_cert_path
                .clone()
                .zip(self.redis_key_path.clone()),
            insecure: self.redis_tls_insecure,
        };
        if tls != RedisTls::default() && !matches!(target.addr, RedisAddr::Tcp { tls: true, .. }) {
            return Err(
                "--redis-ca-path, --redis-cert-path, --redis-key-path and --redis-tls-insecure \
                 need a rediss:// URI (TLS)"
                    .into(),
            );
        }
        target.tls = tls;
        Ok(target)
    }
}

/// Output of `doctor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// How bad a finding is. Ordered: `Ok < Skipped < Warn < Fail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// Could not check (refused, unavailable or not applicable); see the message.
    Skipped,
    Warn,
    Fail,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Ok, Level::Skipped, Level::Warn, Level::Fail];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Skipped => "skipped",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id: `eviction`, `persistence`, `ttl`… (docs/doctor.md lists them).
    pub check: &'static str,
    pub level: Level,
    /// What was found, and why it matters.
    pub message: String,
    /// The setting or command to change, when something should change.
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: &'static str, level: Level, message: impl Into<String>) -> Self {
        Finding {
            check,
            level,
            message: message.into(),
            fix: None,
        }
    }

    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self::new(check, Level::Ok, message)
    }

    fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Level::Warn, message).with_fix(fix)
    }

    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Level::Fail, message).with_fix(fix)
    }

    /// "could not check: REASON".
    fn skipped(check: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::new(check, Level::Skipped, format!("could not check: {reason}"))
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Every finding, in a fixed order.
pub type Report = Vec<Finding>;

/// The worst level in a report (`Ok` for an empty one).
pub fn worst(report: &[Finding]) -> Level {
    report.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
}

/// 2 if anything fails, 1 if anything warns, else 0. Skipped counts as OK.
pub fn exit_code(report: &[Finding]) -> u8 {
    match worst(report) {
        Level::Fail => 2,
        Level::Warn => 1,
        Level::Ok | Level::Skipped => 0,
    }
}

/// Whether the checks run for the subcommand (own connection; validates the document)
/// or inside the service (the session's connection, already subscribed; the watcher
/// reports the document itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Cli,
    Service,
}

/// Connects as the service does and runs every check. Never fails: a connection that
/// cannot be made is the `connection` finding.
pub async fn check(target: &RedisTarget, documents: &flags::Options) -> Report {
    check_with_timeout(target, documents, Duration::from_secs(5)).await
}

/// [`check`] with a limit for connecting and for each reply.
pub async fn check_with_timeout(
    target: &RedisTarget,
    documents: &flags::Options,
    timeout: Duration,
) -> Report {
    let started = Instant::now();
    let (push_tx, _pushes) = tokio::sync::mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(push_tx);
    let connected = async {
        crate::source::topology::resolve(target, &target.key, timeout)
            .await?
            .node
            .client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    };
    let mut con = match tokio::time::timeout(timeout, connected).await {
        Ok(Ok(con)) => con,
        Ok(Err(e)) => {
            let error = format!("{e}{}", target.connect_hint(&e, timeout));
            return vec![connection_failed(target, &error)];
        }
        Err(_) => {
            return vec![connection_failed(
                target,
                &format!("no answer within {timeout:?}"),
            )]
        }
    };
    let mut report = vec![Finding::ok(
        "connection",
        format!(
            "connected to {target} in {} ms",
            started.elapsed().as_millis()
        ),
    )];
    // This connection is the doctor's own: probe for real what the service will do on
    // its connection, SUBSCRIBE to the key's channel and CLIENT TRACKING, and undo both.
    let channel = target.keyspace_channel();
    let subscribe = match con.subscribe(&channel).await {
        Ok(()) => {
            let _ = con.unsubscribe(&channel).await;
            None
        }
        Err(e) => Some(e),
    };
    let tracking = match query(
        &mut con,
        &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", &target.key],
    )
    .await
    {
        Ok(_) => {
            let _ = query(&mut con, &["CLIENT", "TRACKING", "OFF"]).await;
            Can::Yes
        }
        Err(e) if matches!(e.kind(), ErrorKind::Server(_)) || e.code().is_some() => {
            Can::No(reason(&e))
        }
        Err(e) => Can::Unknown(format!("CLIENT TRACKING: {}", reason(&e))),
    };
    let probes = Probes {
        mode: Mode::Cli,
        subscribe,
        tracking: Some(tracking),
    };
    report.extend(run_checks(&mut con, target, documents, probes).await);
    report
}

/// What the caller already knows about the connection.
struct Probes {
    mode: Mode,
    /// The SUBSCRIBE to the key's channel failed with this (None: it worked).
    subscribe: Option<RedisError>,
    /// CLIENT TRACKING tried for real (None: ask ACL DRYRUN; the service's connection
    /// may be tracking, and is not to be touched).
    tracking: Option<Can>,
}

/// Whether the connected user may run a command.
#[derive(Clone, Debug)]
enum Can {
    Yes,
    /// Refused, or the command does not exist (renamed away): why.
    No(String),
    /// Could not tell: why.
    Unknown(String),
}

fn connection_failed(target: &RedisTarget, error: &str) -> Finding {
    let lower = error.to_lowercase();
    let fix = if lower.contains("hello") || lower.contains("resp3") {
        "the service needs Redis 6.0+ (RESP3): upgrade Redis".to_string()
    } else if lower.contains("wrongpass")
        || lower.contains("auth")
        || lower.contains("password")
        || lower.contains("noperm")
    {
        "check the user name and password in --redis-uri (redis://USER:PASSWORD@host:port/db?key=NAME)"
            .to_string()
    } else {
        "check host, port and scheme in --redis-uri (rediss:// when Redis expects TLS), and that this host may reach Redis"
            .to_string()
    };
    Finding::fail(
        "connection",
        format!("cannot connect to {target}: {error}"),
        fix,
    )
}

/// Runs the checks in the background on the session's connection (it is multiplexed:
/// the watcher's reads go on meanwhile). Findings go to the status (`/readyz`), the
/// `flagd_redis_sync.doctor.findings` gauge, and the log: each distinct warning or
/// failure once per process. The task ends with the returned handle (the session).
pub fn spawn_session_checks(
    con: &MultiplexedConnection,
    target: &RedisTarget,
    documents: flags::Options,
    status: &Arc<Status>,
    metrics: &Metrics,
) -> AbortOnDropHandle<()> {
    let mut con = con.clone();
    let target = target.clone();
    let status = status.clone();
    let metrics = metrics.clone();
    let task = async move {
        let probes = Probes {
            mode: Mode::Service,
            subscribe: None,
            tracking: None,
        };
        let report = run_checks(&mut con, &target, &documents, probes).await;
        log_once(&report);
        record(&metrics, &report);
        status.update(|s| s.findings = report);
    };
    AbortOnDropHandle::new(tokio::spawn(task.in_current_span()))
}

/// (check, level) pairs already logged by this process.
static LOGGED: Mutex<BTreeSet<(&'static str, Level)>> = Mutex::new(BTreeSet::new());

fn log_once(report: &[Finding]) {
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    for f in report {
        if f.level == Level::Ok || !logged.insert((f.check, f.level)) {
            debug!(check = f.check, level = f.level.as_str(), message = %f.message, "doctor");
            continue;
        }
        let fix = f.fix.as_deref().unwrap_or("");
        match f.level {
            Level::Fail => {
                error!(check = f.check, fix, "redis doctor: {}", f.message)
            }
            Level::Warn => warn!(check = f.check, fix, "redis doctor: {}", f.message),
            Level::Skipped => info!(check = f.check, "redis doctor: {}", f.message),
            Level::Ok => {}
        }
    }
}

/// One gauge series per check and level: 1 for the level found, 0 for the others, so
/// `flagd_redis_sync_doctor_findings{level="warn"} == 1` is an alert and clears itself.
fn record(metrics: &Metrics, report: &[Finding]) {
    for f in report {
        for level in Level::ALL {
            metrics.doctor_findings.record(
                i64::from(f.level == level),
                &[
                    KeyValue::new("check", f.check),
                    KeyValue::new("level", level.as_str()),
                ],
            );
        }
    }
}

/// The `doctor` subcommand: prints the report, returns the exit code (64 for a bad URI).
pub fn run_cli(args: &DoctorArgs) -> u8 {
    let target = match args.target(|k| std::env::var(k).ok()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("flagd-redis-sync doctor: {e}");
            return 64;
        }
    };
    let documents = flags::Options {
        max_bytes: args.max_payload_bytes,
        normalize: !args.no_normalize,
        validation: args.validation,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flagd-redis-sync doctor: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let report = runtime.block_on(check_with_timeout(
        &target,
        &documents,
        Duration::from_secs(args.redis_timeout),
    ));
    match args.format {
        ReportFormat::Text => print!("{}", render_text(&target, &report)),
        ReportFormat::Json => println!("{}", render_json(&target, &report)),
    }
    exit_code(&report)
}

/// One line per finding, then a summary line.
pub fn render_text(target: &RedisTarget, report: &[Finding]) -> String {
    let mut out = format!("flagd-redis-sync doctor: {target}\n");
    for f in report {
        let level = f.level.as_str().to_uppercase();
        out.push_str(&format!("{level:<8}{:<19}{}", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!(" | fix: {fix}"));
        }
        out.push('\n');
    }
    let count = |l: Level| report.iter().filter(|f| f.level == l).count();
    out.push_str(&format!(
        "{} ok, {} warn, {} fail, {} not checked: exit {}\n",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail),
        count(Level::Skipped),
        exit_code(report)
    ));
    out
}

/// One JSON object: target (no password), overall level, exit code, findings.
pub fn render_json(target: &RedisTarget, report: &[Finding]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        target: String,
        key: &'a str,
        level: Level,
        exit_code: u8,
        findings: &'a [Finding],
    }
    serde_json::to_string_pretty(&Out {
        target: target.to_string(),
        key: &target.key,
        level: worst(report),
        exit_code: exit_code(report),
        findings: report,
    })
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The checks.

/// What the server says about itself, gathered once: `INFO` (every default section), or
/// where INFO is refused, the little `HELLO` tells (version, mode, role).
struct ServerInfo {
    fields: HashMap<String, String>,
    /// Why INFO could not be read (None: it could).
    info_error: Option<String>,
}

impl ServerInfo {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// "could not check: INFO refused (…)".
    fn missing(&self, what: &str) -> String {
        match &self.info_error {
            Some(e) => format!("{what}: INFO refused ({e})"),
            None => format!("{what}: not in the INFO reply"),
        }
    }
}

async fn server_info(con: &mut MultiplexedConnection) -> ServerInfo {
    match query(con, &["INFO"]).await {
        Ok(v) => ServerInfo {
            fields: text(&v).map(|t| parse_info(&t)).unwrap_or_default(),
            info_error: None,
        },
        Err(e) => {
            let mut fields = HashMap::new();
            if let Ok(Value::Map(pairs)) = query(con, &["HELLO", "3"]).await {
                for (k, v) in pairs {
                    if let (Some(k), Some(v)) = (text(&k), text(&v)) {
                        let k = match k.as_str() {
                            "version" => "redis_version".to_string(),
                            "mode" => "redis_mode".to_string(),
                            _ => k,
                        };
                        fields.insert(k, v);
                    }
                }
            }
            ServerInfo {
                fields,
                info_error: Some(reason(&e)),
            }
        }
    }
}

/// `field:value` lines of an INFO reply.
fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Everything the key checks need, read once.
struct KeyFacts {
    /// GET: the value (None: no key) or the error.
    value: Result<Option<Vec<u8>>, RedisError>,
    /// TYPE.
    kind: Result<String, RedisError>,
    /// PTTL in milliseconds: -2 no key, -1 no TTL.
    pttl: Result<i64, RedisError>,
}

/// How the first source is stored.
fn storage(target: &RedisTarget) -> Storage {
    target
        .sources
        .first()
        .map_or(Storage::String, |s| s.storage)
}

async fn run_checks(
    con: &mut MultiplexedConnection,
    target: &RedisTarget,
    documents: &flags::Options,
    probes: Probes,
) -> Report {
    let mode = probes.mode;
    let info = server_info(con).await;
    let key = KeyFacts {
        value: crate::source::read_plain(con, &target.key, storage(target)).await,
        kind: redis::cmd("TYPE").arg(&target.key).query_async(con).await,
        pttl: redis::cmd("PTTL").arg(&target.key).query_async(con).await,
    };
    let notify = config_get(con, "notify-keyspace-events").await;
    // The user the connection is authenticated as (redis-rs sends AUTH only with a password).
    let user = match (&target.username, &target.password) {
        (Some(u), Some(_)) => u.clone(),
        _ => "default".to_string(),
    };
    let config_set = match dryrun(
        con,
        &user,
        &["CONFIG", "SET", "notify-keyspace-events", "Kg$xe"],
    )
    .await
    {
        // Without DRYRUN: a refused CONFIG GET means CONFIG SET is refused too.
        Can::Unknown(why) => match &notify {
            Err(e) => Can::No(format!("CONFIG GET is refused too: {e}")),
            Ok(_) => Can::Unknown(why),
        },
        can => can,
    };
    let tracking = match probes.tracking {
        Some(t) => t,
        None => {
            let prefix = ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", &target.key];
            dryrun(con, &user, &prefix).await
        }
    };
    let triggers = Triggers {
        notify: &notify,
        config_set: &config_set,
        tracking: &tracking,
    };

    let mut report = vec![
        version(&info),
        topology(&info, target),
        replication(&info),
        auth(target),
        tls(target),
        persistence(con, &info).await,
        maxmemory(con, &info).await,
        eviction(con, &info, &key).await,
        notifications(&triggers),
        clients(&info),
        key_exists(target, &key),
        ttl(target, &key),
        size(&key, documents),
    ];
    if mode == Mode::Cli {
        report.push(document(&key, documents, storage(target)));
    }
    report.push(rights_get(target, &user, &key));
    report.push(rights_subscribe(target, &user, mode, probes.subscribe));
    report.push(rights_config_set(&user, &triggers));
    report.push(rights_tracking(&user, &triggers));
    report
}

fn version(info: &ServerInfo) -> Finding {
    const C: &str = "version";
    let Some(v) = info.get("redis_version") else {
        return Finding::skipped(C, info.missing("server version"));
    };
    let major: Option<u32> = v.split('.').next().and_then(|m| m.parse().ok());
    match major {
        Some(m) if m >= 7 => Finding::ok(C, format!("Redis {v}")),
        Some(6) => Finding::warn(
            C,
            format!(
                "Redis {v}: works (RESP3, keyspace notifications, CLIENT TRACKING need 6+), but 7.0+ is \
                 recommended: cheap read-only polls (EVALSHA_RO) and ACL DRYRUN need it"
            ),
            "upgrade to Redis 7.0 or later",
        ),
        _ => Finding::fail(
            C,
            format!("Redis {v}: the service needs 6.0+ (RESP3); 7.0+ is recommended"),
            "upgrade to Redis 7.0 or later",
        ),
    }
}

fn topology(info: &ServerInfo, target: &RedisTarget) -> Finding {
    const C: &str = "topology";
    let (sentinel_uri, cluster_uri) = (
        matches!(target.addr, RedisAddr::Sentinel { .. }),
        matches!(target.addr, RedisAddr::Cluster { .. }),
    );
    match info.get("redis_mode") {
        None => Finding::skipped(C, info.missing("server mode")),
        Some("standalone") if sentinel_uri => Finding::ok(
            C,
            "the master the sentinels name (the service asks them again at every reconnect and follows failovers)",
        ),
        Some("standalone") if cluster_uri => Finding::fail(
            C,
            "redis+cluster:// names a server that is not in cluster mode",
            "use redis:// (or redis+sentinel://) for this server",
        ),
        Some("standalone") => Finding::ok(C, "standalone server"),
        Some("cluster") if cluster_uri => Finding::ok(
            C,
            "cluster mode: connected to the master that owns the key's slot (followed through failovers and resharding)",
        ),
        Some("cluster") => Finding::warn(
            C,
            "cluster mode, but the URI is redis://: the service talks to this node only, so slot moves and \
             failovers are not followed",
            "use redis+cluster://node1:port,node2:port/?key=NAME (see docs/topologies.md)",
        ),
        Some("sentinel") => Finding::fail(
            C,
            "this is a Sentinel, not a Redis holding data",
            "use redis+sentinel://sentinel1:26379,sentinel2:26379/MASTER_NAME/DB?key=NAME (see docs/topologies.md)",
        ),
        Some(other) => Finding::ok(C, format!("server mode {other}")),
    }
}

fn replication(info: &ServerInfo) -> Finding {
    const C: &str = "replication";
    match info.get("role") {
        None => Finding::skipped(C, info.missing("role")),
        Some("master") => {
            let replicas = info.int("connected_slaves");
            match replicas {
                Some(n) => Finding::ok(C, format!("master with {n} connected replica(s)")),
                None => Finding::ok(C, "master"),
            }
        }
        Some("slave" | "replica") => {
            let master = match (info.get("master_host"), info.get("master_port")) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                _ => "its master".to_string(),
            };
            let Some(link) = info.get("master_link_status") else {
                return Finding::skipped(
                    C,
                    format!(
                        "connected to a replica; {}",
                        info.missing("link state and lag")
                    ),
                );
            };
            let fix =
                "point --redis-uri at the master, or repair replication (see the replica's log)";
            if link != "up" {
                let since = info
                    .int("master_link_down_since_seconds")
                    .map(|s| format!(" for {s} s"))
                    .unwrap_or_default();
                return Finding::fail(
                    C,
                    format!(
                        "connected to a replica whose link to {master} is {link}{since}: flag changes made on the master do not arrive"
                    ),
                    fix,
                );
            }
            if info.get("master_sync_in_progress") == Some("1") {
                return Finding::warn(
                    C,
                    format!("connected to a replica of {master} that is resynchronising"),
                    fix,
                );
            }
            match info.int("master_last_io_seconds_ago") {
                Some(lag) if lag > REPLICA_LAG_WARN_SECONDS => Finding::warn(
                    C,
                    format!(
                        "connected to a replica of {master}, last heard from it {lag} s ago: changes arrive late"
                    ),
                    fix,
                ),
                Some(lag) => Finding::ok(
                    C,
                    format!("replica of {master}, link up, last contact {lag} s ago (changes arrive after replication)"),
                ),
                None => Finding::ok(C, format!("replica of {master}, link up")),
            }
        }
        Some(other) => Finding::ok(C, format!("role {other}")),
    }
}

fn auth(target: &RedisTarget) -> Finding {
    const C: &str = "auth";
    match (&target.username, &target.password) {
        (Some(u), Some(_)) => Finding::ok(C, format!("authenticated as ACL user {u}")),
        (None, Some(_)) => Finding::ok(C, "authenticated with a password (user default)"),
        _ => Finding::warn(
            C,
            "no password: Redis accepted an unauthenticated connection, so anyone who can reach it \
             can change or delete the flags",
            "set requirepass, or better an ACL user for the service (docs/doctor.md), and give the \
             credentials in --redis-uri: redis://USER:PASSWORD@host:port/db?key=NAME",
        ),
    }
}

fn tls(target: &RedisTarget) -> Finding {
    const C: &str = "tls";
    match &target.addr {
        // The same judgement as for the node they lead to.
        RedisAddr::Sentinel { sentinels: n, .. } | RedisAddr::Cluster { seeds: n, .. } => {
            tls(&target.at_node(&n[0].0, n[0].1))
        }
        RedisAddr::Tcp { tls: true, .. } if target.tls.insecure => Finding::warn(
            C,
            "TLS, but the server's certificate is not verified (--redis-tls-insecure): anyone on the \
             network path can pose as Redis",
            "drop --redis-tls-insecure and give the server's CA with --redis-ca-path",
        ),
        RedisAddr::Tcp { tls: true, .. } => Finding::ok(C, "TLS (rediss://), certificate verified"),
        RedisAddr::Unix(_) => Finding::ok(C, "Unix socket: traffic stays on this host"),
        RedisAddr::Tcp { host, .. } if is_loopback(host) => Finding::ok(
            C,
            format!("plaintext, but to {host} (loopback): traffic stays on this host"),
        ),
        RedisAddr::Tcp { host, .. } => Finding::warn(
            C,
            format!("plaintext TCP to {host}: flags and the password cross the network unencrypted"),
            "enable TLS on Redis (tls-port, tls-cert-file, tls-key-file) and use rediss:// in --redis-uri",
        ),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn persistence(con: &mut MultiplexedConnection, info: &ServerInfo) -> Finding {
    const C: &str = "persistence";
    let fix = "appendonly yes and appendfsync everysec in redis.conf (or CONFIG SET appendonly yes; CONFIG REWRITE)";
    let aof = match info.get("aof_enabled") {
        Some(v) => Ok(v == "1"),
        None => config_get(con, "appendonly").await.map(|v| v == "yes"),
    };
    match aof {
        Err(e) => Finding::skipped(C, format!("AOF state: {e}")),
        Ok(true) => match config_get(con, "appendfsync").await {
            Ok(f) if f == "no" => Finding::warn(
                C,
                "AOF on, but appendfsync no: the OS decides when writes reach the disk, and a crash can lose \
                 the last ~30 s of flag changes",
                "appendfsync everysec",
            ),
            Ok(f) => Finding::ok(C, format!("AOF on (appendfsync {f})")),
            Err(e) => Finding::ok(C, format!("AOF on (appendfsync not readable: {e})")),
        },
        Ok(false) => match config_get(con, "save").await {
            Ok(save) if save.trim().is_empty() => Finding::warn(
                C,
                "no persistence (no AOF, no RDB snapshots): a restart of Redis loses the flag key, and the \
                 fleet falls back to code defaults",
                fix,
            ),
            Ok(save) => Finding::warn(
                C,
                format!(
                    "RDB snapshots only (save \"{save}\"): a crash or restart loses flag changes made since the \
                     last snapshot"
                ),
                fix,
            ),
            Err(e) => Finding::warn(
                C,
                format!("AOF off; whether RDB snapshots are taken could not be read ({e})"),
                fix,
            ),
        },
    }
}

async fn maxmemory(con: &mut MultiplexedConnection, info: &ServerInfo) -> Finding {
    const C: &str = "maxmemory";
    let limit = match info.int("maxmemory") {
        Some(m) => Ok(m),
        None => config_get(con, "maxmemory")
            .await
            .and_then(|v| v.parse::<i64>().map_err(|e| e.to_string())),
    };
    match limit {
        Err(e) => Finding::skipped(C, format!("maxmemory: {e}")),
        Ok(0) => Finding::warn(
            C,
            "no memory limit (maxmemory 0): Redis grows until the machine runs out of memory and it is killed",
            "set maxmemory (e.g. 75% of the memory available to Redis) with maxmemory-policy noeviction or volatile-lru",
        ),
        Ok(limit) => match info.int("used_memory") {
            Some(used) if used as f64 > NEAR_LIMIT * limit as f64 => Finding::warn(
                C,
                format!(
                    "{} of maxmemory {} used ({:.0}%): close to the limit",
                    human(used),
                    human(limit),
                    100.0 * used as f64 / limit as f64
                ),
                "raise maxmemory, or free memory",
            ),
            Some(used) => Finding::ok(
                C,
                format!(
                    "{} of maxmemory {} used ({:.0}%)",
                    human(used),
                    human(limit),
                    100.0 * used as f64 / limit as f64
                ),
            ),
            None => Finding::ok(C, format!("maxmemory {}", human(limit))),
        },
    }
}

async fn eviction(con: &mut MultiplexedConnection, info: &ServerInfo, key: &KeyFacts) -> Finding {
    const C: &str = "eviction";
    let policy = match info.get("maxmemory_policy") {
        Some(p) => Ok(p.to_string()),
        None => config_get(con, "maxmemory-policy").await,
    };
    let policy = match policy {
        Ok(p) => p,
        Err(e) => return Finding::skipped(C, format!("maxmemory-policy: {e}")),
    };
    let fix = "maxmemory-policy volatile-lru (or noeviction) in redis.conf or CONFIG SET maxmemory-policy volatile-lru";
    if policy == "noeviction" {
        return Finding::ok(
            C,
            "maxmemory-policy noeviction: no key is ever evicted (writes fail when memory is full)",
        );
    }
    if policy.starts_with("allkeys-") {
        return Finding::warn(
            C,
            format!(
                "maxmemory-policy {policy}: the flag key can be evicted when memory is full, and every client \
                 then falls back to code defaults"
            ),
            fix,
        );
    }
    if policy.starts_with("volatile-") {
        return match &key.pttl {
            Ok(ms) if *ms >= 0 => Finding::warn(
                C,
                format!(
                    "maxmemory-policy {policy} evicts keys with a TTL, and the flag key has one: it can be evicted"
                ),
                "remove the TTL from the flag key (PERSIST KEY); see the ttl check",
            ),
            Ok(_) => Finding::ok(
                C,
                format!("maxmemory-policy {policy}: only keys with a TTL are evicted, and the flag key has none"),
            ),
            Err(e) => Finding::ok(
                C,
                format!(
                    "maxmemory-policy {policy}: only keys with a TTL are evicted (the flag key's TTL could not be \
                     read: {})",
                    reason(e)
                ),
            ),
        };
    }
    Finding::ok(C, format!("maxmemory-policy {policy}"))
}

/// How the service will notice changes: the notification setting, and the rights that
/// decide what it does when the setting is off or unreadable (CONFIG SET to enable it,
/// else CLIENT TRACKING, else the poll alone).
struct Triggers<'a> {
    notify: &'a Result<String, String>,
    config_set: &'a Can,
    tracking: &'a Can,
}

impl Triggers<'_> {
    /// notify-keyspace-events read, and it covers what the service needs.
    fn complete(&self) -> bool {
        matches!(self.notify, Ok(current) if notify_merged(current).is_none())
    }

    /// What the service does about notifications it cannot confirm.
    fn fallback(&self) -> &'static str {
        // The service sets them only after reading them (CONFIG GET), as here.
        if self.notify.is_ok() && matches!(self.config_set, Can::Yes) {
            "the service enables them with CONFIG SET at each connect"
        } else if matches!(self.tracking, Can::Yes) {
            "the service falls back to CLIENT TRACKING invalidations"
        } else {
            "changes are seen only by the poll (--redis-interval)"
        }
    }
}

fn notifications(t: &Triggers) -> Finding {
    const C: &str = "notifications";
    match t.notify {
        Err(e) => Finding::skipped(
            C,
            format!("notify-keyspace-events: {e}; unless they are on, {}", t.fallback()),
        )
        .with_fix("make sure notify-keyspace-events includes Kg$xe (redis.conf or the provider's parameter group)"),
        Ok(current) => match notify_merged(current) {
            None => Finding::ok(C, format!("notify-keyspace-events \"{current}\" covers Kg$xe")),
            Some(wanted) => {
                let missing = wanted.get(current.len()..).unwrap_or_default().to_string();
                Finding::warn(
                    C,
                    format!(
                        "notify-keyspace-events \"{current}\" lacks {missing} (DEL, EXPIRE, string writes, expiry, \
                         eviction are not notified): {}",
                        t.fallback()
                    ),
                    format!("notify-keyspace-events {wanted} in redis.conf or the provider's parameter group"),
                )
            }
        },
    }
}

fn clients(info: &ServerInfo) -> Finding {
    const C: &str = "clients";
    match (info.int("connected_clients"), info.int("maxclients")) {
        (Some(n), Some(max)) if max > 0 && n as f64 > NEAR_LIMIT * max as f64 => Finding::warn(
            C,
            format!("{n} of maxclients {max} connections in use: new connections (a reconnect) may be refused"),
            "raise maxclients, or find the clients that hold connections",
        ),
        (Some(n), Some(max)) => Finding::ok(C, format!("{n} of maxclients {max} connections")),
        _ => Finding::skipped(C, info.missing("client counts")),
    }
}

fn key_exists(target: &RedisTarget, key: &KeyFacts) -> Finding {
    const C: &str = "key";
    let k = &target.key;
    let missing = || {
        Finding::fail(
            C,
            format!(
                "the key {k} does not exist in database {}: there are no flags to serve",
                target.db
            ),
            format!(
                "store the document: redis-cli -n {} -x SET {k} < flags.json",
                target.db
            ),
        )
    };
    let wrong = |t: &str| {
        Finding::fail(
            C,
            format!("the key {k} holds a {t}, not a string"),
            format!("store the flagd JSON document as a string: redis-cli -n {} -x SET {k} < flags.json", target.db),
        )
    };
    if storage(target) == Storage::Hash {
        return match &key.kind {
            Ok(t) if t == "none" => missing(),
            Ok(t) if t == "hash" => Finding::ok(C, format!("{k} exists and holds a hash (type=hash)")),
            Ok(t) => Finding::fail(
                C,
                format!("the key {k} holds a {t}, not a hash (the URI says type=hash)"),
                "store one field per flag (HSET KEY FLAG JSON), or drop type=hash for a JSON string",
            ),
            Err(e) => Finding::skipped(C, format!("TYPE: {}", reason(e))),
        };
    }
    match &key.kind {
        Ok(t) if t == "none" => missing(),
        Ok(t) if t == "string" => Finding::ok(C, format!("{k} exists and holds a string")),
        Ok(t) => wrong(t),
        // TYPE refused: GET tells as much.
        Err(type_error) => match &key.value {
            Ok(Some(_)) => Finding::ok(C, format!("{k} exists and holds a string")),
            Ok(None) => missing(),
            Err(e) if e.to_string().contains("WRONGTYPE") => wrong("value of another type"),
            Err(e) => Finding::skipped(
                C,
                format!("TYPE: {}; GET: {}", reason(type_error), reason(e)),
            ),
        },
    }
}

fn ttl(target: &RedisTarget, key: &KeyFacts) -> Finding {
    const C: &str = "ttl";
    match &key.pttl {
        Err(e) => Finding::skipped(C, format!("PTTL: {}", reason(e))),
        Ok(-2) => Finding::new(C, Level::Skipped, "no key, so no TTL to check"),
        Ok(ms) if *ms < 0 => Finding::ok(C, "no TTL: the key does not expire"),
        Ok(ms) => Finding::warn(
            C,
            format!(
                "the key expires in {} s: a TTL on a flag key is almost always a mistake (when it expires, \
                 the flags are gone)",
                (ms + 999) / 1000
            ),
            format!(
                "PERSIST {}, and stop writing it with EX/PX/EXPIRE",
                target.key
            ),
        ),
    }
}

fn size(key: &KeyFacts, documents: &flags::Options) -> Finding {
    const C: &str = "size";
    let limit = documents.max_bytes.min(CLIENT_LIMIT_BYTES);
    match &key.value {
        Err(e) => Finding::skipped(C, format!("GET: {}", reason(e))),
        Ok(None) => Finding::new(C, Level::Skipped, "no key, so no size to check"),
        Ok(Some(v)) if v.len() > limit => Finding::fail(
            C,
            format!(
                "{} bytes, above the limit of {limit} bytes (--max-payload-bytes, and 4 MiB for gRPC clients): \
                 the service refuses it",
                v.len()
            ),
            "shrink the document (fewer or smaller flags), or raise --max-payload-bytes if every client accepts larger messages",
        ),
        Ok(Some(v)) if v.len() as f64 > SIZE_WARN * limit as f64 => Finding::warn(
            C,
            format!(
                "{} bytes: {:.0}% of the {limit}-byte limit",
                v.len(),
                100.0 * v.len() as f64 / limit as f64
            ),
            "shrink the document before it reaches the limit (it would then be refused)",
        ),
        Ok(Some(v)) => Finding::ok(C, format!("{} bytes (limit {limit})", v.len())),
    }
}

fn document(key: &KeyFacts, documents: &flags::Options, storage: Storage) -> Finding {
    const C: &str = "document";
    match &key.value {
        Err(e) => Finding::skipped(C, format!("GET: {}", reason(e))),
        Ok(None) => Finding::new(C, Level::Skipped, "no key, so no document to validate"),
        Ok(Some(v)) if v.len() > documents.max_bytes.min(CLIENT_LIMIT_BYTES) => Finding::new(
            C,
            Level::Skipped,
            "not validated: larger than the limit (see size)",
        ),
        Ok(Some(v)) => match match storage {
            Storage::String => flags::parse(v, documents),
            Storage::Hash => flags::parse_hash(v, documents),
        } {
            Ok(doc) => Finding::ok(
                C,
                format!(
                    "valid: {} flag(s), digest {}",
                    doc.flag_count,
                    doc.digest.short()
                ),
            ),
            Err(e) => Finding::fail(
                C,
                format!("the service refuses this document: {e}"),
                "fix the document; check a file before storing it with: flagd-redis-sync validate FILE",
            ),
        },
    }
}

fn rights_get(target: &RedisTarget, user: &str, key: &KeyFacts) -> Finding {
    const C: &str = "rights_get";
    match &key.value {
        Ok(_) => Finding::ok(C, format!("user {user} may GET {}", target.key)),
        Err(e) if e.to_string().contains("WRONGTYPE") => Finding::ok(
            C,
            format!(
                "user {user} may GET {} (it is not a string: see key)",
                target.key
            ),
        ),
        Err(e) if is_noperm(e) => Finding::fail(
            C,
            format!("user {user} may not GET {}: {}", target.key, reason(e)),
            format!(
                "ACL SETUSER {user} +get +evalsha_ro +eval_ro +script|load %R~{}",
                target.key
            ),
        ),
        Err(e) => Finding::skipped(C, format!("GET: {}", reason(e))),
    }
}

fn rights_subscribe(
    target: &RedisTarget,
    user: &str,
    mode: Mode,
    error: Option<RedisError>,
) -> Finding {
    const C: &str = "rights_subscribe";
    let channel = target.keyspace_channel();
    match error {
        None if mode == Mode::Service => Finding::ok(C, format!("subscribed to {channel}")),
        None => Finding::ok(C, format!("user {user} may SUBSCRIBE to {channel}")),
        Some(e) if is_noperm(&e) => Finding::fail(
            C,
            format!(
                "user {user} may not SUBSCRIBE to {channel}: {}; the service cannot watch the key",
                reason(&e)
            ),
            format!("ACL SETUSER {user} +subscribe +unsubscribe &{channel}"),
        ),
        Some(e) => Finding::skipped(C, format!("SUBSCRIBE: {}", reason(&e))),
    }
}

/// What `ACL DRYRUN` says about a command for a user: `No` when denied or when the
/// command does not exist (renamed away), `Unknown` when DRYRUN itself is refused or
/// missing (Redis < 7).
async fn dryrun(con: &mut MultiplexedConnection, user: &str, command: &[&str]) -> Can {
    let mut args = vec!["ACL", "DRYRUN", user];
    args.extend_from_slice(command);
    match query(con, &args).await {
        Ok(Value::Okay) => Can::Yes,
        Ok(v) => match text(&v) {
            Some(t) if t == "OK" => Can::Yes,
            Some(t) => Can::No(t),
            None => Can::Unknown(format!("unexpected ACL DRYRUN reply {v:?}")),
        },
        Err(e) if e.to_string().contains("not found") && !e.to_string().contains("User") => {
            Can::No(format!(
                "{} is not available (renamed or disabled)",
                command[0]
            ))
        }
        Err(e) => Can::Unknown(format!("ACL DRYRUN: {}", reason(&e))),
    }
}

fn rights_config_set(user: &str, t: &Triggers) -> Finding {
    const C: &str = "rights_config_set";
    match t.config_set {
        Can::Unknown(why) => Finding::skipped(C, why),
        Can::Yes => Finding::ok(
            C,
            format!("user {user} may CONFIG SET: the service can enable keyspace notifications itself"),
        ),
        Can::No(why) if t.complete() => Finding::ok(
            C,
            format!("user {user} may not CONFIG SET ({why}); not needed: notifications are on"),
        ),
        Can::No(why) if matches!(t.tracking, Can::Yes) => Finding::ok(
            C,
            format!(
                "user {user} may not CONFIG SET ({why}); where notifications cannot be confirmed the service \
                 uses CLIENT TRACKING instead"
            ),
        ),
        Can::No(why) => Finding::warn(
            C,
            format!(
                "user {user} may not CONFIG SET ({why}) nor use CLIENT TRACKING: unless notifications are on, \
                 changes are seen only by the poll (--redis-interval)"
            ),
            format!(
                "set notify-keyspace-events Kg$xe in redis.conf or the provider's parameter group, or ACL SETUSER \
                 {user} +client|tracking"
            ),
        ),
    }
}

/// Informational: whether CLIENT TRACKING is denied only matters when CONFIG SET is too,
/// and `rights_config_set` says so then (one finding for one risk).
fn rights_tracking(user: &str, t: &Triggers) -> Finding {
    const C: &str = "rights_tracking";
    match t.tracking {
        Can::Unknown(why) => Finding::skipped(C, why),
        Can::Yes => Finding::ok(
            C,
            format!("user {user} may use CLIENT TRACKING (the service's trigger when notifications cannot be confirmed)"),
        ),
        Can::No(why) => Finding::ok(
            C,
            format!(
                "user {user} may not use CLIENT TRACKING ({why}); {}",
                if t.complete() || matches!(t.config_set, Can::Yes) {
                    "not needed: notifications are on or can be enabled"
                } else {
                    "see rights_config_set"
                }
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

async fn query(con: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(con).await
}

/// One CONFIG GET value, or why it could not be read.
async fn config_get(con: &mut MultiplexedConnection, name: &str) -> Result<String, String> {
    let v = query(con, &["CONFIG", "GET", name])
        .await
        .map_err(|e| format!("CONFIG GET refused ({})", reason(&e)))?;
    let value = match &v {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        Value::Array(items) if items.len() == 2 => text(&items[1]),
        _ => None,
    };
    value.ok_or_else(|| format!("CONFIG GET {name} returned nothing"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn is_noperm(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || e.to_string().contains("NOPERM")
}

/// The error as one line.
fn reason(e: &RedisError) -> String {
    e.to_string().replace(['\r', '\n'], " ").trim().to_string()
}

fn human(bytes: i64) -> String {
    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * KIB;
    match bytes as f64 {
        b if b >= MIB => format!("{:.1} MiB", b / MIB),
        b if b >= KIB => format!("{:.1} KiB", b / KIB),
        _ => format!("{bytes} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: Level) -> Finding {
        Finding::new("x", level, "m")
    }

    #[test]
    fn exit_codes_follow_the_worst_level_and_skipped_counts_as_ok() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[f(Level::Ok), f(Level::Skipped)]), 0);
        assert_eq!(exit_code(&[f(Level::Ok), f(Level::Warn)]), 1);
        assert_eq!(exit_code(&[f(Level::Fail), f(Level::Warn)]), 2);
    }

    #[test]
    fn info_parsing() {
        let m = parse_info("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Memory\r\nmaxmemory:0\r\n");
        assert_eq!(m["redis_version"], "7.0.15");
        assert_eq!(m["maxmemory"], "0");
        let info = ServerInfo {
            fields: m,
            info_error: None,
        };
        assert_eq!(version(&info).level, Level::Ok);
        let plain = RedisTarget::parse("redis://h/0?key=f").unwrap();
        assert_eq!(topology(&info, &plain).level, Level::Ok);
    }

    #[test]
    fn old_versions() {
        let info = |v: &str| ServerInfo {
            fields: [("redis_version".to_string(), v.to_string())].into(),
            info_error: None,
        };
        assert_eq!(version(&info("6.2.14")).level, Level::Warn);
        assert_eq!(version(&info("5.0.7")).level, Level::Fail);
        assert_eq!(version(&info("7.2.4")).level, Level::Ok);
    }

    #[test]
    fn replica_states() {
        let info = |pairs: &[(&str, &str)]| ServerInfo {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            info_error: None,
        };
        let base = [
            ("role", "slave"),
            ("master_host", "m"),
            ("master_port", "1"),
        ];
        let up = [
            &base[..],
            &[
                ("master_link_status", "up"),
                ("master_last_io_seconds_ago", "1"),
            ],
        ]
        .concat();
        assert_eq!(replication(&info(&up)).level, Level::Ok);
        let lagging = [
            &base[..],
            &[
                ("master_link_status", "up"),
                ("master_last_io_seconds_ago", "60"),
            ],
        ]
        .concat();
        assert_eq!(replication(&info(&lagging)).level, Level::Warn);
        let down = [&base[..], &[("master_link_status", "down")]].concat();
        assert_eq!(replication(&info(&down)).level, Level::Fail);
        assert_eq!(replication(&info(&[("role", "master")])).level, Level::Ok);
        let refused = ServerInfo {
            fields: HashMap::new(),
            info_error: Some("NOPERM".into()),
        };
        let r = replication(&refused);
        assert_eq!(r.level, Level::Skipped);
        assert!(r.message.starts_with("could not check"), "{}", r.message);
    }

    #[test]
    fn tls_and_auth_by_address() {
        let t = |uri: &str| RedisTarget::parse(uri).unwrap();
        assert_eq!(tls(&t("rediss://h/0?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("redis://127.0.0.1/0?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("redis://[::1]/0?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("unix:///s.sock?key=f")).level, Level::Ok);
        assert_eq!(tls(&t("redis://redis.internal/0?key=f")).level, Level::Warn);
        assert_eq!(auth(&t("redis://h/0?key=f")).level, Level::Warn);
        assert_eq!(auth(&t("redis://u@h/0?key=f")).level, Level::Warn);
        assert_eq!(auth(&t("redis://:pw@h/0?key=f")).level, Level::Ok);
        assert_eq!(auth(&t("redis://u:pw@h/0?key=f")).level, Level::Ok);
    }

    fn args(extra: &[&str]) -> DoctorArgs {
        use clap::Parser;
        let argv = ["x", "doctor"].iter().chain(extra).copied();
        match crate::config::Cli::try_parse_from(argv).unwrap().command {
            Some(crate::config::Command::Doctor(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_target_takes_the_services_password_and_tls_options() {
        let no_env = |_: &str| None;
        let t = args(&["--redis-uri", "redis://h/0?key=f"])
            .target(no_env)
            .unwrap();
        assert_eq!(t.password, None);
        let env = |k: &str| (k == "REDIS_PASSWORD").then(|| "from-env".to_string());
        let t = args(&["--redis-uri", "redis://u:uri@h/0?key=f"])
            .target(env)
            .unwrap();
        assert_eq!(t.password.as_deref(), Some("from-env"));

        let dir = std::env::temp_dir().join(format!("doctor-pw-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let file = dir.to_str().unwrap();
        let a = args(&[
            "--redis-uri",
            "redis://h/0?key=f",
            "--redis-password-file",
            file,
        ]);
        assert_eq!(
            a.target(no_env).unwrap().password.as_deref(),
            Some("from-file")
        );
        assert!(a.target(env).unwrap_err().contains("give only one"));
        std::fs::remove_file(&dir).unwrap();

        let e = args(&["--redis-uri", "redis://h/0?key=f", "--redis-tls-insecure"])
            .target(no_env)
            .unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
        let t = args(&["--redis-uri", "rediss://h/0?key=f", "--redis-tls-insecure"])
            .target(no_env)
            .unwrap();
        assert!(t.tls.insecure);
        assert_eq!(tls(&t).level, Level::Warn);
    }

    #[test]
    fn json_report_never_shows_the_password() {
        let t = RedisTarget::parse("redis://u:hunter2@h/0?key=f").unwrap();
        let report = vec![Finding::warn("eviction", "m", "fix")];
        let json = render_json(&t, &report);
        assert!(!json.contains("hunter2"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["findings"][0]["level"], "warn");
        assert!(!render_text(&t, &report).contains("hunter2"));
    }
}

//! Compatibility with the real Node OpenFeature flagd provider (npm
//! `@openfeature/flagd-provider`, in-process resolver, with `@openfeature/server-sdk`),
//! pinned in `integration/compat/node/package.json` and `package-lock.json`.
//!
//! Each test runs `integration/compat/node/provider_check.mjs` from a directory kept under
//! `<target>/compat/node` that holds the pinned `node_modules` (installed with `npm ci` on
//! first use, reinstalled when the lock file or node changes; a lock file keeps two test
//! processes from installing at once). The script speaks the line protocol of the Python
//! test (`READY <json>`, `CHANGED <json>`), plus `STALE <json>` when its stream fails and
//! `RECONNECTED <json>` when it is ready again. The test writes Redis only after the line
//! that proves the provider is where it should be, and reads every line under a timeout.
//! node or npm missing is a failure, not a skip.
//!
//! What matters most with this provider (docs/compatibility.md): it never reconnects after
//! a stream that ended with status OK, so the service must end streams with an error
//! status; after an error status it waits `retryBackoffMaxMs` and reconnects.

use anyhow::{bail, Context, Result};
use integration::script::{
    eval, not_found, replaced_by_changing_flag, testbed_evaluations, LineScript,
};
use integration::*;
use serde_json::{json, Value};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// How long `npm ci` may take, and how long a test waits for another process running it.
const INSTALL_WAIT: Duration = Duration::from_secs(300);

/// How long the script may take to print READY: node starting, loading grpc-js, then the
/// provider's connect and first SyncFlags message.
const READY_WAIT: Duration = Duration::from_secs(30);

/// How long the provider may take to come back after the service is back: its own wait
/// (`--retry-backoff-max-ms` below) plus grpc-js's reconnection backoff of the channel.
const RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// The script's own overall deadline, after which it fails by itself.
const SCRIPT_TIMEOUT_SECS: &str = "100";

/// The provider's deadline for the channel to be ready before each stream attempt
/// (default 500 ms), a bit more for a loaded CI machine.
const PROVIDER_DEADLINE_MS: &str = "2000";

/// The provider's wait before reconnecting after an error status (default 5000 ms).
const RETRY_BACKOFF_MAX_MS: &str = "500";

/// The files that make up the installed set, copied from here into the cache directory.
const FILES: [&str; 3] = ["package.json", "package-lock.json", "provider_check.mjs"];

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/node")
}

/// The workspace's target directory, as `integration::binary()` finds it.
fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => root.join(t), // an absolute path replaces `root`
        None => root.join("target"),
    }
}

/// The directory holding the script and its `node_modules`, prepared once per test process.
fn node_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let started = Instant::now();
        let dir = ensure_node_modules().unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!(
            "node_modules ready in {:.1?}: {}",
            started.elapsed(),
            dir.display()
        );
        dir
    })
    .clone()
}

/// Makes `<target>/compat/node` hold the pinned packages (`npm ci` from the committed lock
/// file) for the node on PATH, and the current script. A marker written last records what
/// was installed; an exclusive `flock` makes a second process wait for the first.
fn ensure_node_modules() -> Result<PathBuf> {
    let node = tool_version("node")?;
    let npm = tool_version("npm")?;
    let lock_file = compat_dir().join("package-lock.json");
    let lock_text = fs::read_to_string(&lock_file)
        .with_context(|| format!("reading {}", lock_file.display()))?;
    let root = target_dir().join("compat");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = root.join("node");
    let marker = dir.join(".installed-lock");
    let want = format!("node {node}\nnpm {npm}\n{lock_text}");

    let lock_path = root.join("node.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    setup::lock_exclusive(&lock, INSTALL_WAIT)
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let installed = dir.join("node_modules").exists()
        && fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str());
    if !installed {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
    }
    // The script may change without the packages changing: always copy it.
    for f in FILES {
        let (from, to) = (compat_dir().join(f), dir.join(f));
        let text = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if fs::read(&to).ok().as_deref() != Some(text.as_slice()) {
            fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    if !installed {
        setup::run_to_completion(
            StdCommand::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci of the pinned Node provider",
            INSTALL_WAIT,
        )?;
        let tmp = dir.join(".installed-lock.tmp");
        fs::write(&tmp, &want)?;
        fs::rename(&tmp, &marker)?;
    }
    Ok(dir)
    // `lock` closes here, releasing the flock.
}

/// `<tool> --version`, or a clear failure when the tool is not there.
fn tool_version(tool: &str) -> Result<String> {
    let out = StdCommand::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "{tool} is not on PATH: the Node provider compatibility test needs node (>= 18) \
                 and npm (Debian: apt-get install -y nodejs npm)"
            )
        })?;
    if !out.status.success() {
        bail!(
            "{tool} --version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts the script against gRPC port `port`. `flags` are `TYPE:FLAG`.
fn provider_check(port: u16, selector: Option<&str>, flags: &[&str]) -> LineScript {
    provider_check_with(port, selector, &[], flags)
}

/// [`provider_check`] with more options for the script (`--tls`, `--socket-path`…).
fn provider_check_with(
    port: u16,
    selector: Option<&str>,
    extra: &[&str],
    flags: &[&str],
) -> LineScript {
    let node_dir = node_dir();
    let mut cmd = Command::new("node");
    cmd.arg(node_dir.join("provider_check.mjs"))
        .current_dir(&node_dir)
        .args(["--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--timeout", SCRIPT_TIMEOUT_SECS])
        .args(["--deadline-ms", PROVIDER_DEADLINE_MS])
        .args(["--retry-backoff-max-ms", RETRY_BACKOFF_MAX_MS]);
    if let Some(s) = selector {
        cmd.args(["--selector", s]);
    }
    cmd.args(extra).args(flags);
    LineScript::spawn(cmd, "node provider_check.mjs", READY_WAIT, RECONNECT_WAIT)
}

fn string_flag(value: &str) -> Value {
    json!({"f": eval(json!(value), "v", "STATIC")})
}

/// The flagd testbed's flags, every type and a targeting rule, evaluated by the provider;
/// then whole-document replacements, each one a CHANGED with the new evaluations.
#[tokio::test]
async fn the_node_provider_evaluates_the_testbed_flags_and_follows_changes() {
    node_dir();
    let redis = RedisServer::start().unwrap();
    redis
        .set("flags", &testdata_json("testing-flags.json").to_string())
        .unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let mut node = provider_check(
        svc.grpc_port,
        None,
        &[
            "bool:boolean-flag",
            "string:string-flag",
            "number:integer-flag",
            "number:float-flag",
            "object:object-flag",
            "string:context-aware",
            "string:changing-flag",
        ],
    );
    let ready = node.ready().await;
    let testbed = testbed_evaluations();
    assert_eq!(ready, testbed, "{}", node.stderr());

    // Every message replaces the provider's whole flag set.
    let mut changing = testdata_json("changing-flag.json");
    redis.set("flags", &changing.to_string()).unwrap();
    let changed = node.changed().await;
    let replaced = replaced_by_changing_flag(json!(-1));
    assert_eq!(changed["flags"], replaced);

    changing["flags"]["changing-flag"]["defaultVariant"] = json!("bar");
    redis.set("flags", &changing.to_string()).unwrap();
    let changed = node.changed().await;
    assert_eq!(
        changed["flags"]["changing-flag"],
        eval(json!("bar"), "bar", "STATIC")
    );
    assert_eq!(changed["flags_changed"], json!(["changing-flag"]));
    node.finish().await;
}

fn flag_in_set(value: &str, set: Option<&str>) -> Value {
    let mut flag = json!({
        "state": "ENABLED",
        "variants": {"v": value, "other": "x"},
        "defaultVariant": "v"
    });
    if let Some(set) = set {
        flag["metadata"] = json!({ "flagSetId": set });
    }
    flag
}

fn sets_doc(a: &str, b: &str) -> String {
    json!({"flags": {
        "in-a": flag_in_set(a, Some("a")),
        "in-b": flag_in_set(b, Some("b")),
    }})
    .to_string()
}

/// The provider sends its selector (body and `flagd-selector` header) and gets only the
/// flags it selected, first and after a change.
#[tokio::test]
async fn the_node_provider_gets_only_the_flag_set_it_selects() {
    node_dir();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &sets_doc("a1", "b1")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let flags = ["string:in-a", "string:in-b"];
    let mut set_a = provider_check(svc.grpc_port, Some("flagSetId=a"), &flags);
    let v = |s: &str| eval(json!(s), "v", "STATIC");
    let dflt = || not_found(json!("<default>"));
    assert_eq!(
        set_a.ready().await,
        json!({"in-a": v("a1"), "in-b": dflt()})
    );
    redis.set("flags", &sets_doc("a2", "b2")).unwrap();
    assert_eq!(
        set_a.changed().await["flags"],
        json!({"in-a": v("a2"), "in-b": dflt()})
    );
    set_a.finish().await;
}

/// The service is killed (SIGKILL: the connection just drops), the flags change while it
/// is down, and a new instance starts on the same port: the provider goes stale,
/// reconnects by itself, gets the current set at once, and follows later changes.
#[tokio::test]
async fn the_node_provider_reconnects_after_the_service_is_killed_and_restarted() {
    node_dir();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let uri = redis.uri("flags");
    let svc = Service::start(&uri, &[]).await.unwrap();
    let (grpc_port, mgmt_port) = (svc.grpc_port, svc.mgmt_port);
    let mut node = provider_check(grpc_port, None, &["string:f"]);
    assert_eq!(node.ready().await, string_flag("one"));

    drop(svc); // SIGKILL, and waits for the process to be gone
    let stale = node.stale().await;
    assert!(
        stale["message"]
            .as_str()
            .unwrap_or("")
            .contains("UNAVAILABLE"),
        "{stale}"
    );
    redis.set("flags", &doc("f", "two")).unwrap();
    let svc = Service::start_on_ports(&uri, grpc_port, mgmt_port, &[])
        .await
        .unwrap();
    // The first message of the new stream carries what changed while the service was down.
    assert_eq!(node.changed().await["flags"], string_flag("two"));
    assert_eq!(node.reconnected().await, string_flag("two"));

    redis.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(node.changed().await["flags"], string_flag("three"));
    node.finish().await;
    drop(svc);
}

/// SIGTERM ends every stream with `UNAVAILABLE` (never OK: this provider would never
/// reconnect after OK); a new instance on the same port gets the provider back, and a
/// change written after that reaches it.
#[tokio::test]
async fn the_node_provider_reconnects_after_a_sigterm_restart() {
    node_dir();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let uri = redis.uri("flags");
    let mut svc = Service::start(&uri, &[]).await.unwrap();
    let (grpc_port, mgmt_port) = (svc.grpc_port, svc.mgmt_port);
    let mut node = provider_check(grpc_port, None, &["string:f"]);
    assert_eq!(node.ready().await, string_flag("one"));

    svc.sigterm();
    let stale = node.stale().await;
    assert!(
        stale["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("14 UNAVAILABLE"),
        "the stream must end with UNAVAILABLE: {stale}"
    );
    let status = svc.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "{status}\n{}", svc.logs());
    drop(svc);

    let svc = Service::start_on_ports(&uri, grpc_port, mgmt_port, &[])
        .await
        .unwrap();
    assert_eq!(node.reconnected().await, string_flag("one"));
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(node.changed().await["flags"], string_flag("two"));

    // And once more, so the reconnected stream is itself ended properly by a SIGTERM.
    svc.sigterm();
    node.stale().await;
    let mut svc = svc;
    svc.wait_exit(WAIT).await.unwrap();
    drop(svc);
    let _svc = Service::start_on_ports(&uri, grpc_port, mgmt_port, &[])
        .await
        .unwrap();
    assert_eq!(node.reconnected().await, string_flag("two"));
    redis.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(node.changed().await["flags"], string_flag("three"));
    node.finish().await;
}

/// TLS as an operator sets it up for the provider (`tls`, `certPath` with a private CA),
/// against the service's own TLS (security.rs makes the certificates).
#[tokio::test]
async fn the_node_provider_connects_over_tls() {
    node_dir();
    let pki = crate::security::Pki::new("node CA");
    let server = pki.server("grpc");
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "tls")).unwrap();
    let svc = Service::start(
        &redis.uri("flags"),
        &[
            "--redis-sync-cert-path",
            server.cert(),
            "--redis-sync-key-path",
            server.key(),
        ],
    )
    .await
    .unwrap();
    let mut node = provider_check_with(
        svc.grpc_port,
        None,
        &["--host", "localhost", "--tls", "--cert-path", pki.ca()],
        &["string:f"],
    );
    assert_eq!(node.ready().await, string_flag("tls"));
    redis.set("flags", &doc("f", "tls-2")).unwrap();
    assert_eq!(node.changed().await["flags"], string_flag("tls-2"));
    node.finish().await;
}

/// The provider's own Unix socket option (`socketPath`).
#[tokio::test]
async fn the_node_provider_connects_over_the_unix_socket() {
    node_dir();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sync.sock");
    let socket = socket.to_str().unwrap();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "sock")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &["--redis-sync-socket-path", socket])
        .await
        .unwrap();
    let mut node = provider_check_with(
        svc.grpc_port,
        None,
        &["--socket-path", socket],
        &["string:f"],
    );
    assert_eq!(node.ready().await, string_flag("sock"));
    redis.set("flags", &doc("f", "sock-2")).unwrap();
    assert_eq!(node.changed().await["flags"], string_flag("sock-2"));
    node.finish().await;
}

//! Compatibility with the real Python OpenFeature flagd provider (PyPI
//! `openfeature-provider-flagd`, in-process resolver), pinned in
//! `integration/compat/python/requirements.txt`.
//!
//! Each test runs `integration/compat/python/provider_check.py` in a venv kept under
//! `<target>/compat/python-venv` (built on first use, rebuilt when the requirements or
//! python3 change; a lock file keeps two test processes from building it at once). The
//! script and the test talk in lines: the script prints `READY <json>` once the provider
//! has its first flag set, `CHANGED <json>` each time its evaluations change, and
//! `STALE` / `RECONNECTED` around a lost connection; the test writes Redis (or restarts the
//! service) only after the line that proves the provider is where it should be, and reads
//! every line under a timeout. `offline_equivalence.py` (same venv) evaluates each file the
//! test names on its stdin with the provider both from the stream and in its offline file
//! mode, and prints one `RESULT <json>` line per file. python3 missing is a failure, not a
//! skip.

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

/// How long building the venv may take (`python3 -m venv`, then pip from PyPI), and how
/// long a test waits for another process that is building it.
const VENV_WAIT: Duration = Duration::from_secs(300);

/// How long the script may take to print READY: Python starting and importing grpc on a
/// loaded machine, then the provider's connect, GetMetadata and first SyncFlags message.
const READY_WAIT: Duration = Duration::from_secs(30);

/// The script's own overall deadline, after which it fails by itself.
const SCRIPT_TIMEOUT_SECS: &str = "90";

/// How long the provider may take to be ready again once a new service listens: the
/// gRPC channel's reconnection backoff and the provider's own wait before reopening its
/// stream, both at most [`RETRY_BACKOFF_MAX_MS`] in the reconnection tests, plus
/// GetMetadata and the first message, on a loaded machine.
const RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// The provider's reconnection settings in the reconnection tests (defaults 1000 ms and
/// 5000 ms): `retry_backoff_ms` is the channel's first reconnection backoff,
/// `retry_backoff_max_ms` its longest and the provider's wait before reopening the stream.
const RETRY_BACKOFF_MS: &str = "100";
const RETRY_BACKOFF_MAX_MS: &str = "200";

/// How long `offline_equivalence.py` may take for one file: two providers started (the
/// stream one connects and waits for its first message) and every flag evaluated.
const RESULT_WAIT: Duration = Duration::from_secs(30);

/// The provider's start-up deadline for the first flag set. Its default is 500 ms; a bit
/// more keeps a loaded CI machine from failing the test, while a service that did not
/// send the current set at once (only after a change) still fails it.
const PROVIDER_DEADLINE_MS: &str = "2000";

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/python")
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

/// The venv's python, built once per test process (and once per machine, see below).
fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let started = Instant::now();
            let python = ensure_venv().unwrap_or_else(|e| panic!("{e:#}"));
            eprintln!(
                "python venv ready in {:.1?}: {}",
                started.elapsed(),
                python.display()
            );
            python
        })
        .clone()
}

/// Makes `<target>/compat/python-venv` hold exactly the pinned requirements for the
/// python3 on PATH. A marker file written last records what was installed; an exclusive
/// `flock` on a lock file (released by the kernel even if a test process dies) makes a
/// second process wait for the first instead of building alongside it.
fn ensure_venv() -> Result<PathBuf> {
    let requirements_file = compat_dir().join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_file)
        .with_context(|| format!("reading {}", requirements_file.display()))?;
    let python3 = python3_version()?;
    let root = target_dir().join("compat");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let venv = root.join("python-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(".installed-requirements");
    let want = format!("{python3}\n{requirements}");

    let lock_path = root.join("python-venv.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    setup::lock_exclusive(&lock, VENV_WAIT)
        .with_context(|| format!("locking {}", lock_path.display()))?;

    if python.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(python);
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    setup::run_to_completion(
        StdCommand::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (Debian needs the python3-venv package)",
        VENV_WAIT,
    )?;
    setup::run_to_completion(
        StdCommand::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(["--no-input", "--quiet", "--timeout", "60", "-r"])
            .arg(&requirements_file),
        "pip install of the pinned Python provider",
        VENV_WAIT,
    )?;
    let tmp = venv.join(".installed-requirements.tmp");
    fs::write(&tmp, &want)?;
    fs::rename(&tmp, &marker)?;
    Ok(python)
    // `lock` closes here, releasing the flock.
}

/// `python3 --version`, or a clear failure when there is no python3.
fn python3_version() -> Result<String> {
    let out = StdCommand::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .context(
            "python3 is not on PATH: the Python provider compatibility test needs it \
             (Debian: apt-get install python3 python3-venv)",
        )?;
    if !out.status.success() {
        bail!(
            "python3 --version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Python < 3.4 printed the version on stderr.
    let text = [out.stdout, out.stderr].concat();
    Ok(String::from_utf8_lossy(&text).trim().to_string())
}

/// Starts `provider_check.py` against the service's gRPC port. `flags` are `TYPE:FLAG`.
fn provider_check(
    svc: &Service,
    selector: Option<&str>,
    extra: &[&str],
    flags: &[&str],
) -> LineScript {
    let port = svc.grpc_port.to_string();
    let mut args = vec![
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--timeout",
        SCRIPT_TIMEOUT_SECS,
        "--deadline-ms",
        PROVIDER_DEADLINE_MS,
    ];
    args.extend_from_slice(extra);
    if let Some(s) = selector {
        args.extend_from_slice(&["--selector", s]);
    }
    args.extend_from_slice(flags);
    spawn_script("provider_check.py", &args)
}

/// Starts `script` (in `integration/compat/python`) with `args`.
fn spawn_script(script: &str, args: &[&str]) -> LineScript {
    let mut cmd = Command::new(venv_python());
    cmd.arg(compat_dir().join(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    LineScript::spawn(cmd, script, READY_WAIT, RECONNECT_WAIT)
}

/// The flagd testbed's flags, every type and a targeting rule, evaluated by the provider;
/// then whole-document replacements, each one a CHANGED with the new evaluations.
#[tokio::test]
async fn the_python_provider_evaluates_the_testbed_flags_and_follows_changes() {
    venv_python();
    let redis = RedisServer::start().unwrap();
    redis
        .set("flags", &testdata_json("testing-flags.json").to_string())
        .unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let mut py = provider_check(
        &svc,
        None,
        &[],
        &[
            "bool:boolean-flag",
            "string:string-flag",
            "int:integer-flag",
            "float:float-flag",
            "object:object-flag",
            "string:context-aware",
            "string:changing-flag",
        ],
    );
    let ready = py.ready().await;
    let testbed = testbed_evaluations();
    assert_eq!(ready, testbed, "{}", py.stderr());

    // Every message replaces the provider's whole flag set.
    let mut changing = testdata_json("changing-flag.json");
    redis.set("flags", &changing.to_string()).unwrap();
    let changed = py.changed().await;
    let replaced = replaced_by_changing_flag(json!(-1.0));
    assert_eq!(changed["flags"], replaced);

    changing["flags"]["changing-flag"]["defaultVariant"] = json!("bar");
    redis.set("flags", &changing.to_string()).unwrap();
    let changed = py.changed().await;
    assert_eq!(
        changed["flags"]["changing-flag"],
        eval(json!("bar"), "bar", "STATIC")
    );
    py.finish().await;
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

fn sets_doc(a: &str, b: &str, none: &str) -> String {
    json!({"flags": {
        "in-a": flag_in_set(a, Some("a")),
        "in-b": flag_in_set(b, Some("b")),
        "no-set": flag_in_set(none, None),
    }})
    .to_string()
}

/// The provider sends its selector (in the body and the `flagd-selector` header) and gets
/// only the flags it selected, first and after a change.
#[tokio::test]
async fn the_python_provider_gets_only_the_flag_set_it_selects() {
    venv_python();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &sets_doc("a1", "b1", "n1")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let flags = ["string:in-a", "string:in-b", "string:no-set"];
    let mut set_a = provider_check(&svc, Some("flagSetId=a"), &[], &flags);
    let mut no_set = provider_check(&svc, Some("flagSetId="), &[], &flags);
    let mut all = provider_check(&svc, None, &[], &flags);
    let dflt = || not_found(json!("<default>"));
    let v = |s: &str| eval(json!(s), "v", "STATIC");
    assert_eq!(
        set_a.ready().await,
        json!({"in-a": v("a1"), "in-b": dflt(), "no-set": dflt()})
    );
    assert_eq!(
        no_set.ready().await,
        json!({"in-a": dflt(), "in-b": dflt(), "no-set": v("n1")})
    );
    assert_eq!(
        all.ready().await,
        json!({"in-a": v("a1"), "in-b": v("b1"), "no-set": v("n1")})
    );

    redis.set("flags", &sets_doc("a2", "b2", "n2")).unwrap();
    assert_eq!(
        set_a.changed().await["flags"],
        json!({"in-a": v("a2"), "in-b": dflt(), "no-set": dflt()})
    );
    assert_eq!(
        no_set.changed().await["flags"],
        json!({"in-a": dflt(), "in-b": dflt(), "no-set": v("n2")})
    );
    assert_eq!(
        all.changed().await["flags"],
        json!({"in-a": v("a2"), "in-b": v("b2"), "no-set": v("n2")})
    );
    for py in [set_a, no_set, all] {
        py.finish().await;
    }
}

/// An unlabelled counter or gauge from /metrics (0 when absent).
async fn metric(svc: &Service, name: &str) -> f64 {
    let (_, body) = svc.http_get("/metrics").await.expect("/metrics");
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The provider ends its stream at its own deadline (`DEADLINE_EXCEEDED` on its side),
/// calls GetMetadata again and reopens it: each new stream gets the current set at once,
/// the ended ones are gone, and a change after all that still reaches the provider.
#[tokio::test]
async fn the_python_provider_recycles_its_stream_and_still_follows_changes() {
    venv_python();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let mut py = provider_check(
        &svc,
        None,
        &[
            "--stream-deadline-ms",
            "1000",
            "--retry-backoff-max-ms",
            "100",
        ],
        &["string:f"],
    );
    assert_eq!(
        py.ready().await,
        json!({"f": eval(json!("one"), "v", "STATIC")})
    );
    // Two recycled streams: three first messages pushed, one stream open.
    eventually(WAIT, "the provider to reopen its stream twice", || async {
        (metric(&svc, "flagd_redis_sync_pushes_total").await >= 3.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- provider_check stderr ---\n{}", py.stderr()));
    eventually(WAIT, "one open stream", || async {
        (metric(&svc, "feature_flag_flagd_sync_active_streams").await == 1.0).then_some(())
    })
    .await
    .unwrap();
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        py.changed().await["flags"],
        json!({"f": eval(json!("two"), "v", "STATIC")})
    );
    py.finish().await;
}

/// TLS as an operator sets it up for the provider (`tls`, `cert_path` with a private CA),
/// against the service's own TLS (security.rs makes the certificates).
#[tokio::test]
async fn the_python_provider_connects_over_tls() {
    venv_python();
    let pki = crate::security::Pki::new("python CA");
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
    let mut py = provider_check(
        &svc,
        None,
        &["--host", "localhost", "--tls", "--cert-path", pki.ca()],
        &["string:f"],
    );
    assert_eq!(
        py.ready().await,
        json!({"f": eval(json!("tls"), "v", "STATIC")})
    );
    redis.set("flags", &doc("f", "tls-2")).unwrap();
    assert_eq!(
        py.changed().await["flags"],
        json!({"f": eval(json!("tls-2"), "v", "STATIC")})
    );
    py.finish().await;
}

/// The Unix socket, alone in use: the provider dials `unix:///dir/sync.sock:8015` (its
/// host and port joined) with `default_authority` localhost (see provider_check.py).
#[tokio::test]
async fn the_python_provider_connects_over_the_unix_socket() {
    venv_python();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("sync.sock");
    let socket = format!("{}:8015", base.display());
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "sock")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &["--redis-sync-socket-path", &socket])
        .await
        .unwrap();
    let host = format!("unix://{}", base.display());
    let mut py = provider_check(
        &svc,
        None,
        &[
            "--host",
            &host,
            "--port",
            "8015",
            "--default-authority",
            "localhost",
        ],
        &["string:f"],
    );
    assert_eq!(
        py.ready().await,
        json!({"f": eval(json!("sock"), "v", "STATIC")})
    );
    redis.set("flags", &doc("f", "sock-2")).unwrap();
    assert_eq!(
        py.changed().await["flags"],
        json!({"f": eval(json!("sock-2"), "v", "STATIC")})
    );
    // One open stream: the provider's, over the socket.
    assert_eq!(
        metric(&svc, "feature_flag_flagd_sync_active_streams").await,
        1.0
    );
    py.finish().await;
}

fn string_flag(value: &str) -> Value {
    json!({"f": eval(json!(value), "v", "STATIC")})
}

/// The provider's reconnection settings, small so that the reconnection tests are quick.
const RETRY_BACKOFF: [&str; 4] = [
    "--retry-backoff-ms",
    RETRY_BACKOFF_MS,
    "--retry-backoff-max-ms",
    RETRY_BACKOFF_MAX_MS,
];

/// The service is killed (SIGKILL: the connection just drops), the flags change while it
/// is down, and a new instance starts on the same port: the provider goes stale,
/// reconnects by itself, gets the current set with the first message, is ready again and
/// follows later changes.
#[tokio::test]
async fn the_python_provider_reconnects_after_the_service_is_killed_and_restarted() {
    venv_python();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let uri = redis.uri("flags");
    let svc = Service::start(&uri, &[]).await.unwrap();
    let (grpc_port, mgmt_port) = (svc.grpc_port, svc.mgmt_port);
    let mut py = provider_check(&svc, None, &RETRY_BACKOFF, &["string:f"]);
    assert_eq!(py.ready().await, string_flag("one"));

    drop(svc); // SIGKILL, and waits for the process to be gone
    let stale = py.stale().await;
    assert!(
        stale["message"]
            .as_str()
            .unwrap_or("")
            .contains("disconnected"),
        "{stale}"
    );
    redis.set("flags", &doc("f", "two")).unwrap();
    let svc = Service::start_on_ports(&uri, grpc_port, mgmt_port, &[])
        .await
        .unwrap();
    // The first message of the new stream carries what changed while the service was down.
    assert_eq!(py.changed().await["flags"], string_flag("two"));
    assert_eq!(py.reconnected().await, string_flag("two"));

    redis.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(py.changed().await["flags"], string_flag("three"));
    py.finish().await;
    drop(svc);
}

/// SIGTERM: the service ends the provider's stream and exits 0; a new instance on the same
/// port gets the provider back (same set, so no CHANGED), and a change written after that
/// reaches it.
#[tokio::test]
async fn the_python_provider_reconnects_after_a_sigterm_restart() {
    venv_python();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let uri = redis.uri("flags");
    let mut svc = Service::start(&uri, &[]).await.unwrap();
    let (grpc_port, mgmt_port) = (svc.grpc_port, svc.mgmt_port);
    let mut py = provider_check(&svc, None, &RETRY_BACKOFF, &["string:f"]);
    assert_eq!(py.ready().await, string_flag("one"));

    svc.sigterm();
    py.stale().await;
    let status = svc.wait_exit(WAIT).await.unwrap();
    assert!(status.success(), "{status}\n{}", svc.logs());
    drop(svc);

    let _svc = Service::start_on_ports(&uri, grpc_port, mgmt_port, &[])
        .await
        .unwrap();
    assert_eq!(py.reconnected().await, string_flag("one"));
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(py.changed().await["flags"], string_flag("two"));
    py.finish().await;
}

/// The evaluations `offline_equivalence.py` makes per flag: one per evaluation context
/// (its CONTEXTS: empty, ballmer, jobs, odd, build) and one with a type the flag does not
/// have. Plus one unknown flag per file.
const EVALUATIONS_PER_FLAG: usize = 6;

/// One evaluation of a RESULT line, for failure messages and spot checks.
fn evaluation<'a>(result: &'a Value, flag: &str, kind: &str, ctx: &str, mode: &str) -> &'a Value {
    &result["evaluations"][format!("{flag}|{kind}|{ctx}")][mode]
}

/// Every testbed file, served by the service, evaluates in the Python provider exactly as
/// the same provider evaluates the file itself in its offline file mode (FILE resolver,
/// `offline_flag_source_path`): value, variant, reason, error code and flag metadata, for
/// every flag under several evaluation contexts, with a wrong type, and an unknown flag.
///
/// The offline provider reads each file as it is in `integration/testdata/` (all of them
/// are in the map form its strict parser accepts; if one were not, the offline provider
/// would not become ready and the script would FAIL, rather than the file being skipped).
/// The stream provider gets the document the service serves, normalized (`--normalize`,
/// the default): keys re-ordered, unknown flag fields dropped, `$evaluators` kept as is.
#[tokio::test]
async fn the_python_provider_evaluates_every_testbed_file_alike_from_the_stream_and_offline() {
    venv_python();
    let files = testbed_files();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("marker", "start")).unwrap();
    // Some testbed files have flags broken on purpose, which strict validation refuses.
    let svc = Service::start(&redis.uri("flags"), &["--validation", "basic"])
        .await
        .unwrap();
    // A stream of our own shows when the service serves each file: a provider that
    // connects after that gets it as its first message.
    let mut watch = svc.stream("").await.unwrap();
    let first = watch.next_json().await.unwrap();
    assert_eq!(default_value(&first, "marker").as_deref(), Some("start"));

    let port = svc.grpc_port.to_string();
    let mut py = spawn_script(
        "offline_equivalence.py",
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--timeout",
            "150",
            "--deadline-ms",
            PROVIDER_DEADLINE_MS,
        ],
    );
    let mut results = std::collections::BTreeMap::new();
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (name, path) in &files {
        let text = fs::read_to_string(path).unwrap();
        let file: Value = serde_json::from_str(&text).unwrap();
        redis.set("flags", &text).unwrap();
        let served = watch
            .next_json()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", svc.logs()));
        let keys = |doc: &Value| -> Vec<String> {
            let mut keys: Vec<String> = match &doc["flags"] {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(l) => l.iter().map(|f| f["key"].to_string()).collect(),
                _ => panic!("{name}: no flags"),
            };
            keys.sort();
            keys
        };
        let flag_names = keys(&file);
        assert_eq!(
            keys(&served),
            flag_names,
            "{name}: the service serves other flags"
        );

        let request = json!({"name": name, "path": path.to_str().expect("UTF-8 path")});
        py.send(&request.to_string()).await;
        let result = py.expect("RESULT", RESULT_WAIT).await;
        assert_eq!(result["name"], json!(name));
        assert_eq!(result["flags"], json!(flag_names.len()), "{name}");
        let evaluations = result["evaluations"].as_object().expect("evaluations");
        assert_eq!(
            evaluations.len(),
            flag_names.len() * EVALUATIONS_PER_FLAG + 1,
            "{name}: evaluations made"
        );
        for (what, both) in evaluations {
            compared += 1;
            if both["stream"] != both["offline"] {
                mismatches.push(format!(
                    "{name} {what}:\n  stream  {}\n  offline {}",
                    both["stream"], both["offline"]
                ));
            }
            // Both had the file's flags: only the unknown flag is not found.
            let not_found = both["stream"]["error"] == json!("FLAG_NOT_FOUND");
            assert_eq!(
                not_found,
                what.starts_with("no-such-flag-in-any-file|"),
                "{name} {what}: {both}"
            );
        }
        results.insert(name.clone(), result);
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} evaluations differ between the stream and the offline file:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    py.finish().await;

    // Spot checks that the evaluation contexts reach the rules (in stream mode; offline
    // is equal, checked above).
    let r = |file: &str| &results[file];
    let eval_of = |file: &str, flag: &str, kind: &str, ctx: &str| {
        let e = evaluation(r(file), flag, kind, ctx, "stream");
        (
            e["value"].clone(),
            e["variant"].clone(),
            e["reason"].clone(),
        )
    };
    assert_eq!(
        eval_of(
            "evaluator-refs.json",
            "some-email-targeted-flag",
            "string",
            "ballmer"
        ),
        (json!("hi"), json!("hi"), json!("TARGETING_MATCH"))
    );
    assert_eq!(
        eval_of(
            "evaluator-refs.json",
            "some-email-targeted-flag",
            "string",
            "jobs"
        ),
        (json!("bye"), json!("bye"), json!("TARGETING_MATCH"))
    );
    assert_eq!(
        eval_of("testing-flags.json", "context-aware", "string", "ballmer"),
        (
            json!("INTERNAL"),
            json!("internal"),
            json!("TARGETING_MATCH")
        )
    );
    assert_eq!(
        eval_of(
            "custom-ops.json",
            "equal-greater-lesser-version-flag",
            "string",
            "jobs"
        ),
        (json!("greater"), json!("greater"), json!("TARGETING_MATCH"))
    );
    assert_eq!(
        eval_of("testing-flags.json", "boolean-flag", "bool", "empty"),
        (json!(true), json!("on"), json!("STATIC"))
    );
    assert_eq!(
        evaluation(
            r("metadata-flags.json"),
            "metadata-flag",
            "bool",
            "empty",
            "stream"
        )["metadata"],
        json!({"string": "a", "integer": 1, "float": 1.2, "boolean": true})
    );
}

/// Accepted documents the published schema refuses, because every provider evaluates
/// them (the one loosening in src/flags/schema.rs: `v`-prefixed and partial sem_ver
/// versions, which the flagd testbed itself uses).
const SCHEMA_LOOSENED: &[&str] = &["sem-ver-lenient-versions.json"];

/// Strict validation tied to a real client: every document of
/// `integration/validation/refused` is refused by `validate` (exit 1, a JSON pointer on
/// each line) and makes the Python provider's evaluation error in its offline file mode,
/// or is invalid against flagd's schema (checked here on the whole document); every
/// document of `integration/validation/accepted` passes `validate`, the schema, and
/// evaluates without an error.
#[tokio::test]
async fn strict_validation_refuses_what_the_python_provider_chokes_on_and_nothing_else() {
    let refused = validation_corpus("refused");
    let accepted = validation_corpus("accepted");
    for (path, want) in refused
        .iter()
        .map(|p| (p, 1))
        .chain(accepted.iter().map(|p| (p, 0)))
    {
        let out = StdCommand::new(binary())
            .arg("validate")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .expect("running validate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(want),
            "{}: {stderr}",
            path.display()
        );
        if want == 1 {
            assert!(
                stderr.lines().all(|l| l.contains("refused: /")),
                "{}: every line names a pointer: {stderr}",
                path.display()
            );
        }
    }

    let mut cmd = Command::new(venv_python());
    cmd.arg(compat_dir().join("file_mode_errors.py"))
        .args(["--timeout", "120"])
        .args(refused.iter().chain(&accepted))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(150), cmd.output())
        .await
        .expect("file_mode_errors.py within 150 s")
        .expect("running file_mode_errors.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "file_mode_errors.py: {stdout}");
    let results: Vec<Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).expect("RESULT JSON"))
        .collect();
    assert_eq!(results.len(), refused.len() + accepted.len(), "{stdout}");
    for (r, path) in results.iter().zip(refused.iter().chain(&accepted)) {
        assert_eq!(r["path"], path.to_string_lossy().as_ref());
        let doc: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        let client_error = r["ready"] == false || !r["errors"].as_array().unwrap().is_empty();
        let schema_ok = schema_valid(&doc);
        if refused.contains(path) {
            assert!(
                client_error || !schema_ok,
                "{}: refused, yet the schema allows it and the Python provider evaluates it",
                path.display()
            );
        } else if SCHEMA_LOOSENED.iter().any(|n| path.ends_with(n)) {
            // Where the service deliberately accepts what the published schema refuses
            // (src/flags/schema.rs, lenient_sem_ver): the provider evaluates it cleanly,
            // and the schema really does refuse it (else the deviation is not needed).
            assert!(
                !client_error && !schema_ok,
                "{}: loosened, yet schema valid = {schema_ok} and the provider says {r}",
                path.display()
            );
        } else {
            assert!(
                !client_error && schema_ok,
                "{}: accepted, yet schema valid = {schema_ok} and the provider says {r}",
                path.display()
            );
        }
    }
}

//! `flagd-redis-sync doctor` against real redis-servers configured each way, the same
//! checks inside the running service (/readyz, metrics, logs), and the monitoring files
//! (docs/monitoring) against a running instance's /metrics.

use integration::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "s3cret-doctor";

/// A production-grade Redis, as the guides ask: AOF fsynced every second, a memory limit
/// with a policy that cannot evict un-expiring keys, keyspace notifications, a password.
/// (TLS: the test Redis is on loopback, which the doctor accepts; one test adds TLS.)
const PRODUCTION: [&str; 12] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--maxmemory",
    "100mb",
    "--maxmemory-policy",
    "volatile-lru",
    "--notify-keyspace-events",
    "Kg$xe",
    "--requirepass",
    PW,
];

/// Every check the subcommand reports, in its order.
const ALL_CHECKS: [&str; 19] = [
    "connection",
    "version",
    "topology",
    "replication",
    "auth",
    "tls",
    "persistence",
    "maxmemory",
    "eviction",
    "notifications",
    "clients",
    "key",
    "ttl",
    "size",
    "document",
    "rights_get",
    "rights_subscribe",
    "rights_config_set",
    "rights_tracking",
];

fn production(extra: &[&str]) -> RedisServer {
    let args: Vec<&str> = PRODUCTION
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    RedisServer::start_with(&args).unwrap()
}

/// A connection as the administrator (the default user, with the password).
fn admin(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(format!("redis://:{PW}@127.0.0.1:{}/", redis.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn admin_cmd<T: redis::FromRedisValue>(redis: &RedisServer, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut admin(redis))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn uri(redis: &RedisServer) -> String {
    format!("redis://:{PW}@127.0.0.1:{}/0?key=flags", redis.port)
}

/// Runs the binary with `args`, under a deadline; returns (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("REDIS_URI")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT * 2;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not finish within {:?}", WAIT * 2);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    (status.code().unwrap_or(-1), read(&out), read(&err))
}

/// `doctor --format json`: (exit code, report).
pub(crate) fn doctor(uri: &str, env: &[(&str, &str)]) -> (i32, Value) {
    doctor_with(uri, &[], env)
}

/// `doctor --format json` with more options.
fn doctor_with(uri: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut all = vec!["doctor", "--redis-uri", uri, "--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all, env);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("doctor output is not JSON ({e}):\n{out}\n{err}"));
    assert_eq!(report["exit_code"], code, "{report:#}");
    (code, report)
}

/// check -> level, asserting that every check appears exactly once and that a password
/// never appears in the report.
fn levels(report: &Value) -> BTreeMap<String, String> {
    let text = report.to_string();
    assert!(!text.contains(PW), "password in the report: {report:#}");
    let mut out = BTreeMap::new();
    for f in report["findings"].as_array().expect("findings") {
        let check = f["check"].as_str().unwrap().to_string();
        let level = f["level"].as_str().unwrap().to_string();
        assert!(
            !f["message"].as_str().unwrap().is_empty(),
            "empty message: {f}"
        );
        if matches!(level.as_str(), "warn" | "fail") {
            assert!(
                f["fix"].as_str().is_some_and(|x| !x.is_empty()),
                "no fix: {f}"
            );
        }
        if level == "skipped" {
            assert!(
                f["message"].as_str().unwrap().contains("could not check")
                    || f["message"].as_str().unwrap().starts_with("no key")
                    || f["message"].as_str().unwrap().starts_with("not validated"),
                "{f}"
            );
        }
        assert!(
            out.insert(check.clone(), level).is_none(),
            "{check} reported twice: {report:#}"
        );
    }
    out
}

/// The findings that are not OK, as (check, level).
fn not_ok(report: &Value) -> BTreeMap<String, String> {
    levels(report)
        .into_iter()
        .filter(|(_, l)| l != "ok")
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(c, l)| (c.to_string(), l.to_string()))
        .collect()
}

fn message<'a>(report: &'a Value, check: &str) -> &'a str {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .and_then(|f| f["message"].as_str())
        .unwrap_or_else(|| panic!("no {check} finding: {report:#}"))
}

fn set_flags(redis: &RedisServer, extra: &[&str]) {
    let mut args = vec!["SET", "flags"];
    let d = doc("f", "on");
    args.push(&d);
    args.extend_from_slice(extra);
    let _: () = admin_cmd(redis, &args);
}

/// redis-server options for a TLS port serving `cert` (signed by `ca`); clients need
/// no certificate of their own.
pub(crate) fn tls_port_args<'a>(
    port: &'a str,
    ca: &'a str,
    cert: &'a str,
    key: &'a str,
) -> Vec<&'a str> {
    vec![
        "--tls-port",
        port,
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--tls-ca-cert-file",
        ca,
        "--tls-auth-clients",
        "no",
    ]
}

/// CA and server certificate for 127.0.0.1, made with the openssl command.
pub(crate) fn certificates(dir: &Path) -> (String, String, String) {
    let p = |n: &str| dir.join(n).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=doctor test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

#[test]
fn a_production_grade_redis_reports_all_ok() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let tls_port = free_port().to_string();
    let redis = production(&tls_port_args(&tls_port, &ca, &cert, &key));
    set_flags(&redis, &[]);
    // As the service: the password from REDIS_PASSWORD, the CA from --redis-ca-path.
    let tls_uri = format!("rediss://127.0.0.1:{tls_port}/0?key=flags");
    let (code, report) = doctor_with(
        &tls_uri,
        &["--redis-ca-path", &ca],
        &[("REDIS_PASSWORD", PW)],
    );
    assert_eq!(not_ok(&report), expect(&[]), "{report:#}");
    assert_eq!(code, 0);
    let checks: Vec<String> = levels(&report).into_keys().collect();
    let mut all: Vec<String> = ALL_CHECKS.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(checks, all, "{report:#}");
    assert!(message(&report, "tls").contains("TLS"), "{report:#}");
    assert!(
        message(&report, "persistence").contains("AOF on"),
        "{report:#}"
    );

    // The certificate is verified: without the CA, no connection, and the reason says
    // which option is missing.
    let (code, untrusted) = doctor(&tls_uri, &[("REDIS_PASSWORD", PW)]);
    assert_eq!(
        levels(&untrusted),
        expect(&[("connection", "fail")]),
        "{untrusted:#}"
    );
    assert_eq!(code, 2);
    assert!(
        message(&untrusted, "connection").contains("--redis-ca-path"),
        "{untrusted:#}"
    );
    // Not verifying it at all is a warning.
    let (code, insecure) = doctor_with(
        &tls_uri,
        &["--redis-tls-insecure"],
        &[("REDIS_PASSWORD", PW)],
    );
    assert_eq!(
        not_ok(&insecure),
        expect(&[("tls", "warn")]),
        "{insecure:#}"
    );
    assert_eq!(code, 1);

    // Text: one line per check, then the summary; the same exit code.
    let (code, out, _) = run(&["doctor", "--redis-uri", &uri(&redis)], &[]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), ALL_CHECKS.len() + 2, "{out}");
    for (line, check) in lines[1..].iter().zip(ALL_CHECKS) {
        assert!(line.starts_with("OK "), "{line}");
        assert!(line.contains(check), "{line} should be {check}");
    }
    assert!(!out.contains(PW), "{out}");
}

#[test]
fn allkeys_lru_without_persistence() {
    let redis = production(&["--maxmemory-policy", "allkeys-lru", "--appendonly", "no"]);
    set_flags(&redis, &[]);
    let (code, report) = doctor(&uri(&redis), &[]);
    assert_eq!(
        not_ok(&report),
        expect(&[("eviction", "warn"), ("persistence", "warn")]),
        "{report:#}"
    );
    assert_eq!(code, 1);
    assert!(
        message(&report, "eviction").contains("allkeys-lru"),
        "{report:#}"
    );
    assert!(
        message(&report, "persistence").contains("no persistence"),
        "{report:#}"
    );
}

#[test]
fn a_ttl_on_the_flag_key() {
    let redis = production(&[]);
    set_flags(&redis, &["EX", "3600"]);
    let (code, report) = doctor(&uri(&redis), &[]);
    // The TTL is a risk twice over: the key expires, and volatile-lru may evict it.
    assert_eq!(
        not_ok(&report),
        expect(&[("ttl", "warn"), ("eviction", "warn")]),
        "{report:#}"
    );
    assert_eq!(code, 1);
    assert!(message(&report, "ttl").contains("expires in"), "{report:#}");
}

#[test]
fn keyspace_notifications_off() {
    let redis = production(&["--notify-keyspace-events", ""]);
    set_flags(&redis, &[]);
    let (code, report) = doctor(&uri(&redis), &[]);
    assert_eq!(
        not_ok(&report),
        expect(&[("notifications", "warn")]),
        "{report:#}"
    );
    assert_eq!(code, 1);
    // Only reported: the doctor changes nothing.
    let current: Vec<String> = admin_cmd(&redis, &["CONFIG", "GET", "notify-keyspace-events"]);
    assert_eq!(current[1], "");
}

#[test]
fn config_renamed_away() {
    let redis = production(&["--rename-command", "CONFIG", ""]);
    set_flags(&redis, &[]);
    let (code, report) = doctor(&uri(&redis), &[]);
    // Persistence, memory and eviction fall back to INFO: only the notification setting
    // cannot be read, once. Not a risk: the service falls back to CLIENT TRACKING.
    assert_eq!(
        not_ok(&report),
        expect(&[("notifications", "skipped")]),
        "{report:#}"
    );
    assert_eq!(code, 0);
    let m = message(&report, "notifications");
    assert!(
        m.starts_with("could not check") && m.contains("CLIENT TRACKING"),
        "{m}"
    );
    assert!(
        message(&report, "rights_config_set").contains("not available"),
        "{report:#}"
    );
}

#[test]
fn a_missing_key_and_a_refused_document_fail() {
    let redis = production(&[]);
    let (code, report) = doctor(&uri(&redis), &[]);
    assert_eq!(
        not_ok(&report),
        expect(&[
            ("key", "fail"),
            ("ttl", "skipped"),
            ("size", "skipped"),
            ("document", "skipped")
        ]),
        "{report:#}"
    );
    assert_eq!(code, 2);

    let _: () = admin_cmd(&redis, &["SET", "flags", "{\"flags\": "]);
    let (code, report) = doctor(&uri(&redis), &[]);
    assert_eq!(
        not_ok(&report),
        expect(&[("document", "fail")]),
        "{report:#}"
    );
    assert_eq!(code, 2);
}

#[test]
fn an_acl_user_without_subscribe() {
    let redis = production(&[]);
    set_flags(&redis, &[]);
    // The least-privilege user of the Redis notes (with +client|tracking, the service's
    // trigger when it cannot confirm notifications), and the same without SUBSCRIBE and
    // without tracking.
    let least = |user: &str, extra: &[&str]| {
        let mut args = vec![
            "ACL",
            "SETUSER",
            user,
            "on",
            ">pw",
            "resetkeys",
            "resetchannels",
            "-@all",
            "+ping",
            "+get",
            "+unsubscribe",
            "+eval_ro",
            "+evalsha_ro",
            "+script|load",
            "%R~flags",
            "%R~flags:*",
            "&__keyspace@0__:flags",
        ];
        args.extend_from_slice(extra);
        let _: () = admin_cmd(&redis, &args);
    };
    least("watcher", &["+subscribe", "+client|tracking"]);
    least("nosub", &[]);
    // What a restricted user cannot see is "could not check", never a failure.
    let restricted = [
        ("persistence", "skipped"),
        ("maxmemory", "skipped"),
        ("eviction", "skipped"),
        ("notifications", "skipped"),
        ("clients", "skipped"),
        ("ttl", "skipped"),
    ];

    let watcher = format!("redis://watcher:pw@127.0.0.1:{}/0?key=flags", redis.port);
    let (code, report) = doctor(&watcher, &[]);
    assert_eq!(not_ok(&report), expect(&restricted), "{report:#}");
    assert_eq!(code, 0);
    // HELLO still tells the version and the role.
    assert_eq!(levels(&report)["version"], "ok");
    assert_eq!(levels(&report)["replication"], "ok");

    let nosub = format!("redis://nosub:pw@127.0.0.1:{}/0?key=flags", redis.port);
    let (code, report) = doctor(&nosub, &[]);
    let mut want = expect(&restricted);
    want.insert("rights_subscribe".into(), "fail".into());
    // Neither CONFIG nor tracking: only the poll would notice changes; said once.
    want.insert("rights_config_set".into(), "warn".into());
    assert_eq!(not_ok(&report), want, "{report:#}");
    assert_eq!(code, 2);
    assert!(
        message(&report, "rights_subscribe").contains("may not SUBSCRIBE"),
        "{report:#}"
    );
    assert!(!report.to_string().contains(":pw@"), "{report:#}");
}

#[tokio::test]
async fn a_replica_then_its_master_gone() {
    // No 5 s wait for more replicas before a diskless full sync.
    let master = production(&["--repl-diskless-sync-delay", "0"]);
    set_flags(&master, &[]);
    let master_port = master.port.to_string();
    let replica = production(&["--replicaof", "127.0.0.1", &master_port, "--masterauth", PW]);
    let link = |want: &'static str| {
        let replica = &replica;
        eventually(WAIT, want, move || async move {
            let info: String = admin_cmd(replica, &["INFO", "replication"]);
            info.contains(&format!("master_link_status:{want}"))
                .then_some(())
        })
    };
    link("up").await.unwrap();
    eventually(WAIT, "the key on the replica", || async {
        admin_cmd::<Option<String>>(&replica, &["GET", "flags"]).map(|_| ())
    })
    .await
    .unwrap();

    let (code, report) = doctor(&uri(&replica), &[]);
    assert_eq!(not_ok(&report), expect(&[]), "{report:#}");
    assert_eq!(code, 0);
    let m = message(&report, "replication");
    assert!(
        m.contains("replica of 127.0.0.1:") && m.contains("link up"),
        "{m}"
    );

    drop(master);
    link("down").await.unwrap();
    let (code, report) = doctor(&uri(&replica), &[]);
    assert_eq!(
        not_ok(&report),
        expect(&[("replication", "fail")]),
        "{report:#}"
    );
    assert_eq!(code, 2);
}

#[test]
fn no_redis_is_one_connection_failure() {
    let port = free_port();
    let (code, report) = doctor(&format!("redis://127.0.0.1:{port}/0?key=flags"), &[]);
    assert_eq!(
        levels(&report),
        expect(&[("connection", "fail")]),
        "{report:#}"
    );
    assert_eq!(code, 2);
    let (code, _, err) = run(&["doctor", "--redis-uri", "redis://h/0"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no key"), "{err}");
}

/// Closes the service's Redis connection from the server side (it is subscribed, so of
/// type pubsub); the service reconnects.
fn drop_service_connection(redis: &RedisServer) {
    let killed: i64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    assert_eq!(killed, 1, "the service's connection");
}

/// The label set of one doctor series in Prometheus text.
fn finding_metric(check: &str, level: &str) -> String {
    format!("flagd_redis_sync_doctor_findings{{check=\"{check}\",level=\"{level}\"}}")
}

#[tokio::test]
async fn the_service_reports_findings_at_start_up_and_after_each_reconnect() {
    let fixture = Fixture::new(doc("f", "on")).redis_args(&[
        "--maxmemory",
        "100mb",
        "--maxmemory-policy",
        "allkeys-lru",
    ]);
    let (redis, svc) = fixture.start_service(&[]).await.unwrap();
    svc.wait_ready().await.unwrap();
    svc.readyz_until("findings in /readyz", |_, v| {
        v["findings"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["check"] == "eviction" && f["level"] == "warn")
        })
    })
    .await;
    let (_, v) = svc.readyz().await;
    let findings = v["findings"].as_array().unwrap();
    let checks: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    // The service validates the document itself; the rest as the subcommand.
    for c in ALL_CHECKS
        .iter()
        .filter(|c| !matches!(**c, "connection" | "document"))
    {
        assert!(checks.contains(c), "{c} missing from /readyz: {v:#}");
    }
    assert_eq!(checks.len(), findings.len(), "a check listed twice: {v:#}");
    assert_eq!(svc.metric(&finding_metric("eviction", "warn")).await, 1.0);
    assert_eq!(svc.metric(&finding_metric("eviction", "ok")).await, 0.0);
    // The service set notifications itself before the checks ran.
    assert_eq!(
        svc.metric(&finding_metric("notifications", "ok")).await,
        1.0
    );

    // Fixed in Redis, then a reconnect: the checks run again and the alert clears.
    let _: () = redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    drop_service_connection(&redis);
    svc.metric_reaches("flagd_redis_sync_redis_reconnects_total", 1.0)
        .await;
    svc.metric_reaches(&finding_metric("eviction", "ok"), 1.0)
        .await;
    assert_eq!(svc.metric(&finding_metric("eviction", "warn")).await, 0.0);
    svc.readyz_until("eviction ok in /readyz", |_, v| {
        v["findings"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["check"] == "eviction" && f["level"] == "ok")
        })
    })
    .await;

    // Warnings found at both connects are logged once.
    let logs = svc.logs();
    let persistence = logs
        .lines()
        .filter(|l| l.contains("redis doctor:") && l.contains("check=\"persistence\""))
        .count();
    assert_eq!(persistence, 1, "{logs}");
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("redis doctor:") && l.contains("check=\"eviction\""))
            .count(),
        1,
        "{logs}"
    );
}

// ---------------------------------------------------------------------------------------
// Monitoring: docs/monitoring/grafana-dashboard.json and alerts.yml.

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Metric names (ours and flagd's) in a PromQL expression or any text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["flagd_redis_sync_", "feature_flag_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
    }
    out
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The dashboard, parsed: every PromQL expression in it.
fn dashboard_exprs() -> Vec<String> {
    let dash: Value = serde_json::from_str(&repo_file("docs/monitoring/grafana-dashboard.json"))
        .expect("the dashboard is JSON");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        let targets = panel["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {title} has no query"
        );
        for t in targets.unwrap() {
            let e = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: no expr"));
            assert!(!metric_names(e).is_empty(), "panel {title}: {e}");
            exprs.push(e.to_string());
        }
    }
    // Template variables query metrics too.
    let mut all = Vec::new();
    strings(&dash["templating"], &mut all);
    exprs.extend(all.into_iter().filter(|s| !metric_names(s).is_empty()));
    exprs
}

/// The alerting rules: (alert name, expr) for each rule, read from the YAML structure
/// (`- alert:` items with an `expr:` scalar, plain or a `|`/`>` block).
fn alert_rules() -> Vec<(String, String)> {
    let text = repo_file("docs/monitoring/alerts.yml");
    assert!(text.trim_start().starts_with("groups:"), "not a rules file");
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            rules.push((name.trim().to_string(), String::new()));
        } else if let Some(v) = t.strip_prefix("expr:") {
            let rule = rules.last_mut().expect("expr before any alert");
            let v = v.trim();
            if v.starts_with('|') || v.starts_with('>') {
                let base = indent(lines[i]);
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > base)
                {
                    i += 1;
                    rule.1.push_str(lines[i].trim());
                    rule.1.push('\n');
                }
            } else {
                rule.1 = v.to_string();
            }
        }
        i += 1;
    }
    for (name, expr) in &rules {
        assert!(!expr.trim().is_empty(), "alert {name} has no expr");
        // The service's metrics, or `up`, which Prometheus itself records per target.
        assert!(
            !metric_names(expr).is_empty() || expr.contains("up{job="),
            "alert {name} queries no metric: {expr}"
        );
    }
    rules
}

/// Sample names in Prometheus text (histogram series carry their _bucket/_sum/_count).
fn sample_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dashboard_and_the_alerts_cover_what_the_issue_asks() {
    let exprs = dashboard_exprs().join("\n");
    for want in [
        "feature_flag_flagd_sync_active_streams",
        "flagd_redis_sync_pushes_total",
        "flagd_redis_sync_propagation_duration_seconds_bucket",
        "flagd_redis_sync_documents_refused_total",
        "flagd_redis_sync_redis_up",
        "flagd_redis_sync_redis_reconnects_total",
        "flagd_redis_sync_document_last_change_seconds",
        "flagd_redis_sync_doctor_findings",
        "flagd_redis_sync_streams_state",
        "flagd_redis_sync_streams_oldest_behind_seconds",
    ] {
        assert!(exprs.contains(want), "the dashboard does not show {want}");
    }
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "duplicate alert names: {rules:?}");
    let rule = |metric: &str| rules.iter().any(|(_, e)| e.contains(metric));
    assert!(rule("flagd_redis_sync_redis_up"), "Redis down");
    assert!(
        rule("flagd_redis_sync_documents_refused_total"),
        "document refused"
    );
    assert!(
        rule("flagd_redis_sync_notifications_total"),
        "writes without changes"
    );
    assert!(
        rule("feature_flag_flagd_sync_active_streams"),
        "streams dropped to zero"
    );
    assert!(rule("flagd_redis_sync_doctor_findings"), "doctor findings");
    assert!(rule("flagd_redis_sync_streams_state"), "stalled streams");
    assert!(
        rule("flagd_redis_sync_streams_oldest_behind_seconds"),
        "streams behind"
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_exists_in_metrics() {
    let mut wanted = BTreeSet::new();
    for e in dashboard_exprs() {
        wanted.extend(metric_names(&e));
    }
    for (_, e) in alert_rules() {
        wanted.extend(metric_names(&e));
    }

    // Make the service observe everything once: a document, a stream, a change by
    // notification, a duplicate, a refusal, a poll, a reconnect, the doctor.
    let t = start_server(&doc("f", "one"), &["--redis-interval", "1"])
        .await
        .unwrap();
    let (redis, svc, mut s) = (t.redis, t.svc, t.stream);
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    redis.set("flags", &doc("f", "two")).unwrap();
    svc.metric_reaches("flagd_redis_sync_documents_duplicates_total", 1.0)
        .await;
    redis.set("flags", "{not json").unwrap();
    svc.readyz_until("refused", |_, v| v["key"]["state"] == "refused")
        .await;
    drop_service_connection(&redis);
    svc.metric_reaches("flagd_redis_sync_redis_reconnects_total", 1.0)
        .await;
    svc.metric_reaches("flagd_redis_sync_polls_total", 1.0)
        .await;

    let missing = eventually(WAIT, "every queried metric on /metrics", || async {
        let (_, body) = svc.http_get("/metrics").await.ok()?;
        let have = sample_names(&body);
        let missing: Vec<&String> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        missing.is_empty().then_some(())
    })
    .await;
    if let Err(e) = missing {
        let (_, body) = svc.http_get("/metrics").await.unwrap();
        let have = sample_names(&body);
        let missing: Vec<&String> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        panic!("{e}: not on /metrics: {missing:?}\n{body}");
    }
    drop(s);
}

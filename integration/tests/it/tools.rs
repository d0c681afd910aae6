//! The operator subcommands against real processes: `put`, `watch`, `healthcheck`,
//! `validate`, each with bad input too. Every child runs under a timeout and is killed
//! on drop.

use integration::*;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(binary());
    c.args(args)
        .env_remove("REDIS_URI")
        .env_remove("REDIS_SYNC_MANAGEMENT_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run_with_stdin(args: &[&str], stdin: Option<&str>) -> Out {
    run_with(args, stdin, &[]).await
}

/// Runs the binary with `args`, `stdin` piped in when given and `envs` set, under a
/// deadline.
pub(crate) async fn run_with(args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Out {
    let mut c = command(args);
    c.envs(envs.iter().copied());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().expect("spawning flagd-redis-sync");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit within {WAIT:?}"))
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the binary with `args` under a deadline.
pub(crate) async fn run(args: &[&str]) -> Out {
    run_with_stdin(args, None).await
}

pub(crate) fn file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

/// The published document's full digest, from /readyz.
async fn served_digest(svc: &Service) -> String {
    let (_, v) = svc.readyz().await;
    v["document"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> String {
    free_port().to_string()
}

// ---- put ----

#[tokio::test]
async fn put_stores_a_valid_document_and_the_service_pushes_it() {
    let t = start_server(&doc("f", "one"), &[]).await.unwrap();
    let (redis, svc, mut s) = (t.redis, t.svc, t.stream);

    let dir = tempfile::tempdir().unwrap();
    let text = doc("f", "two");
    let path = file(&dir, "flags.json", &text);
    let out = run(&["put", "--redis-uri", &redis.uri("flags"), &path]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(redis.cmd::<String>(&["GET", "flags"]).unwrap(), text);
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    // The digest printed is the one the service serves.
    svc.readyz_until("the new document", |_, v| {
        v["document"]["flags"] == 1
            && out
                .stdout
                .contains(v["document"]["digest"].as_str().unwrap_or("-"))
    })
    .await;
    assert!(out.stdout.contains("1 flags"), "{}", out.stdout);

    // Standard input, and the REDIS_URI variable instead of the flag.
    let out = command(&["put", "-"])
        .env("REDIS_URI", redis.uri("flags"))
        .stdin(Stdio::piped())
        .spawn()
        .map(|mut child| {
            let mut pipe = child.stdin.take().unwrap();
            (child, async move {
                pipe.write_all(doc("f", "three").as_bytes()).await.unwrap();
            })
        })
        .unwrap();
    let (child, write) = out;
    write.await;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("three")
    );
}

#[tokio::test]
async fn put_refuses_an_invalid_document_and_leaves_the_key_alone() {
    let redis = RedisServer::start().unwrap();
    let good = doc("f", "one");
    redis.set("flags", &good).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (content, want) in [
        (
            r#"{"flags":{"f":{"state":"ON","variants":{"a":1},"defaultVariant":"a"}}}"#,
            "refused: /flags/f/state",
        ),
        (
            "{\n  \"flags\": {\n    \"f\": {\"state\": ENABLED}\n  }\n}",
            "at line 3 column 20 (in /flags/f/state)",
        ),
        (r#"{"flagz":{}}"#, "missing required member \"flags\""),
    ] {
        let path = file(&dir, "bad.json", content);
        let out = run(&["put", "--redis-uri", &redis.uri("flags"), &path]).await;
        assert_eq!(out.code, 1, "{content}: {}", out.all());
        assert!(out.stderr.contains(want), "{content}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        // The same message as validate.
        let v = run(&["validate", &path]).await;
        assert_eq!(v.stderr, out.stderr);
        assert_eq!(redis.cmd::<String>(&["GET", "flags"]).unwrap(), good);
    }
}

#[tokio::test]
async fn put_bad_input_exits_with_distinct_codes_and_no_secrets() {
    let redis = RedisServer::start_with(&["--requirepass", "hunter2"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "flags.json", &doc("f", "one"));
    let port = redis.port;
    let ok_uri = format!("redis://:hunter2@127.0.0.1:{port}/0?key=flags");

    // File unreadable: 2.
    let out = run(&["put", "--redis-uri", &ok_uri, "/nonexistent/flags.json"]).await;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
    // Bad URI: 64.
    let out = run(&["put", "--redis-uri", "redis://:hunter2@h/0", &path]).await;
    assert_eq!(out.code, 64, "{}", out.all());
    assert!(out.stderr.contains("no key"), "{}", out.stderr);
    // Wrong password, and nothing listening: 3.
    let wrong = format!("redis://:nope-secret@127.0.0.1:{port}/0?key=flags");
    let closed = format!("redis://:hunter2@127.0.0.1:{}/0?key=flags", closed_port());
    for uri in [&wrong, &closed] {
        let out = run(&["put", "--redis-uri", uri, &path]).await;
        assert_eq!(out.code, 3, "{}", out.all());
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(!out.all().contains("hunter2"), "{}", out.all());
        assert!(!out.all().contains("nope-secret"), "{}", out.all());
    }
    // Bad --if-digest: 64. Missing arguments: clap's usage error.
    let out = run(&["put", "--redis-uri", &ok_uri, "--if-digest", "xyz", &path]).await;
    assert_eq!(out.code, 64, "{}", out.all());
    let out = run(&["put", &path]).await;
    assert_eq!(out.code, 64, "{}", out.all());
    assert!(out.stderr.contains("--redis-uri"), "{}", out.stderr);
    // Nothing was written by any of these.
    let mut con = redis.client().get_connection().unwrap();
    let exists: i64 = redis::cmd("AUTH")
        .arg("hunter2")
        .query::<()>(&mut con)
        .and_then(|_| redis::cmd("EXISTS").arg("flags").query(&mut con))
        .unwrap();
    assert_eq!(exists, 0);
    // And the right password works.
    let out = run(&["put", "--redis-uri", &ok_uri, &path]).await;
    assert_eq!(out.code, 0, "{}", out.all());
}

#[tokio::test]
async fn put_needs_no_config_rights() {
    // An ACL user that may only SET (and GET, for --if-digest) the flag key.
    let redis = RedisServer::start_with(&["--rename-command", "CONFIG", ""]).unwrap();
    redis
        .cmd::<()>(&[
            "ACL", "SETUSER", "writer", "on", ">w-pass", "~flags", "+set", "+get", "+eval",
            "+hello", "+ping",
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "flags.json", &doc("f", "one"));
    let uri = format!("redis://writer:w-pass@127.0.0.1:{}/0?key=flags", redis.port);
    let out = run(&["put", "--redis-uri", &uri, &path]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        redis.cmd::<String>(&["GET", "flags"]).unwrap(),
        doc("f", "one")
    );
    // A key outside the user's pattern: NOPERM, exit 3, one line.
    let other = format!("redis://writer:w-pass@127.0.0.1:{}/0?key=other", redis.port);
    let out = run(&["put", "--redis-uri", &other, &path]).await;
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains("NOPERM") || out.stderr.to_lowercase().contains("permission"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn put_if_digest_is_a_compare_and_set() {
    let fixture = Fixture::new(doc("f", "one"));
    let (redis, svc) = fixture.start_service(&[]).await.unwrap();
    svc.wait_ready().await.unwrap();
    let current = served_digest(&svc).await;
    let dir = tempfile::tempdir().unwrap();
    let two = file(&dir, "two.json", &doc("f", "two"));
    let three = file(&dir, "three.json", &doc("f", "three"));
    let uri = redis.uri("flags");

    // The digest the service serves (short form) matches: stored.
    let out = run(&[
        "put",
        "--redis-uri",
        &uri,
        "--if-digest",
        &current[..12],
        &two,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        redis.cmd::<String>(&["GET", "flags"]).unwrap(),
        doc("f", "two")
    );
    // The same, now stale, digest: refused, key unchanged.
    let out = run(&["put", "--redis-uri", &uri, "--if-digest", &current, &three]).await;
    assert_eq!(out.code, 6, "a compare-and-set conflict: {}", out.all());
    assert!(out.stderr.contains("someone changed it"), "{}", out.stderr);
    assert_eq!(
        redis.cmd::<String>(&["GET", "flags"]).unwrap(),
        doc("f", "two")
    );
    // A missing key has no digest.
    let out = run(&[
        "put",
        "--redis-uri",
        &redis.uri("nokey"),
        "--if-digest",
        &current,
        &three,
    ])
    .await;
    assert_eq!(out.code, 6, "{}", out.all());
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

// ---- watch ----

#[tokio::test]
async fn watch_prints_a_line_per_document_and_exits_after_count() {
    let fixture = Fixture::new(doc("f", "one"));
    let (redis, svc) = fixture.start_service(&[]).await.unwrap();
    svc.wait_ready().await.unwrap();
    let first_digest = served_digest(&svc).await;
    let target = format!("127.0.0.1:{}", svc.grpc_port);
    let mut child = command(&["watch", &target, "--count", "2"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("no first line")
        .unwrap()
        .expect("stdout closed");
    assert!(
        first.contains(&format!("digest={}", &first_digest[..12])),
        "{first}"
    );
    assert!(first.contains("flags=1"), "{first}");
    assert!(
        first.contains(&format!("bytes={}", doc("f", "one").len())),
        "{first}"
    );
    assert!(
        first.chars().nth(4) == Some('-') && first.contains('T'),
        "{first}"
    );

    let two = r#"{"flags":{"f":{"state":"ENABLED","variants":{"v":"two"},"defaultVariant":"v"},"g":{"state":"DISABLED","variants":{"x":1},"defaultVariant":"x"}}}"#;
    redis.set("flags", two).unwrap();
    let second = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("no second line")
        .unwrap()
        .expect("stdout closed");
    assert!(second.contains("flags=2"), "{second}");
    assert!(!second.contains(&first_digest[..12]), "{second}");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("watch did not exit after --count 2")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn watch_json_and_selector() {
    let fixture = Fixture::new(
        r#"{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","metadata":{"flagSetId":"s1"}},"b":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}"#,
    );
    let (_redis, svc) = fixture.start_service(&[]).await.unwrap();
    let target = format!("http://127.0.0.1:{}", svc.grpc_port);
    let out = run(&[
        "watch",
        &target,
        "--json",
        "--count",
        "1",
        "--selector",
        "flagSetId=s1",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["flags"], 1, "{v}");
    assert_eq!(v["digest"].as_str().unwrap().len(), 12);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(v["bytes"].as_u64().unwrap() > 0);
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    let out = run(&["watch", &target, "--count", "1", "--print-document"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].contains("flags=2"), "{}", lines[0]);
    let doc: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert!(doc["flags"]["b"].is_object());
}

#[tokio::test]
async fn watch_bad_input_and_a_stream_that_ends() {
    // Nothing listening: 1 with the reason.
    let out = run(&[
        "watch",
        &format!("127.0.0.1:{}", closed_port()),
        "--count",
        "1",
    ])
    .await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    // Not a target: 64.
    for bad in ["localhost", "https://h:1", "::::"] {
        let out = run(&["watch", bad]).await;
        assert_eq!(out.code, 64, "{bad}: {}", out.all());
    }
    let out = run(&["watch"]).await;
    assert_eq!(out.code, 64, "{}", out.all());
    assert!(out.stderr.contains("TARGET"), "{}", out.stderr);

    let fixture = Fixture::new(doc("f", "one"));
    let (_redis, mut svc) = fixture.start_service(&[]).await.unwrap();
    let target = format!("127.0.0.1:{}", svc.grpc_port);
    // A selector the server refuses: INVALID_ARGUMENT, printed, exit 1.
    let out = run(&["watch", &target, "--selector", "colour=blue"]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("InvalidArgument"), "{}", out.stderr);

    // The server shuts down under a live watch: exit 1 with the status.
    let mut child = command(&["watch", &target]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("no first line")
        .unwrap()
        .expect("stdout closed");
    svc.sigterm();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("watch did not exit when the server shut down")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stream ended after 1 documents: Unavailable"),
        "{stderr}"
    );
    svc.wait_exit(WAIT).await.unwrap();
}

// ---- healthcheck ----

#[tokio::test]
async fn healthcheck_is_0_when_ready_and_1_otherwise() {
    let fixture = Fixture::new(doc("f", "one"));
    let (_redis, svc) = fixture.start_service(&[]).await.unwrap();
    svc.wait_ready().await.unwrap();
    let port = svc.mgmt_port.to_string();
    let out = run(&["healthcheck", "--port", &port]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.starts_with("ready: digest "), "{}", out.stdout);
    // The service's own variable sets the port (a container probing itself).
    let out = command(&["healthcheck"])
        .env("REDIS_SYNC_MANAGEMENT_PORT", &port)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Liveness through --url.
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = run(&["healthcheck", "--url", &url]).await;
    assert_eq!(out.code, 0, "{}", out.all());

    // Up, but no document: the key does not exist.
    let empty = RedisServer::start().unwrap();
    let svc = Service::start(&empty.uri("flags"), &[]).await.unwrap();
    svc.readyz_until("key missing", |_, v| v["key"]["state"] == "missing")
        .await;
    let out = run(&["healthcheck", "--port", &svc.mgmt_port.to_string()]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(
        out.stdout.trim(),
        "not ready (HTTP 503): no valid flag document yet (the flag key does not exist)"
    );

    // A refused document.
    empty
        .set("flags", r#"{"flags":{"f":{"state":"ON"}}}"#)
        .unwrap();
    svc.readyz_until("key refused", |_, v| v["key"]["state"] == "refused")
        .await;
    let out = run(&["healthcheck", "--port", &svc.mgmt_port.to_string()]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("refused document: /flags/f"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn healthcheck_bad_input() {
    // Nothing listening.
    let out = run(&["healthcheck", "--port", &closed_port()]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .starts_with("cannot connect to http://127.0.0.1:"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.trim().lines().count(), 1);
    // Something that is not HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Read the request first: closing with it unread would reset the connection.
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        let _ = s.write_all(b"SSH-2.0-nope\r\n\r\n").await;
        let _ = s.shutdown().await;
    });
    let out = run(&["healthcheck", "--port", &port.to_string()]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("not an HTTP/1.x response"),
        "{}",
        out.stdout
    );
    server.abort();
    // A server that never answers: the timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = run(&["healthcheck", "--port", &port.to_string(), "--timeout", "1"]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("no answer within 1s"), "{}", out.stdout);
    drop(listener);
    // Bad arguments.
    let out = run(&["healthcheck", "--url", "https://h/readyz"]).await;
    assert_eq!(out.code, 64, "{}", out.all());
    let out = run(&["healthcheck", "--port", "99999"]).await;
    assert_eq!(out.code, 64, "{}", out.all());
}

// ---- validate ----

#[tokio::test]
async fn validate_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(&dir, "good.json", &doc("f", "one"));
    let bad = file(&dir, "bad.json", r#"{"flags":{"f":{"state":"ENABLED"}}}"#);
    let broken = file(&dir, "broken.json", "{\"flags\": {\"f\": }}");
    let missing = dir.path().join("missing.json").display().to_string();

    let out = run(&["validate", &good, &good]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.lines().count(), 2);
    assert!(
        out.stdout.contains("good.json: ok (1 flags, digest "),
        "{}",
        out.stdout
    );

    let out = run(&["validate", &good, &bad]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("bad.json: refused: /flags/f"),
        "{}",
        out.stderr
    );

    let out = run(&["validate", &broken]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("not valid JSON: expected value at line 1 column 17 (in /flags/f)"),
        "{}",
        out.stderr
    );

    let out = run(&["validate", &missing]).await;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("missing.json: cannot read"),
        "{}",
        out.stderr
    );
    // Unreadable wins over refused, and every file is still reported.
    let out = run(&["validate", &bad, &missing, &good]).await;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stdout.contains("good.json: ok"), "{}", out.stdout);
    assert!(out.stderr.contains("bad.json: refused"), "{}", out.stderr);

    // Standard input.
    let out = run_with_stdin(&["validate", "-"], Some(&doc("f", "one"))).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let out = run_with_stdin(&["validate", "-"], Some("[]")).await;
    assert_eq!(out.code, 1, "{}", out.all());
    // No file at all: a usage error.
    let out = run(&["validate"]).await;
    assert_eq!(out.code, 64, "{}", out.all());
}

#[tokio::test]
async fn put_takes_the_password_and_tls_files_like_the_service() {
    let redis = RedisServer::start_with(&["--requirepass", "pw-from-env"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "flags.json", &doc("f", "one"));
    let pw_file = file(&dir, "pw", "pw-from-env\n");
    let empty = file(&dir, "empty", "\n");
    let uri = redis.uri("flags");

    let out = command(&["put", "--redis-uri", &uri, &path])
        .env("REDIS_PASSWORD", "pw-from-env")
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = run(&[
        "put",
        "--redis-uri",
        &uri,
        "--redis-password-file",
        &pw_file,
        &path,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    // Without it: NOAUTH, exit 3.
    let out = run(&["put", "--redis-uri", &uri, &path]).await;
    assert_eq!(out.code, 3, "{}", out.all());
    // Both given, an empty file, TLS files on a plain URI: usage errors.
    let out = command(&[
        "put",
        "--redis-uri",
        &uri,
        "--redis-password-file",
        &pw_file,
        &path,
    ])
    .env("REDIS_PASSWORD", "pw-from-env")
    .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = run(&[
        "put",
        "--redis-uri",
        &uri,
        "--redis-password-file",
        &empty,
        &path,
    ])
    .await;
    assert_eq!(out.code, 64, "{}", out.all());
    let out = run(&[
        "put",
        "--redis-uri",
        &uri,
        "--redis-ca-path",
        &pw_file,
        &path,
    ])
    .await;
    assert_eq!(out.code, 64, "{}", out.all());
    assert!(out.stderr.contains("rediss://"), "{}", out.stderr);
    assert!(!out.all().contains("pw-from-env"));
}

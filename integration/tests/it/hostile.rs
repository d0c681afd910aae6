//! Hostile and heavy input (issue 17): whatever a writer or a peer sends, the service
//! stays within its stated bounds, says why it refused something, and keeps serving the
//! last good flags.

use integration::*;
use serde_json::Value;
use std::time::Duration;

/// A document of `n` flags whose set-level metadata holds `meta_bytes` bytes.
fn doc_with_metadata(n: usize, meta_bytes: usize) -> String {
    let flags: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#""f{i}":{{"state":"ENABLED","variants":{{"on":true,"off":false}},"defaultVariant":"on"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"flags":{{{}}},"metadata":{{"flagSetId":"big","note":"{}"}}}}"#,
        flags.join(","),
        "x".repeat(meta_bytes)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_document_over_the_limit_is_refused_and_the_last_good_one_kept() {
    let redis = RedisServer::start().unwrap();
    redis.set("a", &doc("base", "1")).unwrap();
    redis.set("b", &doc_with_metadata(2, 10)).unwrap();
    let svc = Service::start(
        &redis.uri("a"),
        &["--source", "b=b", "--max-payload-bytes", "20000"],
    )
    .await
    .unwrap();
    let mut merged = svc.stream("").await.unwrap();
    let first = merged.next_json().await.unwrap();
    assert_eq!(first["flags"].as_object().unwrap().len(), 3, "{first}");

    // 100 flags and 150 bytes of set metadata: 8 KB as stored, within the limit; but
    // merged, the metadata is copied into each flag (as flagd does): over 20 KB.
    let big = doc_with_metadata(100, 150);
    assert!(big.len() < 10_000, "{}", big.len());
    redis.set("b", &big).unwrap();
    svc.readyz_until("the merge refused", |_, v| v["merge_refused"].is_string())
        .await;
    let (code, ready) = svc.readyz().await;
    assert_eq!(code, 200, "the last good flags are served: {ready}");
    let why = ready["merge_refused"].as_str().unwrap();
    assert!(
        why.contains("above the limit of 20000 bytes") && why.contains("b ("),
        "{why}"
    );
    assert_eq!(ready["sources"]["b"]["state"], "valid", "{ready}");
    assert!(
        svc.logs().contains("merged flag document refused"),
        "{}",
        svc.logs()
    );
    merged
        .expect_silence(Duration::from_millis(300))
        .await
        .unwrap();

    // Smaller again: served, and /readyz no longer names a refusal.
    redis.set("b", &doc_with_metadata(20, 150)).unwrap();
    let next: Value = merged.next_json().await.unwrap();
    assert_eq!(next["flags"].as_object().unwrap().len(), 21);
    assert_eq!(next["flags"]["f3"]["metadata"]["flagSetId"], "big");
    let (_, ready) = svc.readyz().await;
    assert!(ready.get("merge_refused").is_none(), "{ready}");
}

/// Waits until the server closes a connection (EOF or reset); how long it took.
async fn closed_by_server(s: &mut tokio::net::TcpStream, within: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            // The server's SETTINGS frame: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_the_budget_keeps_the_management_port_answering() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let fixture = Fixture::new(doc("f", "1"));
    let (_redis, svc) = fixture
        .start_service(&["--max-connections", "3"])
        .await
        .unwrap();
    svc.wait_ready().await.unwrap();
    let opened = std::time::Instant::now();
    // The budget: two silent connections and one that stops after the HTTP/2 preface.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            TcpStream::connect(("127.0.0.1", svc.grpc_port))
                .await
                .unwrap(),
        );
    }
    let mut half = TcpStream::connect(("127.0.0.1", svc.grpc_port))
        .await
        .unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    held.push(half);
    // One more is closed at once (accepted in order, after the three).
    let mut over = TcpStream::connect(("127.0.0.1", svc.grpc_port))
        .await
        .unwrap();
    let refused_in = closed_by_server(&mut over, Duration::from_secs(3)).await;
    assert!(refused_in < Duration::from_secs(2), "{refused_in:?}");
    // The management port has its own budget: it answers while gRPC is full, and a
    // silent connection there is closed too.
    let mut silent_mgmt = TcpStream::connect(("127.0.0.1", svc.mgmt_port))
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    let (code, _) = svc.http_get("/healthz").await.unwrap();
    assert_eq!(code, 200);
    eprintln!("/healthz with the gRPC port full: {:?}", asked.elapsed());
    let (_, metrics) = svc.http_get("/metrics").await.unwrap();
    assert!(metrics.contains("reason=\"connection_limit\""), "{metrics}");
    // Each silent connection is closed after the first-request limit (10 s).
    for s in &mut held {
        closed_by_server(s, Duration::from_secs(15)).await;
    }
    let held_for = opened.elapsed();
    eprintln!("silent gRPC connections held for {held_for:?}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&held_for),
        "{held_for:?}"
    );
    closed_by_server(&mut silent_mgmt, Duration::from_secs(5)).await;
    assert!(
        svc.logs().contains("no complete request within"),
        "{}",
        svc.logs()
    );
    assert!(
        svc.logs().contains("connection limit reached"),
        "{}",
        svc.logs()
    );
    // The budget is free again: a real client is served.
    let mut stream = svc.stream("").await.unwrap();
    assert!(stream.next_json().await.unwrap()["flags"]["f"].is_object());
}

/// Runs the binary; (exit code, stderr + stdout, how long it took). Killed after 10 s.
async fn run_bounded(args: &[&str]) -> (i32, String, Duration) {
    let start = std::time::Instant::now();
    let out = crate::tools::run(args).await;
    (out.code, out.stderr + &out.stdout, start.elapsed())
}

#[tokio::test]
async fn every_file_read_is_bounded_and_regular_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 5 * 1024 * 1024]).unwrap();
    let big_secret = dir.path().join("big.secret");
    std::fs::write(&big_secret, vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (big, big_secret, fifo) = (
        big.to_str().unwrap(),
        big_secret.to_str().unwrap(),
        fifo.to_str().unwrap(),
    );
    let uri = "redis://127.0.0.1:1/0?key=flags";
    for (args, want) in [
        (
            vec!["validate", "/dev/zero"],
            "is a character device, not a regular file",
        ),
        (
            vec!["validate", fifo],
            "is a named pipe (FIFO), not a regular file",
        ),
        (vec!["validate", big], "above the limit of 4128768 bytes"),
        (
            vec!["put", "--redis-uri", uri, "/dev/zero"],
            "not a regular file",
        ),
        (
            vec!["--redis-uri", uri, "--redis-password-file", "/dev/zero"],
            "--redis-password-file",
        ),
        (
            vec!["--redis-uri", uri, "--auth-token-file", big_secret],
            "above the limit of 1048576 bytes",
        ),
        (
            vec!["watch", "--token-file", "/dev/zero", "127.0.0.1:1"],
            "not a regular file",
        ),
    ] {
        let (code, text, took) = run_bounded(&args).await;
        assert_ne!(code, 0, "{args:?}: {text}");
        assert!(text.contains(want), "{args:?}: want {want:?} in:\n{text}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_unknown_sources_and_forged_log_lines() {
    let t = start_server(&doc("f", "1"), &[]).await.unwrap();
    let (redis, svc, mut all) = (t.redis, t.svc, t.stream);

    // The same flag twice, under a name holding a newline: refused with a pointer, and
    // the console log line cannot be split in two.
    let flag = r#"{"state":"ENABLED","variants":{"v":"1"},"defaultVariant":"v"}"#;
    redis
        .set(
            "flags",
            &format!(r#"{{"flags":{{"x\nERROR forged":{flag},"x\nERROR forged":{flag}}}}}"#),
        )
        .unwrap();
    svc.readyz_until("the duplicate refused", |_, v| {
        v["key"]["state"] == "refused"
    })
    .await;
    let (_, ready) = svc.readyz().await;
    let why = ready["key"]["reason"].as_str().unwrap();
    assert!(
        why.starts_with("/flags/x\nERROR forged: duplicate member"),
        "{why}"
    );
    let logs = svc.logs();
    assert!(logs.contains(r"x\nERROR forged"), "{logs}");
    assert!(
        !logs.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line:\n{logs}"
    );
    all.expect_silence(Duration::from_millis(200))
        .await
        .unwrap();

    // An unknown source: the flagd-compatible empty set, logged once, counted each time.
    for _ in 0..2 {
        let mut typo = svc.stream("source=typo").await.unwrap();
        assert_eq!(
            typo.next_json().await.unwrap()["flags"],
            serde_json::json!({})
        );
    }
    let logs = svc.logs();
    assert_eq!(
        logs.matches("a client asked for a source that is not configured")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(
        svc.metric("flagd_redis_sync_grpc_unknown_source_total")
            .await,
        2.0
    );
}

#[tokio::test]
async fn range_checks_say_what_is_allowed() {
    for (args, want) in [
        (
            vec!["--redis-uri", "redis://h/0?key=f", "--redis-interval", "-1"],
            "-1 is not in 1..=86400",
        ),
        (
            vec!["--redis-uri", "redis://h/99999999999?key=f"],
            "database must be a number from 0 to 2147483647",
        ),
        (vec!["--redis-uri", "redis://h/0"], "no key"),
    ] {
        let (code, text, _) = run_bounded(&args).await;
        assert_eq!(code, 64, "{args:?}: {text}");
        assert!(text.contains(want), "{args:?}: want {want:?} in:\n{text}");
        assert!(!text.contains("  "), "a run of spaces: {text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    }
}

/// A flag key deleted and recreated as another type is noticed at the event (the poll is
/// an hour away), refused with one line naming the type TYPE reports, and the last good
/// flags kept; its return as a document is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_recreated_as_another_type_is_seen_at_once_and_named() {
    let fixture = Fixture::new(doc("first", "1")).key("k");
    let t = fixture.start(&["--redis-interval", "3600"]).await.unwrap();
    let (redis, svc, mut stream, first) = (t.redis, t.svc, t.stream, t.first);
    assert!(first["flags"]["first"].is_object(), "{first}");
    // One source: `key` is its state.
    let source = |v: &Value| Some(v["key"].clone()).filter(|k| k.is_object());

    for (make, found) in [
        (&["LPUSH", "k", "x"][..], "list"),
        (&["SADD", "k", "x"][..], "set"),
        (&["HSET", "k", "f", "v"][..], "hash"),
        (&["ZADD", "k", "1", "x"][..], "zset"),
        (&["XADD", "k", "*", "f", "v"][..], "stream"),
    ] {
        let _: i64 = redis.cmd(&["DEL", "k"]).unwrap();
        let _: redis::Value = redis.cmd(make).unwrap();
        let wanted = format!("the key holds a {found}, not a string");
        svc.readyz_until(&wanted, |_, v| {
            source(v).is_some_and(|s| s["reason"].as_str().is_some_and(|r| r.starts_with(&wanted)))
        })
        .await;
        let (code, ready) = svc.readyz().await;
        assert_eq!(code, 200, "the last good flags are still served: {ready}");
    }
    let logs = svc.logs();
    assert!(
        logs.contains("flag key holds a list, not a flag document"),
        "{logs}"
    );
    assert!(
        logs.contains("flag key holds a stream, not a flag document"),
        "{logs}"
    );
    assert!(!logs.contains("@user_script"), "{logs}");
    assert!(!logs.contains("WRONGTYPE"), "{logs}");

    // Deleted, then a document again: served at once and its return logged.
    let _: i64 = redis.cmd(&["DEL", "k"]).unwrap();
    svc.readyz_until("the key missing", |_, v| {
        source(v).is_some_and(|s| s["state"] == "missing")
    })
    .await;
    redis.set("k", &doc("second", "2")).unwrap();
    let next = stream.next_json().await.unwrap();
    assert!(next["flags"]["second"].is_object(), "{next}");
    eventually(Duration::from_secs(5), "the return logged", || async {
        svc.logs().contains("flag key exists again").then_some(())
    })
    .await
    .unwrap();
}

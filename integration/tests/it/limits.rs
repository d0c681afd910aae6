//! Issue 17, the rest: one exit code per class of start-up error, memory given back when
//! idle, HTTP/2 rapid reset against the real server, a key's type change seen at once
//! when CONFIG SET is refused.

use integration::*;
use std::path::Path;

/// Runs the binary with `args` and `envs` until it exits (within `WAIT`); (exit code,
/// stderr, stdout).
async fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = crate::tools::run_with(args, None, envs).await;
    (out.code, out.stderr, out.stdout)
}

/// Runs the service with `args` (a Redis that is never reached: the service fails before
/// it connects) until it exits; (exit code, stderr, stdout).
async fn start_up(args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "--redis-uri",
        "redis://127.0.0.1:1/0?key=flags",
        "--management-port",
        "0",
    ];
    all.extend_from_slice(args);
    run(&all, &[]).await
}

/// [`start_up`] with gRPC TLS from `cert` and `key` on `port`.
async fn start_up_tls(port: &str, cert: &str, key: &str) -> (i32, String, String) {
    start_up(&[
        "--redis-sync-port",
        port,
        "--redis-sync-cert-path",
        cert,
        "--redis-sync-key-path",
        key,
    ])
    .await
}

/// A self-signed certificate for localhost and its key, as PEM files in `dir`.
fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let write = |file: String, text: String| {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        write(format!("{name}.pem"), cert.pem()),
        write(format!("{name}.key"), key.serialize_pem()),
    )
}

/// The one line a configuration error prints, checked to be exactly one.
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected on stderr:\n{stderr}");
    lines[0]
}

#[tokio::test]
async fn a_garbage_certificate_exits_64_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = self_signed(dir.path(), "server");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let garbage = garbage.display().to_string();
    let port = free_port().to_string();
    let (code, stderr, stdout) = start_up_tls(&port, &garbage, &key).await;
    assert_eq!(code, 64, "stderr:\n{stderr}\nstdout:\n{stdout}");
    let line = one_line(&stderr);
    assert!(line.contains(&garbage), "{line}");
    assert!(line.contains("--redis-sync-cert-path"), "{line}");

    // A PEM block that is not a key where the key goes: the same class.
    let (code, stderr, _) =
        start_up_tls(&port, &self_signed(dir.path(), "other").0, &garbage).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(one_line(&stderr).contains(&garbage), "{stderr}");
}

#[tokio::test]
async fn a_certificate_and_key_that_are_not_a_pair_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = self_signed(dir.path(), "a");
    let (_, key_b) = self_signed(dir.path(), "b");
    let (code, stderr, stdout) = start_up_tls(&free_port().to_string(), &cert_a, &key_b).await;
    assert_eq!(code, 64, "stderr:\n{stderr}\nstdout:\n{stdout}");
    let line = one_line(&stderr);
    assert!(line.contains("do not make a usable pair"), "{line}");
    assert!(line.contains(&cert_a) && line.contains(&key_b), "{line}");
}

/// The bind classes (docs/decisions.md): an address not on this host is the
/// configuration's mistake (64); a port another process holds is not (1: the same
/// configuration starts once that process is gone, so a supervisor should retry).
#[tokio::test]
async fn a_bad_address_exits_64_and_a_port_in_use_exits_1() {
    // 192.0.2.1 (TEST-NET-1) is on no interface here.
    let port = free_port().to_string();
    let (code, stderr, stdout) =
        start_up(&["--redis-sync-host", "192.0.2.1", "--redis-sync-port", &port]).await;
    assert_eq!(code, 64, "stderr:\n{stderr}\nstdout:\n{stdout}");
    let line = one_line(&stderr);
    assert!(
        line.contains("--redis-sync-port") && line.contains("192.0.2.1"),
        "{line}"
    );

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let (code, stderr, stdout) =
        start_up(&["--redis-sync-host", "127.0.0.1", "--redis-sync-port", &port]).await;
    assert_eq!(code, 1, "stderr:\n{stderr}\nstdout:\n{stdout}");
    assert!(
        stdout.contains("cannot listen for gRPC") && stdout.contains(&port),
        "the failure is logged with the address:\n{stdout}"
    );
}

/// One HTTP/2 connection that sends SyncFlags requests and resets each at once (HEADERS
/// then RST_STREAM CANCEL), in batches of `batch` queued before the connection writes
/// them, as a rapid-reset client does (CVE-2023-44487), until the service ends the
/// connection (bounded: `WAIT`). Returns the client's address and how the connection
/// ended.
async fn reset_burst(port: u16, batch: usize) -> (std::net::SocketAddr, Result<(), h2::Error>) {
    use tonic::codegen::http;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let me = tcp.local_addr().unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut connection = Box::pin(connection);
    let mut client = Some(client);
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            // Queue a batch without driving the connection, then drive it until it has
            // written them (or ended).
            if let Some(c) = client.as_mut() {
                for _ in 0..batch {
                    let request = http::Request::post(format!(
                        "http://127.0.0.1:{port}/flagd.sync.v1.FlagSyncService/SyncFlags"
                    ))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .unwrap();
                    match c.send_request(request, false) {
                        Ok((_, mut body)) => body.send_reset(h2::Reason::CANCEL),
                        // Closed by the service: the connection's result says how.
                        Err(_) => {
                            client = None;
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                ended = &mut connection => return ended,
                _ = tokio::task::yield_now() => {}
            }
        }
    })
    .await
    .expect("the service did not close the resetting connection");
    (me, ended)
}

/// The service ended the connection: GOAWAY ENHANCE_YOUR_CALM, or (when the client was
/// still writing its burst) the socket closed under it.
fn closed_by_the_service(ended: Result<(), h2::Error>) {
    let e = ended.expect_err("the connection ends with an error, not cleanly");
    let closed = e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
        || e.get_io().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            )
        });
    assert!(closed, "{e:?}");
}

/// The service's rapid-reset WARN lines.
fn reset_warnings(svc: &Service) -> Vec<String> {
    svc.logs()
        .lines()
        .filter(|l| l.contains("rapid-reset guard"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_burst_closes_that_connection_logs_once_and_spares_the_others() {
    let t = start_server(&doc("f", "one"), &[]).await.unwrap();
    let (redis, svc, mut bystander) = (t.redis, t.svc, t.stream);
    assert_eq!(default_value(&t.first, "f").as_deref(), Some("one"));

    // h2 allows 20 streams reset before the server took them: batches of 100.
    let (first_peer, ended) = reset_burst(svc.grpc_port, 100).await;
    closed_by_the_service(ended);
    let lines = eventually(WAIT, "the rapid-reset WARN", || async {
        let lines = reset_warnings(&svc);
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .unwrap();
    let first_seen = tokio::time::Instant::now();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("peer={first_peer}")) && lines[0].contains("connections=1"),
        "the line names the client: {}",
        lines[0]
    );
    assert!(
        !svc.logs().contains("pending-accept streams reached limit"),
        "h2's own per-connection WARN is kept off the log"
    );

    // A second burst within the second: closed the same way, not logged again yet...
    let (_, ended) = reset_burst(svc.grpc_port, 100).await;
    closed_by_the_service(ended);
    // ...but counted: a third burst after the window (1 s from the first line, waited
    // for as such) brings one line with both.
    tokio::time::sleep_until(first_seen + std::time::Duration::from_millis(1100)).await;
    assert_eq!(reset_warnings(&svc).len(), 1, "{:?}", reset_warnings(&svc));
    let (third_peer, ended) = reset_burst(svc.grpc_port, 100).await;
    closed_by_the_service(ended);
    let lines = eventually(WAIT, "the second rapid-reset WARN", || async {
        let lines = reset_warnings(&svc);
        (lines.len() > 1).then_some(lines)
    })
    .await
    .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains(&format!("peer={third_peer}")) && lines[1].contains("connections=2"),
        "{}",
        lines[1]
    );

    // The other client's stream still gets changes, and new clients are served.
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&bystander.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    let mut newcomer = svc.stream("").await.unwrap();
    assert_eq!(
        default_value(&newcomer.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
}

/// With CONFIG refused (renamed away, as on managed Redis) keyspace notifications cannot
/// be confirmed or extended, and CLIENT TRACKING is the trigger: a flag key recreated as a
/// list is still reported at the invalidation, not at the poll (an hour away), and the
/// last good flags stay served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_is_seen_at_once_when_config_set_is_refused() {
    let t = Fixture::new(doc("f", "one"))
        .key("k")
        .redis_args(&["--rename-command", "CONFIG", ""])
        .start(&["--redis-interval", "3600"])
        .await
        .unwrap();
    let (redis, svc, mut stream) = (t.redis, t.svc, t.stream);
    assert_eq!(default_value(&t.first, "f").as_deref(), Some("one"));
    svc.readyz_until("CLIENT TRACKING as the trigger", |_, v| {
        v["trigger"] == "tracking"
    })
    .await;

    let _: i64 = redis.cmd(&["DEL", "k"]).unwrap();
    let _: i64 = redis.cmd(&["LPUSH", "k", "x"]).unwrap();
    let wanted = "the key holds a list, not a string";
    svc.readyz_until(wanted, |_, v| {
        v["key"]["state"] == "refused"
            && v["key"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(wanted))
    })
    .await;
    let (code, ready) = svc.readyz().await;
    assert_eq!(code, 200, "the last good flags are still served: {ready}");
    assert!(
        svc.logs()
            .contains("flag key holds a list, not a flag document"),
        "{}",
        svc.logs()
    );

    // A document again: served at once.
    let _: i64 = redis.cmd(&["DEL", "k"]).unwrap();
    redis.set("k", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&stream.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
}

/// The binary carries jemalloc's options (.cargo/config.toml): freed pages purged after
/// 1 s (`dirty_decay_ms`; jemalloc's default is 10 s) by background threads, so memory
/// goes back to the system soon after a burst of large documents. Read from jemalloc's
/// own statistics, printed at exit on request.
#[tokio::test]
async fn the_allocator_gives_freed_pages_back_within_a_second() {
    let (code, stats, _) = run(&["--version"], &[("_RJEM_MALLOC_CONF", "stats_print:true")]).await;
    assert_eq!(code, 0, "{stats}");
    for want in [
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
        "opt.background_thread: true",
    ] {
        assert!(
            stats.contains(want),
            "{want:?} not in jemalloc's stats:\n{stats}"
        );
    }
}

/// `--redis-sync-socket-path` mistakes are the configuration's: a directory that does not
/// exist, a path that is a regular file (never replaced). Exit 64, one line naming it.
#[tokio::test]
async fn a_bad_socket_path_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/sync.sock");
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    for (path, want) in [
        (&missing, "cannot listen on socket"),
        (&file, "exists and is not a socket"),
    ] {
        let path = path.display().to_string();
        let (code, stderr, stdout) = start_up(&[
            "--redis-sync-port",
            &free_port().to_string(),
            "--redis-sync-socket-path",
            &path,
        ])
        .await;
        assert_eq!(code, 64, "{path}: stderr:\n{stderr}\nstdout:\n{stdout}");
        let line = one_line(&stderr);
        assert!(line.contains(&path) && line.contains(want), "{line}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

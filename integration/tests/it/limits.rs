//! Issue 17, the rest: one exit code per class of start-up error, memory given back when
//! idle, HTTP/2 rapid reset against the real server, a key's type change seen at once
//! when CONFIG SET is refused.

use integration::*;
use std::path::Path;

/// Runs the service with `args` (a Redis that is never reached: the service fails before
/// it connects) until it exits; (exit code, stderr, stdout).
async fn start_up(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(binary())
            .args(["--redis-uri", "redis://127.0.0.1:1/0?key=flags"])
            .args(["--management-port", "0"])
            .args(args)
            .env_remove("REDIS_URI")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the service did not exit at start-up")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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
    let (code, stderr, stdout) = start_up(&[
        "--redis-sync-port",
        &port,
        "--redis-sync-cert-path",
        &garbage,
        "--redis-sync-key-path",
        &key,
    ])
    .await;
    assert_eq!(code, 64, "stderr:\n{stderr}\nstdout:\n{stdout}");
    let line = one_line(&stderr);
    assert!(line.contains(&garbage), "{line}");
    assert!(line.contains("--redis-sync-cert-path"), "{line}");

    // A PEM block that is not a key where the key goes: the same class.
    let (code, stderr, _) = start_up(&[
        "--redis-sync-port",
        &port,
        "--redis-sync-cert-path",
        &self_signed(dir.path(), "other").0,
        "--redis-sync-key-path",
        &garbage,
    ])
    .await;
    assert_eq!(code, 64, "{stderr}");
    assert!(one_line(&stderr).contains(&garbage), "{stderr}");
}

#[tokio::test]
async fn a_certificate_and_key_that_are_not_a_pair_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = self_signed(dir.path(), "a");
    let (_, key_b) = self_signed(dir.path(), "b");
    let (code, stderr, stdout) = start_up(&[
        "--redis-sync-port",
        &free_port().to_string(),
        "--redis-sync-cert-path",
        &cert_a,
        "--redis-sync-key-path",
        &key_b,
    ])
    .await;
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

//! `watch` against a service that serves gRPC over TLS and asks for a bearer token: the
//! way an operator debugs a hardened deployment. Certificates made here with rcgen.

use integration::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::process::Stdio;

/// A CA and a server certificate for localhost / 127.0.0.1, as PEM files in `dir`.
fn pki(dir: &std::path::Path) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "watch test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let path = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        path("ca.pem", ca.pem()),
        path("server.pem", cert.pem()),
        path("server.key", key.serialize_pem()),
    )
}

async fn watch(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(binary())
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("watch did not exit")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn watch_speaks_tls_and_sends_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t0ps3cret\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let tokens = tokens.display().to_string();

    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start(
        &redis.uri("flags"),
        &[
            "--redis-sync-cert-path",
            &cert,
            "--redis-sync-key-path",
            &key,
            "--auth-token-file",
            &tokens,
        ],
    )
    .await
    .unwrap();
    svc.wait_ready().await.unwrap();
    let target = format!("localhost:{}", svc.grpc_port);

    // TLS with the CA and the token: one document.
    let (code, out, err) = watch(&[
        &target,
        "--ca-path",
        &ca,
        "--token-file",
        &tokens,
        "--count",
        "1",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("flags=1"), "{out}");
    // By IP, with the name to verify given.
    let by_ip = format!("https://127.0.0.1:{}", svc.grpc_port);
    let (code, out, err) = watch(&[
        &by_ip,
        "--ca-path",
        &ca,
        "--tls-server-name",
        "localhost",
        "--token-file",
        &tokens,
        "--count",
        "1",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // No token, a wrong one: UNAUTHENTICATED, printed, exit 1; the token never echoed.
    let (code, _, err) = watch(&[&target, "--ca-path", &ca, "--count", "1"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Unauthenticated"), "{err}");
    let (code, _, err) = watch(&[
        &target,
        "--ca-path",
        &ca,
        "--token-file",
        wrong.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Unauthenticated") && !err.contains("nope"),
        "{err}"
    );
    // Plain text against TLS: fails, exit 1.
    let (code, _, err) = watch(&[
        &target,
        "--token-file",
        &tokens,
        "--count",
        "1",
        "--connect-timeout",
        "2",
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    // A CA that did not sign the server's certificate: fails, exit 1.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = pki(other.path());
    let (code, _, err) = watch(&[
        &target,
        "--ca-path",
        &other_ca,
        "--token-file",
        &tokens,
        "--count",
        "1",
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot connect") || err.contains("refused"),
        "{err}"
    );
    // Unreadable files and an empty token: usage errors.
    for args in [
        vec![target.as_str(), "--ca-path", "/nonexistent/ca.pem"],
        vec![
            target.as_str(),
            "--ca-path",
            &ca,
            "--token-file",
            "/nonexistent/t",
        ],
        vec![
            target.as_str(),
            "--ca-path",
            &ca,
            "--token-file",
            empty.to_str().unwrap(),
        ],
        vec!["https://localhost:1"],
    ] {
        let (code, _, err) = watch(&args).await;
        assert_eq!(code, 64, "{args:?}: {err}");
    }
}

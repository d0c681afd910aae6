//! Security, for real: certificates made here with rcgen (a CA, server and client
//! certificates, expired and wrong-host ones), TLS and mutual TLS on the gRPC port with
//! rotation under an open stream, bearer tokens, Redis over TLS (Debian's redis-server
//! `--tls-port`) with a client certificate, a least-privilege ACL user, and secrets kept out
//! of every output.

use anyhow::{Context, Result};
use integration::client::flagd::flag_sync_service_client::FlagSyncServiceClient;
use integration::client::flagd::{GetMetadataRequest, SyncFlagsRequest};
use integration::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority writing its certificates into a temp dir.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: String,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    Server,
    Client,
}

/// A certificate and key written as PEM files.
pub(crate) struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Leaf {
    pub(crate) fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }
    pub(crate) fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
    fn identity(&self) -> Identity {
        Identity::from_pem(
            std::fs::read(&self.cert).unwrap(),
            std::fs::read(&self.key).unwrap(),
        )
    }
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let ca_file = ca_file.to_str().unwrap().to_string();
        Pki { dir, ca, ca_file }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(crate) fn ca(&self) -> &str {
        &self.ca_file
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `names` signed by this CA, written as `<file>.pem` and `<file>.key`
    /// (overwriting: how a rotation looks). Expired if `expired`.
    fn leaf(&self, file: &str, names: &[&str], usage: Use, expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{file} {:?}", Instant::now()));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Use::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Use::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    pub(crate) fn server(&self, file: &str) -> Leaf {
        self.leaf(file, &["localhost", "127.0.0.1"], Use::Server, false)
    }
}

/// A TLS channel to the service's gRPC port, trusting `ca`, as `localhost`.
async fn tls_channel(port: u16, ca_pem: &str, identity: Option<Identity>) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let ch = Channel::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(WAIT)
        .timeout(WAIT);
    Ok(tokio::time::timeout(WAIT, ch.connect())
        .await
        .context("TLS connect timed out")??)
}

/// Opens a SyncFlags stream on `ch` and reads its first message.
async fn first_doc(ch: Channel) -> Result<(SyncStream, serde_json::Value)> {
    let mut c = FlagSyncServiceClient::new(ch);
    let resp = tokio::time::timeout(
        WAIT,
        c.sync_flags(SyncFlagsRequest {
            provider_id: "security".into(),
            selector: String::new(),
        }),
    )
    .await
    .context("SyncFlags timed out")??;
    let mut s = SyncStream(resp.into_inner());
    let doc = s.next_json().await?;
    Ok((s, doc))
}

/// The certificate a fresh TLS handshake on `port` presents (verified against `ca_pem`).
async fn presented_certificate(port: u16, ca_pem: &str) -> Result<Vec<u8>> {
    Ok(handshake(port, ca_pem, rustls::DEFAULT_VERSIONS).await?.0)
}

/// A TLS handshake on `port` offering `versions`: the server's certificate and the
/// version agreed.
async fn handshake(
    port: u16,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(Vec<u8>, rustls::ProtocolVersion)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
        let certs = session.peer_certificates().context("no certificate")?;
        let version = session.protocol_version().context("no version")?;
        anyhow::Ok((certs[0].to_vec(), version))
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .context("TLS handshake timed out")?
}

/// `flagd_redis_sync_grpc_refused_total{reason=...}` on /metrics (0 when absent).
async fn refused(svc: &Service, reason: &str) -> f64 {
    let (_, body) = svc.http_get("/metrics").await.unwrap();
    let label = format!("reason=\"{reason}\"");
    body.lines()
        .filter(|l| l.starts_with("flagd_redis_sync_grpc_refused_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn code<T>(r: &Result<T, tonic::Status>) -> Option<tonic::Code> {
    r.as_ref().err().map(|s| s.code())
}

/// Waits until the log contains `needle`.
async fn log_shows(svc: &Service, needle: &str) {
    eventually(WAIT, needle, || async {
        svc.logs().contains(needle).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; logs:\n{}", svc.logs()));
}

#[tokio::test]
async fn grpc_tls_serves_and_a_rotated_certificate_is_used_without_dropping_streams() {
    let pki = Pki::new("grpc CA");
    let first = pki.server("server");
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start(
        &redis.uri("flags"),
        &[
            "--redis-sync-cert-path",
            first.cert(),
            "--redis-sync-key-path",
            first.key(),
        ],
    )
    .await
    .unwrap();
    let ch = tls_channel(svc.grpc_port, &pki.ca_pem(), None)
        .await
        .unwrap();
    let (mut open, doc0) = first_doc(ch).await.unwrap();
    assert_eq!(default_value(&doc0, "f").as_deref(), Some("one"));
    assert_eq!(
        presented_certificate(svc.grpc_port, &pki.ca_pem())
            .await
            .unwrap(),
        first.der
    );
    // TLS 1.3, and 1.2 for older clients.
    for (offered, agreed) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let (_, version) = handshake(svc.grpc_port, &pki.ca_pem(), &[offered])
            .await
            .unwrap();
        assert_eq!(version, agreed);
    }
    // Plain HTTP/2 on the TLS port gets nowhere.
    assert!(svc.client().await.is_err() || svc.stream("").await.is_err());

    // cert-manager rewrites the files in place (certificate first, then the key: for a
    // moment they do not match, and the old pair must stay in service).
    let second = pki.server("server");
    assert_ne!(first.der, second.der);
    let rotated = Instant::now();
    eventually(WAIT, "a handshake with the new certificate", || async {
        (presented_certificate(svc.grpc_port, &pki.ca_pem())
            .await
            .ok()?
            == second.der)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; logs:\n{}", svc.logs()));
    eprintln!(
        "new certificate served {:?} after the files changed",
        rotated.elapsed()
    );

    // The stream opened before the rotation is still open and still gets changes.
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&open.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    // And a new client connects with the new certificate.
    let ch = tls_channel(svc.grpc_port, &pki.ca_pem(), None)
        .await
        .unwrap();
    let (_, doc2) = first_doc(ch).await.unwrap();
    assert_eq!(default_value(&doc2, "f").as_deref(), Some("two"));
    assert!(svc.logs().contains("reloaded"), "{}", svc.logs());
}

#[tokio::test]
async fn a_broken_certificate_at_start_up_is_a_clear_error() {
    let pki = Pki::new("grpc CA");
    let a = pki.server("a");
    let b = pki.server("b");
    let redis = RedisServer::start().unwrap();
    // A certificate with another certificate's key.
    let err = Service::start(
        &redis.uri("flags"),
        &[
            "--redis-sync-cert-path",
            a.cert(),
            "--redis-sync-key-path",
            b.key(),
        ],
    )
    .await
    .err()
    .expect("refused");
    assert!(
        format!("{err:#}").contains("do not make a usable pair"),
        "{err:#}"
    );
}

#[tokio::test]
async fn mutual_tls_accepts_signed_clients_and_refuses_the_others() {
    let pki = Pki::new("grpc CA");
    let server = pki.server("server");
    let good = pki.leaf("good-client", &["client.example"], Use::Client, false);
    let expired = pki.leaf("old-client", &["client.example"], Use::Client, true);
    let other = Pki::new("another CA");
    let stranger = other.leaf("stranger", &["client.example"], Use::Client, false);

    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "mtls")).unwrap();
    let svc = Service::start(
        &redis.uri("flags"),
        &[
            "--redis-sync-cert-path",
            server.cert(),
            "--redis-sync-key-path",
            server.key(),
            "--redis-sync-client-ca-path",
            pki.ca(),
        ],
    )
    .await
    .unwrap();

    let ch = tls_channel(svc.grpc_port, &pki.ca_pem(), Some(good.identity()))
        .await
        .unwrap();
    let (_, d) = first_doc(ch).await.unwrap();
    assert_eq!(default_value(&d, "f").as_deref(), Some("mtls"));

    for (what, id, logged) in [
        ("no certificate", None, "peer sent no certificates"),
        (
            "a certificate from another CA",
            Some(stranger.identity()),
            "UnknownIssuer",
        ),
        (
            "an expired certificate",
            Some(expired.identity()),
            "expired",
        ),
    ] {
        // With TLS 1.3 the client may finish its side before the server refuses it: the
        // refusal shows at the first call.
        let outcome = async {
            let ch = tls_channel(svc.grpc_port, &pki.ca_pem(), id).await?;
            first_doc(ch).await
        }
        .await;
        assert!(outcome.is_err(), "{what}: a client was served");
        log_shows(&svc, logged).await;
    }
    assert!(refused(&svc, "tls_handshake").await >= 3.0);
}

#[tokio::test]
async fn bearer_tokens_are_required_compared_and_reloaded_but_never_logged() {
    use tonic::metadata::MetadataValue;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# sync clients\ntok-alpha-1\n\ntok-bravo-2\n").unwrap();
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "auth")).unwrap();
    let svc = Service::start(
        &redis.uri("flags"),
        &["--auth-token-file", tokens.to_str().unwrap()],
    )
    .await
    .unwrap();
    svc.wait_ready().await.unwrap();

    let call = |header: Option<&'static str>| {
        let port = svc.grpc_port;
        async move {
            let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
                .connect_timeout(WAIT)
                .timeout(WAIT)
                .connect()
                .await?;
            let mut c =
                FlagSyncServiceClient::with_interceptor(ch, move |mut req: tonic::Request<()>| {
                    if let Some(h) = header {
                        req.metadata_mut()
                            .insert("authorization", MetadataValue::from_static(h));
                    }
                    Ok(req)
                });
            let meta = c.get_metadata(GetMetadataRequest {}).await.map(drop);
            let sync = async {
                let resp = c
                    .sync_flags(SyncFlagsRequest {
                        provider_id: "t".into(),
                        selector: String::new(),
                    })
                    .await?;
                SyncStream(resp.into_inner())
                    .next_json()
                    .await
                    .map_err(|e| tonic::Status::unknown(e.to_string()))
            }
            .await;
            anyhow::Ok((meta, sync))
        }
    };

    for header in [
        None,
        Some("Bearer tok-wrong"),
        Some("Bearer tok-alpha"),
        Some("Basic tok-alpha-1"),
    ] {
        let (meta, sync) = tokio::time::timeout(WAIT, call(header))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            code(&meta),
            Some(tonic::Code::Unauthenticated),
            "{header:?}"
        );
        assert_eq!(
            code(&sync),
            Some(tonic::Code::Unauthenticated),
            "{header:?}"
        );
    }
    for header in ["Bearer tok-alpha-1", "bearer tok-bravo-2", "tok-bravo-2"] {
        let (meta, sync) = tokio::time::timeout(WAIT, call(Some(header)))
            .await
            .unwrap()
            .unwrap();
        assert!(meta.is_ok(), "{header}: {meta:?}");
        assert_eq!(default_value(&sync.unwrap(), "f").as_deref(), Some("auth"));
    }

    // Health stays open for probes.
    {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", svc.grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let r = tokio::time::timeout(
            WAIT,
            HealthClient::new(ch).check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    // Rotation: a new token file replaces the old tokens.
    std::fs::write(&tokens, "tok-charlie-3\n").unwrap();
    eventually(WAIT, "the new token to be accepted", || async {
        let (meta, _) = call(Some("Bearer tok-charlie-3")).await.ok()?;
        meta.is_ok().then_some(())
    })
    .await
    .unwrap();
    let (meta, _) = call(Some("Bearer tok-alpha-1")).await.unwrap();
    assert_eq!(code(&meta), Some(tonic::Code::Unauthenticated));

    // 4 headers x 2 calls, the new token until it was loaded, the old one after.
    assert!(refused(&svc, "unauthenticated").await >= 9.0);
    let (_, metrics) = svc.http_get("/metrics").await.unwrap();
    let (_, readyz) = svc.http_get("/readyz").await.unwrap();
    for text in [svc.logs(), metrics, readyz] {
        assert!(!text.contains("tok-"), "a token leaked:\n{text}");
    }
}

/// A redis-server with a TLS port (beside its plain port, which the test uses to write)
/// serving `cert`, trusting `ca` for client certificates (`auth_clients`: no, yes).
fn redis_tls(cert: &Leaf, ca: &Path, auth_clients: &str, extra: &[&str]) -> (RedisServer, u16) {
    let mut last = None;
    for _ in 0..5 {
        let port = free_port();
        let port_s = port.to_string();
        let mut args = vec![
            "--tls-port",
            &port_s,
            "--tls-cert-file",
            cert.cert(),
            "--tls-key-file",
            cert.key(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            auth_clients,
        ];
        args.extend_from_slice(extra);
        match RedisServer::start_with(&args) {
            Ok(r) => return (r, port),
            Err(e) => last = Some(e),
        }
    }
    panic!("redis-server with TLS did not start: {:?}", last);
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::new("redis CA");
    let server = pki.server("redis");
    let client = pki.leaf("svc", &["flagd-redis-sync"], Use::Client, false);
    let (redis, tls_port) = redis_tls(&server, &pki.ca_path(), "yes", &[]);
    redis.set("flags", &doc("f", "tls")).unwrap();
    let uri = format!("rediss://localhost:{tls_port}/0?key=flags");
    let svc = Service::start(
        &uri,
        &[
            "--redis-ca-path",
            pki.ca(),
            "--redis-cert-path",
            client.cert(),
            "--redis-key-path",
            client.key(),
        ],
    )
    .await
    .unwrap();
    let mut s = svc.stream("").await.unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("tls")
    );
    svc.readyz_until("connected over TLS", |_, v| v["redis"] == "connected")
        .await;
    redis.set("flags", &doc("f", "tls-2")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("tls-2")
    );

    // Without the client certificate the server refuses the connection.
    let svc2 = Service::start(&uri, &["--redis-ca-path", pki.ca()])
        .await
        .unwrap();
    svc2.readyz_until("refused without a client certificate", |_, v| {
        v["redis"] == "down" && v["redis_error"].is_string()
    })
    .await;
    eprintln!(
        "no client certificate: {}",
        svc2.readyz().await.1["redis_error"]
    );

    // Without --redis-ca-path the system roots do not know this CA.
    let svc3 = Service::start(&uri, &[]).await.unwrap();
    svc3.readyz_until("unknown issuer", |_, v| {
        v["redis_error"]
            .as_str()
            .is_some_and(|e| e.contains("UnknownIssuer"))
    })
    .await;
}

#[tokio::test]
async fn expired_and_wrong_host_redis_certificates_are_refused_clearly() {
    let pki = Pki::new("redis CA");
    let expired = pki.leaf("expired", &["localhost"], Use::Server, true);
    let elsewhere = pki.leaf(
        "elsewhere",
        &["redis.elsewhere.example"],
        Use::Server,
        false,
    );
    for (cert, want) in [(&expired, "expired"), (&elsewhere, "not valid for name")] {
        let (redis, tls_port) = redis_tls(cert, &pki.ca_path(), "no", &[]);
        redis.set("flags", &doc("f", "x")).unwrap();
        let uri = format!("rediss://localhost:{tls_port}/0?key=flags");
        let svc = Service::start(&uri, &["--redis-ca-path", pki.ca()])
            .await
            .unwrap();
        svc.readyz_until(want, |code, v| {
            code == 503
                && v["redis"] == "down"
                && v["redis_error"].as_str().is_some_and(|e| e.contains(want))
        })
        .await;
        let err = svc.readyz().await.1["redis_error"].to_string();
        eprintln!("{want}: {err}");
        assert!(svc.logs().contains(want), "{}", svc.logs());
    }
}

#[tokio::test]
async fn tls_insecure_accepts_a_self_signed_server_and_says_so_loudly() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let leaf = Leaf {
        cert: dir.path().join("self.pem"),
        key: dir.path().join("self.key"),
        der: cert.der().to_vec(),
    };
    std::fs::write(&leaf.cert, cert.pem()).unwrap();
    std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
    let (redis, tls_port) = redis_tls(&leaf, &leaf.cert, "no", &[]);
    redis.set("flags", &doc("f", "dev")).unwrap();
    let uri = format!("rediss://localhost:{tls_port}/0?key=flags");
    let svc = Service::start(&uri, &["--redis-tls-insecure"])
        .await
        .unwrap();
    let mut s = svc.stream("").await.unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("dev")
    );
    let logs = svc.logs();
    assert!(
        logs.contains("WARN") && logs.contains("NOT verified"),
        "{logs}"
    );
}

#[tokio::test]
async fn rediss_to_a_plain_port_fails_fast_with_a_clear_message() {
    let redis = RedisServer::start().unwrap();
    let uri = format!("rediss://localhost:{}/0?key=flags", redis.port);
    let started = Instant::now();
    let svc = Service::start(&uri, &["--redis-timeout", "2"])
        .await
        .unwrap();
    svc.readyz_until("redis down", |_, v| {
        v["redis"] == "down" && v["redis_error"].is_string()
    })
    .await;
    let took = started.elapsed();
    let (_, v) = svc.readyz().await;
    let err = v["redis_error"].as_str().unwrap();
    eprintln!("rediss:// to a plain port after {took:?}: {err}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(err.contains("TLS"), "{err}");
}

#[tokio::test]
async fn a_least_privilege_acl_user_is_enough_and_its_password_stays_secret() {
    // The operator configured notifications (the user may not run CONFIG).
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kg$xe"]).unwrap();
    redis.set("flags", &doc("f", "acl")).unwrap();
    // The ACL of shared/spec/redis-notes.md, as given there.
    redis
        .cmd::<()>(&[
            "ACL",
            "SETUSER",
            "flagwatch",
            "on",
            ">s3cret-acl-pw",
            "resetkeys",
            "resetchannels",
            "-@all",
            "+ping",
            "+get",
            "+subscribe",
            "+unsubscribe",
            "+eval_ro",
            "+evalsha_ro",
            "+script|load",
            "%R~flags",
            "%R~flags:*",
            "&__keyspace@0__:flags",
            "&__keyspace@0__:flags:*",
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis-password");
    std::fs::write(&pw, "s3cret-acl-pw\n").unwrap();
    // Notifications only: a poll once an hour would not show the change in time.
    let uri = format!("redis://flagwatch@127.0.0.1:{}/0?key=flags", redis.port);
    let svc = Service::start(
        &uri,
        &[
            "--redis-password-file",
            pw.to_str().unwrap(),
            "--redis-interval",
            "3600",
        ],
    )
    .await
    .unwrap();
    let mut s = svc.stream("").await.unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("acl")
    );
    redis.set("flags", &doc("f", "acl-2")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("acl-2")
    );
    // CONFIG was refused: the log says what the operator must set instead.
    let logs = svc.logs();
    assert!(logs.contains("notify-keyspace-events"), "{logs}");
    // It never even tried KEYS, SCAN or a write. (Optional reads it may try, such as
    // CONFIG GET or CLIENT TRACKING, are refused and worked around.)
    let denied: Vec<String> = redis
        .cmd::<Vec<std::collections::HashMap<String, redis::Value>>>(&["ACL", "LOG"])
        .unwrap()
        .into_iter()
        .filter_map(|entry| redis::from_redis_value_ref(entry.get("object")?).ok())
        .collect();
    for d in &denied {
        assert!(
            ![
                "keys",
                "scan",
                "set",
                "del",
                "config|set",
                "publish",
                "flushall"
            ]
            .contains(&d.as_str()),
            "tried {d}: {denied:?}"
        );
    }
    eprintln!("refused and worked around: {denied:?}");

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", svc.pid())).unwrap();
    let (_, metrics) = svc.http_get("/metrics").await.unwrap();
    let (_, readyz) = svc.http_get("/readyz").await.unwrap();
    for text in [
        svc.logs(),
        metrics,
        readyz,
        String::from_utf8_lossy(&cmdline).to_string(),
    ] {
        assert!(!text.contains("s3cret-acl-pw"), "password leaked:\n{text}");
    }
}

#[tokio::test]
async fn a_wrong_password_file_is_reported_without_the_password() {
    let redis = RedisServer::start_with(&["--requirepass", "right-pw"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-pw-from-file").unwrap();
    // The file wins over the (right) password in the URI.
    let uri = format!("redis://:right-pw@127.0.0.1:{}/0?key=flags", redis.port);
    let svc = Service::start(&uri, &["--redis-password-file", pw.to_str().unwrap()])
        .await
        .unwrap();
    svc.readyz_until("refused", |_, v| {
        v["redis_error"]
            .as_str()
            .is_some_and(|e| e.contains("WRONGPASS") || e.contains("uthentication"))
    })
    .await;
    let (_, v) = svc.readyz().await;
    for text in [svc.logs(), v.to_string()] {
        assert!(
            !text.contains("wrong-pw-from-file") && !text.contains("right-pw"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn help_and_errors_never_show_secrets() {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(binary())
            .arg("--help")
            .env("REDIS_URI", "redis://u:hunter2-uri@h:1/0?key=f")
            .env("REDIS_PASSWORD", "hunter2-env")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string();
    assert!(out.status.success(), "{text}");
    for flag in [
        "--redis-password-file",
        "--redis-ca-path",
        "--redis-cert-path",
        "--redis-tls-insecure",
        "--redis-sync-client-ca-path",
        "--auth-token-file",
        "--redis-sync-host",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
    assert!(!text.contains("hunter2"), "{text}");

    // A configuration error names the problem, not the password.
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(binary())
            .args(["--redis-uri", "redis://u:hunter2-uri@h:1/x?key=f"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_string();
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// A `flagd-redis-sync` with gRPC on a Unix socket only (`--redis-sync-port 0`), started
/// by hand (the harness waits for a TCP port), killed on drop.
struct SocketOnly {
    child: std::process::Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    mgmt_port: u16,
}

impl SocketOnly {
    fn start(socket: &Path, redis_uri: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mgmt_port = free_port();
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let child = std::process::Command::new(binary())
            .args(["--redis-uri", redis_uri])
            .args(["--redis-sync-host", "127.0.0.1", "--redis-sync-port", "0"])
            .args(["--management-port", &mgmt_port.to_string()])
            .arg("--redis-sync-socket-path")
            .arg(socket)
            .args(extra)
            .env_remove("REDIS_URI")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        SocketOnly {
            child,
            dir,
            socket: socket.to_path_buf(),
            mgmt_port,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// A gRPC channel over the socket, once the service accepts on it.
    async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        eventually(WAIT, "the socket to accept gRPC", || {
            let path = path.clone();
            async move {
                let connector = tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        tokio::net::UnixStream::connect(path)
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    }
                });
                let ch = tonic::transport::Endpoint::from_static("http://localhost")
                    .connect_timeout(WAIT)
                    .timeout(WAIT)
                    .connect_with_connector(connector)
                    .await
                    .ok()?;
                // Answering, not only accepting: health needs no token.
                use tonic_health::pb::health_client::HealthClient;
                use tonic_health::pb::HealthCheckRequest;
                HealthClient::new(ch.clone())
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?;
                Some(ch)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; logs:\n{}", self.logs()))
    }

    /// Waits for the process to exit by itself.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SocketOnly {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- flagd-redis-sync log ---\n{}", self.logs());
        }
    }
}

#[tokio::test]
async fn grpc_on_the_unix_socket_alone_with_0660_tokens_and_stale_sockets() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "sock")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok-sock\n").unwrap();
    let socket = dir.path().join("sync.sock");
    let with_token = ["--auth-token-file", tokens.to_str().unwrap()];

    let mut first = SocketOnly::start(&socket, &redis.uri("flags"), &with_token);
    let ch = first.channel().await;
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // The start-up line follows the bind, so a client may connect before it is written.
    eventually(WAIT, "the start-up line", || async {
        first.logs().contains("off (socket only)").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", first.logs()));

    // The token check holds on the socket too.
    let mut plain = FlagSyncServiceClient::new(ch.clone());
    let refused = tokio::time::timeout(WAIT, plain.get_metadata(GetMetadataRequest {}))
        .await
        .unwrap();
    assert_eq!(code(&refused), Some(tonic::Code::Unauthenticated));
    let mut c = FlagSyncServiceClient::with_interceptor(ch, |mut req: tonic::Request<()>| {
        req.metadata_mut().insert(
            "authorization",
            tonic::metadata::MetadataValue::from_static("Bearer tok-sock"),
        );
        Ok(req)
    });
    let resp = tokio::time::timeout(
        WAIT,
        c.sync_flags(SyncFlagsRequest {
            provider_id: "sock".into(),
            selector: String::new(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let mut s = SyncStream(resp.into_inner());
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("sock")
    );
    redis.set("flags", &doc("f", "sock-2")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("sock-2")
    );
    let (status, _) = http_get(first.mgmt_port, "/readyz").await.unwrap();
    assert_eq!(status, 200);

    // A second instance on the live socket refuses to start.
    let mut second = SocketOnly::start(&socket, &redis.uri("flags"), &[]);
    let exit = second.wait_exit().await;
    assert!(!exit.success());
    assert!(
        second.logs().contains("in use by another process"),
        "{}",
        second.logs()
    );

    // A crash leaves the socket file; the next start replaces it.
    first.kill9();
    assert!(socket.exists(), "SIGKILL cannot remove the socket");
    let mut third = SocketOnly::start(&socket, &redis.uri("flags"), &[]);
    third.channel().await;
    assert!(
        third.logs().contains("removed a stale socket file"),
        "{}",
        third.logs()
    );

    // SIGTERM: a clean exit removes the socket.
    signal(third.child.id(), libc::SIGTERM);
    let exit = third.wait_exit().await;
    assert!(exit.success(), "{exit}");
    assert!(!socket.exists(), "socket left behind");

    // Port 0 without a socket is a configuration error.
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(binary())
            .args(["--redis-uri", &redis.uri("flags"), "--redis-sync-port", "0"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redis-sync-socket-path"));
}

//! `put` builds its Redis target as the service does (one `RedisArgs` group): it honours
//! `type=hash` (one field per flag, written atomically), the TLS options on every TLS
//! URI form (`--redis-tls-insecure` too), and `put --help`/`doctor --help` name every URI
//! form. Regression tests for the drift of issue 15, against real redis-server processes.

use crate::tools::{file, run};
use integration::*;
use std::collections::BTreeMap;

const TWO: &str = r#"{"flags":{
  "a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
  "b":{"state":"ENABLED","variants":{"x":"1","y":"2"},"defaultVariant":"x","targeting":{"if":[{"$ref":"r"},"y"]}}},
  "$evaluators":{"r":{"in":[{"var":"email"},["a@example.com"]]}},
  "metadata":{"flagSetId":"team"}}"#;
const ONE: &str = r#"{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}"#;

fn fields(redis: &RedisServer, key: &str) -> BTreeMap<String, String> {
    redis.cmd(&["HGETALL", key]).unwrap()
}

/// The digest at the end of put's success line.
fn printed_digest(stdout: &str) -> String {
    stdout
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn put_into_a_hash_source_writes_one_field_per_flag_atomically() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let two = file(&dir, "two.json", TWO);
    let one = file(&dir, "one.json", ONE);
    let uri = format!("{}&type=hash", redis.uri("hflags"));

    let out = run(&["put", "--redis-uri", &uri, &two]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(redis.cmd::<String>(&["TYPE", "hflags"]).unwrap(), "hash");
    let stored = fields(&redis, "hflags");
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["$evaluators", "$metadata", "a", "b"],
        "{stored:?}"
    );
    let b: serde_json::Value = serde_json::from_str(&stored["b"]).unwrap();
    assert_eq!(b["defaultVariant"], "x");

    // The service reading the hash serves exactly the digest put printed.
    let svc = Service::start(&uri, &[]).await.unwrap();
    svc.wait_ready().await.unwrap();
    let (_, ready) = svc.readyz().await;
    let served = ready["document"]["digest"].as_str().unwrap().to_string();
    assert_eq!(served, printed_digest(&out.stdout), "{}", out.stdout);
    assert_eq!(ready["document"]["flags"], 2, "{ready:#}");

    // A stale --if-digest is refused and changes nothing.
    let stale = "0123456789ab";
    let out = run(&["put", "--redis-uri", &uri, "--if-digest", stale, &one]).await;
    assert_eq!(out.code, 6, "a compare-and-set conflict: {}", out.all());
    assert!(out.stderr.contains("someone changed it"), "{}", out.stderr);
    assert_eq!(fields(&redis, "hflags"), stored);

    // The current digest: stored, and the removed flag's field and the fields the new
    // document has no more ($evaluators, $metadata) are gone in the same transaction.
    let out = run(&[
        "put",
        "--redis-uri",
        &uri,
        "--if-digest",
        &served[..12],
        &one,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    let now = fields(&redis, "hflags");
    assert_eq!(now.keys().collect::<Vec<_>>(), ["a"], "{now:?}");
    let new_digest = printed_digest(&out.stdout);
    svc.readyz_until("the one-flag document", |_, v| {
        v["document"]["digest"] == new_digest.as_str() && v["document"]["flags"] == 1
    })
    .await;
    // The service saw one change, never a hash with a mix of both documents.
    assert!(!svc.logs().contains("refused"), "{}", svc.logs());
}

#[tokio::test]
async fn put_into_a_hash_source_refuses_a_key_of_another_type_and_changes_nothing() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let two = file(&dir, "two.json", TWO);
    let text = doc("f", "one");
    redis.set("flags", &text).unwrap();
    redis.cmd::<i64>(&["RPUSH", "alist", "x"]).unwrap();

    for (key, kind) in [("flags", "string"), ("alist", "list")] {
        let uri = format!("{}&type=hash", redis.uri(key));
        let out = run(&["put", "--redis-uri", &uri, &two]).await;
        assert_eq!(out.code, 6, "{}", out.all());
        assert!(
            out.stderr
                .contains(&format!("holds a Redis {kind}, not a hash")),
            "{}",
            out.stderr
        );
        assert_eq!(redis.cmd::<String>(&["TYPE", key]).unwrap(), kind);
    }
    assert_eq!(redis.cmd::<String>(&["GET", "flags"]).unwrap(), text);
    // --if-digest on a missing hash: nothing to compare with.
    let uri = format!("{}&type=hash", redis.uri("nokey"));
    let out = run(&[
        "put",
        "--redis-uri",
        &uri,
        "--if-digest",
        "0123456789ab",
        &two,
    ])
    .await;
    assert_eq!(out.code, 6, "{}", out.all());
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert_eq!(redis.cmd::<String>(&["TYPE", "nokey"]).unwrap(), "none");
}

#[tokio::test]
async fn put_and_doctor_accept_tls_files_on_every_tls_uri_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "flags.json", &doc("f", "one"));
    let ca = file(&dir, "ca.pem", "not read before connecting\n");
    // Nothing listens there: the options are accepted (no usage error, 64), and the
    // failure is the connection's (put: 3; doctor: 2 with the connection finding).
    let port = free_port();
    for scheme in ["rediss+sentinel", "rediss+cluster"] {
        let uri = match scheme {
            "rediss+sentinel" => format!("{scheme}://127.0.0.1:{port}/mymaster/0?key=flags"),
            _ => format!("{scheme}://127.0.0.1:{port}/?key=flags"),
        };
        let tls = [
            "--redis-ca-path",
            &ca,
            "--redis-tls-insecure",
            "--redis-timeout",
            "1",
        ];
        let out = run(&[&["put", "--redis-uri", &uri][..], &tls, &[&path]].concat()).await;
        assert_eq!(out.code, 3, "{scheme}: {}", out.all());
        let out = run(&[&["doctor", "--redis-uri", &uri][..], &tls].concat()).await;
        assert_eq!(out.code, 2, "{scheme}: {}", out.all());
        assert!(out.all().contains("connection"), "{scheme}: {}", out.all());
        // The plain forms still refuse them, naming what to use.
        let plain = uri.replacen("rediss", "redis", 1);
        for cmd in [
            &["put", "--redis-uri", &plain, "--redis-ca-path", &ca, &path][..],
            &["doctor", "--redis-uri", &plain, "--redis-ca-path", &ca],
        ] {
            let out = run(cmd).await;
            assert_eq!(out.code, 64, "{cmd:?}: {}", out.all());
            assert!(out.all().contains("rediss"), "{}", out.all());
        }
    }
}

#[tokio::test]
async fn put_honours_redis_tls_insecure() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::doctor::certificates(certs.path());
    let tls_port = free_port();
    let tls_port_s = tls_port.to_string();
    let redis =
        RedisServer::start_with(&crate::doctor::tls_port_args(&tls_port_s, &ca, &cert, &key))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "flags.json", &doc("f", "tls"));
    let uri = format!("rediss://127.0.0.1:{tls_port}/0?key=flags");

    // The server's CA is not trusted: no connection, nothing stored.
    let out = run(&["put", "--redis-uri", &uri, &path]).await;
    assert_eq!(out.code, 3, "{}", out.all());
    assert_eq!(
        redis.cmd::<Option<String>>(&["GET", "flags"]).unwrap(),
        None
    );
    // --redis-tls-insecure: the certificate is not verified, the document stored.
    let out = run(&["put", "--redis-uri", &uri, "--redis-tls-insecure", &path]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        redis.cmd::<String>(&["GET", "flags"]).unwrap(),
        doc("f", "tls")
    );
}

#[tokio::test]
async fn put_and_doctor_help_name_every_uri_form() {
    for cmd in ["put", "doctor"] {
        let out = run(&[cmd, "--help"]).await;
        assert_eq!(out.code, 0, "{}", out.all());
        for form in [
            "rediss://",
            "unix://",
            "redis+sentinel://",
            "redis+cluster://",
            "rediss+sentinel://",
            "rediss+cluster://",
            "--redis-tls-insecure",
        ] {
            assert!(
                out.all().contains(form),
                "{cmd} --help lacks {form}:\n{}",
                out.all()
            );
        }
    }
}

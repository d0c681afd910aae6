//! Every flagd testbed file in `integration/testdata/*.json` (the files the providers' own
//! conformance suites load) through the service and back over a real gRPC stream.

use integration::*;
use serde_json::Value;
use std::fs;
use std::process::{Command, Stdio};

/// Every testbed file (see [`integration::testbed_files`]) with its text.
fn testbed_texts() -> Vec<(String, String)> {
    testbed_files()
        .into_iter()
        .map(|(name, path)| {
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect()
}

/// `flags` in map form: a map as is; the array form (`[{"key": ..}, ..]`) keyed by `key`.
fn flags_map(doc: &Value) -> Value {
    match &doc["flags"] {
        Value::Array(list) => Value::Object(
            list.iter()
                .map(|f| {
                    let mut f = f.clone();
                    let key = f["key"].as_str().expect("flag key").to_string();
                    f.as_object_mut().unwrap().remove("key");
                    (key, f)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Each file validates with `flagd-redis-sync validate --validation basic`, and with the
/// default strict validation unless it has flags broken on purpose
/// ([`TESTBED_BROKEN_ON_PURPOSE`], which strict refuses, exit 1); SET into Redis (served
/// with basic validation) it reaches a stream with the same flags (as JSON values); a
/// second SET of the same file pushes nothing (the next message is the next file's).
#[tokio::test]
async fn every_testbed_file_validates_and_round_trips_unchanged() {
    let files = testbed_texts();

    for (name, _) in &files {
        for mode in ["basic", "strict"] {
            let out = Command::new(binary())
                .args(["validate", "--validation", mode])
                .arg(testdata(name))
                .stdin(Stdio::null())
                .output()
                .expect("running flagd-redis-sync validate");
            let refused = mode == "strict" && TESTBED_BROKEN_ON_PURPOSE.contains(&name.as_str());
            assert_eq!(
                out.status.code(),
                Some(if refused { 1 } else { 0 }),
                "{name} with --validation {mode}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("marker", "start")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &["--validation", "basic"])
        .await
        .unwrap();
    let mut s = svc.stream("").await.unwrap();
    let first = s.next_json().await.unwrap();
    assert_eq!(default_value(&first, "marker").as_deref(), Some("start"));

    for (name, text) in &files {
        let want: Value = serde_json::from_str(text).expect("testbed file is JSON");
        redis.set("flags", text).unwrap();
        let got = s
            .next_json()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", svc.logs()));
        assert_eq!(
            got["flags"],
            flags_map(&want),
            "{name}: the flags received differ from the file's"
        );
        for extra in ["$evaluators", "metadata"] {
            if let Some(v) = want.get(extra) {
                assert_eq!(got.get(extra), Some(v), "{name}: {extra} differs");
            }
        }

        // The same file again: handled as a duplicate, nothing pushed.
        let dups = svc
            .metric("flagd_redis_sync_documents_duplicates_total")
            .await;
        redis.set("flags", text).unwrap();
        svc.metric_reaches("flagd_redis_sync_documents_duplicates_total", dups + 1.0)
            .await;
    }

    // Nothing came between the last file and this marker: no duplicate was pushed.
    redis.set("flags", &doc("marker", "end")).unwrap();
    let last = s.next_json().await.unwrap();
    assert_eq!(default_value(&last, "marker").as_deref(), Some("end"));
}

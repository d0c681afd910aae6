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

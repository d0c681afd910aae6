//! Several sources (keys) in one service: merging, selectors across sources, hash
//! storage, and replicas serving the same thing.

use integration::*;
use serde_json::Value;
use std::time::Duration;

/// How long a stream must stay quiet, once the change that must not reach it has been
/// seen to reach another stream (so the service has handled it).
const QUIET: Duration = Duration::from_millis(300);

fn flag(variant: &str, set: Option<&str>) -> String {
    let meta = set.map_or(String::new(), |s| {
        format!(r#","metadata":{{"flagSetId":"{s}"}}"#)
    });
    format!(r#"{{"state":"ENABLED","variants":{{"v":"{variant}"}},"defaultVariant":"v"{meta}}}"#)
}

fn names(doc: &Value) -> Vec<String> {
    doc["flags"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_merge_select_and_push_only_where_the_selection_changed() {
    let redis = RedisServer::start().unwrap();
    // Source "base" (a string key named in the URI): flags a and shared, set "team-a".
    redis
        .set(
            "base",
            &format!(
                r#"{{"flags":{{"a":{},"shared":{}}},"metadata":{{"flagSetId":"team-a"}}}}"#,
                flag("a1", None),
                flag("from-base", None)
            ),
        )
        .unwrap();
    // Source "team-b" (a hash, one field per flag): b and shared.
    let _: () = redis
        .cmd(&[
            "HSET",
            "flags:b",
            "b",
            &flag("b1", Some("team-b")),
            "shared",
            &flag("from-b", Some("team-b")),
        ])
        .unwrap();
    let svc = Service::start(
        &redis.uri("base"),
        &["--source", "team-b=flags:b;type=hash"],
    )
    .await
    .unwrap();

    let mut merged = svc.stream("").await.unwrap();
    let mut only_base = svc.stream("source=base").await.unwrap();
    let mut bare_b = svc.stream("team-b").await.unwrap();
    let mut set_a = svc.stream("flagSetId=team-a").await.unwrap();
    let mut unknown = svc.stream("source=nope").await.unwrap();

    let m = merged.next_json().await.unwrap();
    assert_eq!(names(&m), ["a", "b", "shared"]);
    // The later source wins the clash, as in flagd.
    assert_eq!(default_value(&m, "shared").as_deref(), Some("from-b"));
    assert_eq!(
        names(&only_base.next_json().await.unwrap()),
        ["a", "shared"]
    );
    assert_eq!(names(&bare_b.next_json().await.unwrap()), ["b", "shared"]);
    // flagSetId from the base document's metadata, carried onto its flags in the merge;
    // "shared" is served from team-b, so it is in team-b's set.
    assert_eq!(names(&set_a.next_json().await.unwrap()), ["a"]);
    assert!(names(&unknown.next_json().await.unwrap()).is_empty());
    let (code, ready) = svc.readyz().await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["sources"]["team-b"]["state"], "valid");
    // The doctor reads a hash source as the service does.
    let hash_uri = format!("redis://127.0.0.1:{}/0?key=flags:b&type=hash", redis.port);
    let found = crate::topology::doctor(&hash_uri);
    assert_eq!(found["key"].0, "ok", "{found:?}");
    assert!(found["document"].1.contains("2 flag(s)"), "{found:?}");
    assert!(
        svc.logs().contains("flag defined by several sources"),
        "the clash is logged:\n{}",
        svc.logs()
    );

    // One HSET changes one flag of team-b: the merged and team-b streams get it …
    let _: () = redis
        .cmd(&["HSET", "flags:b", "b", &flag("b2", Some("team-b"))])
        .unwrap();
    assert_eq!(
        default_value(&bare_b.next_json().await.unwrap(), "b").as_deref(),
        Some("b2")
    );
    assert_eq!(
        default_value(&merged.next_json().await.unwrap(), "b").as_deref(),
        Some("b2")
    );
    // … and the streams whose selection did not change get nothing.
    only_base.expect_silence(QUIET).await.unwrap();
    set_a.expect_silence(Duration::ZERO).await.unwrap();
    unknown.expect_silence(Duration::ZERO).await.unwrap();

    // A bad field is refused with the key named; every stream keeps the last good flags.
    let _: () = redis.cmd(&["HSET", "flags:b", "b", "{broken"]).unwrap();
    svc.readyz_until("team-b refused", |_, v| {
        v["sources"]["team-b"]["state"] == "refused"
    })
    .await;
    let logs = svc.logs();
    assert!(
        logs.contains("flag document refused")
            && logs.contains("flags:b")
            && logs.contains("\"b\""),
        "{logs}"
    );
    bare_b.expect_silence(Duration::ZERO).await.unwrap();
    merged.expect_silence(Duration::ZERO).await.unwrap();

    // Fixed: pushed again.
    let _: () = redis
        .cmd(&["HSET", "flags:b", "b", &flag("b3", Some("team-b"))])
        .unwrap();
    assert_eq!(
        default_value(&merged.next_json().await.unwrap(), "b").as_deref(),
        Some("b3")
    );
}

#[tokio::test]
async fn several_keys_in_the_uri_and_a_missing_one_blocks_readiness_only() {
    let redis = RedisServer::start().unwrap();
    redis.set("one", &doc("x", "1")).unwrap();
    let uri = format!("redis://127.0.0.1:{}/0?key=one&key=two", redis.port);
    let svc = Service::start(&uri, &[]).await.unwrap();
    // Clients get what exists at once …
    let mut s = svc.stream("").await.unwrap();
    assert_eq!(names(&s.next_json().await.unwrap()), ["x"]);
    // … while readiness says a source is missing.
    svc.readyz_until("not ready, two missing", |code, v| {
        code == 503 && v["sources"]["two"]["state"] == "missing"
    })
    .await;
    redis.set("two", &doc("y", "1")).unwrap();
    assert_eq!(names(&s.next_json().await.unwrap()), ["x", "y"]);
    svc.readyz_until("ready", |code, _| code == 200).await;
}

#[tokio::test]
async fn two_replicas_serve_the_same_digest() {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let a = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let b = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let mut sa = a.stream("").await.unwrap();
    let mut sb = b.stream("").await.unwrap();
    for round in ["one", "two"] {
        if round == "two" {
            redis.set("flags", &doc("f", "two")).unwrap();
        }
        let (ma, mb) = (sa.next().await.unwrap(), sb.next().await.unwrap());
        assert_eq!(
            ma.flag_configuration, mb.flag_configuration,
            "round {round}"
        );
        let want = default_value(&serde_json::from_str(&ma.flag_configuration).unwrap(), "f");
        assert_eq!(want.as_deref(), Some(round));
        let da = a.readyz().await.1["document"]["digest"].clone();
        let db = b.readyz().await.1["document"]["digest"].clone();
        assert!(da.is_string(), "{da}");
        assert_eq!(da, db, "round {round}");
    }
}

#[tokio::test]
async fn without_config_tracking_covers_every_source_even_with_overlapping_keys() {
    // "flags" is a prefix of "flags:b": one BCAST prefix must cover both (Redis refuses
    // overlapping prefixes), and each invalidation reads only the key it names.
    let redis = RedisServer::start_with(&["--rename-command", "CONFIG", ""]).unwrap();
    redis.set("flags", &doc("a", "1")).unwrap();
    let _: () = redis
        .cmd(&["HSET", "flags:b", "b", &flag("1", None)])
        .unwrap();
    let svc = Service::start(
        &redis.uri("flags"),
        &[
            "--redis-interval",
            "3600",
            "--source",
            "b=flags:b;type=hash",
        ],
    )
    .await
    .unwrap();
    let mut merged = svc.stream("").await.unwrap();
    let mut only_a = svc.stream("flags").await.unwrap();
    assert_eq!(names(&merged.next_json().await.unwrap()), ["a", "b"]);
    only_a.next().await.unwrap();
    let (_, ready) = svc.readyz().await;
    assert_eq!(ready["trigger"], "tracking", "{ready}");

    // With an hour-long poll, only an invalidation can deliver these in time.
    let _: () = redis
        .cmd(&["HSET", "flags:b", "b", &flag("2", None)])
        .unwrap();
    assert_eq!(
        default_value(&merged.next_json().await.unwrap(), "b").as_deref(),
        Some("2")
    );
    only_a.expect_silence(QUIET).await.unwrap();
    redis.set("flags", &doc("a", "2")).unwrap();
    assert_eq!(
        default_value(&only_a.next_json().await.unwrap(), "a").as_deref(),
        Some("2")
    );
}

//! The core promise: every real change reaches every client, nothing else does.

use integration::*;
use std::time::Duration;

/// A change pushed to a stream is proved by the stream; that nothing was pushed is
/// proved by waiting for the service to have *handled* the write (a counter on
/// /metrics moves) and then seeing the stream stay quiet.
const QUIET: Duration = Duration::from_millis(300);

async fn await_key_state(svc: &Service, want: &str) {
    svc.readyz_until(want, |_, v| v["key"]["state"] == want)
        .await;
}

#[tokio::test]
async fn initial_document_is_the_first_message() {
    let t = start_server(&doc("f", "one"), &[]).await.unwrap();
    assert_eq!(default_value(&t.first, "f").as_deref(), Some("one"));
}

#[tokio::test]
async fn a_set_reaches_fifty_concurrent_streams() {
    let fixture = Fixture::new(doc("f", "one"));
    let (redis, svc) = fixture.start_service(&[]).await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut s = svc.stream("").await.unwrap();
        assert_eq!(
            default_value(&s.next_json().await.unwrap(), "f").as_deref(),
            Some("one")
        );
        streams.push(s);
    }
    redis.set("flags", &doc("f", "two")).unwrap();
    for s in &mut streams {
        assert_eq!(
            default_value(&s.next_json().await.unwrap(), "f").as_deref(),
            Some("two")
        );
    }
}

#[tokio::test]
async fn identical_content_pushes_nothing() {
    let t = start_server(&doc("f", "one"), &[]).await.unwrap();
    let (redis, svc, mut s) = (t.redis, t.svc, t.stream);
    // The same content, re-serialised differently: a new SET, the same document.
    let reordered = r#"{ "flags": { "f": { "defaultVariant": "v", "variants": { "other": "x", "v": "one" }, "state": "ENABLED" } } }"#;
    let before = svc.metric("flagd_redis_sync_notifications_total").await;
    redis.set("flags", reordered).unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    svc.metric_reaches("flagd_redis_sync_notifications_total", before + 2.0)
        .await;
    svc.metric_reaches("flagd_redis_sync_documents_duplicates_total", 1.0)
        .await;
    s.expect_silence(QUIET).await.unwrap();
    // And a real change still goes through.
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
}

#[tokio::test]
async fn an_invalid_document_is_refused_and_the_last_good_one_stays() {
    let t = start_server(&doc("f", "good"), &[]).await.unwrap();
    let (redis, svc, mut s) = (t.redis, t.svc, t.stream);
    redis
        .set(
            "flags",
            r#"{"flags":{"f":{"state":"ENABLED","variants":{"a":true},"defaultVariant":"nope"}}}"#,
        )
        .unwrap();
    await_key_state(&svc, "refused").await;
    s.expect_silence(QUIET).await.unwrap();
    let mut fresh = svc.stream("").await.unwrap();
    assert_eq!(
        default_value(&fresh.next_json().await.unwrap(), "f").as_deref(),
        Some("good")
    );
    let logs = svc.logs();
    assert!(
        logs.contains("flag document refused")
            && logs.contains("key=flags")
            && logs.contains("names no variant"),
        "the refusal must be logged with the key and the reason:\n{logs}"
    );
    redis.set("flags", &doc("f", "better")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("better")
    );
}

/// DEL, EXPIRE, RENAME away and FLUSHALL all leave the key missing: the service keeps
/// serving the last good document (documented in docs/decisions.md) and reports it.
#[tokio::test]
async fn a_vanished_key_keeps_the_last_good_document() {
    let redis = RedisServer::start().unwrap();
    let svc = Service::start(&redis.uri("flags"), &["--redis-interval", "1"])
        .await
        .unwrap();
    let mut s = svc.stream("").await.unwrap();
    let mut n = 0;
    let removals: [&dyn Fn(&RedisServer); 4] = [
        &|r| r.cmd::<i64>(&["DEL", "flags"]).map(drop).unwrap(),
        &|r| r.cmd::<i64>(&["PEXPIRE", "flags", "1"]).map(drop).unwrap(),
        &|r| r.cmd::<()>(&["RENAME", "flags", "elsewhere"]).unwrap(),
        // FLUSHALL sends no keyspace event at all: only the poll sees it.
        &|r| r.cmd::<()>(&["FLUSHALL"]).unwrap(),
    ];
    for remove in removals {
        n += 1;
        let value = format!("v{n}");
        redis.set("flags", &doc("f", &value)).unwrap();
        assert_eq!(
            default_value(&s.next_json().await.unwrap(), "f"),
            Some(value.clone())
        );
        await_key_state(&svc, "valid").await;
        remove(&redis);
        await_key_state(&svc, "missing").await;
        s.expect_silence(QUIET).await.unwrap();
        let mut fresh = svc.stream("").await.unwrap();
        assert_eq!(
            default_value(&fresh.next_json().await.unwrap(), "f"),
            Some(value)
        );
        assert_eq!(svc.http_get("/readyz").await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn notifications_off_are_switched_on_without_dropping_letters() {
    let fixture = Fixture::new(doc("f", "one")).redis_args(&["--notify-keyspace-events", "El"]);
    // A long poll: only a notification can deliver the change in time.
    let t = fixture.start(&["--redis-interval", "3600"]).await.unwrap();
    // The service stays in `t`, alive.
    let (redis, mut s) = (t.redis, t.stream);
    let flags: Vec<String> = redis
        .cmd(&["CONFIG", "GET", "notify-keyspace-events"])
        .unwrap();
    for c in ['E', 'l', 'K', 'g', '$', 'x', 'e'] {
        assert!(flags[1].contains(c), "{c} missing from {:?}", flags[1]);
    }
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
}

/// CONFIG and CLIENT both refused (an ACL user without them) and notifications off:
/// nothing pushes, the poll alone converges.
#[tokio::test]
async fn with_config_and_tracking_refused_the_poll_still_converges() {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    redis
        .cmd::<()>(&[
            "ACL", "SETUSER", "w", "on", ">pw", "~*", "&*", "+@all", "-config", "-client",
        ])
        .unwrap();
    let uri = format!("redis://w:pw@127.0.0.1:{}/0?key=flags", redis.port);
    let svc = Service::start(&uri, &["--redis-interval", "1"])
        .await
        .unwrap();
    let mut s = svc.stream("").await.unwrap();
    s.next().await.unwrap();
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    let logs = svc.logs();
    assert_eq!(
        logs.matches("cannot read notify-keyspace-events").count(),
        1,
        "warned once, clearly:\n{logs}"
    );
    assert_eq!(
        logs.matches("CLIENT TRACKING refused").count(),
        1,
        "warned once, clearly:\n{logs}"
    );
    let (_, ready) = svc.http_get("/readyz").await.unwrap();
    assert!(
        ready.contains(r#""trigger":"keyspace_unverified""#),
        "{ready}"
    );
}

/// CONFIG renamed away (as on managed Redis): CLIENT TRACKING invalidations push changes
/// at once; the poll is an hour, so anything within the test's wait is not the poll.
#[tokio::test]
async fn without_config_tracking_pushes_changes_at_once() {
    let fixture = Fixture::new(doc("f", "one")).redis_args(&["--rename-command", "CONFIG", ""]);
    let started = fixture.start(&["--redis-interval", "3600"]).await.unwrap();
    let (mut redis, svc, mut s) = (started.redis, started.svc, started.stream);
    let (_, ready) = svc.http_get("/readyz").await.unwrap();
    assert!(ready.contains(r#""trigger":"tracking""#), "{ready}");
    let t = std::time::Instant::now();
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
    eprintln!("tracking: SET -> client in {:?}", t.elapsed());
    // FLUSHALL sends a null invalidation: seen without waiting for the poll.
    redis.cmd::<()>(&["FLUSHALL"]).unwrap();
    await_key_state(&svc, "missing").await;
    // Tracking is per connection: re-armed after a reconnect.
    redis.restart().unwrap();
    svc.readyz_until("reconnected", |_, v| v["redis"] == "connected")
        .await;
    redis.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("three")
    );
}

#[tokio::test]
async fn after_redis_is_killed_and_restarted_changes_still_arrive() {
    let t = start_server(&doc("f", "one"), &[]).await.unwrap();
    let (mut redis, svc, mut s) = (t.redis, t.svc, t.stream);
    let reconnects = svc.metric("flagd_redis_sync_redis_reconnects_total").await;
    redis.kill9();
    eventually(WAIT, "redis reported down", || async {
        (svc.metric("flagd_redis_sync_redis_up").await == 0.0).then_some(())
    })
    .await
    .unwrap();
    redis.restart().unwrap();
    svc.metric_reaches("flagd_redis_sync_redis_reconnects_total", reconnects + 1.0)
        .await;
    eventually(WAIT, "redis reported up", || async {
        (svc.metric("flagd_redis_sync_redis_up").await == 1.0).then_some(())
    })
    .await
    .unwrap();
    // The restarted server kept nothing; the stream kept the old flags and now sees the new.
    redis.set("flags", &doc("f", "two")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("two")
    );
}

#[tokio::test]
async fn sigterm_ends_streams_with_unavailable_and_exits() {
    let fixture = Fixture::new(doc("f", "one"));
    let (_redis, mut svc) = fixture
        .start_service(&["--shutdown-grace", "5"])
        .await
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = svc.stream("").await.unwrap();
        s.next().await.unwrap();
        streams.push(s);
    }
    svc.sigterm();
    for s in &mut streams {
        let status = s.end_status().await.unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    let exit = svc.wait_exit(Duration::from_secs(8)).await.unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_stream_opened_before_the_first_document_gets_it() {
    let redis = RedisServer::start().unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    assert_eq!(svc.http_get("/readyz").await.unwrap().0, 503);
    let mut c = svc.client().await.unwrap();
    let err = c
        .fetch_all_flags(client::flagd::FetchAllFlagsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let mut s = svc.stream("").await.unwrap();
    redis.set("flags", &doc("f", "first")).unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("first")
    );
    svc.wait_ready().await.unwrap();
}

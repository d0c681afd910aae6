//! The fleet view (issue 16): `/fleet` and its metrics across two replicas with 50 streams
//! of mixed selectors and one stalled consumer, and churn leaving no per-stream state.

use integration::client::flagd::flag_sync_service_client::FlagSyncServiceClient;
use integration::client::flagd::SyncFlagsRequest;
use integration::*;
use serde_json::Value;
use tonic::transport::Endpoint;

/// The selectors the 50 streams use, in turn.
const SELECTORS: [&str; 4] = ["", "source=base", "team-b", "flagSetId=team-a"];

/// Stream i goes to replica i % 2, with every selector on each replica.
pub fn selector_of(i: usize) -> &'static str {
    SELECTORS[(i / 2) % SELECTORS.len()]
}

fn flag(variant: &str, set: Option<&str>) -> String {
    let meta = set.map_or(String::new(), |s| {
        format!(r#","metadata":{{"flagSetId":"{s}"}}"#)
    });
    format!(r#"{{"state":"ENABLED","variants":{{"v":"{variant}"}},"defaultVariant":"v"{meta}}}"#)
}

/// Source "base": flags a and shared in set team-a, and `extra` flags.
fn base_doc(a: &str, extra: &[(&str, &str)]) -> String {
    let mut flags = vec![
        format!(r#""a":{}"#, flag(a, None)),
        format!(r#""shared":{}"#, flag("s", None)),
    ];
    flags.extend(
        extra
            .iter()
            .map(|(n, v)| format!(r#""{n}":{}"#, flag(v, None))),
    );
    format!(
        r#"{{"flags":{{{}}},"metadata":{{"flagSetId":"team-a"}}}}"#,
        flags.join(",")
    )
}

/// Redis with two sources, two replicas serving them, 25 streams on each.
pub struct Testbed {
    pub redis: RedisServer,
    pub replicas: [Service; 2],
    pub streams: Vec<SyncStream>,
}

pub async fn testbed() -> Testbed {
    let redis = RedisServer::start().unwrap();
    redis.set("base", &base_doc("a1", &[])).unwrap();
    let _: () = redis
        .cmd(&["HSET", "flags:b", "b", &flag("b1", Some("team-b"))])
        .unwrap();
    let args = ["--source", "team-b=flags:b;type=hash"];
    let replicas = [
        Service::start(&redis.uri("base"), &args).await.unwrap(),
        Service::start(&redis.uri("base"), &args).await.unwrap(),
    ];
    let mut streams = Vec::new();
    for i in 0..50 {
        let mut s = replicas[i % 2].stream(selector_of(i)).await.unwrap();
        s.next().await.unwrap();
        streams.push(s);
    }
    Testbed {
        redis,
        replicas,
        streams,
    }
}

/// `/fleet` (with a query), parsed.
pub async fn fleet(svc: &Service, query: &str) -> Value {
    let (code, body) = svc.http_get(&format!("/fleet{query}")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `/fleet` satisfies `pred`; fails with the last body.
pub async fn fleet_until(svc: &Service, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    match eventually(WAIT, what, || async move {
        let v = fleet(svc, "").await;
        pred(&v).then_some(v)
    })
    .await
    {
        Ok(v) => v,
        Err(e) => panic!("{e}; last /fleet {}", fleet(svc, "").await),
    }
}

/// A labelled sample's value on /metrics (`labels` as written, e.g. `state="stalled"`).
fn labelled(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (l, v) = rest.split_once("} ")?;
        (l == labels).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A client that reads its first message and then stops reading: with an 8 KiB HTTP/2
/// window, the next document larger than that stays with the service.
pub async fn stalled_consumer(
    svc: &Service,
) -> tonic::Streaming<integration::client::flagd::SyncFlagsResponse> {
    let ch = Endpoint::from_shared(format!("http://127.0.0.1:{}", svc.grpc_port))
        .unwrap()
        .initial_stream_window_size(8 * 1024)
        .initial_connection_window_size(8 * 1024)
        .connect_timeout(WAIT)
        .connect()
        .await
        .unwrap();
    open_stream(&mut FlagSyncServiceClient::new(ch), "stalled-consumer", "").await
}

/// Opens a SyncFlags stream on `c` and reads its first message.
async fn open_stream(
    c: &mut FlagSyncServiceClient<tonic::transport::Channel>,
    provider_id: &str,
    selector: &str,
) -> tonic::Streaming<integration::client::flagd::SyncFlagsResponse> {
    let mut s = tokio::time::timeout(
        WAIT,
        c.sync_flags(SyncFlagsRequest {
            provider_id: provider_id.into(),
            selector: selector.into(),
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    s
}

/// A document larger than the stalled consumer's window.
pub fn big_base_doc(a: &str) -> String {
    base_doc(a, &[("padding", &"p".repeat(64 * 1024))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_totals_selectors_stalled_consumer_and_metrics_across_two_replicas() {
    let mut bed = testbed().await;
    let [a, b] = &bed.replicas;
    for svc in [a, b] {
        let v = fleet_until(svc, "25 current streams", |v| v["totals"]["current"] == 25).await;
        assert_eq!(v["format"], 1);
        assert_eq!(v["totals"]["streams"], 25);
        assert_eq!(v["totals"]["behind"], 0);
        assert_eq!(v["totals"]["stalled"], 0);
        let selectors: Vec<&str> = v["selectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["selector"].as_str().unwrap())
            .collect();
        assert_eq!(
            selectors,
            ["", "flagSetId=team-a", "source=base", "source=team-b"]
        );
        let total: u64 = v["selectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["streams"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 25);
        let names: Vec<&str> = v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["base", "team-b"]);
        let s0 = &v["streams"][0];
        assert_eq!(s0["provider_id"], "it");
        assert!(
            s0["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{s0}"
        );
        assert!(s0["user_agent"].as_str().unwrap().contains("tonic"), "{s0}");
        assert_eq!(s0["messages"], 1);
        // Paging: 10 per page, the next page starts after the last id.
        let p1 = fleet(svc, "?limit=10").await;
        assert_eq!(p1["streams"].as_array().unwrap().len(), 10);
        let after = p1["next_after"].as_u64().unwrap();
        let p2 = fleet(svc, &format!("?limit=100&after={after}")).await;
        assert_eq!(p2["streams"].as_array().unwrap().len(), 15);
        assert!(p2["next_after"].is_null());
        assert!(fleet(svc, "?behind=1").await["streams"]
            .as_array()
            .unwrap()
            .is_empty());
        let (code, body) = svc.http_get("/fleet?limit=0").await.unwrap();
        assert_eq!(code, 400, "{body}");
    }
    let (_, m) = a.http_get("/metrics").await.unwrap();
    assert_eq!(
        labelled(&m, "flagd_redis_sync_streams_state", r#"state="current""#),
        Some(25.0),
        "{m}"
    );

    // One consumer on replica a stops reading; two changes larger than its window follow:
    // the first fills the stream's HTTP/2 buffers, the second cannot be taken.
    let _stalled = stalled_consumer(a).await;
    for version in ["a2", "a3"] {
        bed.redis.set("base", &big_base_doc(version)).unwrap();
        // Every other stream gets it (those whose selection changed read it).
        for (i, s) in bed.streams.iter_mut().enumerate() {
            if selector_of(i) != "team-b" {
                let doc = s.next_json().await.unwrap();
                assert_eq!(doc["flags"]["a"]["variants"]["v"], version, "stream {i}");
            }
        }
    }
    let v = fleet_until(a, "the stalled consumer", |v| v["totals"]["stalled"] == 1).await;
    assert_eq!(v["totals"]["current"], 25, "{v}");
    let behind = fleet(a, "?behind=1").await;
    let listed = behind["streams"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{behind}");
    assert_eq!(listed[0]["provider_id"], "stalled-consumer");
    assert_eq!(listed[0]["state"], "stalled");
    assert!(listed[0]["pending_seconds"].as_f64().unwrap() > 5.0);
    // Replica b has no stalled stream.
    let vb = fleet_until(b, "b all current", |v| v["totals"]["current"] == 25).await;
    assert_eq!(vb["totals"]["stalled"], 0);
    // The metrics moved.
    let (_, m) = a.http_get("/metrics").await.unwrap();
    assert_eq!(
        labelled(&m, "flagd_redis_sync_streams_state", r#"state="stalled""#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        labelled(&m, "flagd_redis_sync_streams_state", r#"state="current""#),
        Some(25.0)
    );
    // Another change: the stalled stream is behind it too, for a growing time.
    let before = v["sources"][0]["digest"].clone();
    bed.redis.set("base", &big_base_doc("a4")).unwrap();
    fleet_until(a, "a4 served", |v| {
        v["sources"][0]["digest"] != before && v["totals"]["current"] == 25
    })
    .await;
    eventually(WAIT, "the oldest behind stream's age to grow", || async {
        let (_, m) = a.http_get("/metrics").await.unwrap();
        let age = metric_value(&m, "flagd_redis_sync_streams_oldest_behind_seconds")?;
        (age > 0.0).then_some(())
    })
    .await
    .unwrap();
}

/// Redis with `first` in key `flags`, one service, and one stream that has its first
/// document.
async fn one_service_one_stream(first: &str) -> (RedisServer, Service, SyncStream) {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", first).unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let mut s = svc.stream("").await.unwrap();
    s.next().await.unwrap();
    (redis, svc, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_thousands_of_streams_leaves_no_per_stream_state() {
    let (_redis, svc, _keep) = one_service_one_stream(&doc("f", "one")).await;
    let mut c = svc.client().await.unwrap();
    const CHURN: usize = 3000;
    // In batches of 50 open streams on one connection (under its stream limit).
    for _ in 0..CHURN / 50 {
        let mut open = Vec::new();
        for _ in 0..50 {
            let s = open_stream(&mut c, "churn", "flagSetId=").await;
            open.push(s);
        }
    }
    let v = fleet_until(&svc, "only the kept stream", |v| {
        v["totals"]["streams"] == 1
    })
    .await;
    assert_eq!(v["streams"][0]["provider_id"], "it");
    assert_eq!(v["totals"]["current"], 1);
    assert_eq!(v["selectors"].as_array().unwrap().len(), 1, "{v}");
    // Every churned stream was registered (ids keep counting), then removed.
    let mut late = svc.stream("").await.unwrap();
    late.next().await.unwrap();
    let v = fleet_until(&svc, "the late stream", |v| v["totals"]["streams"] == 2).await;
    assert!(
        v["streams"][1]["id"].as_u64().unwrap() > CHURN as u64,
        "{v}"
    );
}

fn flags_doc(flags: &[(&str, &str)]) -> String {
    let body: Vec<String> = flags
        .iter()
        .map(|(n, v)| format!(r#""{n}":{}"#, flag(v, None)))
        .collect();
    format!(r#"{{"flags":{{{}}}}}"#, body.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_name_exactly_the_flags_that_changed_and_keep_the_documents() {
    let first = flags_doc(&[("same", "1"), ("edited", "1"), ("dropped", "1")]);
    let (redis, svc, mut s) = one_service_one_stream(&first).await;
    redis
        .set(
            "flags",
            &flags_doc(&[("same", "1"), ("edited", "2"), ("new", "1")]),
        )
        .unwrap();
    s.next().await.unwrap();
    // Streams are sent to before the change is recorded (Hub::announce_sources).
    let v = eventually(WAIT, "the change in /changes", || async {
        let (code, body) = svc.http_get("/changes").await.ok()?;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (v["changes"].as_array()?.len() == 2).then_some(v)
    })
    .await
    .unwrap();
    let changes = v["changes"].as_array().unwrap();
    let newest = &changes[0];
    assert_eq!(newest["source"], "flags");
    assert_eq!(newest["added"]["names"], serde_json::json!(["new"]));
    assert_eq!(newest["removed"]["names"], serde_json::json!(["dropped"]));
    assert_eq!(newest["changed"]["names"], serde_json::json!(["edited"]));
    assert_eq!(newest["changed"]["count"], 1);
    assert_eq!(newest["previous"], changes[1]["digest"]);
    // The first load: every flag added.
    assert_eq!(changes[1]["added"]["count"], 3);
    // The log says the same.
    assert!(
        svc.logs().contains("flags changed"),
        "no change log line:\n{}",
        svc.logs()
    );
    // The previous document, by a digest prefix, as stored (canonical JSON).
    let old = changes[1]["digest"].as_str().unwrap();
    let (code, body) = svc
        .http_get(&format!("/changes/{}", &old[..16]))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got, serde_json::from_str::<Value>(&first).unwrap());
    let (code, body) = svc.http_get("/changes/00000000000000").await.unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("GET /changes lists them"), "{body}");
}

/// `put` into key `base` with --wait on both replicas.
async fn put_wait(bed: &Testbed, file: &std::path::Path, extra: &[&str]) -> crate::tools::Out {
    let uri = bed.redis.uri("base");
    let services: Vec<String> = bed
        .replicas
        .iter()
        .map(|s| format!("http://127.0.0.1:{}", s.mgmt_port))
        .collect();
    let mut args = vec!["put", "--redis-uri", &uri, "--wait"];
    for s in &services {
        args.extend(["--service", s.as_str()]);
    }
    let file = file.to_str().unwrap();
    if !file.is_empty() {
        args.push(file);
    }
    args.extend(extra);
    crate::tools::run(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_wait_converges_across_replicas_fails_naming_a_stalled_client_and_restore_rolls_back() {
    let bed = testbed().await;
    let [a, b] = &bed.replicas;
    let dir = tempfile::tempdir().unwrap();
    let original = fleet(a, "").await["sources"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Every live stream gets the change: success, with the count.
    let file = dir.path().join("v2.json");
    std::fs::write(&file, base_doc("a2", &[("new", "1")])).unwrap();
    let out = put_wait(&bed, &file, &[]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all()
            .contains("every client has it: 50 streams on 2 services"),
        "{}",
        out.all()
    );
    for svc in [a, b] {
        let v = fleet(svc, "").await;
        assert_eq!(v["totals"]["current"], 50 / 2);
        assert_ne!(v["sources"][0]["digest"], original.as_str());
    }

    // A client on replica b stops reading: the next change cannot reach it.
    let stalled = stalled_consumer(b).await;
    bed.redis.set("base", &big_base_doc("a3")).unwrap();
    fleet_until(b, "the big document taken by every stream", |v| {
        v["totals"]["streams"] == 26 && v["totals"]["current"] == 26
    })
    .await;
    let file = dir.path().join("v4.json");
    std::fs::write(&file, big_base_doc("a4")).unwrap();
    let out = put_wait(&bed, &file, &["--wait-timeout", "2"]).await;
    assert_eq!(out.code, 4, "{}", out.all());
    let text = out.all();
    assert!(text.contains("stored "), "{text}");
    assert!(text.contains("not every client has digest"), "{text}");
    let named: Vec<&str> = text.lines().filter(|l| l.contains("provider_id")).collect();
    assert_eq!(named.len(), 1, "{text}");
    assert!(named[0].contains("\"stalled-consumer\""), "{text}");
    assert!(
        named[0].contains(&format!("http://127.0.0.1:{}", b.mgmt_port)),
        "{text}"
    );
    assert!(named[0].contains("peer 127.0.0.1:"), "{text}");
    drop(stalled);

    // Roll back to the first document by its digest, from replica a's memory, and wait.
    let out = put_wait(
        &bed,
        std::path::Path::new(""),
        &["--restore", &original[..16], "--wait-timeout", "10"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains(&format!("digest {original}")),
        "{}",
        out.all()
    );
    assert!(out.all().contains("every client has it"), "{}", out.all());
    for svc in [a, b] {
        let v = fleet(svc, "").await;
        assert_eq!(v["sources"][0]["digest"], original.as_str());
        assert_eq!(v["totals"]["behind"], 0);
    }
    let stored: String = bed.redis.cmd(&["GET", "base"]).unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["flags"]["a"]["variants"]["v"], "a1");

    // A digest the service does not remember: nothing stored, exit 5.
    let out = put_wait(
        &bed,
        std::path::Path::new(""),
        &["--restore", "0123456789abcdef"],
    )
    .await;
    assert_eq!(out.code, 5, "{}", out.all());
    assert!(
        out.all().contains("GET /changes lists them"),
        "{}",
        out.all()
    );
    // A bad --service fails before anything is stored.
    let uri = bed.redis.uri("base");
    let out = crate::tools::run(&[
        "put",
        "--redis-uri",
        &uri,
        "--wait",
        "--service",
        "127.0.0.1:1",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code, 64, "{}", out.all());
    assert!(out.all().contains("--service 127.0.0.1:1"), "{}", out.all());
    let after: String = bed.redis.cmd(&["GET", "base"]).unwrap();
    assert!(after.contains("a1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fleet_prints_each_service_and_the_streams_behind() {
    let (_redis, svc, _stream) = one_service_one_stream(&doc("f", "one")).await;
    let url = format!("http://localhost:{}", svc.mgmt_port);
    let out = crate::tools::run(&["watch", "--fleet", &url, "--count", "1"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains("streams=1 current=1 behind=0 stalled=0"),
        "{}",
        out.all()
    );
}

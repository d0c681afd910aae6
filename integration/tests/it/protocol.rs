//! The wire contract of flagd.sync.v1 (and legacy sync.v1) as clients rely on it.

use integration::client::flagd::{FetchAllFlagsRequest, GetMetadataRequest, SyncFlagsRequest};
use integration::client::legacy;
use integration::*;
use tonic::Request;

const SETS: &str = r#"{
  "metadata": {"flagSetId": "team-a"},
  "flags": {
    "a": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "b": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
          "metadata": {"flagSetId": "team-b"}}
  }
}"#;

fn flag_names(v: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = v["flags"].as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

async fn started(extra: &[&str]) -> (RedisServer, Service) {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", SETS).unwrap();
    let svc = Service::start(&redis.uri("flags"), extra).await.unwrap();
    (redis, svc)
}

#[tokio::test]
async fn selectors_filter_like_flagd_and_the_header_wins() {
    let (_redis, svc) = started(&[]).await;
    for (selector, want) in [
        ("", vec!["a", "b"]),
        ("flags", vec!["a", "b"]),
        ("source=flags", vec!["a", "b"]),
        ("source=other", vec![]),
        ("flagSetId=team-a", vec!["a"]),
        ("flagSetId=team-b", vec!["b"]),
        ("flagSetId=", vec![]),
        ("flagSetId=nobody", vec![]),
    ] {
        let mut s = svc.stream(selector).await.unwrap();
        assert_eq!(
            flag_names(&s.next_json().await.unwrap()),
            want,
            "selector {selector:?}"
        );
    }
    // Header over body.
    let mut c = svc.client().await.unwrap();
    let mut req = Request::new(SyncFlagsRequest {
        provider_id: "it".into(),
        selector: "flagSetId=team-a".into(),
    });
    req.metadata_mut()
        .insert("flagd-selector", "flagSetId=team-b".parse().unwrap());
    let mut s = SyncStream(c.sync_flags(req).await.unwrap().into_inner());
    assert_eq!(flag_names(&s.next_json().await.unwrap()), ["b"]);
}

#[tokio::test]
async fn a_bad_selector_key_is_invalid_argument() {
    let (_redis, svc) = started(&[]).await;
    let mut c = svc.client().await.unwrap();
    let err = c
        .sync_flags(SyncFlagsRequest {
            provider_id: "it".into(),
            selector: "team=a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut req = Request::new(FetchAllFlagsRequest::default());
    req.metadata_mut()
        .insert("flagd-selector", "bogus=1".parse().unwrap());
    assert_eq!(
        c.fetch_all_flags(req).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn a_change_reaches_only_streams_whose_selection_changed() {
    let (redis, svc) = started(&[]).await;
    let mut a = svc.stream("flagSetId=team-a").await.unwrap();
    let mut b = svc.stream("flagSetId=team-b").await.unwrap();
    a.next().await.unwrap();
    b.next().await.unwrap();
    redis
        .set(
            "flags",
            &SETS.replace(r#""defaultVariant": "off""#, r#""defaultVariant": "on""#),
        )
        .unwrap();
    let changed = b.next_json().await.unwrap();
    assert_eq!(changed["flags"]["b"]["defaultVariant"], "on");
    // team-a's view is byte-for-byte the same: a gets nothing. b's message above proves
    // the change was processed before this check.
    a.expect_silence(std::time::Duration::from_millis(300))
        .await
        .unwrap();
}

#[tokio::test]
async fn context_values_are_sent_as_sync_context_and_metadata() {
    let (_redis, svc) = started(&[
        "--context-value",
        "env=prod",
        "--context-value",
        "region=eu",
    ])
    .await;
    let mut s = svc.stream("").await.unwrap();
    let msg = s.next().await.unwrap();
    let ctx = msg.sync_context.expect("sync_context");
    let get = |k: &str| match ctx.fields.get(k).and_then(|v| v.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        (get("env").as_str(), get("region").as_str()),
        ("prod", "eu")
    );
    let mut c = svc.client().await.unwrap();
    let md = c
        .get_metadata(GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.metadata.unwrap(), ctx);
}

#[tokio::test]
async fn fetch_all_flags_returns_what_the_stream_sends() {
    let (_redis, svc) = started(&[]).await;
    let mut s = svc.stream("").await.unwrap();
    let streamed = s.next().await.unwrap().flag_configuration;
    let mut c = svc.client().await.unwrap();
    let fetched = c
        .fetch_all_flags(FetchAllFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.flag_configuration, streamed);
}

#[tokio::test]
async fn legacy_sync_v1_clients_get_full_sets_with_state_all() {
    let (redis, svc) = started(&[]).await;
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", svc.grpc_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = legacy::flag_sync_service_client::FlagSyncServiceClient::new(ch);
    let mut s = c
        .sync_flags(legacy::SyncFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next_legacy(&mut s).await;
    assert_eq!(first.state, legacy::SyncState::All as i32);
    redis.set("flags", &doc("z", "zz")).unwrap();
    let second = next_legacy(&mut s).await;
    assert_eq!(second.state, legacy::SyncState::All as i32);
    assert!(second.flag_configuration.contains("zz"));
}

async fn next_legacy(
    s: &mut tonic::Streaming<legacy::SyncFlagsResponse>,
) -> legacy::SyncFlagsResponse {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("timely")
        .expect("ok")
        .expect("open")
}

#[tokio::test]
async fn grpc_health_mirrors_readiness() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let redis = RedisServer::start().unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", svc.grpc_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = HealthClient::new(ch);
    let status = |h: &mut HealthClient<tonic::transport::Channel>| {
        let mut h = h.clone();
        async move {
            h.check(HealthCheckRequest {
                service: "flagd.sync.v1.FlagSyncService".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok()
        }
    };
    assert_eq!(status(&mut h).await, Some(ServingStatus::NotServing as i32));
    redis.set("flags", &doc("f", "1")).unwrap();
    eventually(WAIT, "health SERVING", || {
        let mut h = h.clone();
        async move { (status(&mut h).await == Some(ServingStatus::Serving as i32)).then_some(()) }
    })
    .await
    .unwrap();
}

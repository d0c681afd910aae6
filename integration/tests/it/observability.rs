//! The management endpoints, gRPC reflection and the logs, as an operator meets them:
//! every endpoint answered (and bad requests to each), metric names with units and
//! `_total`, `grpcurl`-style reflection, JSON logs with one line per state change and no
//! secret anywhere.

use integration::*;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// A raw HTTP/1.1 request; returns (status, headers, body).
async fn request(port: u16, method: &str, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(WAIT, fut)
        .await
        .expect("timely")
        .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head[9..12].parse().unwrap();
    (code, head.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn healthz_readyz_and_bad_requests() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]).unwrap();
    let uri = format!("redis://:s3cr3t-pw@127.0.0.1:{}/0?key=flags", redis.port);
    let svc = Service::start(&uri, &[]).await.unwrap();

    // Alive at once, whatever Redis holds.
    let (code, _, body) = request(svc.mgmt_port, "GET", "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // No document: 503, and the body says why.
    svc.readyz_until("key missing", |code, v| {
        code == 503 && v["key"]["state"] == "missing" && v["document"].is_null()
    })
    .await;
    let (_, v) = svc.readyz().await;
    assert_eq!(v["ready"], false);
    assert_eq!(v["redis"], "connected");
    assert_eq!(v["grpc_listening"], true);

    let mut con = redis.client().get_connection().unwrap();
    redis::cmd("AUTH")
        .arg("s3cr3t-pw")
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg("flags")
        .arg(doc("f", "one"))
        .query::<()>(&mut con)
        .unwrap();
    svc.wait_ready().await.unwrap();
    let _stream = {
        let mut s = svc.stream("").await.unwrap();
        s.next().await.unwrap();
        s
    };
    svc.readyz_until("one stream", |_, v| v["streams"] == 1)
        .await;
    let (code, v) = svc.readyz().await;
    assert_eq!(code, 200);
    assert_eq!(v["ready"], true);
    assert_eq!(v["trigger"], "keyspace");
    assert_eq!(v["key"]["state"], "valid");
    let d = &v["document"];
    assert_eq!(d["digest"].as_str().unwrap().len(), 64);
    assert_eq!(d["flags"], 1);
    assert!(d["bytes"].as_u64().unwrap() > 0);
    assert!(d["age_seconds"].as_f64().unwrap() >= 0.0);

    // Bad requests: unknown paths and methods.
    let (code, _, _) = request(svc.mgmt_port, "GET", "/nope").await;
    assert_eq!(code, 404);
    for path in ["/readyz", "/healthz", "/metrics"] {
        let (code, _, _) = request(svc.mgmt_port, "POST", path).await;
        assert_eq!(code, 405, "POST {path}");
    }
    // Never a secret, on any endpoint.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (_, head, body) = request(svc.mgmt_port, "GET", path).await;
        assert!(
            !head.contains("s3cr3t") && !body.contains("s3cr3t"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_units_and_totals() {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let mut s = svc.stream("").await.unwrap();
    s.next().await.unwrap();
    redis.set("flags", &doc("f", "two")).unwrap();
    s.next().await.unwrap();
    redis
        .set("flags", r#"{"flags":{"f":{"state":"ON"}}}"#)
        .unwrap();
    svc.readyz_until("refused", |_, v| v["key"]["state"] == "refused")
        .await;

    let (code, head, body) = request(svc.mgmt_port, "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for name in [
        "feature_flag_flagd_sync_active_streams 1",
        "flagd_redis_sync_pushes_total ",
        "flagd_redis_sync_documents_accepted_total 2",
        "flagd_redis_sync_documents_refused_total{reason=\"invalid_shape\"} 1",
        "flagd_redis_sync_notifications_total ",
        "flagd_redis_sync_redis_up 1",
        "flagd_redis_sync_document_size_bytes ",
        "flagd_redis_sync_document_last_change_seconds ",
        "flagd_redis_sync_propagation_duration_seconds_bucket{le=\"0.001\"}",
        "flagd_redis_sync_propagation_duration_seconds_count ",
        "target_info{",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{body}"
        );
    }
    // Every counter ends in _total; every sample line parses.
    for l in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = l.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{l}");
        }
    }
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let v = l.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "unparsable sample {l:?}");
    }
}

async fn reflect(svc: &Service, req: MessageRequest) -> Result<MessageResponse, tonic::Status> {
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", svc.grpc_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ServerReflectionClient::new(ch);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let mut stream = tokio::time::timeout(
        WAIT,
        c.server_reflection_info(tokio_stream::iter(vec![request])),
    )
    .await
    .expect("timely")
    .unwrap()
    .into_inner();
    let response = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("timely")?
        .expect("a response");
    Ok(response.message_response.expect("a message"))
}

#[tokio::test]
async fn reflection_lets_grpcurl_list_and_describe_the_services() {
    let redis = RedisServer::start().unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    let Ok(MessageResponse::ListServicesResponse(list)) =
        reflect(&svc, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "flagd.sync.v1.FlagSyncService",
        "sync.v1.FlagSyncService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let Ok(MessageResponse::FileDescriptorResponse(fds)) = reflect(
        &svc,
        MessageRequest::FileContainingSymbol("flagd.sync.v1.FlagSyncService".into()),
    )
    .await
    else {
        panic!("no descriptor");
    };
    assert!(!fds.file_descriptor_proto.is_empty());
    // Bad input: a symbol that does not exist is NOT_FOUND (as a status or in the stream).
    match reflect(
        &svc,
        MessageRequest::FileContainingSymbol("no.such.Service".into()),
    )
    .await
    {
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound),
        Ok(MessageResponse::ErrorResponse(e)) => {
            assert_eq!(e.error_code, tonic::Code::NotFound as i32)
        }
        Ok(other) => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

/// Log lines (JSON) whose `message` starts with `what`.
fn lines_with(logs: &str, what: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(what)))
        .collect()
}

#[tokio::test]
async fn json_logs_have_one_line_per_state_change_and_no_secret() {
    let mut redis = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]).unwrap();
    let uri = format!("redis://:s3cr3t-pw@127.0.0.1:{}/0?key=flags", redis.port);
    let auth = |r: &RedisServer, value: &str| {
        let mut con = r.client().get_connection().unwrap();
        redis::cmd("AUTH")
            .arg("s3cr3t-pw")
            .query::<()>(&mut con)
            .unwrap();
        redis::cmd("SET")
            .arg("flags")
            .arg(value)
            .query::<()>(&mut con)
            .unwrap();
    };
    auth(&redis, &doc("f", "one"));
    let svc = Service::start_with_env(
        &uri,
        &["--redis-log-format", "json", "--redis-interval", "1"],
        &[("RUST_LOG", "info")],
    )
    .await
    .unwrap();
    let mut s = svc.stream("").await.unwrap();
    s.next().await.unwrap();
    auth(&redis, &doc("f", "two"));
    s.next().await.unwrap();
    // The same bad value, read by notifications and by several polls: logged once.
    auth(&redis, "{not json");
    svc.readyz_until("refused", |_, v| v["key"]["state"] == "refused")
        .await;
    svc.metric_reaches("flagd_redis_sync_polls_total", 2.0)
        .await;

    let logs = svc.logs();
    for l in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    let connected = lines_with(&logs, "connected to redis and subscribed");
    assert_eq!(connected.len(), 1, "{logs}");
    assert_eq!(connected[0]["trigger"], "Keyspace");
    let accepted = lines_with(&logs, "flag document accepted and published");
    assert_eq!(accepted.len(), 2, "{logs}");
    assert!(accepted
        .iter()
        .all(|v| v["digest"].as_str().is_some_and(|d| d.len() == 12)));
    let refused = lines_with(&logs, "flag document refused");
    assert_eq!(refused.len(), 1, "{logs}");
    assert_eq!(refused[0]["level"], "ERROR");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("line 1 column 2"),
        "{}",
        refused[0]
    );

    // A reconnect is one line too.
    redis.kill9();
    eventually(WAIT, "the connection-lost line", || async {
        (!lines_with(&svc.logs(), "redis connection lost").is_empty()).then_some(())
    })
    .await
    .unwrap();
    redis.restart().unwrap();
    eventually(WAIT, "a second connected line", || async {
        (lines_with(&svc.logs(), "connected to redis and subscribed").len() == 2).then_some(())
    })
    .await
    .unwrap();
    assert!(!svc.logs().contains("s3cr3t-pw"), "the password was logged");
}

//! SyncFlags requests that are not what a client should send, against the real binary:
//! each is answered with a clear gRPC status (and the service keeps serving), never a
//! hang or a dropped connection. The bodies are made by hand (5-byte gRPC prefix, then
//! the message) and sent over a real HTTP/2 channel, since a well-behaved client cannot
//! send them.

use bytes::Bytes;
use integration::*;
use tonic::codegen::http;
use tower::ServiceExt;

const PATH: &str = "/flagd.sync.v1.FlagSyncService/SyncFlags";

/// One gRPC frame: the compressed flag, the length, the message.
fn frame(compressed: u8, msg: &[u8]) -> Vec<u8> {
    let mut v = vec![compressed];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// A SyncFlagsRequest with this selector (field 2, a string), encoded by hand.
fn request(selector: &str) -> Vec<u8> {
    let mut v = vec![0x12];
    let mut len = selector.len();
    while len >= 0x80 {
        v.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    v.push(len as u8);
    v.extend_from_slice(selector.as_bytes());
    v
}

/// Sends `body` as a SyncFlags call; the status the service answered with, from the
/// response headers (a trailers-only answer) or, for a stream, its first message.
async fn call(svc: &Service, body: Vec<u8>, encoding: Option<&str>) -> tonic::Code {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", svc.grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{}{PATH}", svc.grpc_port))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let req = req
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(body),
        )))
        .unwrap();
    let res = tokio::time::timeout(WAIT, channel.oneshot(req))
        .await
        .expect("no answer")
        .expect("the HTTP/2 request failed");
    let header = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().parse::<i32>().unwrap());
    match header {
        Some(code) => tonic::Code::from_i32(code),
        // A stream was opened: the request was accepted.
        None => tonic::Code::Ok,
    }
}

#[tokio::test]
async fn bad_sync_requests_get_a_clear_status_and_the_service_keeps_serving() {
    let redis = RedisServer::start().unwrap();
    redis.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start(&redis.uri("flags"), &[]).await.unwrap();
    svc.wait_ready().await.unwrap();

    // A well-formed request made the same way opens a stream: the helpers are right.
    assert_eq!(
        call(&svc, frame(0, &request("")), None).await,
        tonic::Code::Ok
    );
    // Larger than the 64 KiB request limit.
    let oversize = frame(0, &request(&"x".repeat(100 * 1024)));
    assert_eq!(call(&svc, oversize, None).await, tonic::Code::OutOfRange);
    // Compressed: no compression is supported.
    let compressed = frame(1, &request(""));
    assert_eq!(
        call(&svc, compressed, Some("gzip")).await,
        tonic::Code::Unimplemented
    );
    // Not a SyncFlagsRequest: field 1 (provider_id, a string) as a varint.
    let wrong = frame(0, &[0x08, 0x01]);
    assert_eq!(call(&svc, wrong, None).await, tonic::Code::Internal);

    // Still serving.
    let mut s = svc.stream("").await.unwrap();
    assert_eq!(
        default_value(&s.next_json().await.unwrap(), "f").as_deref(),
        Some("one")
    );
}

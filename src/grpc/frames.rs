//! `flagd.sync.v1.FlagSyncService/SyncFlags` written without a per-stream copy.
//!
//! tonic's codec encodes each outgoing message into the stream's own buffer. With a
//! pre-encoded message that is still one copy of the whole document per stream and per
//! change (10,000 streams x 1 MB = 10 GB copied, and held until sent), plus an 8 KB
//! encode buffer kept by every idle stream. This service answers SyncFlags itself: each
//! message goes to HTTP/2 as two DATA frames, the 5-byte gRPC prefix and the encoded
//! message's shared [`Bytes`] (a reference count; h2 hands it to `writev` as it is).
//!
//! Only the framing moves here. The request still goes through
//! [`FlagSyncService::sync_flags`] (selector, admission, span, the stream itself), and
//! every other method through the tonic-generated service, unchanged.

use super::SyncService;
use crate::wire::server::flagd::flag_sync_service_server::{
    FlagSyncService, FlagSyncServiceServer,
};
use crate::wire::server::flagd::SyncFlagsRequest;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;

const PATH: &str = "/flagd.sync.v1.FlagSyncService/SyncFlags";

type Stream_ = <SyncService as FlagSyncService>::SyncFlagsStream;

/// The flagd.sync.v1 service, with SyncFlags served by [`Frames`].
#[derive(Clone)]
pub struct FlagdSync {
    svc: SyncService,
    inner: FlagSyncServiceServer<SyncService>,
    max_request: usize,
}

impl FlagdSync {
    /// `max_request`: the largest request message accepted, on every method.
    pub fn new(svc: SyncService, max_request: usize) -> Self {
        FlagdSync {
            inner: FlagSyncServiceServer::new(svc.clone()).max_decoding_message_size(max_request),
            svc,
            max_request,
        }
    }
}

impl NamedService for FlagdSync {
    const NAME: &'static str = <FlagSyncServiceServer<SyncService> as NamedService>::NAME;
}

impl tower_service::Service<http::Request<Body>> for FlagdSync {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(self.inner.call(req));
        }
        let (svc, max) = (self.svc.clone(), self.max_request);
        Box::pin(async move {
            Ok(sync_flags(svc, req, max)
                .await
                .unwrap_or_else(Status::into_http))
        })
    }
}

async fn sync_flags(
    svc: SyncService,
    req: http::Request<Body>,
    max_request: usize,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, max_request.saturating_add(5))
        .collect()
        .await
        .map_err(|e| {
            Status::out_of_range(format!(
                "reading the request: {e} (limit {max_request} bytes)"
            ))
        })?
        .to_bytes();
    let message = decode_request(&bytes, max_request)?;
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    );
    let (metadata, stream, _) = FlagSyncService::sync_flags(&svc, request)
        .await?
        .into_parts();
    let mut res = http::Response::new(Body::new(Frames {
        stream,
        pending: Default::default(),
        done: false,
    }));
    *res.headers_mut() = metadata.into_headers();
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(res)
}

/// The single, uncompressed, length-prefixed request message (as tonic judges it).
fn decode_request(bytes: &[u8], max: usize) -> Result<SyncFlagsRequest, Status> {
    use prost::Message;
    let Some((&flag, rest)) = bytes.split_first() else {
        return Err(Status::internal("Missing request message."));
    };
    if flag != 0 {
        return Err(Status::unimplemented(
            "Message compressed, compression not supported.",
        ));
    }
    let (len, body) = rest
        .split_first_chunk::<4>()
        .map(|(l, b)| (u32::from_be_bytes(*l) as usize, b))
        .ok_or_else(|| Status::internal("truncated gRPC message prefix"))?;
    if len > max {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {max} bytes"
        )));
    }
    if body.len() != len {
        return Err(Status::internal("the request body is not one gRPC message"));
    }
    SyncFlagsRequest::decode(body).map_err(|e| Status::internal(e.to_string()))
}

/// The response body: for each message its prefix, then its shared parts; trailers last.
struct Frames {
    stream: Stream_,
    /// The current message's parts not sent yet.
    pending: std::collections::VecDeque<Bytes>,
    done: bool,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(part) = self.pending.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.stream.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(message))) => {
                let message = message.0;
                // The gRPC prefix and the message's few leading bytes in one frame, then
                // the shared document, then the other fields (if any).
                let mut prefix = BytesMut::with_capacity(5 + message.head.len());
                prefix.put_u8(0);
                prefix.put_u32(message.len() as u32);
                prefix.put_slice(&message.head);
                self.pending.extend(
                    [message.body, message.tail]
                        .into_iter()
                        .filter(|b| !b.is_empty()),
                );
                Poll::Ready(Some(Ok(Frame::data(prefix.freeze()))))
            }
            Poll::Ready(end) => {
                self.done = true;
                let status = match end {
                    Some(Err(status)) => status,
                    _ => Status::ok(""),
                };
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn framed(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    fn request() -> SyncFlagsRequest {
        SyncFlagsRequest {
            provider_id: "p".into(),
            selector: "flagSetId=a".into(),
        }
    }

    #[test]
    fn decodes_one_uncompressed_message() {
        let got = decode_request(&framed(0, &request().encode_to_vec()), 1024).unwrap();
        assert_eq!(got, request());
        assert_eq!(
            decode_request(&[], 1024).unwrap_err().code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn an_oversize_request_is_out_of_range_before_it_is_decoded() {
        let big = SyncFlagsRequest {
            selector: "x".repeat(64),
            ..request()
        };
        let err = decode_request(&framed(0, &big.encode_to_vec()), 16).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
        assert!(err.message().contains("limit is: 16"), "{err}");
    }

    #[test]
    fn a_compressed_request_is_unimplemented() {
        // Flag 1: compressed with the grpc-encoding the client named; none is supported.
        let err = decode_request(&framed(1, &request().encode_to_vec()), 1024).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    }

    #[test]
    fn a_wrongly_typed_request_is_refused() {
        // Field 1 (provider_id, a string) sent as a varint: not a SyncFlagsRequest.
        let err = decode_request(&framed(0, &[0x08, 0x01]), 1024).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");
        // Two messages where one is expected.
        let one = framed(0, &request().encode_to_vec());
        let err = decode_request(&[one.clone(), one].concat(), 1024).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");
    }
}

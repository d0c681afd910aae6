//! Generated protobuf code and the pre-encoded stream message.
//!
//! The server side of `SyncFlags` sends `EncodedSyncFlagsResponse`: a protobuf message
//! whose bytes were encoded once per snapshot (and selection) and are shared, by
//! reference count, by every stream. tonic's prost codec calls `encode_raw`, which copies
//! those bytes into the stream's HTTP/2 frame buffer; nothing is re-serialised per client.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

/// Server-side generated code (stream responses are pre-encoded).
pub mod server {
    pub mod flagd {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/server/flagd.sync.v1.rs"));
    }
    pub mod legacy {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/server/sync.v1.rs"));
    }
}

/// Plain generated client code and messages, for `watch`, tests and benchmarks.
pub mod client {
    pub mod flagd {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/client/flagd.sync.v1.rs"));
    }
    pub mod legacy {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/client/sync.v1.rs"));
    }
}

/// The file descriptor set of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

macro_rules! pre_encoded {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name(pub Bytes);

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                buf.put_slice(&self.0);
            }
            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), prost::DecodeError> {
                // Only ever encoded by the server; decoding skips everything.
                prost::encoding::skip_field(wire_type, tag, buf, ctx)
            }
            fn encoded_len(&self) -> usize {
                self.0.len()
            }
            fn clear(&mut self) {
                self.0 = Bytes::new();
            }
        }
    };
}

pre_encoded!(
    EncodedSyncFlagsResponse,
    "A `flagd.sync.v1.SyncFlagsResponse`, already encoded."
);
pre_encoded!(
    EncodedLegacySyncFlagsResponse,
    "A `sync.v1.SyncFlagsResponse` (state SYNC_STATE_ALL), already encoded."
);

/// Stream messages encoded since start (`flagd_redis_sync_encodings_total`): one per
/// published document (and per other selection asked for), whatever the number of
/// streams. Compared with the pushes, it shows a change is serialised once.
static ENCODINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The number of [`encode_responses`] calls so far.
pub fn encodings() -> u64 {
    ENCODINGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Encodes the stream messages for one flag document, once.
pub fn encode_responses(
    json: &str,
    context: Option<&prost_types::Struct>,
) -> (EncodedSyncFlagsResponse, EncodedLegacySyncFlagsResponse) {
    use prost::Message;
    ENCODINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let v1 = client::flagd::SyncFlagsResponse {
        flag_configuration: json.to_string(),
        sync_context: context.cloned(),
    };
    let legacy = client::legacy::SyncFlagsResponse {
        flag_configuration: json.to_string(),
        state: client::legacy::SyncState::All as i32,
    };
    (
        EncodedSyncFlagsResponse(Bytes::from(v1.encode_to_vec())),
        EncodedLegacySyncFlagsResponse(Bytes::from(legacy.encode_to_vec())),
    )
}

/// A protobuf Struct of string values (the sync context / metadata).
pub fn string_struct(pairs: &[(String, String)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(v.clone())),
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn pre_encoded_bytes_decode_as_the_real_messages() {
        let ctx = string_struct(&[("env".into(), "prod".into())]);
        let (v1, legacy) = encode_responses(r#"{"flags":{}}"#, Some(&ctx));
        // Through the pre-encoded type's own encoder, as tonic does it.
        let d = client::flagd::SyncFlagsResponse::decode(v1.encode_to_vec().as_slice()).unwrap();
        assert_eq!(d.flag_configuration, r#"{"flags":{}}"#);
        assert_eq!(d.sync_context, Some(ctx));
        let l =
            client::legacy::SyncFlagsResponse::decode(legacy.encode_to_vec().as_slice()).unwrap();
        assert_eq!(l.state, client::legacy::SyncState::All as i32);
        assert_eq!(l.flag_configuration, r#"{"flags":{}}"#);
    }
}

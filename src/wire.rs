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
        pub struct $name(pub Encoded);

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                for part in self.0.parts() {
                    buf.put_slice(part);
                }
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
                self.0 = Encoded::default();
            }
        }
    };
}

/// An encoded message in three parts: field 1's key and length, field 1's bytes (the flag
/// document, shared with the document itself: not copied), and the other fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded {
    pub head: Bytes,
    pub body: Bytes,
    pub tail: Bytes,
}

impl Encoded {
    /// The parts, in order (empty ones left out).
    pub fn parts(&self) -> impl Iterator<Item = &Bytes> {
        [&self.head, &self.body, &self.tail]
            .into_iter()
            .filter(|b| !b.is_empty())
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in one buffer (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().flat_map(|p| p.iter().copied()).collect()
    }
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

/// Encodes the stream messages for one flag document, once (the document is copied
/// once; [`encode_shared`] does not copy it).
pub fn encode_responses(
    json: &str,
    context: Option<&prost_types::Struct>,
) -> (EncodedSyncFlagsResponse, EncodedLegacySyncFlagsResponse) {
    encode_body(Bytes::copy_from_slice(json.as_bytes()), context)
}

/// [`encode_responses`] for a shared document: both messages hold a reference to it.
pub fn encode_shared(
    json: &std::sync::Arc<String>,
    context: Option<&prost_types::Struct>,
) -> (EncodedSyncFlagsResponse, EncodedLegacySyncFlagsResponse) {
    encode_body(Bytes::from_owner(SharedText(json.clone())), context)
}

/// A shared document as the owner of [`Bytes`].
struct SharedText(std::sync::Arc<String>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn encode_body(
    json: Bytes,
    context: Option<&prost_types::Struct>,
) -> (EncodedSyncFlagsResponse, EncodedLegacySyncFlagsResponse) {
    use prost::encoding::{encode_key, encode_varint, message};
    use prost::Message;
    ENCODINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Field 1 (flag_configuration, a string) in both messages.
    // An empty string is the field's default: not written (as prost does).
    let mut head = Vec::with_capacity(11);
    if !json.is_empty() {
        encode_key(1, WireType::LengthDelimited, &mut head);
        encode_varint(json.len() as u64, &mut head);
    }
    let head = Bytes::from(head);
    // flagd.sync.v1: field 2, sync_context.
    let mut v1_tail = Vec::new();
    if let Some(ctx) = context {
        message::encode(2, ctx, &mut v1_tail);
    }
    // sync.v1: field 2, state = SYNC_STATE_ALL.
    let legacy_tail = client::legacy::SyncFlagsResponse {
        flag_configuration: String::new(),
        state: client::legacy::SyncState::All as i32,
    }
    .encode_to_vec();
    (
        EncodedSyncFlagsResponse(Encoded {
            head: head.clone(),
            body: json.clone(),
            tail: Bytes::from(v1_tail),
        }),
        EncodedLegacySyncFlagsResponse(Encoded {
            head,
            body: json,
            tail: Bytes::from(legacy_tail),
        }),
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
    fn shared_encoding_is_the_generated_encoding_byte_for_byte() {
        let ctx = string_struct(&[("env".into(), "prod".into())]);
        for json in [
            String::new(),
            r#"{"flags":{}}"#.to_string(),
            "x".repeat(300),
        ] {
            for context in [None, Some(&ctx)] {
                let (v1, legacy) = encode_shared(&std::sync::Arc::new(json.clone()), context);
                let want = client::flagd::SyncFlagsResponse {
                    flag_configuration: json.clone(),
                    sync_context: context.cloned(),
                };
                assert_eq!(v1.0.to_vec(), want.encode_to_vec());
                assert_eq!(v1.encode_to_vec(), want.encode_to_vec());
                let want = client::legacy::SyncFlagsResponse {
                    flag_configuration: json.clone(),
                    state: client::legacy::SyncState::All as i32,
                };
                assert_eq!(legacy.encode_to_vec(), want.encode_to_vec());
            }
        }
    }

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

//! The KV event stream as the index reads it: `KvEventBatch` of
//! `smg-grpc-proto`'s `common.proto`, decoded without a vector per block.
//! A stored block's token ids stay the packed varints they came in as
//! ([`Block::tokens`] reads them into one reused buffer), and the fields
//! the index does not use are skipped. Field numbers are the proto's.
//!
//! Token ids sent unpacked (proto3 parsers must accept both) do not decode
//! as bytes: [`Batch::decode_any`] then decodes the generated type and
//! packs them, so any conforming engine is read.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::pb::smg::grpc::common as smg;

/// One batch of an engine's events.
#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    /// Numbered from 1 by the engine.
    #[prost(uint64, tag = "1")]
    pub sequence_number: u64,
    /// The events, in order.
    #[prost(message, repeated, tag = "3")]
    pub events: Vec<Event>,
    /// Set on a chunk of a snapshot (a resync).
    #[prost(message, optional, tag = "7")]
    pub snapshot: Option<smg::KvSnapshotChunk>,
    /// The engine's load when it sent the batch.
    #[prost(message, optional, tag = "8")]
    pub load: Option<smg::EngineLoad>,
}

/// One event.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// What happened.
    #[prost(oneof = "Data", tags = "2, 3, 4")]
    pub data: Option<Data>,
}

/// What an event says.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Data {
    /// Blocks stored, in chain order.
    #[prost(message, tag = "2")]
    Stored(Stored),
    /// Blocks removed.
    #[prost(message, tag = "3")]
    Removed(smg::KvBlocksRemoved),
    /// The whole cache cleared.
    #[prost(message, tag = "4")]
    Cleared(smg::KvCacheCleared),
}

/// Blocks stored after `parent_block_hash` (none: at the root).
#[derive(Clone, PartialEq, Message)]
pub struct Stored {
    /// The blocks, each the next of the chain.
    #[prost(message, repeated, tag = "1")]
    pub blocks: Vec<Block>,
    /// The engine's hash of the block before the first.
    #[prost(int64, optional, tag = "2")]
    pub parent_block_hash: Option<i64>,
}

/// One stored block: the engine's hash and its token ids, packed.
#[derive(Clone, PartialEq, Message)]
pub struct Block {
    /// The engine's hash of it.
    #[prost(int64, tag = "1")]
    pub block_hash: i64,
    /// Its token ids as packed varints.
    #[prost(bytes = "bytes", tag = "2")]
    pub token_ids: Bytes,
}

impl Block {
    /// Its token ids, into `out` (cleared first); `false` if they are not
    /// well-formed varints of 32 bits.
    pub fn tokens(&self, out: &mut Vec<u32>) -> bool {
        out.clear();
        let mut rest: &[u8] = &self.token_ids;
        while !rest.is_empty() {
            match prost::encoding::decode_varint(&mut rest).map(u32::try_from) {
                Ok(Ok(id)) => out.push(id),
                _ => return false,
            }
        }
        true
    }
}

impl Batch {
    /// Decodes one batch, whether its token ids are packed or not.
    pub fn decode_any(message: &[u8]) -> Result<Batch, prost::DecodeError> {
        Batch::decode(message).or_else(|_| smg::KvEventBatch::decode(message).map(Batch::from))
    }
}

impl From<smg::KvEventBatch> for Batch {
    fn from(b: smg::KvEventBatch) -> Self {
        Batch {
            sequence_number: b.sequence_number,
            events: b.events.into_iter().map(Event::from).collect(),
            snapshot: b.snapshot,
            load: b.load,
        }
    }
}

impl From<smg::KvCacheEvent> for Event {
    fn from(e: smg::KvCacheEvent) -> Self {
        use smg::kv_cache_event::Data as D;
        Event {
            data: e.data.map(|d| match d {
                D::Stored(s) => Data::Stored(Stored {
                    blocks: s.blocks.into_iter().map(Block::from).collect(),
                    parent_block_hash: s.parent_block_hash,
                }),
                D::Removed(r) => Data::Removed(r),
                D::Cleared(c) => Data::Cleared(c),
            }),
        }
    }
}

impl From<smg::KvBlock> for Block {
    fn from(b: smg::KvBlock) -> Self {
        let mut packed = BytesMut::with_capacity(b.token_ids.len() * 3);
        for id in &b.token_ids {
            prost::encoding::encode_varint(u64::from(*id), &mut packed);
        }
        Block {
            block_hash: b.block_hash,
            token_ids: packed.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(tokens: Vec<u32>) -> smg::KvEventBatch {
        smg::KvEventBatch {
            sequence_number: 7,
            events: vec![smg::KvCacheEvent {
                event_id: 1,
                data: Some(smg::kv_cache_event::Data::Stored(smg::KvBlocksStored {
                    blocks: vec![smg::KvBlock {
                        block_hash: -5,
                        token_ids: tokens,
                        block_size: 4,
                        ..Default::default()
                    }],
                    parent_block_hash: Some(3),
                    medium: Some("GPU".into()),
                    ..Default::default()
                })),
            }],
            load: Some(smg::EngineLoad {
                running_requests: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn tokens_of(b: &Batch) -> (i64, Option<i64>, Vec<u32>) {
        let Some(Data::Stored(s)) = &b.events[0].data else {
            panic!("stored");
        };
        let mut out = Vec::new();
        assert!(s.blocks[0].tokens(&mut out));
        (s.blocks[0].block_hash, s.parent_block_hash, out)
    }

    #[test]
    fn reads_what_the_generated_type_writes_skipping_the_rest() {
        let ids = vec![0, 1, 127, 128, 70_000, u32::MAX];
        let wire = batch(ids.clone()).encode_to_vec();
        // Packed, as the generated type writes them: the quick way reads it.
        assert_eq!(Batch::decode(wire.as_slice()), Batch::decode_any(&wire));
        let read = Batch::decode(wire.as_slice()).unwrap();
        assert_eq!(read.sequence_number, 7);
        assert_eq!(read.load.as_ref().map(|l| l.running_requests), Some(2));
        assert_eq!(tokens_of(&read), (-5, Some(3), ids));
    }

    #[test]
    fn reads_token_ids_sent_unpacked() {
        // Field 2 of KvBlock as separate varints (wire type 0), as a
        // proto3 writer may send them.
        let mut block = Vec::new();
        prost::encoding::int64::encode(1, &-5i64, &mut block);
        for id in [1u32, 300, 5] {
            prost::encoding::uint32::encode(2, &id, &mut block);
        }
        let mut stored = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut stored);
        prost::encoding::encode_varint(block.len() as u64, &mut stored);
        stored.extend_from_slice(&block);
        let mut event = Vec::new();
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut event);
        prost::encoding::encode_varint(stored.len() as u64, &mut event);
        event.extend_from_slice(&stored);
        let mut wire = Vec::new();
        prost::encoding::encode_key(3, prost::encoding::WireType::LengthDelimited, &mut wire);
        prost::encoding::encode_varint(event.len() as u64, &mut wire);
        wire.extend_from_slice(&event);
        assert!(
            Batch::decode(wire.as_slice()).is_err(),
            "bytes cannot take varints"
        );
        let read = Batch::decode_any(&wire).unwrap();
        assert_eq!(tokens_of(&read), (-5, None, vec![1, 300, 5]));
    }

    #[test]
    fn token_ids_over_32_bits_are_refused() {
        let block = Block {
            block_hash: 1,
            token_ids: {
                let mut b = BytesMut::new();
                prost::encoding::encode_varint(1 << 40, &mut b);
                b.freeze()
            },
        };
        assert!(!block.tokens(&mut Vec::new()));
    }
}

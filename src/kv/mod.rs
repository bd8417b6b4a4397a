//! Routing on what the engines really cache: the router's index of every
//! engine worker's KV blocks, fed by the engines' own `SubscribeKvEvents`
//! streams ([`subscribe`]), keyed by the router's own chained hash of token
//! ids ([`hash`]), with what this router sent and the engines have not yet
//! confirmed held as pending ([`index`]); the stream's messages decoded for
//! it without a vector per block ([`wire`]).

pub mod hash;
pub mod index;
pub mod subscribe;
pub mod wire;

pub use index::{EngineLoad, KvIndex};
pub use subscribe::KvEvents;

//! Bootstrap rooms for prefill/decode calls: unique among the calls in flight
//! across every PD router (gRPC and HTTP), held for the life of a call.

use std::sync::Arc;

use dashmap::DashSet;

/// The rooms of the calls in flight. A `DashSet`: every PD call inserts and
/// removes one, from many tasks at once.
#[derive(Debug, Default, Clone)]
pub struct BootstrapRooms {
    rooms: Arc<DashSet<u64>>,
}

impl BootstrapRooms {
    /// A fresh room, unique among those in flight and never 0 (proto3's
    /// "unset", which would not override a value a client sent).
    pub fn claim(&self) -> Room {
        self.claim_below(u64::MAX)
    }

    /// A fresh room below `limit` (SGLang's rooms are `int32`: 2³¹),
    /// unique among those in flight and never 0.
    pub fn claim_below(&self, limit: u64) -> Room {
        loop {
            let id = rand::random_range(1..limit);
            if id != 0 && self.rooms.insert(id) {
                return Room {
                    rooms: self.rooms.clone(),
                    id,
                };
            }
        }
    }

    /// Rooms in flight.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// True when no PD call is in flight.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

/// A room held until dropped.
#[derive(Debug)]
pub struct Room {
    rooms: Arc<DashSet<u64>>,
    id: u64,
}

impl Room {
    /// The room number.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.rooms.remove(&self.id);
    }
}

//! Generated protobuf code, included in exactly one place.
//!
//! The prost messages and services of `switchyard.v1` live at the top of this
//! module. [`raw`] holds a second `Inference` server and client whose messages
//! are undecoded bytes, for the mock worker (which echoes fields unknown to
//! its proto). The router's own hop relays bytes without them (`transport`).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("switchyard.v1");

/// `switchyard.v1.Inference` over raw message bytes (see `build.rs`).
pub mod raw {
    include!(concat!(env!("OUT_DIR"), "/switchyard.v1.Inference.rs"));
}

/// The encoded descriptor set of `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

/// gRPC service names as they appear on the wire and in `grpc.health.v1`.
pub mod service_names {
    /// The inference service (clients and workers).
    pub const INFERENCE: &str = "switchyard.v1.Inference";
    /// The worker management service (operators).
    pub const WORKER_MANAGEMENT: &str = "switchyard.v1.WorkerManagement";
}

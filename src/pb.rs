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

/// The engines' own protocols, one module per package of every published
/// definition in `proto/smg` (`sglang.grpc.scheduler` as
/// `sglang::grpc::scheduler`, aliased `sglang_scheduler`; `trtllm`;
/// `mlx.grpc.engine`; `vllm.grpc.engine`; their shared `smg.grpc.common`),
/// written by `build.rs`.
mod engine_protos {
    include!(concat!(env!("OUT_DIR"), "/engine_protos.rs"));
}
pub use engine_protos::*;

/// etcd's v3 API, clients only (`proto/etcd`), for the shared registry
/// (`store::etcd`); nested as their packages are.
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
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

/// The codec of Switchyard's own services and clients: prost's, except that
/// a message that does not decode is the sender's fault, `INVALID_ARGUMENT`
/// naming the field prost names, not tonic's `INTERNAL` (which tells a
/// client the server failed).
#[derive(Debug, Clone, Copy)]
pub struct StrictCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(std::marker::PhantomData)
    }
}

/// [`StrictCodec`]'s decoder.
#[derive(Debug, Clone, Copy)]
pub struct StrictDecoder<U>(std::marker::PhantomData<U>);

impl<U: prost::Message + Default> tonic::codec::Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<U>, tonic::Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::invalid_argument(format!("not a valid message: {e}")))
    }
}

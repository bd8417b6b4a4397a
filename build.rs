//! Compiles `proto/` with tonic-prost-build, using a vendored protoc so a fresh
//! machine needs no system protobuf.
//!
//! Six things come out of it, all in `OUT_DIR`:
//! - `switchyard.v1.rs`: prost messages plus clients and servers for both services;
//! - `sglang.grpc.scheduler.rs`, `vllm.grpc.engine.rs`, `trtllm.rs`,
//!   `mlx.grpc.engine.rs`, `smg.grpc.common.rs`:
//!   the engines' own protocols, from the published `smg-grpc-proto` files
//!   in `proto/smg` (messages, clients, and servers with default stubs for
//!   the mock engines);
//! - `etcdserverpb.rs`, `mvccpb.rs`, `authpb.rs` (and the option packages
//!   they import): etcd's v3 API clients, from `proto/etcd`, for the shared
//!   registry;
//! - `switchyard.v1.Inference.rs`: a second `Inference` server and client whose
//!   messages are raw bytes (the mock worker's server, so that it can echo
//!   fields its proto does not know; the router's own hop is `transport`);
//! - `switchyard_descriptor.bin`: the descriptor set served by gRPC reflection;
//! - `fidelity/switchyard.v1.rs`: a test-only copy of the proto with extra fields.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let config = || {
        let mut c = tonic_prost_build::Config::new();
        c.protoc_executable(&protoc);
        c
    };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("switchyard_descriptor.bin"))
        // A request that does not decode is the client's fault:
        // INVALID_ARGUMENT, not tonic's INTERNAL (pb::StrictCodec).
        .codec_path("crate::pb::StrictCodec")
        .compile_with_config(
            config(),
            &[
                "proto/switchyard/v1/workers.proto",
                "proto/switchyard/v1/inference.proto",
            ],
            &["proto"],
        )?;

    // The engines' protocols, as published (proto/smg/README.md). The
    // router reaches engines through `transport`, with the messages only;
    // the mock engines implement the servers' traits (default stubs answer
    // UNIMPLEMENTED for RPCs a mock does not serve); tests use the clients.
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_with_config(
            config(),
            &[
                PathBuf::from("proto/smg/common.proto"),
                PathBuf::from("proto/smg/sglang_scheduler.proto"),
                PathBuf::from("proto/smg/vllm_engine.proto"),
                PathBuf::from("proto/smg/trtllm_service.proto"),
                PathBuf::from("proto/smg/mlx_engine.proto"),
            ],
            &[PathBuf::from("proto/smg"), well_known],
        )?;

    // etcd's v3 API, as published (proto/etcd/README.md): clients only, for
    // the shared registry (`store::etcd`).
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(
            config(),
            &[PathBuf::from("proto/etcd/etcd/api/etcdserverpb/rpc.proto")],
            &[
                PathBuf::from("proto/etcd"),
                protoc_bin_vendored::include_path()?,
            ],
        )?;

    let raw = |name: &str, route: &str, streaming: bool| {
        let m = tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("::bytes::Bytes")
            .output_type("::bytes::Bytes")
            .codec_path("crate::transport::grpc::codec::BytesCodec");
        if streaming {
            m.server_streaming().build()
        } else {
            m.build()
        }
    };
    let raw_inference = tonic_build::manual::Service::builder()
        .name("Inference")
        .package("switchyard.v1")
        .method(raw("generate", "Generate", true))
        .method(raw("abort", "Abort", false))
        .build();
    tonic_build::manual::Builder::new().compile(&[raw_inference]);

    let fidelity = out_dir.join("fidelity");
    std::fs::create_dir_all(&fidelity)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&fidelity)
        .compile_with_config(config(), &["tests/proto/fidelity.proto"], &["tests/proto"])?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");
    Ok(())
}

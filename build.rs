//! Compiles `proto/` with tonic-prost-build, using a vendored protoc so a fresh
//! machine needs no system protobuf.
//!
//! Seven things come out of it, all in `OUT_DIR`:
//! - `switchyard.v1.rs`: prost messages plus clients and servers for both services;
//! - `sglang.grpc.scheduler.rs`, `vllm.grpc.engine.rs`, `trtllm.rs`,
//!   `mlx.grpc.engine.rs`, `smg.grpc.common.rs`:
//!   the engines' own protocols, from every published `smg-grpc-proto` file
//!   in `proto/smg` (messages, clients, and servers with default stubs for
//!   the mock engines), and `engine_protos.rs`, their modules nested as
//!   their packages are (included by `src/pb.rs`: a new engine's proto
//!   needs no line here or there);
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
    // Every `.proto` in the directory: an engine's protocol is added by
    // adding its file, and `engine_protos.rs` (below) makes its module.
    let well_known = protoc_bin_vendored::include_path()?;
    let mut engine_protos: Vec<PathBuf> = std::fs::read_dir("proto/smg")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    engine_protos.sort();
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_with_config(
            config(),
            &engine_protos,
            &[PathBuf::from("proto/smg"), well_known],
        )?;
    std::fs::write(
        out_dir.join("engine_protos.rs"),
        engine_modules(&engine_protos)?,
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

/// The modules of the engines' protocols, nested as their packages are (so
/// the generated cross-package paths resolve), each including its generated
/// file; and for a package of several parts an alias of its first and last
/// (`sglang.grpc.scheduler` as `sglang_scheduler`).
fn engine_modules(protos: &[PathBuf]) -> Result<String, Box<dyn std::error::Error>> {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Node {
        children: BTreeMap<String, Node>,
        package: Option<(String, String)>,
    }
    fn render(name: &str, node: &Node, out: &mut String) {
        out.push_str(&format!("pub mod {name} {{\n"));
        if let Some((package, file)) = &node.package {
            out.push_str(&format!(
                "    //! `{package}`, from the published `proto/smg/{file}`.\n    include!(concat!(env!(\"OUT_DIR\"), \"/{package}.rs\"));\n"
            ));
        }
        for (child, n) in &node.children {
            render(child, n, out);
        }
        out.push_str("}\n");
    }
    let mut root = Node::default();
    let mut aliases = Vec::new();
    for proto in protos {
        let text = std::fs::read_to_string(proto)?;
        let package = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim_end_matches(';').trim().to_string())
            .ok_or_else(|| format!("{}: no package line", proto.display()))?;
        let parts: Vec<&str> = package.split('.').collect();
        let mut node = &mut root;
        for part in &parts {
            node = node.children.entry(part.to_string()).or_default();
        }
        let file = proto.file_name().unwrap_or_default().to_string_lossy();
        node.package = Some((package.clone(), file.to_string()));
        if parts.len() > 1 {
            aliases.push(format!(
                "pub use {}::{} as {}_{};\n",
                parts[0],
                parts[1..].join("::"),
                parts[0],
                parts[parts.len() - 1]
            ));
        }
    }
    let mut out = String::new();
    for (name, node) in &root.children {
        render(name, node, &mut out);
    }
    for alias in aliases {
        out.push_str(&alias);
    }
    Ok(out)
}

//! gRPC routers: regular now; prefill/decode builds on the same pieces.

mod regular;

pub use regular::GrpcRegularRouter;

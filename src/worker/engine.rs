//! Which engine a gRPC worker runs, as the domain sees it: a name and a
//! service. What differs by engine is the engine's own file (`engines`).

use std::fmt;

/// The software a gRPC worker runs, which fixes the protocol it speaks: a
/// handle on one engine's [`EngineName`]. The domain knows an engine only by
/// its name and service; everything that differs by engine is asked of the
/// engine's own file (`engines::seam`), which defines its `EngineName`.
#[derive(Clone, Copy)]
pub struct Engine(&'static EngineName);

/// What names an engine: one `static` per engine, in the engine's file.
#[derive(Debug)]
pub struct EngineName {
    /// The name used in flags, configs and JSON.
    pub name: &'static str,
    /// The gRPC service the engine serves (also its `grpc.health.v1` name).
    pub service: &'static str,
    /// The path of the engine's `Generate` method.
    pub generate_path: &'static str,
}

/// `switchyard.v1.Inference`: the router's own protocol (the mock worker,
/// or a worker of one's own), and the engine of a worker registered
/// without one.
static SWITCHYARD: EngineName = EngineName {
    name: "switchyard",
    service: "switchyard.v1.Inference",
    generate_path: "/switchyard.v1.Inference/Generate",
};

impl Engine {
    /// The router's own protocol, `switchyard.v1.Inference`.
    pub const SWITCHYARD: Engine = Engine(&SWITCHYARD);

    /// The engine named by `name` (a `static` of the engine's file).
    pub const fn new(name: &'static EngineName) -> Engine {
        Engine(name)
    }

    /// The gRPC service the engine serves (also its `grpc.health.v1` name).
    pub fn service(self) -> &'static str {
        self.0.service
    }

    /// The path of the engine's `Generate` method.
    pub fn generate_path(self) -> &'static str {
        self.0.generate_path
    }

    /// The name used in flags, configs and JSON.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Whether this is the router's own protocol (no translation, no
    /// tokenizer, no engine calls).
    pub fn is_switchyard(self) -> bool {
        self == Engine::SWITCHYARD
    }
}

impl PartialEq for Engine {
    fn eq(&self, other: &Engine) -> bool {
        // One `static` per engine: its address is the engine.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Engine {}

impl std::hash::Hash for Engine {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state)
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

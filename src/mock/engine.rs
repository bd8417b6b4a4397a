//! Which protocol a gRPC mock serves.

/// The protocol a gRPC mock serves: Switchyard's own or one engine's (the
/// mock's own list: it knows nothing of the router's engine seam).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MockEngine {
    /// `switchyard.v1.Inference`.
    #[default]
    Switchyard,
    /// SGLang's `sglang.grpc.scheduler.SglangScheduler`.
    Sglang,
    /// vLLM's `vllm.grpc.engine.VllmEngine`.
    Vllm,
    /// TensorRT-LLM's `trtllm.TrtllmService`.
    Trtllm,
    /// MLX's `mlx.grpc.engine.MlxEngine`.
    Mlx,
}

impl MockEngine {
    /// Every mode, for flags.
    pub const ALL: [MockEngine; 5] = [
        MockEngine::Switchyard,
        MockEngine::Sglang,
        MockEngine::Vllm,
        MockEngine::Trtllm,
        MockEngine::Mlx,
    ];

    /// The gRPC service it serves (also its `grpc.health.v1` name).
    pub fn service(self) -> &'static str {
        match self {
            MockEngine::Switchyard => "switchyard.v1.Inference",
            MockEngine::Sglang => "sglang.grpc.scheduler.SglangScheduler",
            MockEngine::Vllm => "vllm.grpc.engine.VllmEngine",
            MockEngine::Trtllm => "trtllm.TrtllmService",
            MockEngine::Mlx => "mlx.grpc.engine.MlxEngine",
        }
    }

    /// Its name in flags, as the router's `--engine` spells it.
    pub fn name(self) -> &'static str {
        match self {
            MockEngine::Switchyard => "switchyard",
            MockEngine::Sglang => "sglang",
            MockEngine::Vllm => "vllm",
            MockEngine::Trtllm => "trtllm",
            MockEngine::Mlx => "mlx",
        }
    }
}

impl std::fmt::Display for MockEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MockEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        MockEngine::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = MockEngine::ALL.iter().map(|e| e.name()).collect();
                format!("unknown engine {s:?}: use one of {}", names.join(", "))
            })
    }
}

//! Routing on the engines' own KV events (`kv_aware`), against simulated
//! SGLang engines (`switchyard::mock::sim`) over real sockets: the router
//! follows each engine's `SubscribeKvEvents` stream, sends a prompt where
//! its prefix is really cached (even when another client put it there),
//! resumes a dropped stream without loss, and resyncs after a gap or an
//! engine restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use switchyard::config::{Config, PolicyConfig, PolicyKind};
use switchyard::mock::sim::{SchedConfig, SimConfig, SimWorker};
use switchyard::pb;
use switchyard::pb::sglang_scheduler as sgl;
use switchyard::pb::sglang_scheduler::sglang_scheduler_client::SglangSchedulerClient;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::transport::Channel;

pub(crate) const BLOCK: usize = 16;

fn sim_config(history: usize) -> SimConfig {
    SimConfig {
        sched: SchedConfig {
            block_size: BLOCK,
            num_gpu_blocks: 512,
            ..SchedConfig::default()
        },
        speedup_ratio: 100.0,
        event_history: history,
        heartbeat: Duration::from_millis(100),
        model: MODEL.into(),
        ..SimConfig::default()
    }
}

pub(crate) async fn sim(history: usize) -> SimWorker {
    SimWorker::start("127.0.0.1:0".parse().unwrap(), sim_config(history))
        .await
        .unwrap()
}

pub(crate) async fn kv_router() -> Router {
    start_router_with(Config {
        policy: PolicyConfig {
            name: PolicyKind::KvAware,
            ..PolicyConfig::default()
        },
        ..test_config()
    })
    .await
}

/// `n` tokens from `seed`: equal seeds share every token.
fn prompt(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| seed * 100_000 + i).collect()
}

/// Sends `ids` over SGLang's protocol on `channel`: the worker that
/// answered (when through the router) and the cached tokens reported.
async fn generate(channel: Channel, ids: Vec<u32>) -> (String, u32) {
    let mut client = SglangSchedulerClient::new(channel);
    let response = client
        .generate(sgl::GenerateRequest {
            request_id: format!("r-{}", ids.len()),
            tokenized: Some(sgl::TokenizedInput {
                input_ids: ids,
                ..Default::default()
            }),
            sampling_params: Some(sgl::SamplingParams {
                max_new_tokens: Some(2),
                ..Default::default()
            }),
            stream: true,
            ..Default::default()
        })
        .await
        .expect("Generate");
    let worker = header(response.metadata(), switchyard::routers::WORKER_ID_HEADER);
    let mut stream = response.into_inner();
    let mut cached = 0;
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(sgl::generate_response::Response::Complete(done)) = message.response {
            cached = done.cached_tokens;
        }
    }
    (worker, cached)
}

async fn direct(worker: &SimWorker) -> Channel {
    Channel::from_shared(worker.url().replace("grpc://", "http://"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Registers an SGLang worker (the router asks it for its model).
pub(crate) async fn add_sglang(router: &Router, url: &str) -> String {
    router
        .try_add_spec(pb::WorkerSpec {
            url: url.into(),
            model_id: MODEL.into(),
            engine: pb::Engine::Sglang as i32,
            ..Default::default()
        })
        .await
        .expect("AddWorker")
        .id
}

async fn kv_of(router: &Router, id: &str) -> pb::KvEventStream {
    router
        .list()
        .await
        .into_iter()
        .find(|w| w.id == id)
        .and_then(|w| w.kv_events)
        .unwrap_or_default()
}

/// Waits until the router's index holds `blocks` blocks for worker `id`.
pub(crate) async fn until_blocks(router: &Router, id: &str, blocks: u64) {
    eventually(Duration::from_secs(10), "the index catches up", || async {
        let kv = kv_of(router, id).await;
        kv.state == "live" && kv.blocks == blocks
    })
    .await;
}

#[tokio::test]
async fn a_prompt_goes_where_its_prefix_is_cached_even_if_another_client_put_it_there() {
    let router = kv_router().await;
    let (a, b) = (sim(4096).await, sim(4096).await);
    let ia = add_sglang(&router, &a.url()).await;
    let ib = add_sglang(&router, &b.url()).await;
    for id in [&ia, &ib] {
        until_blocks(&router, id, 0).await;
    }
    // Another client warms B directly: the router never saw that prompt.
    let shared = prompt(7, 10 * BLOCK);
    let (_, cached) = generate(direct(&b).await, shared.clone()).await;
    assert_eq!(cached, 0);
    until_blocks(&router, &ib, 10).await;
    // Every follow-up turn goes to B and is served from its cache.
    for turn in 0..4u32 {
        let mut ids = shared.clone();
        ids.extend(prompt(100 + turn, BLOCK));
        let (worker, cached) = generate(router.channel.clone(), ids).await;
        assert_eq!(worker, ib, "turn {turn}");
        assert_eq!(cached as usize, 10 * BLOCK, "turn {turn}");
    }
    // The listing shows the stream that fed it: B's events, one snapshot.
    let kv = kv_of(&router, &ib).await;
    assert!(kv.events >= 10, "{kv:?}");
    assert_eq!(kv.resyncs, 1, "the first snapshot only: {kv:?}");
}

/// A TCP forwarder whose connections can be cut.
struct Cuttable {
    addr: SocketAddr,
    conns: Arc<std::sync::Mutex<JoinSet<()>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn to(target: &str) -> Cuttable {
        let target: SocketAddr = target.trim_start_matches("grpc://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let held = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                held.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Cuttable {
            addr,
            conns,
            _accept: accept,
        }
    }

    fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    fn cut(&self) {
        self.conns.lock().unwrap().abort_all();
    }
}

#[tokio::test]
async fn a_dropped_stream_resumes_from_its_cursor_without_loss() {
    let router = kv_router().await;
    let engine = sim(4096).await;
    let hop = Cuttable::to(&engine.url()).await;
    let id = add_sglang(&router, &hop.url()).await;
    until_blocks(&router, &id, 0).await;
    hop.cut();
    // While the stream is down, another client stores blocks.
    for seed in 1..=3 {
        generate(direct(&engine).await, prompt(seed, 4 * BLOCK)).await;
    }
    until_blocks(&router, &id, 12).await;
    let kv = kv_of(&router, &id).await;
    assert!(kv.reconnects >= 1, "{kv:?}");
    assert_eq!(kv.resyncs, 1, "resumed from history, not resynced: {kv:?}");
    assert_eq!(engine.engine().snapshot().len(), 12);
}

#[tokio::test]
async fn a_gap_past_the_engines_history_resyncs_from_a_snapshot() {
    let router = kv_router().await;
    // The engine keeps two batches: a stream down for longer cannot resume.
    let engine = sim(2).await;
    let hop = Cuttable::to(&engine.url()).await;
    let id = add_sglang(&router, &hop.url()).await;
    until_blocks(&router, &id, 0).await;
    hop.cut();
    for seed in 1..=4 {
        generate(direct(&engine).await, prompt(seed, 2 * BLOCK)).await;
    }
    until_blocks(&router, &id, 8).await;
    let kv = kv_of(&router, &id).await;
    assert!(kv.resyncs >= 2, "{kv:?}");
}

#[tokio::test]
async fn an_engine_restart_resyncs_and_forgets_what_the_old_engine_held() {
    let router = kv_router().await;
    let engine = sim(4096).await;
    let addr: SocketAddr = engine.url().trim_start_matches("grpc://").parse().unwrap();
    let id = add_sglang(&router, &engine.url()).await;
    generate(direct(&engine).await, prompt(1, 5 * BLOCK)).await;
    until_blocks(&router, &id, 5).await;
    engine.stop().await;
    // The same address, a fresh engine: numbering starts again.
    let fresh = SimWorker::start(addr, sim_config(4096)).await.unwrap();
    until_blocks(&router, &id, 0).await;
    generate(direct(&fresh).await, prompt(2, 3 * BLOCK)).await;
    until_blocks(&router, &id, 3).await;
    assert!(kv_of(&router, &id).await.resyncs >= 2);
}

#[tokio::test]
async fn a_removed_worker_is_forgotten_and_prefill_choice_follows_the_index() {
    use switchyard::policies::{self, RequestFacts};
    use switchyard::worker::{WorkerRegistry, WorkerRole, WorkerSpec};
    // The policy as the PD router's prefill set builds it, on prefill workers.
    let registry = Arc::new(WorkerRegistry::new(Default::default()));
    let (a, b) = (sim(4096).await, sim(4096).await);
    let add = |url: String| {
        let mut spec =
            WorkerSpec::new(&url, MODEL, WorkerRole::Prefill, Some(9), BTreeMap::new()).unwrap();
        spec.engine = Some(switchyard::engines::by_name("sglang").unwrap());
        registry.add(spec).unwrap()
    };
    let (wa, wb) = (add(a.url()), add(b.url()));
    let config = PolicyConfig {
        prefill: PolicyKind::KvAware,
        ..PolicyConfig::default()
    };
    let policy = policies::build(config.prefill, &config, &registry);
    let ids = prompt(9, 6 * BLOCK);
    generate(direct(&b).await, ids.clone()).await;
    eventually(Duration::from_secs(10), "B's blocks indexed", || async {
        policy.remembered(&wb) == 6
    })
    .await;
    let facts = RequestFacts {
        model: MODEL,
        token_ids: Some(&ids),
        ..Default::default()
    };
    let candidates = vec![wa.clone(), wb.clone()];
    for _ in 0..5 {
        assert_eq!(policy.select(&candidates, &facts).unwrap().id(), wb.id());
    }
    registry.remove(wb.id().as_str()).unwrap();
    assert_eq!(policy.remembered(&wb), 0);
    assert_eq!(wb.kv_stream().state().name(), "none");
    assert_eq!(
        policy
            .select(std::slice::from_ref(&wa), &facts)
            .unwrap()
            .id(),
        wa.id()
    );
}

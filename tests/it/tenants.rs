//! Tenants across several routers: every router on one etcd registry
//! counts the routers announced there and enforces its share of each
//! tenant's limits, so two routers hold a tenant to its limit, not twice
//! it. (One router's limits, queue and reload: `tests/python/test_tenants.py`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::store::Etcd;
use switchyard::config::{Priority, RegistryConfig, TenantConfig};
use switchyard::pb;
use switchyard::Config;
use tonic::transport::Channel;

const KEY: &str = "tenant-key-0123456789";
/// The tenant's limit, for both routers together.
const RATE: f64 = 40.0;

fn config(url: &str) -> Config {
    Config {
        registry: RegistryConfig {
            url: Some(url.to_string()),
            ..RegistryConfig::default()
        },
        tenants: vec![TenantConfig {
            name: "t".into(),
            keys: vec![KEY.into()],
            requests_per_second: Some(RATE),
            ..TenantConfig::default()
        }],
        ..test_config()
    }
}

async fn listed(router: &Router) -> pb::TenantInfo {
    let mut listed = router
        .management()
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    listed.tenants.remove(0)
}

/// One call as the tenant: admitted (and finished) or refused.
async fn call(channel: &Channel) -> Result<(), tonic::Status> {
    call_as(channel, KEY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_on_one_etcd_hold_a_tenant_to_its_limit() {
    let etcd = Etcd::start().await;
    let url = etcd.url("tenants");
    let routers = [
        start_router_with(config(&url)).await,
        start_router_with(config(&url)).await,
    ];
    let worker = mock("w").await;
    routers[0].add(&worker.url(), "m").await;
    for router in &routers {
        eventually(
            Duration::from_secs(15),
            "both routers count two",
            || async { listed(router).await.routers == 2 },
        )
        .await;
        eventually(Duration::from_secs(5), "the worker is routable", || async {
            call(&router.channel).await.is_ok()
        })
        .await;
    }
    // Empty both routers' buckets first: from here, what is admitted is
    // what the limit lets through.
    for router in &routers {
        while call(&router.channel).await.is_ok() {}
    }
    // Eight callers per router, as fast as they are answered (a refused
    // one pauses 5 ms), for five seconds.
    let window = Duration::from_secs(5);
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut callers = Vec::new();
    for router in &routers {
        for _ in 0..8 {
            let (admitted, refused) = (admitted.clone(), refused.clone());
            let channel = router.channel.clone();
            callers.push(tokio::spawn(async move {
                while start.elapsed() < window {
                    match call(&channel).await {
                        Ok(()) => admitted.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let limit = RATE * start.elapsed().as_secs_f64();
    println!("two routers admitted {admitted} calls; the limit is {limit:.0}");
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the callers did not press the limit"
    );
    assert!(
        (admitted - limit).abs() <= 0.1 * limit,
        "two routers admitted {admitted} calls in {:?}; the tenant's limit is {limit:.0}",
        start.elapsed()
    );
}

/// A tenant of `weight` and `priority` with one key.
fn tenant(name: &str, key: &str, weight: u32, priority: Priority) -> TenantConfig {
    TenantConfig {
        name: name.into(),
        keys: vec![key.into()],
        weight,
        priority,
        ..TenantConfig::default()
    }
}

/// One call with `key`, to its end.
async fn call_as(channel: &Channel, key: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(request("m", "hi"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut client = pb::inference_client::InferenceClient::new(channel.clone());
    let mut stream = client.generate(request).await?.into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_its_limit_is_shared_by_class_and_weight() {
    // The router's own limit is far off; the one worker takes one call at
    // a time (`max_in_flight_per_worker = 1`), each about 40 ms. Calls
    // that find it busy wait their turn in the fair queue's order.
    const GOLD: &str = "tenant-gold-0123456789";
    const BRONZE: &str = "tenant-bronze-0123456789";
    const CHAT: &str = "tenant-chat-0123456789";
    let mut config = test_config();
    config.limits.max_in_flight_per_worker = 1;
    config.limits.queue_timeout_ms = 60_000;
    config.tenants = vec![
        tenant("gold", GOLD, 3, Priority::Standard),
        tenant("bronze", BRONZE, 1, Priority::Standard),
        tenant("chat", CHAT, 1, Priority::Interactive),
    ];
    let router = start_router_with(config).await;
    let worker = mock_with(switchyard::mock::MockConfig {
        tokens: 2,
        token_delay: Duration::from_millis(20),
        ..switchyard::mock::MockConfig::default()
    })
    .await;
    router.add(&worker.url(), "m").await;
    // Six callers a tenant flood the worker for six seconds; calls that
    // end in the last five seconds (both tenants waiting throughout) are
    // counted.
    let counted = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let start = Instant::now();
    let mut callers = Vec::new();
    for (i, key) in [GOLD, BRONZE].into_iter().enumerate() {
        for _ in 0..6 {
            let (channel, counted) = (router.channel.clone(), counted.clone());
            callers.push(tokio::spawn(async move {
                while start.elapsed() < Duration::from_secs(6) {
                    call_as(&channel, key).await.unwrap();
                    // Not the calls still queued at the end, which drain
                    // when one tenant has stopped sending.
                    let at = start.elapsed();
                    if at > Duration::from_secs(1) && at < Duration::from_secs(6) {
                        counted[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // Meanwhile an interactive call waits for at most the call before it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut waits = Vec::new();
    for _ in 0..10 {
        let began = Instant::now();
        call_as(&router.channel, CHAT).await.unwrap();
        waits.push(began.elapsed());
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let (gold, bronze) = (
        counted[0].load(Ordering::Relaxed) as f64,
        counted[1].load(Ordering::Relaxed) as f64,
    );
    println!(
        "a busy worker shared: gold {gold}, bronze {bronze}; interactive calls took {waits:?}"
    );
    assert!(bronze >= 10.0, "gold {gold}, bronze {bronze}");
    let ratio = gold / bronze;
    assert!(
        (2.7..=3.3).contains(&ratio),
        "3:1 within 10%: gold {gold}, bronze {bronze}"
    );
    // Its own call (about 40 ms) and at most the one in flight before it,
    // with room for a loaded machine: never behind the flood's dozen.
    let slowest = waits.iter().max().unwrap();
    assert!(*slowest < Duration::from_millis(300), "{waits:?}");
}

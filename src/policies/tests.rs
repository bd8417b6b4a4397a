use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::*;
use crate::transport::grpc::ChannelConfig;
use crate::worker::{LoadGuard, WorkerRole, WorkerSpec};

fn registry() -> Arc<WorkerRegistry> {
    Arc::new(WorkerRegistry::new(ChannelConfig::default()))
}

fn add(registry: &WorkerRegistry, port: u16, model: &str) -> Arc<Worker> {
    let spec = WorkerSpec::new(
        &format!("grpc://127.0.0.1:{port}"),
        model,
        WorkerRole::Regular,
        None,
        BTreeMap::new(),
    )
    .unwrap();
    registry.add(spec).unwrap()
}

fn facts<'a>(model: &'a str, text: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        model,
        text: Some(text),
        ..Default::default()
    }
}

fn config(kind: PolicyKind) -> PolicyConfig {
    PolicyConfig {
        name: kind,
        ..PolicyConfig::default()
    }
}

#[test]
fn every_policy_refuses_an_empty_candidate_list() {
    let r = registry();
    for name in PolicyKind::NAMES {
        let kind: PolicyKind = name.parse().unwrap();
        let policy = build(kind, &config(kind), &r);
        assert_eq!(policy.name(), *name);
        let err = policy.select(&[], &facts("m", "x")).unwrap_err();
        assert_eq!(err, PolicyError::NoCandidates);
    }
}

#[test]
fn power_of_two_prefers_the_less_loaded() {
    let r = registry();
    let busy = add(&r, 1, "m");
    let idle = add(&r, 2, "m");
    let _load: Vec<_> = (0..5).map(|_| LoadGuard::new(busy.clone())).collect();
    let candidates = vec![busy.clone(), idle.clone()];
    for _ in 0..50 {
        let chosen = PowerOfTwo.select(&candidates, &facts("m", "x")).unwrap();
        assert_eq!(chosen.id(), idle.id());
    }
}

#[test]
fn cache_aware_follows_prefixes_until_the_threshold() {
    let r = registry();
    let policy = build(PolicyKind::CacheAware, &config(PolicyKind::CacheAware), &r);
    let workers: Vec<_> = (1..=4).map(|p| add(&r, p, "m")).collect();
    let prompt = "a long shared system prompt that several requests repeat; ".repeat(4);
    let first = policy.select(&workers, &facts("m", &prompt)).unwrap();
    policy.record(&first, &facts("m", &prompt));
    // Same prefix plus a different question: the same worker.
    for q in ["what is rust?", "and tokio?", "tonic?"] {
        let text = format!("{prompt}{q}");
        assert_eq!(
            policy.select(&workers, &facts("m", &text)).unwrap().id(),
            first.id()
        );
    }
    // Under half matched: least loaded with the smallest tree, i.e. not `first`.
    let other = policy
        .select(&workers, &facts("m", "something else entirely"))
        .unwrap();
    assert_ne!(other.id(), first.id());
}

#[test]
fn cache_aware_balances_when_load_is_skewed() {
    let r = registry();
    let policy = build(PolicyKind::CacheAware, &config(PolicyKind::CacheAware), &r);
    let hot = add(&r, 1, "m");
    let cold = add(&r, 2, "m");
    policy.record(&hot, &facts("m", "shared prefix"));
    let candidates = vec![hot.clone(), cold.clone()];
    assert_eq!(
        policy
            .select(&candidates, &facts("m", "shared prefix"))
            .unwrap()
            .id(),
        hot.id()
    );
    // 40 in flight vs 0: over both thresholds (32 and 1.5x).
    let _load: Vec<_> = (0..40).map(|_| LoadGuard::new(hot.clone())).collect();
    assert_eq!(
        policy
            .select(&candidates, &facts("m", "shared prefix"))
            .unwrap()
            .id(),
        cold.id()
    );
}

#[test]
fn removal_purges_every_policy_instance_through_the_hook() {
    let r = registry();
    let mut cfg = config(PolicyKind::CacheAware);
    cfg.models.insert("special".into(), PolicyKind::CacheAware);
    cfg.models
        .insert("sessions".into(), PolicyKind::ConsistentHash);
    let set = PolicySet::build(&cfg, &r);
    let a = add(&r, 1, "m");
    let b = add(&r, 2, "m");
    let s = add(&r, 3, "special");
    let c = add(&r, 4, "sessions");
    let default = set.for_model("m").clone();
    let special = set.for_model("special").clone();
    let sessions = set.for_model("sessions").clone();
    assert!(
        !Arc::ptr_eq(&default, &special),
        "per-model overrides are separate instances"
    );
    default.record(&a, &facts("m", "prefix of a"));
    special.record(&s, &facts("special", "prefix of s"));
    assert_eq!(default.remembered(&a), 11);
    assert_eq!(special.remembered(&s), 11);
    // Added after the policy was created, and on its ring without anyone's help.
    assert_eq!(sessions.remembered(&c), 160);

    // Nobody tells the policies; the registry does.
    r.remove(a.id().as_str()).unwrap();
    r.remove(s.id().as_str()).unwrap();
    r.remove(c.id().as_str()).unwrap();
    assert_eq!(default.remembered(&a), 0);
    assert_eq!(special.remembered(&s), 0);
    assert_eq!(sessions.remembered(&c), 0);
    assert_eq!(
        default
            .select(std::slice::from_ref(&b), &facts("m", "prefix of a"))
            .unwrap()
            .id(),
        b.id()
    );
}

#[test]
fn cache_aware_is_safe_under_concurrent_select_and_record() {
    let r = registry();
    let mut cfg = config(PolicyKind::CacheAware);
    cfg.cache_aware.max_tree_size = 4096;
    let policy = build(PolicyKind::CacheAware, &cfg, &r);
    let workers: Arc<Vec<_>> = Arc::new((1..=8).map(|p| add(&r, p, "m")).collect());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let policy = policy.clone();
            let workers = workers.clone();
            std::thread::spawn(move || {
                let mut stuck = 0;
                for i in 0..2000 {
                    let text = format!(
                        "group {:02} shared prefix that is long enough / request {i} thread {t}",
                        i % 16
                    );
                    let chosen = policy.select(&workers, &facts("m", &text)).unwrap();
                    policy.record(&chosen, &facts("m", &text));
                    let again = policy.select(&workers, &facts("m", &text)).unwrap();
                    stuck += usize::from(again.id() == chosen.id());
                }
                stuck
            })
        })
        .collect();
    let stuck: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // Nearly every request, asked again, goes where its prefix was recorded
    // (other threads may record the same prefix elsewhere in between).
    assert!(stuck > 8 * 2000 * 9 / 10, "{stuck}");
    for w in workers.iter() {
        assert!(policy.remembered(w) <= 2 * 4096, "{}", policy.remembered(w));
    }
}

#[test]
fn consistent_hash_keeps_keys_and_moves_only_the_new_workers_share() {
    let r = registry();
    let policy = build(
        PolicyKind::ConsistentHash,
        &config(PolicyKind::ConsistentHash),
        &r,
    );
    let mut workers: Vec<_> = (1..=4).map(|p| add(&r, p, "m")).collect();
    let keyed = |key: &'static str| RequestFacts {
        model: "m",
        routing_key: Some(key),
        ..Default::default()
    };
    let keys: Vec<&'static str> = (0..2000)
        .map(|i| &*Box::leak(format!("session-{i}").into_boxed_str()))
        .collect();
    let before: HashMap<_, _> = keys
        .iter()
        .map(|k| (*k, policy.select(&workers, &keyed(k)).unwrap().id().clone()))
        .collect();
    for k in &keys[..50] {
        assert_eq!(
            &policy.select(&workers, &keyed(k)).unwrap().id().clone(),
            &before[k]
        );
    }
    let fifth = add(&r, 5, "m");
    workers.push(fifth.clone());
    let mut moved = 0;
    for k in &keys {
        let now = policy.select(&workers, &keyed(k)).unwrap();
        if now.id() != &before[k] {
            moved += 1;
            assert_eq!(now.id(), fifth.id(), "keys only move to the new worker");
        }
    }
    let share = moved as f64 / keys.len() as f64;
    assert!((0.12..0.30).contains(&share), "moved {share}");
}

#[test]
fn cache_aware_memory_stays_bounded_under_adversarial_input() {
    let r = registry();
    let mut cfg = config(PolicyKind::CacheAware);
    cfg.cache_aware.max_tree_size = 1000;
    let policy = build(PolicyKind::CacheAware, &cfg, &r);
    let w = add(&r, 1, "m");
    // One enormous prompt: remembered only up to the bound.
    let huge = "x".repeat(4 << 20);
    policy.record(&w, &facts("m", &huge));
    assert!(policy.remembered(&w) <= 1000, "{}", policy.remembered(&w));
    // Hundreds of thousands of distinct prefixes, no eviction pass in between.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..300_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let text = format!("{x:016x}{i}");
        policy.record(&w, &facts("m", &text));
        if i % 997 == 0 {
            assert!(
                policy.remembered(&w) <= 2000,
                "after {i}: {}",
                policy.remembered(&w)
            );
        }
    }
    assert!(policy.remembered(&w) <= 2000);
    // Token-id prompts have their own tree and the same bound.
    let tokens: Vec<u32> = (0..100_000).collect();
    let token_facts = RequestFacts {
        model: "m",
        token_ids: Some(&tokens),
        ..Default::default()
    };
    policy.record(&w, &token_facts);
    assert!(policy.remembered(&w) <= 3000);
}

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use proptest::prelude::*;

use super::*;

fn spec(port: u16, model: &str, role: WorkerRole) -> WorkerSpec {
    let bootstrap = (role == WorkerRole::Prefill).then_some(9000);
    WorkerSpec::new(
        &format!("grpc://127.0.0.1:{port}"),
        model,
        role,
        bootstrap,
        BTreeMap::new(),
    )
    .unwrap()
}

fn registry() -> WorkerRegistry {
    WorkerRegistry::new(ChannelConfig::default())
}

#[test]
fn added_worker_resolves_at_once_and_removed_one_never_again() {
    let r = registry();
    let w = r.add(spec(1, "m", WorkerRole::Regular)).unwrap();
    let group = r
        .resolve(ConnectionMode::Grpc, WorkerRole::Regular, "m")
        .unwrap();
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].id(), w.id());
    r.remove(w.id().as_str()).unwrap();
    assert!(r
        .resolve(ConnectionMode::Grpc, WorkerRole::Regular, "m")
        .is_none());
    assert!(r
        .snapshot()
        .models(ConnectionMode::Grpc, WorkerRole::Regular)
        .next()
        .is_none());
}

#[test]
fn duplicate_url_is_refused_without_touching_the_index() {
    let r = registry();
    let first = r.add(spec(1, "m", WorkerRole::Regular)).unwrap();
    let err = r
        .add(
            WorkerSpec::new(
                "GRPC://127.0.0.1:1/",
                "other",
                WorkerRole::Regular,
                None,
                BTreeMap::new(),
            )
            .unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::AlreadyExists { ref id, .. } if id == first.id()));
    assert!(r
        .resolve(ConnectionMode::Grpc, WorkerRole::Regular, "other")
        .is_none());
    assert_eq!(r.len(), 1);
    // Re-adding after removal works and gets a new id.
    r.remove_by_url("grpc://127.0.0.1:1").unwrap();
    let again = r.add(spec(1, "m", WorkerRole::Regular)).unwrap();
    assert_ne!(again.id(), first.id());
}

#[test]
fn unknown_ids_and_urls_are_not_found() {
    let r = registry();
    assert!(matches!(
        r.remove("w-nope"),
        Err(RegistryError::NotFound { what: "id", .. })
    ));
    assert!(matches!(
        r.get_by_url("grpc://h:1"),
        Err(RegistryError::NotFound { what: "url", .. })
    ));
    assert!(matches!(
        r.remove_by_url("bogus"),
        Err(RegistryError::InvalidSpec(_))
    ));
}

struct Recorder(StdMutex<Vec<(u64, WorkerEventKind, WorkerId)>>);
impl RegistryListener for Recorder {
    fn on_event(&self, e: &WorkerEvent) {
        self.0
            .lock()
            .unwrap()
            .push((e.sequence, e.kind, e.worker.id().clone()));
    }
}

#[test]
fn listeners_hear_every_change_in_order_and_are_dropped_when_gone() {
    let r = registry();
    let before = r.add(spec(1, "m", WorkerRole::Regular)).unwrap();
    let rec: Arc<Recorder> = Arc::new(Recorder(StdMutex::new(vec![])));
    let weak: Weak<dyn RegistryListener> = Arc::downgrade(&rec) as _;
    let initial = r.subscribe(weak);
    assert_eq!(initial.len(), 1);
    let w = r.add(spec(2, "m", WorkerRole::Regular)).unwrap();
    assert!(r.set_health(w.id(), false));
    assert!(!r.set_health(w.id(), false), "no event without a change");
    r.remove(before.id().as_str()).unwrap();
    let seen = rec.0.lock().unwrap().clone();
    let kinds: Vec<_> = seen.iter().map(|(_, k, _)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            WorkerEventKind::Added,
            WorkerEventKind::HealthChanged { healthy: false },
            WorkerEventKind::Removed
        ]
    );
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0));
    drop(rec);
    r.add(spec(3, "m", WorkerRole::Regular)).unwrap();
    assert!(r.lock().listeners.is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Add(u16, u8, u8),
    Remove(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u16..40, 0u8..5, 0u8..3).prop_map(|(p, m, r)| Op::Add(p + 1, m, r)),
        (0u16..40).prop_map(|p| Op::Remove(p + 1)),
    ]
}

proptest! {
    /// The snapshot index always equals a naive filter over the primary map.
    #[test]
    fn index_matches_a_naive_scan(ops in proptest::collection::vec(op(), 1..120)) {
        let r = registry();
        let roles = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode];
        for op in ops {
            match op {
                Op::Add(port, m, role) => {
                    let _ = r.add(spec(port, &format!("model-{m}"), roles[role as usize]));
                }
                Op::Remove(port) => {
                    let _ = r.remove_by_url(&format!("grpc://127.0.0.1:{port}"));
                }
            }
            let all = r.list();
            for m in 0..5 {
                let model = format!("model-{m}");
                for role in roles {
                    let mut naive: Vec<_> = all.iter()
                        .filter(|w| w.model().as_ref() == model && w.role() == role)
                        .map(|w| w.id().clone()).collect();
                    let mut indexed: Vec<_> = r.resolve(ConnectionMode::Grpc, role, &model)
                        .map(|g| g.iter().map(|w| w.id().clone()).collect())
                        .unwrap_or_default();
                    naive.sort();
                    indexed.sort();
                    prop_assert_eq!(naive, indexed);
                }
            }
        }
    }
}

use proptest::prelude::*;

use super::*;

impl<T: Copy + Eq + Hash + std::fmt::Debug> RadixTree<T> {
    /// Checks sizes, the tenant index and the ancestor property.
    fn check_invariants(&self) {
        let mut sizes: HashMap<Tenant, usize> = HashMap::new();
        for (id, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            if id == ROOT {
                continue;
            }
            assert!(!node.label.is_empty(), "empty label at {id}");
            assert!(!node.tenants.is_empty(), "node {id} without tenants");
            let parent = self.node(node.parent);
            assert_eq!(parent.children.get(&node.label[0]), Some(&id));
            for (t, _) in &node.tenants {
                *sizes.entry(*t).or_default() += node.label.len();
                assert!(self.tenant_nodes[t].contains(&id));
                if node.parent != ROOT {
                    assert!(parent.has(*t), "tenant {t} on {id} but not on its parent");
                }
            }
        }
        let recorded: HashMap<Tenant, usize> = self
            .sizes
            .iter()
            .filter(|(_, s)| **s > 0)
            .map(|(t, s)| (*t, *s))
            .collect();
        assert_eq!(sizes, recorded);
    }
}

fn naive_lcp(inserted: &[(Vec<u8>, Tenant)], key: &[u8], accept: impl Fn(Tenant) -> bool) -> usize {
    inserted
        .iter()
        .filter(|(_, t)| accept(*t))
        .map(|(s, _)| lcp(s, key))
        .max()
        .unwrap_or(0)
}

#[test]
fn matches_and_splits() {
    let mut tree = RadixTree::new();
    tree.insert(b"hello world", 1, usize::MAX);
    tree.insert(b"hello there", 2, usize::MAX);
    let m = tree.longest_match(b"hello world!", |_| true);
    assert_eq!(
        m,
        PrefixMatch {
            matched: 11,
            tenants: vec![1]
        }
    );
    let m = tree.longest_match(b"hello", |_| true);
    assert_eq!(m.matched, 5);
    let mut both = m.tenants.clone();
    both.sort();
    assert_eq!(both, vec![1, 2]);
    // Only tenant 2 acceptable: it shares "hello " with the key.
    assert_eq!(tree.longest_match(b"hello world", |t| t == 2).matched, 6);
    assert_eq!(tree.size_of(1), 11);
    assert_eq!(tree.size_of(2), 11);
    tree.check_invariants();
}

#[test]
fn inserts_are_truncated_to_the_limit() {
    let mut tree = RadixTree::new();
    let long = vec![7u32; 100_000];
    tree.insert(&long, 1, 1000);
    assert_eq!(tree.size_of(1), 1000);
    assert_eq!(tree.longest_match(&long, |_| true).matched, 1000);
}

#[test]
fn eviction_drops_least_recently_used_first() {
    let mut tree = RadixTree::new();
    tree.insert(b"aaaa-old", 1, usize::MAX);
    tree.insert(b"bbbb-new", 1, usize::MAX);
    tree.evict(8);
    assert_eq!(tree.longest_match(b"aaaa-old", |_| true).matched, 0);
    assert_eq!(tree.longest_match(b"bbbb-new", |_| true).matched, 8);
    tree.check_invariants();
}

proptest! {
    #[test]
    fn match_length_equals_naive_longest_common_prefix(
        inserts in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..24), 0u64..4), 0..40),
        keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..24), 1..20),
        accept_mask in 0u8..16,
    ) {
        let mut tree = RadixTree::new();
        for (s, t) in &inserts {
            tree.insert(s, *t, usize::MAX);
        }
        tree.check_invariants();
        let accept = |t: Tenant| accept_mask & (1 << t) != 0;
        for key in &keys {
            let m = tree.longest_match(key, accept);
            prop_assert_eq!(m.matched, naive_lcp(&inserts, key, accept));
            // Every reported tenant really sent a prompt with that prefix.
            for t in &m.tenants {
                prop_assert!(accept(*t));
                prop_assert!(inserts.iter().any(|(s, it)| it == t && lcp(s, key) >= m.matched));
            }
        }
    }

    #[test]
    fn removing_a_tenant_leaves_no_trace(
        inserts in proptest::collection::vec((proptest::collection::vec(0u8..4, 1..24), 0u64..4), 1..40),
        victim in 0u64..4,
        keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..24), 1..10),
    ) {
        let mut tree = RadixTree::new();
        let mut without = RadixTree::new();
        for (s, t) in &inserts {
            tree.insert(s, *t, usize::MAX);
            if *t != victim {
                without.insert(s, *t, usize::MAX);
            }
        }
        tree.remove_tenant(victim);
        tree.check_invariants();
        prop_assert_eq!(tree.size_of(victim), 0);
        prop_assert!(!tree.tenant_nodes.contains_key(&victim));
        prop_assert!(tree.nodes.iter().flatten().all(|n| !n.has(victim)));
        for key in &keys {
            prop_assert_eq!(tree.longest_match(key, |t| t == victim).matched, 0);
            prop_assert_eq!(tree.longest_match(key, |_| true).matched, without.longest_match(key, |_| true).matched);
        }
    }

    #[test]
    fn size_bound_holds_after_eviction(
        inserts in proptest::collection::vec((proptest::collection::vec(0u8..8, 1..64), 0u64..3), 1..200),
        max in 1usize..200,
    ) {
        let mut tree = RadixTree::new();
        for (s, t) in &inserts {
            tree.insert(s, *t, usize::MAX);
        }
        tree.evict(max);
        tree.check_invariants();
        for (t, size) in tree.tenant_sizes() {
            prop_assert!(size <= max, "tenant {} holds {} > {}", t, size, max);
        }
    }
}

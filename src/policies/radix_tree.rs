//! An approximate radix tree of prompt prefixes, for cache-aware routing.
//!
//! Problem: route a request to the worker most likely to still hold its
//! prompt's prefix in KV cache. Algorithm (after SGLang's router): a radix
//! tree over symbols (text bytes or token ids) whose nodes record which
//! workers ("tenants") were sent a prompt through them, and when. Matching
//! walks the longest path whose nodes hold an acceptable tenant. A tenant on a
//! node is on all its ancestors, so the walk can stop at the first node
//! without one. It is approximate because the router only sees what it sent,
//! not what the worker actually kept.
//!
//! Memory is bounded per tenant: each tenant's size is the number of symbols
//! on nodes it holds, and [`RadixTree::evict`] drops its least recently used
//! leaves until it fits. Inserts are truncated to the bound. The tree is not
//! synchronized; its owner wraps it in a lock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::Hash;

/// Who a prefix was sent to (a worker's ordinal).
pub type Tenant = u64;

const ROOT: usize = 0;

#[derive(Debug)]
struct Node<T> {
    label: Vec<T>,
    parent: usize,
    /// Children by the first symbol of their label.
    children: HashMap<T, usize>,
    /// Tenants holding this node, with their last access time.
    tenants: Vec<(Tenant, u64)>,
}

impl<T> Node<T> {
    fn has(&self, tenant: Tenant) -> bool {
        self.tenants.iter().any(|(t, _)| *t == tenant)
    }
}

/// The longest acceptable match for a key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixMatch {
    /// Symbols of the key matched.
    pub matched: usize,
    /// Acceptable tenants holding the whole matched prefix.
    pub tenants: Vec<Tenant>,
}

/// A radix tree over symbols of type `T`.
#[derive(Debug)]
pub struct RadixTree<T> {
    /// Arena; `None` slots are free and listed in `free`.
    nodes: Vec<Option<Node<T>>>,
    free: Vec<usize>,
    /// Per tenant: the nodes it holds (for eviction and purge without a scan).
    tenant_nodes: HashMap<Tenant, HashSet<usize>>,
    /// Per tenant: symbols on the nodes it holds.
    sizes: HashMap<Tenant, usize>,
    /// Logical clock for LRU order.
    clock: u64,
}

impl<T: Copy + Eq + Hash> Default for RadixTree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Eq + Hash> RadixTree<T> {
    /// An empty tree.
    pub fn new() -> Self {
        RadixTree {
            nodes: vec![Some(Node {
                label: Vec::new(),
                parent: ROOT,
                children: HashMap::new(),
                tenants: Vec::new(),
            })],
            free: Vec::new(),
            tenant_nodes: HashMap::new(),
            sizes: HashMap::new(),
            clock: 0,
        }
    }

    fn node(&self, id: usize) -> &Node<T> {
        self.nodes[id]
            .as_ref()
            .unwrap_or_else(|| unreachable!("live node id {id}"))
    }

    fn node_mut(&mut self, id: usize) -> &mut Node<T> {
        self.nodes[id]
            .as_mut()
            .unwrap_or_else(|| unreachable!("live node id {id}"))
    }

    fn alloc(&mut self, node: Node<T>) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    /// Symbols held by `tenant`.
    pub fn size_of(&self, tenant: Tenant) -> usize {
        self.sizes.get(&tenant).copied().unwrap_or(0)
    }

    /// Every tenant present, with its size.
    pub fn tenant_sizes(&self) -> impl Iterator<Item = (Tenant, usize)> + '_ {
        self.sizes.iter().map(|(t, s)| (*t, *s))
    }

    /// Live nodes, root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Records that `key` was sent to `tenant`, keeping at most `limit` symbols.
    pub fn insert(&mut self, key: &[T], tenant: Tenant, limit: usize) {
        let key = &key[..key.len().min(limit)];
        self.clock += 1;
        let now = self.clock;
        let mut node = ROOT;
        let mut i = 0;
        while i < key.len() {
            let child = self.node(node).children.get(&key[i]).copied();
            let Some(child) = child else {
                let id = self.alloc(Node {
                    label: key[i..].to_vec(),
                    parent: node,
                    children: HashMap::new(),
                    tenants: Vec::new(),
                });
                self.node_mut(node).children.insert(key[i], id);
                self.touch(id, tenant, now);
                return;
            };
            let common = lcp(&self.node(child).label, &key[i..]);
            let child = if common < self.node(child).label.len() {
                self.split(child, common)
            } else {
                child
            };
            self.touch(child, tenant, now);
            i += common;
            node = child;
        }
    }

    /// Splits `id` so that its first `at` symbols become a new parent node.
    /// Returns the new parent. Sizes do not change: every tenant of `id` now
    /// holds both halves.
    fn split(&mut self, id: usize, at: usize) -> usize {
        let (parent, head, first, tenants) = {
            let n = self.node_mut(id);
            let tail = n.label.split_off(at);
            let head = std::mem::replace(&mut n.label, tail);
            (n.parent, head, n.label[0], n.tenants.clone())
        };
        let head_first = head[0];
        let mid = self.alloc(Node {
            label: head,
            parent,
            children: HashMap::from([(first, id)]),
            tenants,
        });
        self.node_mut(id).parent = mid;
        self.node_mut(parent).children.insert(head_first, mid);
        for (t, _) in self.node(mid).tenants.clone() {
            self.tenant_nodes.entry(t).or_default().insert(mid);
        }
        mid
    }

    fn touch(&mut self, id: usize, tenant: Tenant, now: u64) {
        let n = self.node_mut(id);
        if let Some(entry) = n.tenants.iter_mut().find(|(t, _)| *t == tenant) {
            entry.1 = now;
            return;
        }
        n.tenants.push((tenant, now));
        let len = n.label.len();
        *self.sizes.entry(tenant).or_default() += len;
        self.tenant_nodes.entry(tenant).or_default().insert(id);
    }

    /// The longest prefix of `key` held by a tenant for which `accept` is true.
    pub fn longest_match(&self, key: &[T], accept: impl Fn(Tenant) -> bool) -> PrefixMatch {
        let (mut matched, mut best) = (0, ROOT);
        let mut node = ROOT;
        let mut i = 0;
        while i < key.len() {
            let Some(&child) = self.node(node).children.get(&key[i]) else {
                break;
            };
            let n = self.node(child);
            if !n.tenants.iter().any(|(t, _)| accept(*t)) {
                // Tenants of descendants are tenants here too: nothing deeper.
                break;
            }
            let common = lcp(&n.label, &key[i..]);
            (matched, best) = (i + common, child);
            if common < n.label.len() {
                break;
            }
            i += common;
            node = child;
        }
        let tenants = if best == ROOT {
            Vec::new()
        } else {
            let n = self.node(best);
            n.tenants
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| accept(*t))
                .collect()
        };
        PrefixMatch { matched, tenants }
    }

    /// Forgets `tenant` entirely.
    pub fn remove_tenant(&mut self, tenant: Tenant) {
        let Some(ids) = self.tenant_nodes.remove(&tenant) else {
            return;
        };
        self.sizes.remove(&tenant);
        let mut emptied = Vec::new();
        for id in ids {
            let n = self.node_mut(id);
            n.tenants.retain(|(t, _)| *t != tenant);
            if n.tenants.is_empty() {
                emptied.push(id);
            }
        }
        // A node without tenants has no descendants with tenants: drop it,
        // detaching it from a parent that survives.
        let emptied_set: HashSet<usize> = emptied.iter().copied().collect();
        for id in emptied {
            let (parent, first) = {
                let n = self.node(id);
                (n.parent, n.label[0])
            };
            if !emptied_set.contains(&parent) {
                self.node_mut(parent).children.remove(&first);
            }
            self.nodes[id] = None;
            self.free.push(id);
        }
    }

    /// Drops `tenant`'s least recently used leaves until it holds at most `max` symbols.
    pub fn evict_tenant(&mut self, tenant: Tenant, max: usize) {
        if self.size_of(tenant) <= max {
            return;
        }
        let Some(ids) = self.tenant_nodes.get(&tenant) else {
            return;
        };
        let is_leaf = |tree: &Self, id: usize| {
            tree.node(id)
                .children
                .values()
                .all(|c| !tree.node(*c).has(tenant))
        };
        let stamp = |tree: &Self, id: usize| {
            tree.node(id)
                .tenants
                .iter()
                .find(|(t, _)| *t == tenant)
                .map_or(0, |(_, ts)| *ts)
        };
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = ids
            .iter()
            .filter(|id| is_leaf(self, **id))
            .map(|id| Reverse((stamp(self, *id), *id)))
            .collect();
        while self.size_of(tenant) > max {
            let Some(Reverse((_, id))) = heap.pop() else {
                break;
            };
            let (parent, len, first, now_empty) = {
                let n = self.node_mut(id);
                n.tenants.retain(|(t, _)| *t != tenant);
                (n.parent, n.label.len(), n.label[0], n.tenants.is_empty())
            };
            if let Some(size) = self.sizes.get_mut(&tenant) {
                *size -= len;
            }
            if let Some(set) = self.tenant_nodes.get_mut(&tenant) {
                set.remove(&id);
            }
            if now_empty {
                self.node_mut(parent).children.remove(&first);
                self.nodes[id] = None;
                self.free.push(id);
            }
            if parent != ROOT && self.node(parent).has(tenant) && is_leaf(self, parent) {
                heap.push(Reverse((stamp(self, parent), parent)));
            }
        }
        if self.size_of(tenant) == 0 {
            self.sizes.remove(&tenant);
            self.tenant_nodes.remove(&tenant);
        }
    }

    /// Evicts every tenant down to `max` symbols.
    pub fn evict(&mut self, max: usize) {
        let over: Vec<Tenant> = self
            .sizes
            .iter()
            .filter(|(_, s)| **s > max)
            .map(|(t, _)| *t)
            .collect();
        for tenant in over {
            self.evict_tenant(tenant, max);
        }
    }
}

fn lcp<T: Eq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests;

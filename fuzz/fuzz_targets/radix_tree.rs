//! The cache-aware policy's radix tree against a naive model: after any
//! sequence of inserts and tenant removals, the longest prefix match of any
//! key is what a plain list of (tenant, inserted key) pairs says.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::policies::radix_tree::RadixTree;

#[derive(Arbitrary, Debug)]
enum Op {
    Insert { key: Vec<u8>, tenant: u8 },
    Remove { tenant: u8 },
    Match { key: Vec<u8> },
}

fuzz_target!(|ops: Vec<Op>| {
    let mut tree = RadixTree::<u8>::new();
    let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Insert { key, tenant } => {
                let tenant = u64::from(tenant % 4);
                let key: Vec<u8> = key.into_iter().take(32).map(|b| b % 4).collect();
                tree.insert(&key, tenant, usize::MAX);
                model.push((tenant, key));
            }
            Op::Remove { tenant } => {
                let tenant = u64::from(tenant % 4);
                tree.remove_tenant(tenant);
                model.retain(|(t, _)| *t != tenant);
            }
            Op::Match { key } => {
                let key: Vec<u8> = key.into_iter().take(32).map(|b| b % 4).collect();
                let found = tree.longest_match(&key, |_| true);
                let expected = model
                    .iter()
                    .map(|(_, k)| k.iter().zip(&key).take_while(|(a, b)| a == b).count())
                    .max()
                    .unwrap_or(0);
                assert_eq!(found.matched, expected, "key {key:?}, model {model:?}");
                if expected > 0 {
                    let mut holders: Vec<u64> = model
                        .iter()
                        .filter(|(_, k)| k.iter().zip(&key).take_while(|(a, b)| a == b).count() >= expected)
                        .map(|(t, _)| *t)
                        .collect();
                    holders.sort_unstable();
                    holders.dedup();
                    let mut tenants = found.tenants.clone();
                    tenants.sort_unstable();
                    assert_eq!(tenants, holders, "key {key:?}, model {model:?}");
                }
            }
        }
    }
});

use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::config::AuthConfig;

fn tenant(name: &str, key: &str) -> TenantConfig {
    TenantConfig {
        name: name.into(),
        keys: vec![key.into()],
        ..TenantConfig::default()
    }
}

fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {key}").parse().unwrap());
    h
}

const A: &str = "tenant-a-key-0123456789";
const B: &str = "tenant-b-key-0123456789";
const CLIENT: &str = "client-key-0123456789";

#[test]
fn a_tenant_key_names_its_tenant_and_other_keys_keep_their_meaning() {
    let tenants = Tenants::new(&[tenant("a", A), tenant("b", B)]);
    let open = Keys::new(&AuthConfig::default());
    let found = tenants.check(&open, &bearer(B)).unwrap().unwrap();
    assert_eq!(found.name(), "b");
    let mut x = HeaderMap::new();
    x.insert("x-api-key", A.parse().unwrap());
    assert_eq!(tenants.check(&open, &x).unwrap().unwrap().name(), "a");
    // With tenant keys, inference needs a key, even without client keys.
    assert_eq!(
        tenants.check(&open, &HeaderMap::new()).unwrap_err(),
        Denied::Missing
    );
    assert_eq!(
        tenants
            .check(&open, &bearer("some-other-key-0123456789"))
            .unwrap_err(),
        Denied::Invalid
    );
    // A client key is of no tenant.
    let keys = Keys::new(&AuthConfig {
        client_keys: vec![CLIENT.into()],
        ..AuthConfig::default()
    });
    assert!(tenants.check(&keys, &bearer(CLIENT)).unwrap().is_none());
    // No tenants: as before.
    let none = Tenants::new(&[]);
    assert!(none.check(&open, &HeaderMap::new()).unwrap().is_none());
    assert_eq!(
        none.check(&keys, &HeaderMap::new()).unwrap_err(),
        Denied::Missing
    );
}

#[test]
fn each_limit_refuses_by_name_and_charges_nothing_when_it_does() {
    let mut c = tenant("a", A);
    c.requests_per_second = Some(2.0);
    c.prompt_tokens_per_minute = Some(600);
    c.max_concurrent = Some(2);
    let tenants = Tenants::new(&[c]);
    let t = tenants.list()[0].clone();
    let cost = Cost {
        prompt: 250,
        output: 0,
    };
    let first = t.admit(cost).unwrap();
    let second = t.admit(cost).unwrap();
    // Two in flight: the third is over max_concurrent.
    let refused = t.admit(cost).unwrap_err();
    assert!(
        matches!(refused, Refusal::Concurrent { limit: 2, .. }),
        "{refused}"
    );
    drop((first, second));
    // Two calls a second: the third call this second is over the rate.
    let refused = t.admit(cost).unwrap_err();
    assert!(matches!(refused, Refusal::Requests { .. }), "{refused}");
    assert!(
        refused.to_string().contains("requests_per_second"),
        "{refused}"
    );
    assert!(refused.retry_after() > Duration::ZERO);
    assert_eq!(t.in_flight(), 0);
    let (calls, refusals) = (t.stats.calls(), t.stats.refusals().collect::<Vec<_>>());
    assert_eq!(calls, 2);
    assert!(refusals.contains(&("max_concurrent", 1)));
    assert!(refusals.contains(&("requests_per_second", 1)));
}

#[test]
fn a_call_is_settled_with_what_it_used() {
    let mut c = tenant("a", A);
    c.output_tokens_per_minute = Some(1000);
    let tenants = Tenants::new(&[c]);
    let t = tenants.list()[0].clone();
    let now = Instant::now;
    // Asked for 800, generated 100: 700 come back.
    let mut ticket = t
        .admit(Cost {
            prompt: 10,
            output: 800,
        })
        .unwrap();
    assert!(t.output.level(now()).unwrap() < 201.0);
    let meter = ticket.meter();
    meter.add(Some(12), 100);
    drop(ticket);
    let level = t.output.level(now()).unwrap();
    assert!((899.0..901.0).contains(&level), "{level}");
    assert_eq!(t.stats.tokens(), (12, 100));
    // A call refused by the queue after admission gives back its charge.
    let ticket = t
        .admit(Cost {
            prompt: 0,
            output: 500,
        })
        .unwrap();
    ticket.refused();
    let level = t.output.level(now()).unwrap();
    assert!((899.0..902.0).contains(&level), "{level}");
    // Over the rest: refused, naming the limit and what was asked.
    let refused = t
        .admit(Cost {
            prompt: 0,
            output: 950,
        })
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Refusal::OutputTokens {
                asked: 950,
                limit: 1000,
                ..
            }
        ),
        "{refused}"
    );
}

#[test]
fn a_reload_keeps_what_stays_and_drops_what_goes() {
    let mut a = tenant("a", A);
    a.requests_per_second = Some(1.0);
    let tenants = Tenants::new(&[a.clone(), tenant("b", B)]);
    let open = Keys::new(&AuthConfig::default());
    let before = tenants.check(&open, &bearer(A)).unwrap().unwrap();
    let _used = before.admit(Cost::default()).unwrap();
    // b goes; a stays with a new weight and the same rate; c comes.
    a.weight = 5;
    tenants.replace(&[a, tenant("c", "tenant-c-key-0123456789")]);
    let after = tenants.check(&open, &bearer(A)).unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&before, &after),
        "the same tenant, its state kept"
    );
    assert!(
        after.admit(Cost::default()).is_err(),
        "its use this second kept"
    );
    assert_eq!(after.place(Cost::default(), None).weight, 5);
    assert_eq!(
        tenants.check(&open, &bearer(B)).unwrap_err(),
        Denied::Invalid
    );
    assert!(tenants
        .check(&open, &bearer("tenant-c-key-0123456789"))
        .is_ok());
}

#[test]
fn routers_sharing_a_limit_each_enforce_their_share() {
    let mut c = tenant("a", A);
    c.prompt_tokens_per_minute = Some(3000);
    let tenants = Tenants::new(&[c]);
    tenants.set_share(3);
    let t = tenants.list()[0].clone();
    assert!(t
        .admit(Cost {
            prompt: 1000,
            output: 0
        })
        .is_ok());
    assert!(t
        .admit(Cost {
            prompt: 1,
            output: 0
        })
        .is_err());
}

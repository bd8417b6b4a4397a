//! The etcd URL and key ranges.

use super::wire::{prefix_end, EtcdUrl};

#[test]
fn parses_urls() {
    let u = EtcdUrl::parse("etcd://127.0.0.1:2379,[::1]:2380/switchyard/").unwrap();
    assert_eq!(u.endpoints, ["http://127.0.0.1:2379", "http://[::1]:2380"]);
    assert_eq!(u.prefix, "/switchyard");
    for (bad, needle) in [
        ("http://h:1/p", "not an etcd://"),
        ("etcd://h:1", "no /PREFIX"),
        ("etcd://h:1/", "non-empty"),
        ("etcd://h/p", "needs a port"),
        ("etcd://h:1,/p", "not HOST:PORT"),
    ] {
        let err = EtcdUrl::parse(bad).unwrap_err();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn prefix_end_is_the_next_key_after_the_prefix() {
    assert_eq!(prefix_end(b"/a/"), b"/a0");
    assert_eq!(prefix_end(b"a\xff"), b"b");
}

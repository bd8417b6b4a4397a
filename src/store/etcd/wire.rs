//! etcd on the wire: the `etcd://` URL, key ranges and transaction
//! conditions, and what a failed call says.

use std::time::Duration;

use crate::pb::etcd::etcdserverpb::{compare, Compare};

/// The longest one etcd call may take.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a management call waits for its own change to come back
/// through this router's watch.
pub(super) const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delays while etcd is unreachable.
pub(super) const RETRY_MIN: Duration = Duration::from_millis(100);
pub(super) const RETRY_MAX: Duration = Duration::from_secs(2);
/// A full list of many workers is one message.
pub(super) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A parsed `etcd://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://host:port`, one per etcd member given.
    pub endpoints: Vec<String>,
    /// The key prefix, with a leading and no trailing `/`.
    pub prefix: String,
}

impl EtcdUrl {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    pub fn parse(url: &str) -> Result<EtcdUrl, String> {
        const SHAPE: &str = "expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. etcd://127.0.0.1:2379/switchyard";
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("not an etcd:// URL; {SHAPE}"))?;
        let (hosts, prefix) = rest
            .split_once('/')
            .ok_or_else(|| format!("no /PREFIX; {SHAPE}"))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the prefix must be non-empty, without spaces; {SHAPE}"
            ));
        }
        let endpoints = hosts
            .split(',')
            .map(|h| {
                let authority: http::uri::Authority = h
                    .parse()
                    .map_err(|_| format!("{h:?} is not HOST:PORT; {SHAPE}"))?;
                match authority.port_u16() {
                    Some(p) if p != 0 && !authority.as_str().contains('@') => {
                        Ok(format!("http://{authority}"))
                    }
                    _ => Err(format!("{h:?} needs a port (etcd's is 2379); {SHAPE}")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdUrl {
            endpoints,
            prefix: format!("/{}", prefix.trim_start_matches('/')),
        })
    }
}

/// A transaction condition: `key` was created at `revision` (0: `key`
/// does not exist).
pub(super) fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
    }
}

/// The end of the range of keys that start with `prefix` (etcd's rule:
/// the prefix with its last byte incremented).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A status from etcd or from the connection to it, with its causes
/// (tonic's transport errors say "tcp connect error" and keep the why
/// in their sources).
pub(super) fn describe(status: &tonic::Status) -> String {
    let mut text = match status.message() {
        "" => format!("{:?}", status.code()),
        message => message.to_string(),
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

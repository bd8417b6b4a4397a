//! Which hosts may be registered as workers.
//!
//! A worker URL is where the router sends prompts and where the health
//! checker connects every interval, so registering one is a way to make the
//! router talk to a host of the caller's choice. Refused by default: link-
//! local addresses (`169.254.0.0/16`, `fe80::/10`), which include the cloud
//! metadata services (`169.254.169.254`, `fd00:ec2::254`), Alibaba Cloud's
//! `100.100.100.200`, any of them inside IPv6 (`::ffff:0:0/96`, NAT64's
//! `64:ff9b::/96`), their well-known names, multicast and broadcast. With `worker_hosts.allow` set, only the
//! networks (CIDRs, single addresses) and host names listed (exactly, or a
//! `.suffix`) are accepted. A host name is resolved once, when the worker
//! is added, and every address it resolves to must pass; a name that
//! resolves differently later (DNS rebinding) is not re-checked.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::config::WorkerHostsConfig;
use crate::worker::Endpoint;

fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Names of metadata services, refused like their addresses.
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata", "instance-data"];

/// The checks of [`WorkerHostsConfig`], ready to run.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    nets: Vec<IpNet>,
    names: Vec<String>,
    allow_link_local: bool,
}

impl HostPolicy {
    /// The policy of a validated `config`.
    pub fn new(config: &WorkerHostsConfig) -> Self {
        let mut policy = HostPolicy {
            allow_link_local: config.allow_link_local,
            ..HostPolicy::default()
        };
        for entry in &config.allow {
            match parse_net(entry) {
                Some(net) => policy.nets.push(net),
                None => policy.names.push(entry.trim().to_ascii_lowercase()),
            }
        }
        policy
    }

    /// Whether a worker at `endpoint` may be registered: `Err` says why not.
    pub async fn check(&self, endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
        let host = endpoint.host();
        if !self.allow_link_local && METADATA_NAMES.contains(&host) {
            return Err(format!(
                "{host} is a cloud metadata service, not a worker (worker_hosts.allow_link_local to allow it)"
            ));
        }
        let named = self
            .names
            .iter()
            .any(|n| n == host || (n.starts_with('.') && host.ends_with(n.as_str())));
        let addresses: Vec<IpAddr> = match endpoint.ip() {
            Some(ip) => vec![ip],
            None => {
                let lookup = tokio::net::lookup_host((host, endpoint.port()));
                match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    // Unresolvable now: nothing to check; the worker is
                    // unreachable until it resolves (health checks say so).
                    _ => Vec::new(),
                }
            }
        };
        for ip in &addresses {
            if let Some(why) = self.refused(*ip) {
                return Err(format!("{host} is {ip}, {why}"));
            }
        }
        let listed = self.nets.is_empty() && self.names.is_empty()
            || named
            || (!addresses.is_empty()
                && addresses
                    .iter()
                    .all(|ip| self.nets.iter().any(|n| n.contains(ip))));
        if !listed {
            return Err(format!(
                "{host} is not in worker_hosts.allow ({})",
                self.nets
                    .iter()
                    .map(ToString::to_string)
                    .chain(self.names.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }

    /// Why an address is refused whatever the allow-list says, if it is.
    fn refused(&self, ip: IpAddr) -> Option<&'static str> {
        // An IPv4 address inside IPv6: mapped (::ffff:a.b.c.d) or through
        // NAT64's well-known prefix (64:ff9b::a.b.c.d, RFC 6052).
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .or_else(|| {
                    let s = v6.segments();
                    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
                        std::net::Ipv4Addr::new(
                            (s[6] >> 8) as u8,
                            s[6] as u8,
                            (s[7] >> 8) as u8,
                            s[7] as u8,
                        )
                    })
                })
                .map(IpAddr::V4)
                .unwrap_or(ip),
            v4 => v4,
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local() || v4 == ALIBABA_METADATA,
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == AWS_METADATA_V6,
        };
        if link_local && !self.allow_link_local {
            return Some("a link-local address (where cloud metadata services live), not a worker's; worker_hosts.allow_link_local to allow it");
        }
        if ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            return Some("a multicast or broadcast address, not a worker's");
        }
        if ip.is_unspecified() {
            return Some("the unspecified address, not a worker's");
        }
        None
    }
}

/// Alibaba Cloud's instance metadata address (outside the link-local range).
const ALIBABA_METADATA: std::net::Ipv4Addr = std::net::Ipv4Addr::new(100, 100, 100, 200);

/// AWS's IPv6 instance metadata address.
const AWS_METADATA_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(policy: &HostPolicy, url: &str) -> Result<(), String> {
        policy
            .check(&Endpoint::parse(url).unwrap(), Duration::from_secs(2))
            .await
    }

    #[tokio::test]
    async fn metadata_and_link_local_are_refused_by_default() {
        let p = HostPolicy::new(&WorkerHostsConfig::default());
        for url in [
            "grpc://169.254.169.254:80",
            "http://169.254.1.1",
            "grpc://[fe80::1]:1",
            "grpc://[fd00:ec2::254]:1",
            "grpc://[::ffff:169.254.169.254]:1",
            "grpc://100.100.100.200:80",
            "grpc://[64:ff9b::a9fe:a9fe]:80",
            "http://metadata.google.internal",
            "grpc://224.0.0.1:1",
        ] {
            let err = check(&p, url).await.unwrap_err();
            assert!(err.contains("not a worker"), "{url}: {err}");
        }
        check(&p, "grpc://127.0.0.1:1").await.unwrap();
        check(&p, "grpc://localhost:1").await.unwrap();
        let open = HostPolicy::new(&WorkerHostsConfig {
            allow_link_local: true,
            ..Default::default()
        });
        check(&open, "grpc://169.254.169.254:80").await.unwrap();
    }

    #[tokio::test]
    async fn an_allow_list_admits_only_its_networks_and_names() {
        let p = HostPolicy::new(&WorkerHostsConfig {
            allow: vec![
                "10.0.0.0/8".into(),
                "127.0.0.1".into(),
                ".svc.cluster.local".into(),
            ],
            ..Default::default()
        });
        check(&p, "grpc://10.1.2.3:1").await.unwrap();
        check(&p, "grpc://127.0.0.1:1").await.unwrap();
        check(&p, "grpc://w.ns.svc.cluster.local:1").await.unwrap();
        let err = check(&p, "grpc://192.168.0.1:1").await.unwrap_err();
        assert!(
            err.contains("not in worker_hosts.allow") && err.contains("10.0.0.0/8"),
            "{err}"
        );
        // localhost resolves to 127.0.0.1 (and maybe ::1, which is not listed).
        let _ = check(&p, "grpc://localhost:1").await;
    }
}

//! Which hosts may be registered as workers (`[worker_hosts]`); the checks
//! themselves are `admission::hosts`.

use serde::{Deserialize, Serialize};

/// The `[worker_hosts]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerHostsConfig {
    /// Networks (`10.0.0.0/8`, `127.0.0.1`) and host names (`worker-1`,
    /// `.svc.cluster.local` for any name under it) workers may have. Empty:
    /// any host but the refused ones.
    pub allow: Vec<String>,
    /// Accept link-local and metadata addresses (off: they are refused).
    pub allow_link_local: bool,
}

impl WorkerHostsConfig {
    /// What is wrong with these values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        for entry in &self.allow {
            if entry.trim().is_empty() {
                return Err("worker_hosts.allow has an empty entry".into());
            }
            if entry.contains('/') && entry.trim().parse::<ipnet::IpNet>().is_err() {
                return Err(format!("worker_hosts.allow: {entry:?} is not a valid CIDR"));
            }
        }
        Ok(())
    }
}

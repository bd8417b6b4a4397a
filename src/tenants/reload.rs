//! Reloading the tenants from the config file on `SIGHUP` and whenever the
//! file's modification time changes, as `[tls]` reloads. A file that does
//! not parse or whose tenants are invalid is refused, naming the line, and
//! the running tenants stay.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Tenants;
use crate::config::{AuthConfig, Config};

/// How often the file's modification time is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads `tenants` from `path` (its keys checked against `auth`'s) until
/// `stop` resolves.
pub async fn watch(
    tenants: Arc<Tenants>,
    path: PathBuf,
    auth: AuthConfig,
    stop: impl Future<Output = ()>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: tenants reload only when the config file changes");
            None
        }
    };
    let mut seen = modified(&path);
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let why = tokio::select! {
            () = &mut stop => return,
            Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
            _ = every.tick() => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                "the config file changed"
            }
        };
        match Config::tenants_from_file(&path, &auth) {
            Ok(list) => {
                tenants.replace(&list);
                tracing::info!(tenants = list.len(), "tenants reloaded ({why})");
            }
            Err(error) => tracing::warn!(
                %error,
                "tenants not reloaded ({why}); the {} running stay",
                tenants.list().len()
            ),
        }
    }
}

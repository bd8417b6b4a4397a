//! `--discover kubernetes`: workers from the pods that match a label
//! selector, added when they are Ready and removed when they are not (or
//! are deleted, or stop matching).
//!
//! The pods are followed with `kube`'s watcher (a list, then a watch from
//! its resource version, bookmarks, and a fresh list when the API server
//! answers 410 Gone). A Ready pod becomes a worker through the same
//! [`Admission`] as `AddWorker` (so its engine and model are detected when
//! its labels do not give them), registered on this router only and marked
//! discovered: each router discovers for itself, discovered workers are
//! never written to a state file or to etcd, and they cannot be removed by
//! hand.
//!
//! What a pod says about its worker:
//! - address: `{scheme}://{pod IP}:{port}`, the port from the annotation
//!   `switchyard.io/port` or else `discovery.port` (`--pod-port`);
//! - label `switchyard.io/role`: `regular` (default), `prefill` or `decode`;
//! - annotation `switchyard.io/bootstrap-port`: a prefill worker's;
//! - label `switchyard.io/model`: the model (default: the engine's);
//! - label `switchyard.io/engine`: `switchyard`, `sglang` or `vllm`
//!   (default: detected).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio_stream::StreamExt;

use crate::admission::{AddError, Admission, WorkerRequest};
use crate::config::DiscoveryConfig;
use crate::engines;
use crate::worker::{RegistryError, WorkerId, WorkerRegistry, WorkerRole};

/// The label naming a discovered worker's pod (`namespace/name`).
pub const POD_LABEL: &str = "k8s_pod";
const ROLE_LABEL: &str = "switchyard.io/role";
const MODEL_LABEL: &str = "switchyard.io/model";
const ENGINE_LABEL: &str = "switchyard.io/engine";
const PORT_ANNOTATION: &str = "switchyard.io/port";
const BOOTSTRAP_ANNOTATION: &str = "switchyard.io/bootstrap-port";
/// How often Ready pods that could not be added are tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No usable cluster configuration.
    #[error("kubernetes discovery: {0}")]
    Config(String),
}

/// Follows the matching pods into the registry.
pub struct KubernetesDiscovery {
    config: DiscoveryConfig,
    api: Api<Pod>,
    admission: Admission,
    registry: Arc<WorkerRegistry>,
}

impl std::fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDiscovery")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KubernetesDiscovery {
    /// Connects to the cluster: `discovery.kubeconfig` if set, else the
    /// usual places (`KUBECONFIG`, `~/.kube/config`, the in-cluster
    /// service account). Nothing is listed until [`run`](Self::run).
    pub async fn new(
        config: DiscoveryConfig,
        admission: Admission,
        registry: Arc<WorkerRegistry>,
    ) -> Result<Self, DiscoveryError> {
        let kube_config = match &config.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    DiscoveryError::Config(format!("kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| {
                        DiscoveryError::Config(format!("kubeconfig {}: {e}", path.display()))
                    })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                DiscoveryError::Config(format!(
                    "no cluster configuration ({e}); run in a pod with a service account, or set KUBECONFIG or discovery.kubeconfig"
                ))
            })?,
        };
        let client = Client::try_from(kube_config)
            .map_err(|e| DiscoveryError::Config(format!("cannot build a client: {e}")))?;
        let api = match &config.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::default_namespaced(client),
        };
        Ok(KubernetesDiscovery {
            config,
            api,
            admission,
            registry,
        })
    }

    /// Follows the pods until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let selector = self.config.selector.clone();
        let stream = watcher::watcher(
            self.api.clone(),
            watcher::Config::default().labels(&selector),
        )
        .default_backoff();
        tokio::pin!(stream);
        tokio::pin!(stop);
        let mut state = Pods::default();
        let mut retry = tokio::time::interval(RETRY);
        tracing::info!(selector, namespace = ?self.config.namespace, "discovering workers from kubernetes pods");
        loop {
            tokio::select! {
                _ = &mut stop => return,
                event = stream.next() => match event {
                    None => return,
                    Some(Err(e)) => tracing::warn!(error = %e, "kubernetes pod watch failed; retrying"),
                    Some(Ok(Event::Init)) => state.listing = Some(HashSet::new()),
                    Some(Ok(Event::InitApply(pod))) => {
                        if let Some(seen) = &mut state.listing {
                            seen.insert(pod_key(&pod));
                        }
                        self.apply(&mut state, pod).await;
                    }
                    Some(Ok(Event::InitDone)) => {
                        // Pods known before the list and not in it are gone.
                        if let Some(seen) = state.listing.take() {
                            let gone: Vec<String> = state
                                .known
                                .keys()
                                .chain(state.pending.keys())
                                .filter(|k| !seen.contains(*k))
                                .cloned()
                                .collect();
                            for key in gone {
                                self.forget(&mut state, &key);
                            }
                        }
                    }
                    Some(Ok(Event::Apply(pod))) => self.apply(&mut state, pod).await,
                    Some(Ok(Event::Delete(pod))) => self.forget(&mut state, &pod_key(&pod)),
                },
                _ = retry.tick() => {
                    let pending: Vec<Pod> = state.pending.values().cloned().collect();
                    for pod in pending {
                        self.apply(&mut state, pod).await;
                    }
                }
            }
        }
    }

    /// Brings one pod's worker in line with the pod.
    async fn apply(&self, state: &mut Pods, pod: Pod) {
        let key = pod_key(&pod);
        let request = match worker_of(&pod, &self.config) {
            Ok(Some(request)) => request,
            Ok(None) => {
                // Not Ready (or going away).
                self.forget(state, &key);
                return;
            }
            Err(e) => {
                tracing::warn!(pod = key, error = %e, "pod matches the selector but cannot be a worker");
                self.forget(state, &key);
                return;
            }
        };
        if let Some((_, url)) = state.known.get(&key) {
            if crate::worker::Endpoint::parse(&request.url).is_ok_and(|e| e.url() == url) {
                return;
            }
            // The pod moved (a new IP or port): replace its worker.
            self.forget(state, &key);
        }
        match self.admission.add_discovered(request, key.clone()).await {
            Ok(worker) => {
                tracing::info!(pod = key, worker = %worker.id(), url = worker.url(), model = %worker.model(), "worker discovered");
                state.pending.remove(&key);
                state
                    .known
                    .insert(key, (worker.id().clone(), worker.url().to_string()));
            }
            Err(AddError::Registry(e @ RegistryError::AlreadyExists { .. })) => {
                tracing::warn!(pod = key, error = %e, "a discovered pod's address is already a worker; leaving it as it is");
                state.pending.remove(&key);
            }
            Err(e) => {
                tracing::warn!(pod = key, error = %e, "a Ready pod could not be added as a worker; trying again in 5 s");
                state.pending.insert(key, pod);
            }
        }
    }

    fn forget(&self, state: &mut Pods, key: &str) {
        state.pending.remove(key);
        if let Some((id, url)) = state.known.remove(key) {
            if self.registry.remove(id.as_str()).is_ok() {
                tracing::info!(pod = key, worker = %id, url, "discovered worker removed: its pod is gone, not Ready, or no longer matches");
            }
        }
    }
}

/// What discovery remembers between events.
#[derive(Default)]
struct Pods {
    /// Pods with a registered worker: its id and URL.
    known: HashMap<String, (WorkerId, String)>,
    /// Ready pods whose worker could not be added yet (tried again).
    pending: HashMap<String, Pod>,
    /// During a (re-)list: the pods listed so far.
    listing: Option<HashSet<String>>,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The worker a pod stands for, or `None` while it is not Ready.
fn worker_of(pod: &Pod, config: &DiscoveryConfig) -> Result<Option<WorkerRequest>, String> {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = status.and_then(|s| s.pod_ip.as_deref());
    let (true, Some(ip), None) = (ready, ip, &pod.metadata.deletion_timestamp) else {
        return Ok(None);
    };
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let port = match annotations.get(PORT_ANNOTATION) {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("annotation {PORT_ANNOTATION}={p:?} is not a port"))?,
        None => config.port.ok_or_else(|| {
            format!("no {PORT_ANNOTATION} annotation, and discovery.port (--pod-port) is not set")
        })?,
    };
    let role = match labels.get(ROLE_LABEL).map(String::as_str) {
        None | Some("regular") => WorkerRole::Regular,
        Some("prefill") => WorkerRole::Prefill,
        Some("decode") => WorkerRole::Decode,
        Some(other) => {
            return Err(format!(
                "label {ROLE_LABEL}={other:?}: use regular, prefill or decode"
            ))
        }
    };
    let bootstrap_port = annotations
        .get(BOOTSTRAP_ANNOTATION)
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| format!("annotation {BOOTSTRAP_ANNOTATION}={p:?} is not a port"))
        })
        .transpose()?;
    let engine = labels
        .get(ENGINE_LABEL)
        .map(|e| engines::by_name(e).map_err(|e| format!("label {ENGINE_LABEL}: {e}")))
        .transpose()?;
    let host = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => format!("[{ip}]"),
        _ => ip.to_string(),
    };
    Ok(Some(WorkerRequest {
        url: format!("{}://{host}:{port}", config.scheme),
        model_id: labels.get(MODEL_LABEL).cloned().unwrap_or_default(),
        role,
        bootstrap_port,
        labels: BTreeMap::from([(POD_LABEL.to_string(), pod_key(pod))]),
        engine,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn ready_pod(labels: serde_json::Value, annotations: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": labels, "annotations": annotations},
            "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
    }

    fn config() -> DiscoveryConfig {
        DiscoveryConfig {
            selector: "app=w".into(),
            port: Some(30000),
            ..DiscoveryConfig::default()
        }
    }

    #[test]
    fn a_ready_pod_is_a_worker_described_by_its_labels() {
        let request = worker_of(
            &ready_pod(
                serde_json::json!({"switchyard.io/role": "prefill", "switchyard.io/model": "m", "switchyard.io/engine": "sglang"}),
                serde_json::json!({"switchyard.io/port": "31000", "switchyard.io/bootstrap-port": "8998"}),
            ),
            &config(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.url, "grpc://10.0.0.7:31000");
        assert_eq!(request.role, WorkerRole::Prefill);
        assert_eq!(request.bootstrap_port, Some(8998));
        assert_eq!(request.model_id, "m");
        assert_eq!(request.engine.map(|e| e.name()), Some("sglang"));
        assert_eq!(request.labels[POD_LABEL], "ns/p");
    }

    #[test]
    fn pods_that_are_not_ready_or_are_going_away_are_not_workers() {
        let not_ready = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "False"}]}
        }));
        assert!(worker_of(&not_ready, &config()).unwrap().is_none());
        let no_ip = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }));
        assert!(worker_of(&no_ip, &config()).unwrap().is_none());
        let mut deleting = ready_pod(serde_json::json!({}), serde_json::json!({}));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert!(worker_of(&deleting, &config()).unwrap().is_none());
    }

    #[test]
    fn bad_labels_say_which() {
        let bad_role = ready_pod(
            serde_json::json!({"switchyard.io/role": "both"}),
            serde_json::json!({}),
        );
        assert!(worker_of(&bad_role, &config())
            .unwrap_err()
            .contains("switchyard.io/role"));
        let no_port = DiscoveryConfig {
            port: None,
            ..config()
        };
        let plain = ready_pod(serde_json::json!({}), serde_json::json!({}));
        assert!(worker_of(&plain, &no_port)
            .unwrap_err()
            .contains("--pod-port"));
    }
}

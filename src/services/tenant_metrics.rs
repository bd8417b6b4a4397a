//! Each tenant's series: calls, tokens, refusals by reason, calls in
//! flight and the queue-wait histogram. Labelled by tenant name, so
//! bounded by the config (a client's request never makes a label value).

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::families::{counter, gauge, Result};
use crate::tenants::{Tenants, WAIT_BUCKETS};

/// Encodes every tenant's series.
pub fn encode(encoder: &mut DescriptorEncoder, tenants: &Tenants) -> Result {
    let list = tenants.list();
    let label = |t: &crate::tenants::Tenant| vec![("tenant", t.name().to_string())];
    gauge(
        encoder,
        "tenant_routers",
        "Routers sharing each tenant's limits (each enforces 1/N of them).",
        [(Vec::new(), i64::from(tenants.share()))],
    )?;
    counter(
        encoder,
        "tenant_calls",
        "Calls admitted, by tenant.",
        list.iter().map(|t| (label(t), t.stats.calls())),
    )?;
    counter(
        encoder,
        "tenant_prompt_tokens",
        "Prompt tokens of the tenant's ended calls (the engine's count where the router reads it, else the admission estimate).",
        list.iter().map(|t| (label(t), t.stats.tokens().0)),
    )?;
    counter(
        encoder,
        "tenant_output_tokens",
        "Generated tokens of the tenant's ended calls (the engine's count on the text front; messages relayed on a relayed gRPC stream; the asked-for count otherwise).",
        list.iter().map(|t| (label(t), t.stats.tokens().1)),
    )?;
    counter(
        encoder,
        "tenant_refused",
        "Calls refused, by tenant and reason (the tenant's limits; the router's queue full, the tenant's share of it full, a wait timed out, a deadline passed while waiting).",
        list.iter().flat_map(|t| {
            t.stats.refusals().map(move |(reason, n)| {
                let mut labels = label(t);
                labels.push(("reason", reason.to_string()));
                (labels, n)
            })
        }),
    )?;
    gauge(
        encoder,
        "tenant_in_flight",
        "The tenant's calls admitted and not yet ended.",
        list.iter().map(|t| (label(t), t.in_flight() as i64)),
    )?;
    let mut family = encoder.encode_descriptor(
        "tenant_queue_wait_seconds",
        "How long the tenant's admitted calls waited for a slot among the router's calls in flight.",
        None,
        MetricType::Histogram,
    )?;
    for t in &list {
        let (counts, sum) = t.stats.wait_histogram();
        let count = counts.iter().sum();
        let buckets: Vec<(f64, u64)> = WAIT_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        family
            .encode_family(&label(t))?
            .encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;
    }
    Ok(())
}

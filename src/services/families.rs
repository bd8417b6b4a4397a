//! Writing metric families of constant values, as scrapes read them:
//! the helpers `metrics` and `tenant_metrics` share.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::worker::stats::Snapshot;

pub type Result = std::result::Result<(), std::fmt::Error>;

pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, i64)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

pub fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, Snapshot)>,
) -> Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in values {
        family
            .encode_family(&labels)?
            .encode_histogram::<Vec<(String, String)>>(h.sum, h.count, &h.buckets, None)?;
    }
    Ok(())
}

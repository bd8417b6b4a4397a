//! A replay's figures (latency percentiles, throughput, hit rate beside the
//! trace's bounds), as a table and as JSON, and TTFT CDFs of several runs
//! drawn as one SVG.

use serde::{Deserialize, Serialize};

use super::send::Outcome;
use super::trace::Bounds;

/// Mean and percentiles of one latency, seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
        Summary {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// What the run is called in plots.
    pub label: String,
    /// Where it was sent.
    pub target: String,
    /// Requests sent, and how many failed.
    pub requests: usize,
    /// Failed requests.
    pub failed: usize,
    /// Wall seconds from the first send to the last answer.
    pub seconds: f64,
    /// Completed requests a second.
    pub requests_per_second: f64,
    /// Generated tokens a second.
    pub output_tokens_per_second: f64,
    /// Time to first token.
    pub ttft: Summary,
    /// Mean time between tokens after the first, per request.
    pub itl: Summary,
    /// Whole requests.
    pub e2e: Summary,
    /// Σ cached prompt tokens / Σ prompt tokens, as the engines reported.
    pub hit_rate: f64,
    /// What one fleet-wide cache would have hit.
    pub bounds: Bounds,
    /// Every request's TTFT, seconds (for CDFs).
    pub ttfts: Vec<f64>,
    /// Every request as it went, in the trace's order (failed ones too):
    /// for per-request analysis against the trace.
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
    /// The first few errors.
    pub errors: Vec<String>,
}

impl Report {
    /// Summarises `outcomes`.
    pub fn new(
        label: &str,
        target: &str,
        outcomes: &[Outcome],
        seconds: f64,
        bounds: Bounds,
    ) -> Report {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
        let prompt: usize = ok.iter().map(|o| o.prompt).sum();
        let cached: u64 = ok.iter().map(|o| o.cached).sum();
        let output: u64 = ok.iter().map(|o| o.output).sum();
        let ttfts: Vec<f64> = ok.iter().filter_map(|o| o.ttft).collect();
        Report {
            label: label.to_string(),
            target: target.to_string(),
            requests: outcomes.len(),
            failed: outcomes.len() - ok.len(),
            seconds,
            requests_per_second: ok.len() as f64 / seconds.max(1e-9),
            output_tokens_per_second: output as f64 / seconds.max(1e-9),
            ttft: Summary::of(ttfts.clone()),
            itl: Summary::of(ok.iter().filter_map(|o| o.itl()).collect()),
            e2e: Summary::of(ok.iter().filter_map(|o| o.e2e).collect()),
            hit_rate: cached as f64 / prompt.max(1) as f64,
            bounds,
            ttfts,
            outcomes: outcomes.to_vec(),
            errors: outcomes
                .iter()
                .filter_map(|o| o.error.clone())
                .take(5)
                .collect(),
        }
    }

    /// The figures as a few lines of text.
    pub fn table(&self) -> String {
        let ms = |s: &Summary| {
            format!(
                "mean {:>8.1}  p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1} ms",
                s.mean * 1e3,
                s.p50 * 1e3,
                s.p90 * 1e3,
                s.p99 * 1e3
            )
        };
        format!(
            "{label}: {n} requests ({failed} failed) in {secs:.1} s, {rps:.2} req/s, {tps:.0} output tok/s\n  \
             TTFT {ttft}\n  ITL  {itl}\n  E2E  {e2e}\n  \
             hit rate {hit:.1}% (practical bound {prac:.1}%, infinite cache {inf:.1}%: {share:.1}% of the practical)",
            label = self.label,
            n = self.requests,
            failed = self.failed,
            secs = self.seconds,
            rps = self.requests_per_second,
            tps = self.output_tokens_per_second,
            ttft = ms(&self.ttft),
            itl = ms(&self.itl),
            e2e = ms(&self.e2e),
            hit = self.hit_rate * 100.0,
            prac = self.bounds.practical * 100.0,
            inf = self.bounds.infinite * 100.0,
            share = self.hit_rate / self.bounds.practical.max(1e-9) * 100.0,
        )
    }
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The TTFT CDFs of `reports` on one log-scaled time axis, as SVG.
pub fn cdf_svg(reports: &[Report]) -> String {
    let (w, h, left, bottom) = (760.0, 440.0, 70.0, 50.0);
    let all = reports.iter().flat_map(|r| r.ttfts.iter().copied());
    let lo = all.clone().fold(f64::INFINITY, f64::min).max(1e-4);
    let hi = all.fold(0.0, f64::max).max(lo * 10.0);
    let (l0, l1) = (lo.log10().floor(), hi.log10().ceil());
    let x = |t: f64| left + (t.max(lo).log10() - l0) / (l1 - l0) * (w - left - 20.0);
    let y = |q: f64| (h - bottom) - q * (h - bottom - 20.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time to first token (s, log scale)</text>\n\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">fraction of requests</text>\n",
        w / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    let mut decade = l0;
    while decade <= l1 {
        let t = 10f64.powf(decade);
        svg += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{t}</text>\n",
            x(t),
            y(0.0),
            y(1.0),
            y(0.0) + 16.0
        );
        decade += 1.0;
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{1:.1}\" text-anchor=\"end\">{q}</text>\n",
            w - 20.0,
            y(q),
            left - 6.0
        );
    }
    for (i, r) in reports.iter().enumerate() {
        let mut t = r.ttfts.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len().max(1) as f64;
        let step = (t.len() / 400).max(1);
        let points: Vec<String> = t
            .iter()
            .enumerate()
            .filter(|(j, _)| j % step == 0 || *j + 1 == t.len())
            .map(|(j, v)| format!("{:.1},{:.1}", x(*v), y((j + 1) as f64 / n)))
            .collect();
        let colour = COLOURS[i % COLOURS.len()];
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{} (mean {:.2} s, p99 {:.2} s)</text>\n",
            points.join(" "),
            left + 10.0,
            30.0 + 16.0 * i as f64,
            xml(&r.label),
            r.ttft.mean,
            r.ttft.p99
        );
    }
    svg + "</svg>\n"
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

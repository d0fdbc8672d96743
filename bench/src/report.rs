//! The results: one [`Row`] per population, the renewal wave and the extra scenarios, written
//! as `latest.json` (these types, serialized), `latest.md` (the same figures as tables) and
//! four SVG plots; and the targets checked against the largest population.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::ControlPlaneUsage;
use crate::fanout::Fanout;
use crate::operator::Scrape;
use crate::sharding::Sharding;
use crate::wave::Wave;

/// One population of N credentials: cold start, idle, restart and the floor. Fields added
/// since earlier runs default when an older `latest.json` is read.
#[derive(Default, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Row {
    pub n: usize,
    pub clients: usize,
    pub cold_start_s: f64,
    pub p50_ms: u128,
    pub p99_ms: u128,
    pub token_requests: u64,
    /// `apiserver_request_total` during the cold start, by verb and resource.
    pub api_requests: BTreeMap<String, f64>,
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
    pub idle_secs: u64,
    pub idle_writes: f64,
    pub idle_token_requests: u64,
    pub idle_cpu_s: f64,
    pub restart_s: f64,
    pub restart_writes: f64,
    pub restart_token_requests: u64,
    pub restart_peak_rss_mib: f64,
    pub floor_s: f64,
    /// NaN (written as `null`) when the floor was not run (`BENCH_FLOOR_UP_TO`).
    #[serde(deserialize_with = "nan_if_null")]
    pub ratio: f64,
    /// `cold_start_s` and `floor_s` per credential, in milliseconds.
    pub cold_start_ms_per_credential: f64,
    pub floor_ms_per_credential: f64,
    /// `(peak RSS - baseline peak RSS) / N` in KiB, of the cold start and of the restart.
    pub mem_per_credential_kib: f64,
    pub restart_mem_per_credential_kib: f64,
    /// One `/metrics` scrape of the restarted operator, every credential cached.
    pub metrics_scrape: Scrape,
    /// The floor's own limits: the control plane after the cold start and after the floor.
    pub control_plane_after_cold_start: ControlPlaneUsage,
    pub control_plane_after_floor: ControlPlaneUsage,
}

impl Row {
    /// The per-credential figures, from the measured ones and the operator's `baseline`.
    pub fn derive_per_credential(&mut self, baseline: &Baseline) {
        let n = self.n.max(1) as f64;
        let kib_per_credential = |peak_mib: f64| (peak_mib - baseline.peak_rss_mib) * 1024.0 / n;
        self.mem_per_credential_kib = kib_per_credential(self.peak_rss_mib);
        self.restart_mem_per_credential_kib = kib_per_credential(self.restart_peak_rss_mib);
        self.cold_start_ms_per_credential = self.cold_start_s * 1000.0 / n;
        self.floor_ms_per_credential = self.floor_s * 1000.0 / n;
    }
}

/// The operator with no credentials: started on an empty namespace, read once ready.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub rss_mib: f64,
    /// What the per-credential memory subtracts: a peak, like the figures it is taken from.
    pub peak_rss_mib: f64,
}

/// One target of issue #14, checked against this run.
/// JSON has no NaN: serde_json writes it as `null`, which must read back as NaN, not fail
/// the whole report.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    /// What it was measured on: `N=100000`, `fan-out 1000 namespaces`.
    pub scope: String,
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// `<=` or `<`.
    pub comparison: String,
    pub limit: f64,
    pub unit: String,
    pub met: bool,
}

impl Target {
    fn new(name: &str, scope: &str, value: f64, comparison: &str, limit: f64, unit: &str) -> Target {
        let met = match comparison {
            "<" => value < limit,
            _ => value <= limit,
        };
        Target {
            name: name.into(),
            scope: scope.into(),
            value,
            comparison: comparison.into(),
            limit,
            unit: unit.into(),
            met,
        }
    }
}

/// Unrelated Secrets beside the largest population, and the operator's RSS around them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unrelated {
    pub count: usize,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
}

/// New credentials, one at a time, beside the largest population: creation to Ready.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewCredentials {
    pub count: usize,
    /// One is created every this many seconds.
    #[serde(default = "one_second")]
    pub interval_s: f64,
    pub p50_ms: u128,
    pub p99_ms: u128,
}

/// Runs before the interval was recorded created one new credential a second.
fn one_second() -> f64 {
    1.0
}

/// Everything `latest.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    /// The operator's `--credential-metrics` in this run (`None`: its default).
    #[serde(default)]
    pub credential_metrics: Option<String>,
    #[serde(default)]
    pub baseline: Option<Baseline>,
    pub rows: Vec<Row>,
    pub unrelated_secrets: Option<Unrelated>,
    pub new_crs: Option<NewCredentials>,
    pub renewal_wave: Option<Wave>,
    /// Written by runs before sharding was measured: absent there.
    #[serde(default)]
    pub sharding: Option<Sharding>,
    /// Written by runs before the cluster kind existed: absent there.
    #[serde(default)]
    pub fanout: Option<Fanout>,
    /// Issue #14's targets against the largest population and the fan-out, recomputed on
    /// every write.
    #[serde(default)]
    pub targets: Vec<Target>,
}

impl Report {
    pub fn new() -> Report {
        Report {
            date: jiff::Timestamp::now().to_string(),
            machine: format!("{} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)),
            credential_metrics: None,
            baseline: None,
            rows: Vec::new(),
            unrelated_secrets: None,
            new_crs: None,
            renewal_wave: None,
            sharding: None,
            fanout: None,
            targets: Vec::new(),
        }
    }

    /// The report in `dir`'s `latest.json`, for a run of some scenarios only to update.
    pub fn load(dir: &Path) -> Option<Report> {
        let text = std::fs::read_to_string(dir.join("latest.json")).ok()?;
        match serde_json::from_str(&text) {
            Ok(report) => Some(report),
            Err(e) => {
                eprintln!("bench: {}/latest.json is unreadable ({e}); starting a new report", dir.display());
                None
            }
        }
    }

    /// Writes the six files into `dir` and prints the tables.
    pub fn write(&mut self, dir: &Path) {
        self.targets = self.check_targets();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(self).unwrap() + "\n").unwrap();
        let md = self.markdown();
        std::fs::write(dir.join("latest.md"), &md).unwrap();
        let points = |f: &dyn Fn(&Row) -> f64| self.rows.iter().map(|r| (r.n as f64, f(r))).collect::<Vec<_>>();
        let time = svg(
            "time until all Ready (s) over N",
            &points(&|r| r.cold_start_s),
            &points(&|r| r.floor_s),
            "operator",
            "floor",
        );
        std::fs::write(dir.join("time-to-ready.svg"), time).unwrap();
        let memory = svg("operator peak RSS (MiB) over N", &points(&|r| r.peak_rss_mib), &[], "peak RSS", "");
        std::fs::write(dir.join("memory.svg"), memory).unwrap();
        let memory_per_credential = svg(
            "operator (peak RSS - baseline) / N (KiB) over N",
            &points(&|r| r.mem_per_credential_kib),
            &points(&|r| r.restart_mem_per_credential_kib),
            "cold start",
            "restart",
        );
        std::fs::write(dir.join("memory-per-credential.svg"), memory_per_credential).unwrap();
        let time_per_credential = svg(
            "time until all Ready per credential (ms) over N",
            &points(&|r| r.cold_start_ms_per_credential),
            &points(&|r| r.floor_ms_per_credential),
            "operator",
            "floor",
        );
        std::fs::write(dir.join("time-per-credential.svg"), time_per_credential).unwrap();
        eprintln!("bench: results in {}", dir.display());
        print!("{md}");
    }

    /// The tables and sentences of `latest.md`.
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "| N CRs | clients | all Ready | p50 | p99 | token requests | peak RSS | CPU | floor | ratio | idle writes / token requests / CPU | restart: time, writes, token requests, peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {:.1} s | {} ms | {} ms | {} | {:.1} MiB | {:.1} s | {:.1} s | {:.2} | {} / {} / {:.2} s in {} s | {:.1} s, {}, {}, {:.1} MiB |\n",
                r.n, r.clients, r.cold_start_s, r.p50_ms, r.p99_ms, r.token_requests, r.peak_rss_mib, r.cpu_s,
                r.floor_s, r.ratio, r.idle_writes, r.idle_token_requests, r.idle_cpu_s, r.idle_secs, r.restart_s,
                r.restart_writes, r.restart_token_requests, r.restart_peak_rss_mib
            ));
        }
        md.push_str(&self.per_credential_markdown());
        if let Some(u) = &self.unrelated_secrets {
            md.push_str(&format!(
                "\n{} unrelated Secrets: operator RSS {:.1} MiB before, {:.1} MiB after.\n",
                u.count, u.rss_before_mib, u.rss_after_mib
            ));
        }
        if let Some(c) = &self.new_crs {
            md.push_str(&format!(
                "\n{} new CRs, one every {} s, beside the largest population: creation-to-Ready p50 {} ms, p99 {} ms.\n",
                c.count, c.interval_s, c.p50_ms, c.p99_ms
            ));
        }
        if let Some(wave) = &self.renewal_wave {
            md.push_str(&wave.markdown());
        }
        if let Some(sharding) = &self.sharding {
            md.push_str(&sharding.markdown());
        }
        if let Some(fanout) = &self.fanout {
            md.push_str(&fanout.markdown());
        }
        md.push_str(&self.targets_markdown());
        md
    }

    /// The per-credential curves, the `/metrics` scrape and the control plane's own figures.
    fn per_credential_markdown(&self) -> String {
        let mut md = match &self.baseline {
            Some(b) => format!(
                "
Baseline: the operator with no credentials, {:.1} MiB RSS ({:.1} MiB peak); `--credential-metrics` {}.
",
                b.rss_mib,
                b.peak_rss_mib,
                self.credential_metrics.as_deref().unwrap_or("(default)")
            ),
            None => String::from(
                "
No baseline in this run.
",
            ),
        };
        md.push_str(
            "
| N CRs | (peak − baseline) / N: cold start, restart | per credential: operator, floor | /metrics scrape (restarted) | kube-apiserver RSS, peak | etcd RSS, peak | etcd db: after cold start, after floor |
|---|---|---|---|---|---|---|
",
        );
        for r in &self.rows {
            let (cold, floor) = (&r.control_plane_after_cold_start, &r.control_plane_after_floor);
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            md.push_str(&format!(
                "| {} | {:.2} KiB, {:.2} KiB | {:.2} ms, {:.2} ms | {:.0} ms, {} bytes, {} lines, {} series | {:.0} MiB, {:.0} MiB | {:.0} MiB, {:.0} MiB | {:.0} MiB, {:.0} MiB of {:.0} MiB |
",
                r.n,
                r.mem_per_credential_kib,
                r.restart_mem_per_credential_kib,
                r.cold_start_ms_per_credential,
                r.floor_ms_per_credential,
                r.metrics_scrape.ms,
                r.metrics_scrape.bytes,
                r.metrics_scrape.lines,
                r.metrics_scrape.series,
                floor.apiserver_rss_mib,
                floor.apiserver_peak_rss_mib,
                floor.etcd_rss_mib,
                floor.etcd_peak_rss_mib,
                mib(cold.etcd_db_bytes),
                mib(floor.etcd_db_bytes),
                mib(floor.etcd_quota_bytes),
            ));
        }
        md
    }

    /// Issue #14's targets: on the largest population (and the new credentials beside it)
    /// and on the fan-out.
    fn check_targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if let Some(r) = self.rows.iter().max_by_key(|r| r.n) {
            let scope = format!("N={}", r.n);
            let t = |name: &str, value: f64, comparison: &str, limit: f64, unit: &str| {
                Target::new(name, &scope, value, comparison, limit, unit)
            };
            targets.extend([
                t("all Ready within 1.1 times the floor", r.ratio, "<=", 1.1, "ratio"),
                t("peak RSS", r.peak_rss_mib.max(r.restart_peak_rss_mib), "<=", 300.0, "MiB"),
                t("restart writes", r.restart_writes, "<=", 0.0, "requests"),
                t("restart token requests", r.restart_token_requests as f64, "<=", 0.0, "requests"),
                t("restart time", r.restart_s, "<=", 15.0, "s"),
                t("idle writes", r.idle_writes, "<=", 0.0, "requests"),
                t("/metrics scrape time", r.metrics_scrape.ms, "<", 1000.0, "ms"),
                t("/metrics scrape size", r.metrics_scrape.bytes as f64, "<", 10_000_000.0, "bytes"),
            ]);
            if let Some(c) = &self.new_crs {
                targets.push(t(
                    "new credential beside the largest population, p99",
                    c.p99_ms as f64,
                    "<",
                    1000.0,
                    "ms",
                ));
            }
        }
        if let Some(f) = &self.fanout {
            let scope = format!("fan-out {} namespaces", f.namespaces);
            targets.push(Target::new(
                "fan-out all Ready within 1.2 times its floor",
                &scope,
                f.ratio,
                "<=",
                1.2,
                "ratio",
            ));
        }
        targets
    }

    fn targets_markdown(&self) -> String {
        if self.targets.is_empty() {
            return String::new();
        }
        let mut md = String::from(
            "
Targets (issue #14):

| target | on | value | limit | met |
|---|---|---|---|---|
",
        );
        for t in &self.targets {
            md.push_str(&format!(
                "| {} | {} | {} {} | {} {} {} | {} |
",
                t.name,
                t.scope,
                round(t.value),
                t.unit,
                t.comparison,
                round(t.limit),
                t.unit,
                if t.met { "yes" } else { "**no**" }
            ));
        }
        md
    }
}

/// A figure as the targets table prints it: whole numbers bare, others to two decimals.
fn round(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// The 50th and 99th percentiles of `samples`, in milliseconds (0 when there are none).
pub fn percentiles(samples: &[Duration]) -> (u128, u128) {
    let mut ms: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    let at = |q: f64| ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    (at(0.50), at(0.99))
}

/// A small line chart with a logarithmic N axis.
fn svg(title: &str, a: &[(f64, f64)], b: &[(f64, f64)], a_name: &str, b_name: &str) -> String {
    let (w, h, m) = (640.0, 360.0, 50.0);
    let max_y = a.iter().chain(b).map(|p| p.1).fold(1e-9, f64::max) * 1.1;
    let (min_x, max_x) = a.iter().map(|p| p.0.log10()).fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let span = (max_x - min_x).max(1e-9);
    let xy = |p: &(f64, f64)| (m + (p.0.log10() - min_x) / span * (w - 2.0 * m), h - m - p.1 / max_y * (h - 2.0 * m));
    let line = |pts: &[(f64, f64)], color: &str| {
        let path: Vec<String> = pts
            .iter()
            .map(|p| {
                let (x, y) = xy(p);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let dots: String = pts.iter().map(|p| { let (x, y) = xy(p); format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\">{:.1}</text>", y - 6.0, p.1) }).collect();
        format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>{dots}", path.join(" "))
    };
    let labels: String = a
        .iter()
        .map(|p| {
            let (x, _) = xy(p);
            format!(
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">N={}</text>",
                h - m + 18.0,
                p.0
            )
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{m}\" y=\"25\" font-size=\"14\">{title}</text><line x1=\"{m}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{0}\" stroke=\"black\"/>{labels}{2}{3}<text x=\"{4}\" y=\"45\" font-size=\"11\" fill=\"#1f77b4\">{a_name}</text><text x=\"{4}\" y=\"60\" font-size=\"11\" fill=\"#ff7f0e\">{b_name}</text></svg>\n",
        h - m,
        w - m,
        line(a, "#1f77b4"),
        if b.is_empty() { String::new() } else { line(b, "#ff7f0e") },
        w - 150.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_its_floor_reads_back() {
        let mut report = Report::new();
        report.rows.push(Row { n: 100_000, ratio: f64::NAN, ..Row::default() });
        report.targets = report.check_targets();
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains("\"ratio\":null"), "JSON has no NaN");
        let read: Report = serde_json::from_str(&text).expect("a report with a skipped floor reads back");
        assert!(read.rows[0].ratio.is_nan());
        let ratio = read.targets.iter().find(|t| t.name.contains("floor")).unwrap();
        assert!(ratio.value.is_nan() && !ratio.met, "a floor not run is not a target met");
    }
}

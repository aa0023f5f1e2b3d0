//! The table on stdout, the JSON report and the SVG chart.

use serde::Serialize;

use crate::measure::{Record, Stats};
use crate::suites::Op;

/// What ran where, for the JSON report.
#[derive(Debug, Serialize)]
pub struct Adapter {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub features: Vec<String>,
}

/// The whole `--json` file.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub crate_version: &'static str,
    pub date: String,
    pub command: String,
    pub host: Host,
    pub adapter: Option<Adapter>,
    pub flop_convention: &'static str,
    pub results: Vec<Record>,
}

/// The host machine.
#[derive(Debug, Serialize)]
pub struct Host {
    pub os: &'static str,
    pub arch: &'static str,
    pub cpu_threads: usize,
    pub cpu_model: Option<String>,
}

pub fn host() -> Host {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string())
    });
    Host {
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        cpu_threads: rayon::current_num_threads(),
        cpu_model,
    }
}

/// UTC date and time, ISO 8601, from the system clock.
pub fn now_utc() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // civil-from-days (proleptic Gregorian)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Attention => "attention",
        Op::AttentionUnfused => "attn-unfused",
        Op::Similarity => "similarity",
        Op::Cosine => "cosine",
        Op::Softmax => "softmax",
        Op::Topk => "topk",
    }
}

fn ms(s: &Option<Stats>) -> String {
    match s {
        Some(s) => format!("{:.3} [{:.3}-{:.3}]", s.median, s.min, s.max),
        None => "-".into(),
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "-".into())
}

/// How a case holds its keys, if not as one contiguous tensor of `nk` keys, and its window:
/// e.g. `4 seqs 2048-32768, paged 16`, `window 4096`.
pub fn kv_note(r: &Record) -> String {
    let mut parts = vec![];
    if !r.lens.is_empty() {
        let (lo, hi) = (r.lens.iter().min().unwrap_or(&0), r.lens.iter().max().unwrap_or(&0));
        let store = if r.page_size > 0 { format!("paged {}", r.page_size) } else { "contiguous".into() };
        parts.push(format!("{} seqs {lo}-{hi}, {store}", r.batch));
    } else if r.page_size > 0 {
        parts.push(format!("paged {}", r.page_size));
    }
    if let Some(w) = r.window {
        parts.push(format!("window {w}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// A readable table of the records.
pub fn table(records: &[Record]) -> String {
    let header = [
        "op",
        "dtype",
        "BH",
        "Nq",
        "Nk",
        "D",
        "causal",
        "kv / window",
        "impl",
        "kernel ms (med [min-max])",
        "wall ms",
        "e2e ms",
        "TFLOP/s",
        "GB/s",
        "rel err",
        "GPU/CPU",
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let op = if r.op == Op::Topk { format!("topk k={}", r.k) } else { op_name(r.op).to_string() };
            let mut row = vec![
                op,
                format!("{:?}", r.dtype).to_lowercase(),
                r.bh.to_string(),
                r.nq.to_string(),
                r.nk.to_string(),
                r.d.to_string(),
                if r.causal { "yes" } else { "no" }.into(),
                kv_note(r),
                match &r.variant {
                    Some(v) if r.implementation == "wgpu" => format!("wgpu ({v})"),
                    _ => r.implementation.clone(),
                },
            ];
            if let Some(e) = &r.error {
                row.push(format!("not run: {e}"));
                row.extend(std::iter::repeat_n(String::new(), 6));
            } else {
                row.extend([
                    ms(&r.kernel_ms),
                    ms(&r.wall_ms),
                    ms(&r.e2e_ms),
                    opt(r.tflops, 4),
                    opt(r.gbps, 2),
                    r.rel_err.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "-".into()),
                    opt(r.gpu_cpu_ratio, 2),
                ]);
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            if !c.starts_with("not run") {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-"));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// An SVG line chart: attention throughput (fused, nq = nk, not causal) against sequence
/// length, one line per implementation and dtype. `None` if there is nothing to plot.
pub fn svg(records: &[Record], title: &str) -> Option<String> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![];
    for r in records.iter().filter(|r| r.op == Op::Attention && r.nq == r.nk && !r.causal && r.error.is_none()) {
        let Some(t) = r.tflops else { continue };
        let key = format!("{} {} (BH {}, D {})", r.implementation, format!("{:?}", r.dtype).to_lowercase(), r.bh, r.d);
        match series.iter_mut().find(|(k, _)| *k == key) {
            Some((_, pts)) => pts.push((r.nk as f64, t)),
            None => series.push((key, vec![(r.nk as f64, t)])),
        }
    }
    series.retain(|(_, p)| !p.is_empty());
    if series.is_empty() {
        return None;
    }
    for (_, p) in &mut series {
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let ymax_t = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0, f64::max);
    let (unit, mul) = if ymax_t < 0.1 { ("GFLOP/s", 1e3) } else { ("TFLOP/s", 1.0) };
    let ymax = nice_ceiling(ymax_t * mul);
    let xs: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0.log2())).collect();
    let (xmin, xmax) =
        (xs.iter().cloned().fold(f64::INFINITY, f64::min), xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let (xmin, xmax) = if xmax - xmin < 1e-9 { (xmin - 1.0, xmax + 1.0) } else { (xmin, xmax) };
    let (w, h, l, r, t, b) = (760.0, 440.0, 70.0, 250.0, 40.0, 50.0);
    let px = |x: f64| l + (x.log2() - xmin) / (xmax - xmin) * (w - l - r);
    let py = |y: f64| h - b - y * mul / ymax * (h - t - b);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n",
        (w - r + l) / 2.0,
        xml(title)
    );
    // axes, grid and ticks
    for i in 0..=5 {
        let yv = ymax * i as f64 / 5.0;
        let y = h - b - (h - t - b) * i as f64 / 5.0;
        s += &format!("<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n", w - r);
        s += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", l - 6.0, y + 4.0, trim_num(yv));
    }
    let mut xt = xmin.ceil();
    while xt <= xmax + 1e-9 {
        let x = px(2f64.powf(xt));
        s += &format!("<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n", t, h - b);
        s += &format!(
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - b + 16.0,
            2f64.powf(xt) as u64
        );
        xt += 1.0;
    }
    s += &format!("<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", h - b, w - r, h - b);
    s += &format!("<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n", h - b);
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">sequence length (Nq = Nk)</text>\n",
        (w - r + l) / 2.0,
        h - 12.0
    );
    s += &format!(
        "<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{unit}</text>\n",
        (h - b + t) / 2.0,
        (h - b + t) / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        s += &format!("<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n", path.join(" "));
        for (x, y) in pts {
            s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n", px(*x), py(*y));
        }
        let ly = t + 10.0 + 18.0 * i as f64;
        s += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"/>\n",
            w - r + 15.0,
            w - r + 35.0
        );
        s += &format!("<text x=\"{}\" y=\"{}\">{}</text>\n", w - r + 40.0, ly + 4.0, xml(name));
    }
    s += "</svg>\n";
    Some(s)
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(10.0 * p)
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

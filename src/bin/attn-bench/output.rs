//! The table on stdout, the JSON report and the SVG chart.

use serde::Serialize;

use crate::measure::{Record, Stats};
use crate::suites::Op;

/// How this binary was built: crate version, git commit (when built from a checkout), profile.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub crate_version: &'static str,
    pub commit: &'static str,
    pub profile: &'static str,
}

impl Build {
    pub fn this() -> Self {
        Build {
            crate_version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("WGPU_ATTENTION_GIT_COMMIT").unwrap_or("unknown"),
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
        }
    }
}

/// What ran where, for the reports.
#[derive(Debug, Clone, Serialize)]
pub struct Adapter {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub features: Vec<String>,
}

/// What every report carries besides its results: tool, build, date, command, host, adapter.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub tool: &'static str,
    #[serde(flatten)]
    pub build: Build,
    pub date: String,
    pub command: String,
    pub host: Host,
    pub adapter: Option<Adapter>,
    pub flop_convention: &'static str,
    /// A bare wgpu dispatch plus a 4 KiB readback on the same adapter, end to end (median, ms):
    /// the reference for the resident end-to-end times.
    pub bare_dispatch_readback_ms: Option<f64>,
}

impl Context {
    pub fn new(build: &Build, info: Option<&wgpu_attention::ContextInfo>) -> Self {
        Context {
            tool: "attn-bench",
            build: build.clone(),
            date: now_utc(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            host: host(),
            adapter: info.map(|i| Adapter {
                name: i.adapter.clone(),
                backend: format!("{:?}", i.backend),
                device_type: format!("{:?}", i.device_type),
                driver: i.driver.clone(),
                features: i.features.iter_names().map(|(n, _)| n.to_string()).collect(),
            }),
            flop_convention: "attention 4*BH*Nq*Nk*D (halved when causal); similarity 2*BH*Nq*Nk*D",
            bare_dispatch_readback_ms: None,
        }
    }

    /// Two lines for the top of the table: build and host, adapter and driver.
    pub fn header(&self) -> String {
        let b = &self.build;
        let adapter = match &self.adapter {
            Some(a) => format!("adapter {} ({}, {}, driver {})", a.name, a.backend, a.device_type, a.driver),
            None => "no GPU adapter (CPU path only)".into(),
        };
        format!(
            "attn-bench {} (commit {}, {} build), {}, {} CPU threads ({}), {}\n{adapter}",
            b.crate_version,
            b.commit,
            b.profile,
            self.date,
            self.host.cpu_threads,
            self.host.cpu_model.as_deref().unwrap_or("CPU model unknown"),
            self.host.os
        )
    }
}

/// The whole `--json` file.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    #[serde(flatten)]
    pub context: &'a Context,
    pub results: &'a [Record],
}

/// The host machine.
#[derive(Debug, Clone, Serialize)]
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

/// An operation's name, as in the JSON reports (`op`).
pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::Attention => "attention",
        Op::AttentionUnfused => "attention_unfused",
        Op::Similarity => "similarity",
        Op::Cosine => "cosine",
        Op::Softmax => "softmax",
        Op::Topk => "topk",
        Op::AttentionBackward => "attention_backward",
    }
}

/// A dtype's name, as in the JSON reports.
pub fn dtype_name(dt: crate::suites::Dt) -> &'static str {
    match dt {
        crate::suites::Dt::F32 => "f32",
        crate::suites::Dt::F16 => "f16",
    }
}

/// Median ± standard deviation [min-max], in milliseconds.
fn ms(s: &Option<Stats>) -> String {
    match s {
        Some(s) => format!("{} ±{} [{}-{}]", sig(s.median), sig(s.sd), sig(s.min), sig(s.max)),
        None => "-".into(),
    }
}

/// A number with 3 significant digits (at most 3 decimals for small ones).
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.digits$}")
}

/// A rate with a scaled unit: `rate` in `base` units per second (e.g. FLOP/s), shown as
/// e.g. "12.3 TFLOP/s" or "450 MFLOP/s".
pub fn rate(rate: Option<f64>, base: &str) -> String {
    let Some(r) = rate.filter(|r| r.is_finite() && *r > 0.0) else { return "-".into() };
    let (div, prefix) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(d, _)| r >= *d)
        .unwrap_or((1.0, ""));
    format!("{} {prefix}{base}", sig(r / div))
}

/// How a case holds its keys, if not as one contiguous tensor of `nk` keys, and its window:
/// e.g. `4 seqs 2048-32768, paged 16`, `window 4096`.
pub fn kv_note(r: &Record) -> String {
    let mut parts = vec![];
    if !r.lens.is_empty() {
        let (lo, hi) = (r.lens.iter().min().unwrap_or(&0), r.lens.iter().max().unwrap_or(&0));
        let store = if r.varlen && r.device_offsets {
            "packed (varlen, device offsets)".into()
        } else if r.varlen {
            "packed (varlen)".into()
        } else if r.page_size > 0 {
            format!("paged {}", r.page_size)
        } else {
            "padded".into()
        };
        parts.push(format!("{} seqs {lo}-{hi}, {store}", r.batch));
    } else if r.page_size > 0 {
        parts.push(format!("paged {}", r.page_size));
    }
    if r.kv_group > 1 {
        parts.push(format!("GQA {} per kv head", r.kv_group));
    }
    if let Some(w) = r.window {
        parts.push(format!("window {w}"));
    }
    if r.fixed_order {
        parts.push("fixed order".into());
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
        "kernel ms (med ±sd [min-max])",
        "wall ms",
        "e2e ms",
        "compute",
        "memory",
        "rel err",
        "GPU speed-up (>1: GPU faster)",
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let op = if r.op == Op::Topk { format!("topk k={}", r.k) } else { op_name(r.op).to_string() };
            let mut row = vec![
                op,
                dtype_name(r.dtype).into(),
                r.bh.to_string(),
                r.nq.to_string(),
                r.nk.to_string(),
                // softmax rows have no head dim
                if r.op == Op::Softmax { "-".into() } else { r.d.to_string() },
                if r.causal { "yes" } else { "no" }.into(),
                kv_note(r),
                match (&r.variant, &r.config) {
                    (Some(v), _) if r.implementation == "wgpu" => format!("wgpu ({v})"),
                    // a backward case's configuration, where one was asked for
                    (None, Some(c)) if r.implementation == "wgpu" && !c.is_empty() => format!("wgpu ({c})"),
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
                    rate(r.tflops.map(|t| t * 1e12), "FLOP/s"),
                    rate(r.gbps.map(|g| g * 1e9), "B/s"),
                    r.rel_err.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "-".into()),
                    r.gpu_speedup.map(|x| format!("{}x", sig(x))).unwrap_or_else(|| "-".into()),
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

/// What a reader should distrust in the records: a large spread of the timed runs, or an
/// end-to-end time below the kernel time (which includes it).
pub fn warnings(records: &[Record]) -> Vec<String> {
    let mut out = vec![];
    for r in records.iter().filter(|r| r.error.is_none()) {
        let dims = match r.op {
            Op::Softmax => format!("{}x{}x{}", r.bh, r.nq, r.nk),
            _ => format!("{}x{}x{}x{}", r.bh, r.nq, r.nk, r.d),
        };
        let causal = if r.causal { " causal" } else { "" };
        let what = format!("{} {} {dims}{causal} on {}", op_name(r.op), dtype_name(r.dtype), r.implementation);
        for (name, s) in [("kernel", &r.kernel_ms), ("wall", &r.wall_ms), ("e2e", &r.e2e_ms)] {
            if let Some(s) = s.filter(|s| s.median > 0.0 && s.sd / s.median > 0.2) {
                out.push(format!(
                    "{what}: {name} times spread widely (sd {:.0}% of the median); rerun with more --runs",
                    100.0 * s.sd / s.median
                ));
            }
        }
        if let (Some(k), Some(e)) = (r.kernel_ms, r.e2e_ms) {
            if e.median < k.median {
                out.push(format!(
                    "{what}: end-to-end {} ms is below the kernel time {} ms, which it includes: run-to-run \
                     variation (or timestamp error) exceeds the difference; compare these times with care",
                    sig(e.median),
                    sig(k.median)
                ));
            }
        }
    }
    out
}

/// Columns of the CSV file (and the order of each row).
const CSV_COLUMNS: [&str; 29] = [
    "suite",
    "op",
    "dtype",
    "bh",
    "nq",
    "nk",
    "d",
    "causal",
    "k",
    "impl",
    "variant",
    "batch",
    "page_size",
    "window",
    "kernel_ms_median",
    "kernel_ms_sd",
    "wall_ms_median",
    "wall_ms_sd",
    "e2e_ms_median",
    "e2e_ms_sd",
    "flops",
    "tflops",
    "gbps",
    "rel_err",
    "gpu_speedup",
    "error",
    "commit",
    "profile",
    "adapter",
];

/// One CSV row per record, with the context's commit, profile and adapter (and driver) on each.
pub fn csv(ctx: &Context, records: &[Record]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let num = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    let adapter = ctx.adapter.as_ref().map(|a| format!("{} (driver {})", a.name, a.driver)).unwrap_or_default();
    let mut out = CSV_COLUMNS.join(",") + "\n";
    for r in records {
        let cells = [
            r.suite.clone(),
            op_name(r.op).into(),
            dtype_name(r.dtype).into(),
            r.bh.to_string(),
            r.nq.to_string(),
            r.nk.to_string(),
            r.d.to_string(),
            r.causal.to_string(),
            r.k.to_string(),
            r.implementation.clone(),
            r.variant.clone().unwrap_or_default(),
            r.batch.to_string(),
            r.page_size.to_string(),
            r.window.map(|w| w.to_string()).unwrap_or_default(),
            num(r.kernel_ms.map(|s| s.median)),
            num(r.kernel_ms.map(|s| s.sd)),
            num(r.wall_ms.map(|s| s.median)),
            num(r.wall_ms.map(|s| s.sd)),
            num(r.e2e_ms.map(|s| s.median)),
            num(r.e2e_ms.map(|s| s.sd)),
            r.flops.to_string(),
            num(r.tflops),
            num(r.gbps),
            num(r.rel_err),
            num(r.gpu_speedup),
            r.error.clone().unwrap_or_default(),
            ctx.build.commit.into(),
            ctx.build.profile.into(),
            adapter.clone(),
        ];
        out += &cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",");
        out.push('\n');
    }
    out
}

/// One JSON object per line per record, each with the report's context under `context`.
pub fn jsonl(ctx: &Context, records: &[Record]) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(flatten)]
        record: &'a Record,
        context: &'a Context,
    }
    records
        .iter()
        .filter_map(|record| serde_json::to_string(&Line { record, context: ctx }).ok())
        .map(|l| l + "\n")
        .collect()
}

/// `--list-suites`: each suite, what it is for, and its cases.
pub fn list_suites() -> String {
    use clap::ValueEnum;
    let mut out = String::new();
    for &s in crate::suites::Suite::value_variants() {
        let help = s.to_possible_value().and_then(|v| v.get_help().map(|h| h.to_string())).unwrap_or_default();
        let cases = crate::suites::suite(s);
        out += &format!("{} ({} cases): {help}\n", s.name(), cases.len());
        for c in cases {
            let dims = if c.op == Op::Softmax {
                format!("{} rows of {}", c.bh * c.nq, c.nk)
            } else if c.op == Op::Topk {
                format!("{} queries x {} keys x {}, k {}", c.nq, c.nk, c.d, c.k)
            } else {
                format!("BH {} x Nq {} x Nk {} x D {}", c.bh, c.nq, c.nk, c.d)
            };
            let mut extra = vec![];
            if c.causal {
                extra.push("causal".to_string());
            }
            if !c.lens.is_empty() {
                extra.push(format!(
                    "{} seqs of {}-{} keys",
                    c.batch,
                    c.lens.iter().min().unwrap_or(&0),
                    c.lens.iter().max().unwrap_or(&0)
                ));
            }
            if c.page_size > 0 {
                extra.push(format!("paged {}", c.page_size));
            }
            if c.varlen {
                extra.push(if c.device_offsets { "packed (varlen, device offsets)" } else { "packed (varlen)" }.into());
            }
            if c.kv_group > 1 {
                extra.push(format!("GQA {} per kv head", c.kv_group));
            }
            if let Some(w) = c.window {
                extra.push(format!("window {w}"));
            }
            let extra = if extra.is_empty() { String::new() } else { format!(" ({})", extra.join(", ")) };
            out += &format!("  {} {} {dims}{extra}\n", op_name(c.op), dtype_name(c.dtype));
        }
    }
    out
}

/// An SVG line chart: attention throughput (fused, nq = nk, not causal) against sequence
/// length, one line per implementation and dtype. `None` if there is nothing to plot.
pub fn svg(records: &[Record], title: &str) -> Option<String> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![];
    for r in records.iter().filter(|r| r.op == Op::Attention && r.nq == r.nk && !r.causal && r.error.is_none()) {
        let Some(t) = r.tflops else { continue };
        let key = format!("{} {} (BH {}, D {})", r.implementation, dtype_name(r.dtype), r.bh, r.d);
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

/// Lines comparing each resident end-to-end time (one call on resident inputs plus the readback
/// of its output) with a bare wgpu dispatch plus a 4 KiB readback on the same adapter.
pub fn resident_lines(context: &Context, records: &[Record]) -> Vec<String> {
    let Some(bare) = context.bare_dispatch_readback_ms else { return vec![] };
    let mut lines = vec![format!("bare wgpu dispatch + 4 KiB readback: {:.1} us (median)", bare * 1e3)];
    for r in records.iter().filter(|r| r.resident_ms.is_some()) {
        if let Some(s) = r.resident_ms {
            lines.push(format!(
                "resident end to end, {} {} {}x{}x{}x{}: {:.1} us median, {:.2}x the bare dispatch",
                op_name(r.op),
                dtype_name(r.dtype),
                r.bh,
                r.nq,
                r.nk,
                r.d,
                s.median * 1e3,
                s.median / bare
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_scale_their_unit() {
        assert_eq!(rate(Some(1.5e13), "FLOP/s"), "15.0 TFLOP/s");
        assert_eq!(rate(Some(2.34e8), "FLOP/s"), "234 MFLOP/s");
        assert_eq!(rate(Some(31.9e6), "B/s"), "31.9 MB/s");
        assert_eq!(rate(Some(12.0), "B/s"), "12.0 B/s");
        assert_eq!(rate(Some(0.0), "B/s"), "-");
        assert_eq!(rate(None, "FLOP/s"), "-");
        // never a row of zeros
        for x in [0.7, 9.99e2, 1e3, 5e7, 3e14, 2e18] {
            let s = rate(Some(x), "FLOP/s");
            assert!(!s.starts_with("0.0"), "{x}: {s}");
        }
    }

    #[test]
    fn three_significant_digits() {
        assert_eq!(sig(1.03), "1.03");
        assert_eq!(sig(0.0462), "0.0462");
        assert_eq!(sig(123.4), "123");
        assert_eq!(sig(12345.0), "12345");
        assert_eq!(sig(0.0), "0");
    }

    #[test]
    fn table_names_ops_as_the_json_does_and_labels_the_speedup() {
        use crate::suites::{Case, Dt};
        let mut g = Record::new(&Case::new("t", Op::AttentionUnfused, Dt::F32, 2, 8, 8, 4, false), "wgpu", "gpu", "x");
        g.kernel_ms = Stats::of(&[1e-3, 1.1e-3, 0.9e-3]);
        g.gpu_speedup = Some(2.5);
        let s = Record::new(&Case::new("t", Op::Softmax, Dt::F16, 2, 8, 8, 0, false), "cpu", "cpu", "x");
        let t = table(&[g.clone(), s]);
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["op"], "attention_unfused");
        assert!(t.contains("attention_unfused"), "{t}");
        assert!(t.contains("GPU speed-up (>1: GPU faster)") && t.contains("2.50x"), "{t}");
        let softmax = t.lines().find(|l| l.starts_with("softmax")).unwrap();
        let cells: Vec<&str> = softmax.split('|').map(str::trim).collect();
        assert_eq!(cells[5], "-", "softmax rows have no head dim: {softmax}");
        assert!(t.contains("1.00 ±0.100 [0.900-1.10]"), "median ± sd [min-max]: {t}");
    }

    #[test]
    fn warnings_for_spread_and_impossible_e2e() {
        use crate::suites::{Case, Dt};
        let mut r = Record::new(&Case::new("t", Op::Attention, Dt::F32, 1, 8, 8, 4, false), "wgpu", "gpu", "x");
        r.kernel_ms = Stats::of(&[1.0, 1.0, 1.0]);
        r.e2e_ms = Stats::of(&[0.5, 0.5]);
        let w = warnings(std::slice::from_ref(&r));
        assert!(w.len() == 1 && w[0].contains("below the kernel time"), "{w:?}");
        r.e2e_ms = Stats::of(&[2.0, 2.0]);
        r.wall_ms = Stats::of(&[1.0, 3.0, 1.2]);
        let w = warnings(&[r]);
        assert!(w.len() == 1 && w[0].contains("wall times spread widely"), "{w:?}");
    }

    #[test]
    fn csv_and_jsonl_carry_the_context() {
        use crate::suites::{Case, Dt};
        let ctx = Context::new(&Build::this(), None);
        let r = Record::new(&Case::new("t", Op::Cosine, Dt::F32, 1, 8, 8, 4, false), "cpu", "cpu", "a, \"b\"");
        let csv = csv(&ctx, std::slice::from_ref(&r));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), CSV_COLUMNS.len());
        assert!(lines[1].starts_with("t,cosine,f32,1,8,8,4,false,0,cpu,"), "{}", lines[1]);
        assert!(lines[1].contains(ctx.build.profile));
        let line: serde_json::Value = serde_json::from_str(jsonl(&ctx, &[r]).trim()).unwrap();
        assert_eq!(line["op"], "cosine");
        assert_eq!(line["context"]["profile"], ctx.build.profile);
        assert_eq!(line["context"]["tool"], "attn-bench");
    }
}

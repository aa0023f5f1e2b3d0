//! Running one case on the GPU or the CPU path and measuring it.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use wgpu_attention::*;

use crate::suites::{Case, Dt, Op};

/// Median, min and max of a set of times, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(secs: &[f64]) -> Option<Stats> {
        if secs.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = secs.iter().map(|s| s * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        Some(Stats { median, min: v[0], max: v[v.len() - 1] })
    }
}

/// One measured case on one implementation: the JSON record (shared with torch_reference.py).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub suite: String,
    pub op: Op,
    pub dtype: Dt,
    pub bh: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub causal: bool,
    /// Results per query (top-k; 0 otherwise).
    pub k: usize,
    /// "wgpu" (our kernels) or "cpu" (our CPU path); the PyTorch script writes `torch-<backend>`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// "gpu" or "cpu".
    pub backend: String,
    /// Adapter or CPU description.
    pub device: String,
    pub runs: usize,
    /// GPU time of the kernels alone (timestamp queries), per run.
    pub kernel_ms: Option<Stats>,
    /// Host wall time of one computation on resident data (submit to completion), per run.
    pub wall_ms: Option<Stats>,
    /// Upload, compute and readback of the whole output, per run.
    pub e2e_ms: Option<Stats>,
    /// FLOP rate from the kernel median (wall median where there is no kernel time).
    pub tflops: Option<f64>,
    /// Minimal bytes moved over the same time.
    pub gbps: Option<f64>,
    /// Relative Frobenius error of the first batch·head slice against the CPU path.
    pub rel_err: Option<f64>,
    /// CPU-path time over this time (with `--backend both`).
    pub gpu_cpu_ratio: Option<f64>,
    /// The attention kernel variant that ran (GPU attention only), e.g. `split-k-vec4`.
    pub variant: Option<String>,
    /// Why the case did not run, if it did not.
    pub error: Option<String>,
}

impl Record {
    pub fn new(c: &Case, implementation: &str, backend: &str, device: &str) -> Self {
        Record {
            suite: c.suite.clone(),
            op: c.op,
            dtype: c.dtype,
            bh: c.bh,
            nq: c.nq,
            nk: c.nk,
            d: c.d,
            causal: c.causal,
            k: c.k,
            implementation: implementation.into(),
            backend: backend.into(),
            device: device.into(),
            runs: 0,
            kernel_ms: None,
            wall_ms: None,
            e2e_ms: None,
            tflops: None,
            gbps: None,
            rel_err: None,
            gpu_cpu_ratio: None,
            variant: None,
            error: None,
        }
    }

    /// The time rates are computed from: kernel median, else wall median (seconds).
    pub fn time_s(&self) -> Option<f64> {
        self.kernel_ms.or(self.wall_ms).map(|s| s.median / 1e3)
    }

    fn finish_rates(&mut self, c: &Case) {
        if let Some(t) = self.time_s().filter(|t| *t > 0.0) {
            self.tflops = (c.flops() > 0.0).then(|| c.flops() / t / 1e12);
            self.gbps = Some(c.bytes() / t / 1e9);
        }
    }
}

/// Measurement settings.
pub struct Settings {
    pub warmup: usize,
    pub runs: usize,
    /// Runs of upload + compute + readback.
    pub e2e_runs: usize,
    /// Skip the CPU path above this many GFLOP (or GB moved, for softmax).
    pub cpu_max_gflop: f64,
    /// Stop adding CPU runs past this many seconds.
    pub cpu_budget: f64,
}

/// Seeded inputs in [-1, 1).
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// The shapes of a case's inputs: (q or x, k/v).
fn shapes(c: &Case) -> (Shape, Shape) {
    match c.op {
        Op::Softmax => (Shape::new(1, c.bh, c.nq, c.nk), Shape::new(1, c.bh, c.nk, 1)),
        Op::Topk => (Shape::new(1, 1, c.nq, c.d), Shape::new(1, 1, c.nk, c.d)),
        _ => (Shape::new(1, c.bh, c.nq, c.d), Shape::new(1, c.bh, c.nk, c.d)),
    }
}

/// Host inputs (q or x, k, v), rounded to f16 where the case is f16 so both paths see the same values.
fn host_inputs(c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (qs, ks) = shapes(c);
    let round = |v: Vec<f32>| match c.dtype {
        Dt::F32 => v,
        Dt::F16 => v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect(),
    };
    let k = if c.op == Op::Softmax { vec![] } else { round(data(ks.numel(), 2)) };
    let v = if matches!(c.op, Op::Softmax | Op::Topk) { vec![] } else { round(data(ks.numel(), 3)) };
    (round(data(qs.numel(), 1)), k, v)
}

fn mem_available() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb * 1024.0)
}

fn progress(label: &str, total: usize, first: Duration) -> ProgressBar {
    if first.as_secs_f64() * total as f64 <= 1.0 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>40} [{bar:30}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(label.to_string());
    pb
}

/// GPU tensors of a case.
struct GpuCase {
    q: Tensor,
    k: Option<Tensor>,
    v: Option<Tensor>,
    out: Tensor,
    weights: Option<Tensor>,
}

fn upload(ctx: &Context, x: &[f32], s: Shape, dt: Dt) -> Result<Tensor> {
    match dt {
        Dt::F32 => ctx.upload(x, s),
        Dt::F16 => ctx.upload(&x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), s),
    }
}

fn gpu_case(ctx: &Context, c: &Case, q: &[f32], k: &[f32], v: &[f32]) -> Result<GpuCase> {
    let (qs, ks) = shapes(c);
    let dt = match c.dtype {
        Dt::F32 => DType::F32,
        Dt::F16 => DType::F16,
    };
    let q_t = upload(ctx, q, qs, c.dtype)?;
    let (k_t, v_t) = if c.op == Op::Softmax {
        (None, None)
    } else if c.op == Op::Topk {
        (Some(upload(ctx, k, ks, c.dtype)?), None)
    } else {
        (Some(upload(ctx, k, ks, c.dtype)?), Some(upload(ctx, v, ks, c.dtype)?))
    };
    let scores = Shape::new(1, c.bh, c.nq, c.nk);
    let (out, weights) = match c.op {
        Op::Attention => (ctx.zeros(qs, Layout::Bhsd, dt)?, None),
        Op::AttentionUnfused => (ctx.zeros(qs, Layout::Bhsd, dt)?, Some(ctx.zeros(scores, Layout::Bhsd, DType::F32)?)),
        Op::Similarity | Op::Cosine => (ctx.zeros(scores, Layout::Bhsd, DType::F32)?, None),
        Op::Softmax | Op::Topk => (ctx.zeros(qs, Layout::Bhsd, dt)?, None),
    };
    Ok(GpuCase { q: q_t, k: k_t, v: v_t, out, weights })
}

fn encode(ctx: &Context, c: &Case, g: &GpuCase, enc: &mut wgpu::CommandEncoder) -> Result<()> {
    let opts = AttentionOptions { causal: c.causal, variant: c.variant, ..Default::default() };
    let kv = || -> Result<(&Tensor, &Tensor)> {
        match (&g.k, &g.v) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(Error::InvalidArgument { argument: "case", message: "no keys".into() }),
        }
    };
    match c.op {
        Op::Attention => {
            let (k, v) = kv()?;
            ctx.encode_attention(enc, &g.q, k, v, None, &opts, &g.out, None)
        }
        Op::AttentionUnfused => {
            let (k, v) = kv()?;
            let w = g
                .weights
                .as_ref()
                .ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no weights".into() })?;
            ctx.encode_attention_unfused(enc, &g.q, k, v, None, &opts, &g.out, w)
        }
        Op::Similarity => ctx.encode_similarity(enc, &g.q, kv()?.0, Similarity::ScaledDot(None), &g.out),
        Op::Cosine => ctx.encode_similarity(enc, &g.q, kv()?.0, Similarity::Cosine, &g.out),
        Op::Softmax => ctx.encode_softmax(enc, &g.q, None, &SoftmaxOptions::default(), &g.out),
        Op::Topk => {
            let keys =
                g.k.as_ref().ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no keys".into() })?;
            ctx.encode_top_k(enc, &g.q, keys, c.k, Metric::Dot).map(|_| ())
        }
    }
}

/// The CPU path on host inputs; returns the output (BHSD).
fn cpu_run(c: &Case, qs: Shape, ks: Shape, q: &[f32], k: &[f32], v: &[f32]) -> Result<Vec<f32>> {
    let opts = AttentionOptions { causal: c.causal, ..Default::default() };
    macro_rules! with_dtype {
        ($conv:expr) => {{
            let (q, k, v) = ($conv(q), $conv(k), $conv(v));
            let hq = HostTensor::new(&q[..], qs)?;
            match c.op {
                Op::Softmax => cpu::softmax(&hq, None, &SoftmaxOptions::default()),
                Op::Attention => {
                    Ok(cpu::attention(&hq, &HostTensor::new(&k[..], ks)?, &HostTensor::new(&v[..], ks)?, None, &opts)?
                        .0)
                }
                Op::AttentionUnfused => Ok(cpu::attention_unfused(
                    &hq,
                    &HostTensor::new(&k[..], ks)?,
                    &HostTensor::new(&v[..], ks)?,
                    None,
                    &opts,
                )?
                .0),
                Op::Similarity => cpu::similarity(&hq, &HostTensor::new(&k[..], ks)?, Similarity::ScaledDot(None)),
                Op::Cosine => cpu::similarity(&hq, &HostTensor::new(&k[..], ks)?, Similarity::Cosine),
                Op::Topk => {
                    let widen = |v: &[_]| v.iter().map(|x: &_| Element::to_f32(*x)).collect::<Vec<f32>>();
                    Ok(cpu::top_k(&widen(&q[..]), &widen(&k[..]), ks.dim, c.k, Metric::Dot)?.scores)
                }
            }
        }};
    }
    match c.dtype {
        Dt::F32 => with_dtype!(|x: &[f32]| x.to_vec()),
        Dt::F16 => with_dtype!(|x: &[f32]| x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>()),
    }
}

/// The first batch·head slice of a case (for the error check).
fn first_slice(c: &Case) -> Case {
    Case { bh: 1, ..c.clone() }
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn output_shape(c: &Case, bh: usize) -> Shape {
    match c.op {
        Op::Attention | Op::AttentionUnfused => Shape::new(1, bh, c.nq, c.d),
        _ => Shape::new(1, bh, c.nq, c.nk),
    }
}

/// Runs a case on the GPU.
pub fn run_gpu(ctx: &Context, c: &Case, st: &Settings, label: &str) -> Record {
    // a forced variant is its own implementation (the joined tables compare `wgpu`, the default)
    let implementation = match c.variant {
        AttentionVariant::Auto => "wgpu".to_string(),
        v => format!("wgpu-{v}"),
    };
    let mut rec = Record::new(c, &implementation, "gpu", &ctx.info().adapter);
    if let Err(e) = gpu_inner(ctx, c, st, label, &mut rec) {
        rec.error = Some(e.to_string());
    }
    rec.finish_rates(c);
    rec
}

fn gpu_inner(ctx: &Context, c: &Case, st: &Settings, label: &str, rec: &mut Record) -> Result<()> {
    if let Some(avail) = mem_available() {
        if c.host_bytes() > avail {
            return Err(Error::TooLarge {
                argument: "shape",
                message: format!(
                    "needs {:.1} GiB of host memory for its data, {:.1} GiB available",
                    c.host_bytes() / 2f64.powi(30),
                    avail / 2f64.powi(30)
                ),
            });
        }
    }
    let (q, k, v) = host_inputs(c);
    let g = gpu_case(ctx, c, &q, &k, &v)?;
    if let (Op::Attention, Some(k), Some(v)) = (c.op, &g.k, &g.v) {
        let opts = AttentionOptions { causal: c.causal, variant: c.variant, ..Default::default() };
        rec.variant = Some(ctx.plan_attention(&g.q, k, v, None, &opts, false)?.variant.to_string());
    }
    for _ in 0..st.warmup.max(1) {
        ctx.record_and_submit(|enc| encode(ctx, c, &g, enc))?;
        ctx.wait()?;
    }
    let (mut kernel, mut wall) = (vec![], vec![]);
    let t = Instant::now();
    let k0 = ctx.time_gpu(|enc| encode(ctx, c, &g, enc))?;
    let first = t.elapsed();
    wall.push(first.as_secs_f64());
    kernel.extend(k0);
    let pb = progress(label, st.runs, first);
    pb.inc(1);
    for _ in 1..st.runs {
        let t = Instant::now();
        let k = ctx.time_gpu(|enc| encode(ctx, c, &g, enc))?;
        wall.push(t.elapsed().as_secs_f64());
        kernel.extend(k);
        pb.inc(1);
    }
    pb.finish_and_clear();
    rec.runs = st.runs;
    rec.kernel_ms = Stats::of(&kernel);
    rec.wall_ms = Stats::of(&wall);

    // error of the first slice (top-k: the first query's scores) against the CPU path
    if c.op == Op::Topk {
        let one = Case { nq: 1, ..c.clone() };
        let (qs1, ks1) = shapes(&one);
        let want = cpu_run(&one, qs1, ks1, &q[..c.d], &k, &v)?;
        let keys =
            g.k.as_ref().ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no keys".into() })?;
        let q1 = upload(ctx, &q[..c.d], qs1, c.dtype)?;
        rec.rel_err = Some(rel_err(&ctx.top_k(&q1, keys, c.k, Metric::Dot)?.scores, &want));
    } else {
        let one = first_slice(c);
        let (qs1, ks1) = shapes(&one);
        let (lq, lk) = (qs1.numel(), if c.op == Op::Softmax { 0 } else { ks1.numel() });
        let want = cpu_run(&one, qs1, ks1, &q[..lq], &k[..lk], &v[..lk])?;
        let out_slice =
            Tensor::from_buffer(ctx, g.out.buffer().clone(), 0, output_shape(c, 1), Layout::Bhsd, g.out.dtype())?;
        rec.rel_err = Some(rel_err(&out_slice.download_blocking(ctx)?, &want));
    }
    drop(g);

    // end to end: upload, compute, read back the whole output
    let mut e2e = vec![];
    for _ in 0..st.e2e_runs {
        let t = Instant::now();
        let g = gpu_case(ctx, c, &q, &k, &v)?;
        let out = if c.op == Op::Topk {
            let keys =
                g.k.as_ref().ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no keys".into() })?;
            ctx.top_k(&g.q, keys, c.k, Metric::Dot)?.scores
        } else {
            ctx.record_and_submit(|enc| encode(ctx, c, &g, enc))?;
            g.out.download_blocking(ctx)?
        };
        e2e.push(t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    rec.e2e_ms = Stats::of(&e2e);
    Ok(())
}

/// Runs a case on the CPU path.
pub fn run_cpu(c: &Case, st: &Settings, label: &str) -> Record {
    let device = format!("CPU path, {} threads", rayon::current_num_threads());
    let mut rec = Record::new(c, "cpu", "cpu", &device);
    let work = c.flops().max(c.bytes()) / 1e9;
    if work > st.cpu_max_gflop {
        rec.error = Some(format!("skipped: {work:.0} GFLOP is over --cpu-max-gflop {}", st.cpu_max_gflop));
        return rec;
    }
    if let Some(avail) = mem_available() {
        if c.host_bytes() * 1.5 > avail {
            rec.error = Some(format!(
                "needs {:.1} GiB of host memory, {:.1} GiB available",
                c.host_bytes() * 1.5 / 2f64.powi(30),
                avail / 2f64.powi(30)
            ));
            return rec;
        }
    }
    let (q, k, v) = host_inputs(c);
    let (qs, ks) = shapes(c);
    let mut times = vec![];
    let started = Instant::now();
    let mut pb = ProgressBar::hidden();
    for i in 0..st.runs {
        let t = Instant::now();
        if let Err(e) = cpu_run(c, qs, ks, &q, &k, &v).map(std::hint::black_box) {
            rec.error = Some(e.to_string());
            return rec;
        }
        times.push(t.elapsed().as_secs_f64());
        if i == 0 {
            pb = progress(label, st.runs, t.elapsed());
        }
        pb.inc(1);
        if started.elapsed().as_secs_f64() > st.cpu_budget {
            break;
        }
    }
    pb.finish_and_clear();
    rec.runs = times.len();
    rec.wall_ms = Stats::of(&times);
    rec.finish_rates(c);
    rec
}

//! Running one case on the GPU or the CPU path and measuring it.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use wgpu_attention::*;

use crate::suites::{Case, Dt, Op};

/// Median, standard deviation, min and max of a set of times, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub median: f64,
    /// Sample standard deviation (0 for one run).
    pub sd: f64,
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
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        Some(Stats { median, sd, min: v[0], max: v[v.len() - 1] })
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
    /// Compute on resident data and readback of the whole output (one call and one download, as
    /// an application that keeps its inputs on the GPU does), per run; outputs up to 1 MiB.
    pub resident_ms: Option<Stats>,
    /// FLOP rate from the kernel median (wall median where there is no kernel time).
    pub tflops: Option<f64>,
    /// Minimal bytes moved over the same time.
    pub gbps: Option<f64>,
    /// Relative Frobenius error of the first batch·head slice against the CPU path.
    pub rel_err: Option<f64>,
    /// The GPU's speed-up over the CPU path: CPU-path time over this time (with
    /// `--backend both`; > 1: the GPU is faster).
    pub gpu_speedup: Option<f64>,
    /// The attention kernel variant that ran (GPU attention only), e.g. `split-k-vec4`.
    pub variant: Option<String>,
    /// Its configuration (`AttentionPlan::config`), e.g. `tc_rows=32`.
    pub config: Option<String>,
    /// Sequences (`bh` = batch · heads).
    pub batch: usize,
    /// Each sequence's key count (empty: `nk` each).
    pub lens: Vec<usize>,
    /// Tokens per page of a paged KV cache (0: contiguous).
    pub page_size: usize,
    /// Sliding window (keys before each query), if any.
    pub window: Option<usize>,
    /// Query heads per key/value head (GQA; 1 otherwise).
    pub kv_group: usize,
    /// The paged cache's element type (`--kv-dtype`), if not the case's dtype.
    pub kv_dtype: Option<String>,
    /// A packed pack of variable-length sequences (`attention_varlen`).
    pub varlen: bool,
    /// The pack's offsets in device buffers (`attention_varlen_buffers`: one dispatch).
    pub device_offsets: bool,
    /// The fixed reduction order (`--fixed-order`).
    pub fixed_order: bool,
    /// FLOPs of one run (4·H·D per attended pair with mixed lengths or windows).
    pub flops: f64,
    /// Why the case did not run, if it did not.
    pub error: Option<String>,
    /// With `--diag`: what the context held after the case (`Context::diagnostics`).
    pub diag: Option<serde_json::Value>,
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
            resident_ms: None,
            tflops: None,
            gbps: None,
            rel_err: None,
            gpu_speedup: None,
            variant: None,
            config: None,
            batch: c.batch,
            lens: c.lens.clone(),
            page_size: c.page_size,
            window: c.window,
            kv_group: c.kv_group.max(1),
            kv_dtype: c.kv_dtype.clone(),
            varlen: c.varlen,
            device_offsets: c.device_offsets,
            fixed_order: c.fixed_order,
            flops: c.flops(),
            error: None,
            diag: None,
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
    /// Stop adding timed GPU runs past this many seconds (the first always runs).
    pub gpu_budget: f64,
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

/// The shapes of a case's inputs: (q or x, k/v; for a paged cache, a pool as
/// `[1, 1, tokens · heads, d]`).
fn shapes(c: &Case) -> (Shape, Shape) {
    match c.op {
        Op::Softmax => (Shape::new(1, c.bh, c.nq, c.nk), Shape::new(1, c.bh, c.nk, 1)),
        Op::Topk => (Shape::new(1, 1, c.nq, c.d), Shape::new(1, 1, c.nk, c.d)),
        _ if c.varlen => {
            // a pack: every sequence's rows back to back, [1, heads, total, d]
            let total = c.query_rows();
            (Shape::new(1, c.heads(), total, c.d), Shape::new(1, c.kv_heads(), total, c.d))
        }
        _ => {
            let qs = Shape::new(c.batch, c.heads(), c.nq, c.d);
            match Paging::of(c) {
                Some(p) => (qs, p.geometry.pool_shape()),
                None => (qs, Shape::new(c.batch, c.kv_heads(), c.nk, c.d)),
            }
        }
    }
}

/// A paged case's cache layout: each sequence's pages, dealt from the pool in a shuffled order.
pub struct Paging {
    geometry: PageGeometry,
    /// `[batch, blocks]`.
    table: Vec<u32>,
    blocks: usize,
    pub lens: Vec<u32>,
}

impl Paging {
    fn of(c: &Case) -> Option<Paging> {
        if c.page_size == 0 {
            return None;
        }
        let lens = c.seq_lens();
        let blocks = c.nk.div_ceil(c.page_size);
        let num_pages: usize = lens.iter().map(|l| l.div_ceil(c.page_size)).sum::<usize>().max(1);
        // a fixed shuffle of the pool's pages, dealt to the sequences in turn
        let mut order: Vec<u32> = (0..num_pages as u32).collect();
        let mut r = 0x2545_f491_4f6c_dd1du64;
        for i in (1..order.len()).rev() {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            order.swap(i, (r % (i as u64 + 1)) as usize);
        }
        let mut next = order.into_iter();
        let mut table = vec![0u32; lens.len() * blocks];
        for (b, l) in lens.iter().enumerate() {
            for e in &mut table[b * blocks..b * blocks + l.div_ceil(c.page_size)] {
                *e = next.next().unwrap_or(0);
            }
        }
        let geometry = PageGeometry { num_pages, page_size: c.page_size, kv_heads: c.heads(), head_dim: c.d };
        Some(Paging { geometry, table, blocks, lens: lens.iter().map(|&l| l as u32).collect() })
    }

    /// The first sequence alone, over the same pool.
    fn first(&self) -> Paging {
        Paging {
            geometry: self.geometry,
            table: self.table[..self.blocks].to_vec(),
            blocks: self.blocks,
            lens: self.lens[..1].to_vec(),
        }
    }

    fn block_table(&self) -> Result<BlockTable<'_>> {
        BlockTable::new(&self.table, self.blocks, &self.lens)
    }

    /// The whole pool as one sequence over its pages in order: (table, length, tokens), to
    /// append every token of the pools at once.
    fn whole_pool(&self) -> (Vec<u32>, [u32; 1], usize) {
        let tokens = self.geometry.tokens();
        ((0..self.geometry.num_pages as u32).collect(), [tokens as u32], tokens)
    }
}

/// Cumulative offsets of the given lengths (a pack's `cu_seqlens`).
fn cumulative(lens: &[usize]) -> Vec<u32> {
    let mut c = vec![0u32];
    for &l in lens {
        c.push(c[c.len() - 1] + l as u32);
    }
    c
}

/// The attention options of a case (key lengths: `lens`, for a contiguous cache).
pub fn attention_options<'a>(c: &Case, lens: &'a [u32]) -> AttentionOptions<'a> {
    AttentionOptions {
        causal: c.causal,
        variant: c.variant,
        config: c.config,
        key_lengths: (!c.lens.is_empty() && c.page_size == 0 && !c.varlen).then_some(lens),
        fixed_order: c.fixed_order,
        window: c.window.map(|left| Window { left, right: None }),
        ..Default::default()
    }
}

/// Host inputs (q or x, k, v), rounded to f16 where the case is f16 so both paths see the same values.
pub fn host_inputs(c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
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

/// A progress bar for the timed runs of a slow case, under the case's label line: `tag` says
/// which side runs (GPU or CPU); the bar fits an 80-column terminal.
fn progress(tag: &str, total: usize, first: Duration) -> ProgressBar {
    if first.as_secs_f64() * total as f64 <= 1.0 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("  {msg} [{bar:40}] {pos}/{len} runs ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(tag.to_string());
    pb
}

/// GPU tensors of a case.
pub struct GpuCase {
    pub q: Tensor,
    pub k: Option<Tensor>,
    pub v: Option<Tensor>,
    out: Tensor,
    weights: Option<Tensor>,
    /// A paged case's cache (over the `k` and `v` pools) and layout.
    pub paged: Option<(PagedKvCache, Paging)>,
    /// Key lengths (contiguous cases with mixed lengths).
    pub lens: Vec<u32>,
    /// A pack's offsets in a device buffer (queries and keys alike), for `device_offsets`.
    offsets: Option<wgpu::Buffer>,
    /// A backward case: the forward's output and log-sum-exp (computed once), the output's
    /// gradient, and dK, dV (dQ is `out`).
    backward: Option<Backward>,
}

/// What a backward case's timed runs read and write besides `q`, `k`, `v` and `out` (dQ).
struct Backward {
    o: Tensor,
    lse: Tensor,
    d_o: Tensor,
    dk: Tensor,
    dv: Tensor,
}

fn upload(ctx: &Context, x: &[f32], s: Shape, dt: Dt) -> Result<Tensor> {
    match dt {
        Dt::F32 => ctx.upload(x, s),
        Dt::F16 => ctx.upload(&x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), s),
    }
}

pub fn gpu_case(ctx: &Context, c: &Case, q: &[f32], k: &[f32], v: &[f32]) -> Result<GpuCase> {
    let (k_host, v_host) = (k, v);
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
        Op::AttentionBackward => (ctx.zeros(qs, Layout::Bhsd, DType::F32)?, None),
    };
    let paged = match (Paging::of(c), &k_t, &v_t) {
        (Some(p), Some(k), Some(v)) => match c.kv() {
            Some(t) if t.is_quantized() => {
                // a quantized cache: the pools' tokens appended (and quantized on the GPU)
                let cache = PagedKvCache::with_format(ctx, p.geometry, dt, &KvFormat::uniform(t).with_fp8_scales(
                    (t == KvDType::Fp8E4m3).then(|| fp8_scales_for(k_host, p.geometry.kv_heads, c.d)),
                    (t == KvDType::Fp8E4m3).then(|| fp8_scales_for(v_host, p.geometry.kv_heads, c.d)),
                ))?;
                let (table, lens, tokens) = p.whole_pool();
                let s = Shape::new(1, p.geometry.kv_heads, tokens, c.d);
                let as_tokens = |t: &Tensor| Tensor::from_buffer_strided(
                    ctx,
                    t.buffer().clone(),
                    0,
                    s,
                    Layout::Bshd.strides(&s),
                    dt,
                );
                ctx.append_kv(&cache, &BlockTable::new(&table, table.len(), &lens)?, &as_tokens(k)?, &as_tokens(v)?)?;
                Some((cache, p))
            }
            _ => Some((PagedKvCache::from_buffers(ctx, k.buffer().clone(), v.buffer().clone(), 0, p.geometry, dt)?, p)),
        },
        _ => None,
    };
    let lens: Vec<u32> = c.seq_lens().iter().map(|&l| l as u32).collect();
    let offsets = match c.device_offsets {
        true => Some(ctx.upload_offsets(&cumulative(&c.seq_lens()))?),
        false => None,
    };
    let backward = match (c.op, &k_t, &v_t) {
        (Op::AttentionBackward, Some(k), Some(v)) => {
            let opts = attention_options(c, &lens);
            let (o, lse) = ctx.attention_with_lse(&q_t, k, v, None, &opts)?;
            let d_o = upload(ctx, &data(qs.numel(), 4), qs, c.dtype)?;
            let (dk, dv) = (ctx.zeros(ks, Layout::Bhsd, DType::F32)?, ctx.zeros(ks, Layout::Bhsd, DType::F32)?);
            Some(Backward { o, lse, d_o, dk, dv })
        }
        _ => None,
    };
    Ok(GpuCase { q: q_t, k: k_t, v: v_t, out, weights, paged, lens, offsets, backward })
}

fn encode(ctx: &Context, c: &Case, g: &GpuCase, enc: &mut wgpu::CommandEncoder) -> Result<()> {
    let opts = attention_options(c, &g.lens);
    let kv = || -> Result<(&Tensor, &Tensor)> {
        match (&g.k, &g.v) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(Error::InvalidArgument { argument: "case", message: "no keys".into() }),
        }
    };
    match c.op {
        Op::Attention if c.varlen && g.offsets.is_some() => {
            let (k, v) = kv()?;
            let cu = g.offsets.as_ref().ok_or(Error::InvalidArgument { argument: "case", message: "no offsets".into() })?;
            let offsets = VarlenBuffers::new(cu, cu, c.lens.len())?;
            let call = VarlenBuffersCall { q: &g.q, k, v, offsets: &offsets, out: &g.out, lse: None };
            ctx.encode_attention_varlen_buffers(enc, &call, &opts)
        }
        Op::Attention if c.varlen => {
            let (k, v) = kv()?;
            let cu = cumulative(&c.seq_lens());
            let varlen = Varlen::new(&cu, &cu)?;
            ctx.encode_attention_varlen(enc, &VarlenCall { q: &g.q, k, v, varlen: &varlen, out: &g.out, lse: None }, &opts)
        }
        Op::Attention => match &g.paged {
            Some((cache, p)) => ctx.encode_paged_attention(
                enc,
                &PagedAttentionCall { q: &g.q, cache, table: &p.block_table()?, out: &g.out, lse: None },
                &opts,
            ),
            None => {
                let (k, v) = kv()?;
                ctx.encode_attention(enc, &AttentionCall { q: &g.q, k, v, mask: None, out: &g.out, lse: None }, &opts)
            }
        },
        Op::AttentionUnfused => {
            let (k, v) = kv()?;
            let w = g
                .weights
                .as_ref()
                .ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no weights".into() })?;
            ctx.encode_attention_unfused(
                enc,
                &AttentionCall { q: &g.q, k, v, mask: None, out: &g.out, lse: None },
                w,
                &opts,
            )
        }
        Op::Similarity => ctx.encode_similarity(enc, &g.q, kv()?.0, Similarity::ScaledDot(None), &g.out),
        Op::Cosine => ctx.encode_similarity(enc, &g.q, kv()?.0, Similarity::Cosine, &g.out),
        Op::Softmax => ctx.encode_softmax(enc, &g.q, None, &SoftmaxOptions::default(), &g.out),
        Op::AttentionBackward => {
            let (k, v) = kv()?;
            let b = g
                .backward
                .as_ref()
                .ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no forward results".into() })?;
            let call = AttentionBackwardCall { q: &g.q, k, v, mask: None, o: &b.o, lse: &b.lse, d_o: &b.d_o };
            let grads = AttentionGradOutputs { dq: &g.out, dk: &b.dk, dv: &b.dv, d_sinks: None };
            ctx.encode_attention_backward(enc, &call, &grads, &opts)
        }
        Op::Topk => {
            let keys =
                g.k.as_ref().ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no keys".into() })?;
            ctx.encode_top_k(enc, &g.q, keys, c.k, Metric::Dot).map(|_| ())
        }
    }
}

/// A case's host inputs in its element type, prepared once for the CPU path (a paged case's
/// pools copied into its cache), so that the timed runs do the computation alone.
struct CpuInputs<'p, T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    qs: Shape,
    ks: Shape,
    paged: Option<(HostKvCache<T>, &'p Paging)>,
    /// A backward case: the forward's output and log-sum-exp (computed once, untimed) and the
    /// output's gradient.
    backward: Option<(Vec<T>, Vec<f32>, Vec<T>)>,
}

impl<'p, T: Element> CpuInputs<'p, T> {
    fn new(
        qs: Shape,
        ks: Shape,
        (q, k, v): (&[f32], &[f32], &[f32]),
        paging: Option<&'p Paging>,
        kv: Option<KvDType>,
    ) -> Result<Self> {
        let typed = |x: &[f32]| x.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>();
        let (hk, hv) = (k, v);
        let (q, mut k, mut v) = (typed(q), typed(k), typed(v));
        let paged = match paging {
            Some(p) => {
                let cache = match kv {
                    Some(t) if t.is_quantized() => {
                        // the pools' tokens appended, quantized as the GPU does
                        let g = p.geometry;
                        let fp8 = |x: &[f32]| (t == KvDType::Fp8E4m3).then(|| fp8_scales_for(x, g.kv_heads, g.head_dim));
                        let f = KvFormat::uniform(t).with_fp8_scales(fp8(hk), fp8(hv));
                        let mut cache = HostKvCache::with_format(g, &f)?;
                        let (table, lens, tokens) = p.whole_pool();
                        let s = Shape::new(1, g.kv_heads, tokens, g.head_dim);
                        cpu::append_kv(
                            &mut cache,
                            &BlockTable::new(&table, table.len(), &lens)?,
                            &HostTensor::with_layout(&k, s, Layout::Bshd)?,
                            &HostTensor::with_layout(&v, s, Layout::Bshd)?,
                        )?;
                        cache
                    }
                    _ => {
                        let mut cache = HostKvCache::new(p.geometry)?;
                        cache.k_mut().expect("a plain pool").copy_from_slice(&k);
                        cache.v_mut().expect("a plain pool").copy_from_slice(&v);
                        cache
                    }
                };
                (k, v) = (vec![], vec![]);
                Some((cache, p))
            }
            None => None,
        };
        Ok(CpuInputs { q, k, v, qs, ks, paged, backward: None })
    }

    /// For a backward case, the forward's results and the output's gradient (as the GPU case's).
    fn for_case(mut self, c: &Case) -> Result<Self> {
        if c.op == Op::AttentionBackward {
            let lens: Vec<u32> = c.seq_lens().iter().map(|&l| l as u32).collect();
            let opts = attention_options(c, &lens);
            let (hq, hk, hv) = (HostTensor::new(&self.q[..], self.qs)?, HostTensor::new(&self.k[..], self.ks)?, HostTensor::new(&self.v[..], self.ks)?);
            let (o, lse) = cpu::attention(&hq, &hk, &hv, None, &opts)?;
            let typed = |x: &[f32]| x.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>();
            let d_o = typed(&data(self.qs.numel(), 4));
            self.backward = Some((typed(&o), lse, d_o));
        }
        Ok(self)
    }

    /// One computation of the case; the output (BHSD).
    fn compute(&self, c: &Case) -> Result<Vec<f32>> {
        let lens: Vec<u32> = c.seq_lens().iter().map(|&l| l as u32).collect();
        let opts = AttentionOptions { variant: AttentionVariant::Auto, ..attention_options(c, &lens) };
        let hq = HostTensor::new(&self.q[..], self.qs)?;
        let hk = || HostTensor::new(&self.k[..], self.ks);
        let hv = || HostTensor::new(&self.v[..], self.ks);
        match c.op {
            Op::Softmax => cpu::softmax(&hq, None, &SoftmaxOptions::default()),
            Op::Attention if c.varlen => {
                let cu = cumulative(&c.seq_lens());
                Ok(cpu::attention_varlen(&hq, &hk()?, &hv()?, &Varlen::new(&cu, &cu)?, &opts)?.0)
            }
            Op::Attention => match &self.paged {
                Some((cache, p)) => Ok(cpu::paged_attention(&hq, cache, &p.block_table()?, &opts)?.0),
                None => Ok(cpu::attention(&hq, &hk()?, &hv()?, None, &opts)?.0),
            },
            Op::AttentionUnfused => Ok(cpu::attention_unfused(&hq, &hk()?, &hv()?, None, &opts)?.0),
            Op::AttentionBackward => {
                let (o, lse, d_o) = self
                    .backward
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no forward results".into() })?;
                let (o, d_o) = (HostTensor::new(&o[..], self.qs)?, HostTensor::new(&d_o[..], self.qs)?);
                let (k, v) = (hk()?, hv()?);
                let call = cpu::BackwardInputs { q: &hq, k: &k, v: &v, mask: None, o: &o, lse, d_o: &d_o };
                Ok(cpu::attention_backward(&call, &opts)?.dq)
            }
            Op::Similarity => cpu::similarity(&hq, &hk()?, Similarity::ScaledDot(None)),
            Op::Cosine => cpu::similarity(&hq, &hk()?, Similarity::Cosine),
            Op::Topk => {
                // the CPU top-k takes f32 slices: f32 inputs as they are, f16 widened (a copy
                // that the timing then includes, as a caller with f16 keys would pay it)
                fn f32s<T: Element>(v: &[T]) -> std::borrow::Cow<'_, [f32]> {
                    match T::DTYPE {
                        DType::F32 => std::borrow::Cow::Borrowed(bytemuck::cast_slice(v)),
                        DType::F16 => std::borrow::Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
                    }
                }
                Ok(cpu::top_k(&f32s(&self.q), &f32s(&self.k), self.ks.dim, c.k, Metric::Dot)?.scores)
            }
        }
    }
}

/// The CPU path on host inputs (over `paging`'s cache, for a paged case); returns the output
/// (BHSD).
fn cpu_run(
    c: &Case,
    qs: Shape,
    ks: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    paging: Option<&Paging>,
) -> Result<Vec<f32>> {
    match c.dtype {
        Dt::F32 => CpuInputs::<f32>::new(qs, ks, (q, k, v), paging, c.kv())?.for_case(c)?.compute(c),
        Dt::F16 => CpuInputs::<half::f16>::new(qs, ks, (q, k, v), paging, c.kv())?.for_case(c)?.compute(c),
    }
}

/// The part of a case the error check recomputes on the CPU path: the first batch·head slice;
/// of a KV-cache case (several sequences), the first sequence, every head (whose inputs lead
/// the BHSD tensors; a paged case keeps the whole pool, every head and the first table row).
fn first_slice(c: &Case) -> Case {
    if c.varlen {
        // a pack: the whole of it
        return c.clone();
    }
    if c.batch > 1 || c.page_size > 0 {
        let lens = c.lens.first().map(|&l| vec![l]).unwrap_or_default();
        Case { bh: c.heads(), batch: 1, lens, ..c.clone() }
    } else {
        // query head 0 reads key/value head 0, the first of the tensors
        Case { bh: 1, kv_group: 1, ..c.clone() }
    }
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

fn output_shape(c: &Case) -> Shape {
    match c.op {
        Op::Attention if c.varlen => shapes(c).0,
        Op::Attention | Op::AttentionUnfused | Op::AttentionBackward => Shape::new(c.batch, c.heads(), c.nq, c.d),
        _ => Shape::new(1, c.bh, c.nq, c.nk),
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
        let opts = attention_options(c, &g.lens);
        let plan = match &g.paged {
            Some((cache, p)) => ctx.plan_paged_attention(&g.q, cache, &p.block_table()?, &opts, false)?,
            None => ctx.plan_attention(&g.q, k, v, None, &opts, false)?,
        };
        rec.variant = Some(format!("{}{}", if g.paged.is_some() { "paged " } else { "" }, plan.variant));
        rec.config = Some(plan.config.to_string());
    } else if c.op == Op::AttentionBackward && !c.config.is_default() {
        rec.config = Some(c.config.to_string());
    }
    for _ in 0..st.warmup.max(1) {
        ctx.record_and_submit(|enc| encode(ctx, c, &g, enc))?;
        ctx.wait()?;
    }
    let (mut kernel, mut wall) = (vec![], vec![]);
    let started = Instant::now();
    let k0 = ctx.time_gpu(|enc| encode(ctx, c, &g, enc))?;
    let first = started.elapsed();
    wall.push(first.as_secs_f64());
    kernel.extend(k0);
    let pb = progress(label, st.runs, first);
    pb.inc(1);
    for _ in 1..st.runs {
        if started.elapsed().as_secs_f64() > st.gpu_budget {
            break;
        }
        let t = Instant::now();
        let k = ctx.time_gpu(|enc| encode(ctx, c, &g, enc))?;
        wall.push(t.elapsed().as_secs_f64());
        kernel.extend(k);
        pb.inc(1);
    }
    pb.finish_and_clear();
    rec.runs = wall.len();
    rec.kernel_ms = Stats::of(&kernel);
    rec.wall_ms = Stats::of(&wall);

    // error of the first slice (top-k: the first query's scores) against the CPU path
    if c.op == Op::Topk {
        let one = Case { nq: 1, ..c.clone() };
        let (qs1, ks1) = shapes(&one);
        let want = cpu_run(&one, qs1, ks1, &q[..c.d], &k, &v, None)?;
        let keys =
            g.k.as_ref().ok_or_else(|| Error::InvalidArgument { argument: "case", message: "no keys".into() })?;
        let q1 = upload(ctx, &q[..c.d], qs1, c.dtype)?;
        rec.rel_err = Some(rel_err(&ctx.top_k(&q1, keys, c.k, Metric::Dot)?.scores, &want));
    } else {
        let one = first_slice(c);
        let (qs1, ks1) = shapes(&one);
        let want = match &g.paged {
            // the first sequence over the whole pool
            Some((_, p)) => cpu_run(&one, qs1, ks1, &q[..qs1.numel()], &k, &v, Some(&p.first()))?,
            None => {
                let (lq, lk) = (qs1.numel(), if c.op == Op::Softmax { 0 } else { ks1.numel() });
                cpu_run(&one, qs1, ks1, &q[..lq], &k[..lk], &v[..lk], None)?
            }
        };
        let out_slice =
            Tensor::from_buffer(ctx, g.out.buffer().clone(), 0, output_shape(&one), Layout::Bhsd, g.out.dtype())?;
        rec.rel_err = Some(rel_err(&out_slice.download_blocking(ctx)?, &want));
    }
    // resident: the inputs stay on the GPU; one call, then the output read back
    let out_bytes = g.out.shape().numel() as u64 * g.out.dtype().size();
    if out_bytes <= 1 << 20 && !matches!(c.op, Op::Topk | Op::AttentionBackward) {
        let mut resident = vec![];
        // as an application stepping on resident data would: a handle that keeps its bind
        // groups, the call and the readback in one submission
        let step = ctx.with_binding_cache();
        for _ in 0..st.runs.max(20) {
            let t = Instant::now();
            let mut enc = step.device().create_command_encoder(&Default::default());
            encode(&step, c, &g, &mut enc)?;
            std::hint::black_box(step.submit_and_download(enc, &[&g.out])?);
            resident.push(t.elapsed().as_secs_f64());
        }
        rec.resident_ms = Stats::of(&resident);
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
    let paging = Paging::of(c);
    let timed = match c.dtype {
        Dt::F32 => CpuInputs::<f32>::new(qs, ks, (&q, &k, &v), paging.as_ref(), c.kv())
            .and_then(|x| x.for_case(c))
            .and_then(|x| cpu_times(st, label, || x.compute(c))),
        Dt::F16 => CpuInputs::<half::f16>::new(qs, ks, (&q, &k, &v), paging.as_ref(), c.kv())
            .and_then(|x| x.for_case(c))
            .and_then(|x| cpu_times(st, label, || x.compute(c))),
    };
    let times = match timed {
        Ok(t) => t,
        Err(e) => {
            rec.error = Some(e.to_string());
            return rec;
        }
    };
    rec.runs = times.len();
    rec.wall_ms = Stats::of(&times);
    rec.finish_rates(c);
    rec
}

/// Times `run` up to `st.runs` times (fewer past `st.cpu_budget` seconds).
fn cpu_times(st: &Settings, label: &str, run: impl Fn() -> Result<Vec<f32>>) -> Result<Vec<f64>> {
    let mut times = vec![];
    let started = Instant::now();
    let mut pb = ProgressBar::hidden();
    for i in 0..st.runs {
        let t = Instant::now();
        std::hint::black_box(run()?);
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
    Ok(times)
}

/// The reference for per-call overhead: a bare wgpu compute dispatch (a prebuilt pipeline and
/// bind group writing 1024 floats) plus a 4 KiB readback through a prebuilt staging buffer, end
/// to end, median of `runs` (ms): what an application pays for one tiny GPU step at least.
pub fn bare_dispatch_readback(ctx: &Context, runs: usize) -> Option<f64> {
    let device = ctx.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("bare dispatch"),
        source: wgpu::ShaderSource::Wgsl(
            "@group(0) @binding(0) var<storage, read_write> y: array<f32>;
             @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) i: vec3<u32>) {
                 y[i.x] = f32(i.x) * 0.5;
             }"
            .into(),
        ),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("bare dispatch"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: out.as_entire_binding() }],
    });
    let mut times = vec![];
    for i in 0..runs + 3 {
        let t = Instant::now();
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(4, 1, 1);
        }
        enc.copy_buffer_to_buffer(&out, 0, &staging, 0, 4096);
        ctx.queue().submit([enc.finish()]);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |_| flag.store(true, std::sync::atomic::Ordering::Release));
        // polled without blocking until mapped, as the crate's downloads do (a blocking wait
        // sleeps in coarse steps on some drivers)
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            device.poll(wgpu::PollType::Poll).ok()?;
        }
        std::hint::black_box(staging.slice(..).get_mapped_range().ok()?.len());
        staging.unmap();
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Stats::of(&times).map(|s| s.median)
}

/// `Context::diagnostics` as JSON (`--diag`).
pub fn diagnostics(ctx: &Context) -> serde_json::Value {
    let d = ctx.diagnostics();
    let w = d.wgpu.as_ref().map(|w| {
        serde_json::json!({
            "buffers": w.buffers, "bind_groups": w.bind_groups, "bind_group_layouts": w.bind_group_layouts,
            "compute_pipelines": w.compute_pipelines, "pipeline_layouts": w.pipeline_layouts,
            "shader_modules": w.shader_modules, "command_encoders": w.command_encoders,
            "query_sets": w.query_sets, "fences": w.fences, "buffer_memory": w.buffer_memory,
            "memory_allocations": w.memory_allocations,
        })
    });
    let a = d.allocator.as_ref().map(|a| {
        serde_json::json!({ "allocated_bytes": a.allocated_bytes, "reserved_bytes": a.reserved_bytes, "blocks": a.blocks })
    });
    serde_json::json!({
        "compiled_pipelines": d.compiled_pipelines,
        "uniform_buffers": d.uniform_buffers,
        "staging_buffers": d.staging_buffers.0,
        "staging_bytes": d.staging_buffers.1,
        "scratch_buffers": d.scratch_buffers.0,
        "scratch_bytes": d.scratch_buffers.1,
        "tuned_classes": d.tuned_classes,
        "wgpu": w,
        "allocator": a,
    })
}

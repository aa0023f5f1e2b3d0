//! An API fuzzer: arbitrary operations, shapes (mismatched and empty ones too), layouts,
//! options, masks and values (extremes, NaN and infinities included), asserting that every call
//! returns, without a panic, either an `Err` or finite output (log-sum-exp: finite or ±inf),
//! and that the GPU gives what the CPU path gives: the same error, or the same numbers within a
//! tolerance derived from the call's conditioning (the f32 rounding of its scores).
//!
//! Fixed seeds: `FUZZ_CPU_CASES` (default 1000) and `FUZZ_GPU_CASES` (default 80; 200 in the full matrix) set the
//! counts, `PROPTEST_RNG_SEED` the seed.

mod common;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Attention {
        lse: bool,
    },
    AttentionUnfused,
    Softmax,
    Similarity(Similarity),
    WeightedSum,
    TopK(Metric),
    /// Attention over a paged cache holding the fuzzed K and V as its pool.
    Paged {
        lse: bool,
    },
}

#[derive(Debug, Clone)]
enum MaskChoice {
    None,
    Bool { shape: [usize; 4] },
    Additive { shape: [usize; 4], extremes: bool },
}

/// One fuzzed call.
#[derive(Debug, Clone)]
struct Fuzz {
    op: Op,
    qs: Shape,
    ks: Shape,
    vs: Shape,
    layouts: [Layout; 3],
    f16: bool,
    amp: f32,
    /// (tensor 0/1/2, position in [0, 1), value) written into the data
    inject: Option<(usize, f64, f32)>,
    mask: MaskChoice,
    causal: bool,
    key_lengths: Option<Vec<u32>>,
    scale: Option<f32>,
    temperature: f32,
    variant: AttentionVariant,
    k: usize,
    seed: u64,
    window: Option<Window>,
    softcap: Option<f32>,
    alibi: Option<Vec<f32>>,
    sinks: Option<Vec<f32>>,
}

const AMPS: [f32; 8] = [0.0, 1e-30, 1e-3, 1.0, 30.0, 1e4, 1e19, 3e38];
const SCALES: [Option<f32>; 12] = [
    None,
    None,
    None,
    Some(0.0),
    Some(1.0),
    Some(-0.7),
    Some(1e3),
    Some(7.888_609e-31),  // 2^-100, the smallest accepted
    Some(1.267_650_6e30), // 2^100, the largest accepted
    Some(1e38),           // refused
    Some(f32::NAN),       // refused
    Some(1e-35),          // refused
];
const TEMPERATURES: [f32; 9] = [1.0, 1.0, 0.3, 1e-10, 1e10, 7.888_609e-31, 1e-45, 0.0, -2.0];
const INJECT: [f32; 8] = [3e38, -3e38, 1e-38, 65504.0, 1e5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

fn fuzz_strategy() -> impl Strategy<Value = Fuzz> {
    (
        0usize..11,
        (1usize..=2, 1usize..=2, 1usize..=2),
        (1usize..=40, 1usize..=40, prop::sample::select(vec![1usize, 2, 3, 4, 7, 8, 16, 33, 64, 128, 256, 257])),
        (0usize..12, any::<bool>(), 0usize..AMPS.len()),
        (0usize..10, 0usize..6, any::<bool>(), 0usize..8),
        (0usize..SCALES.len(), 0usize..TEMPERATURES.len(), 0usize..8, 0usize..6),
        (any::<u64>(), 0u32..32),
    )
        .prop_map(
            |(
                opk,
                (b, hkv, group),
                (mut nq, mut nk, d),
                (brk, f16, amp),
                (maskk, layk, causal, klk),
                (sc, tk, vk, topk),
                (seed, optk),
            )| {
                let mut r = ChaCha8Rng::seed_from_u64(seed);
                let op = match opk {
                    0..=2 => Op::Attention { lse: opk != 0 },
                    3 => Op::AttentionUnfused,
                    4 | 5 => Op::Softmax,
                    6 => Op::Similarity(
                        [Similarity::Dot, Similarity::ScaledDot(None), Similarity::Cosine, Similarity::L2]
                            [r.random_range(0..4)],
                    ),
                    7 => Op::WeightedSum,
                    8 | 9 => Op::TopK([Metric::Dot, Metric::Cosine, Metric::L2][r.random_range(0..3)]),
                    _ => Op::Paged { lse: r.random_bool(0.5) },
                };
                if matches!(op, Op::TopK(_)) {
                    nk *= 5;
                }
                if d > 64 {
                    nq = nq.min(8);
                    nk = nk.min(8);
                }
                let h = hkv * group;
                let (mut qs, mut ks, mut vs) =
                    (Shape::new(b, h, nq, d), Shape::new(b, hkv, nk, d), Shape::new(b, hkv, nk, d));
                match op {
                    Op::Softmax => qs = Shape::new(b, h, nq, nk),
                    Op::WeightedSum => qs = Shape::new(b, h, nq, nk),
                    Op::TopK(_) => {
                        qs = Shape::new(1, 1, nq, d);
                        ks = Shape::new(1, 1, nk, d);
                    }
                    _ => {}
                }
                // an invalid shape now and then: the same error on every path
                match brk {
                    0 => ks.batch += 1,
                    1 => ks.dim += 1,
                    2 => ks.heads = h + 1,
                    3 => vs.seq += 1,
                    4 => vs.dim = 0,
                    // (not over a paged cache: its q is a device tensor, and none is empty)
                    5 if !matches!(op, Op::Paged { .. }) => qs.seq = 0,
                    _ => {}
                }
                let layout = |i: usize| if (layk >> i) & 1 == 1 { Layout::Bshd } else { Layout::Bhsd };
                let scores = [b, h, qs.seq, if op == Op::Softmax { qs.dim } else { ks.seq }];
                let mask = match maskk {
                    0 | 1 => {
                        MaskChoice::Bool { shape: [if r.random_bool(0.5) { 1 } else { b }, 1, scores[2], scores[3]] }
                    }
                    2 => MaskChoice::Additive {
                        shape: [1, if r.random_bool(0.5) { 1 } else { h }, scores[2], scores[3]],
                        extremes: false,
                    },
                    3 => MaskChoice::Additive { shape: [b, h, scores[2], scores[3]], extremes: true },
                    4 => MaskChoice::Bool { shape: [b + 1, 1, scores[2], scores[3]] }, // cannot broadcast
                    _ => MaskChoice::None,
                };
                let key_lengths = match klk {
                    0 | 1 => Some((0..b).map(|_| r.random_range(0..=scores[3] as u32)).collect()),
                    2 => Some(vec![scores[3] as u32 + 1; b]), // over the key count
                    3 => Some(vec![0; b + 1]),                // wrong count
                    _ => None,
                };
                let inject = (r.random_bool(0.15))
                    .then(|| (r.random_range(0..3), r.random::<f64>(), INJECT[r.random_range(0..INJECT.len())]));
                let variant = [AttentionVariant::Auto; 3]
                    .iter()
                    .chain(AttentionVariant::ALL.iter())
                    .copied()
                    .nth(vk)
                    .unwrap_or_default();
                // (a forced variant outside its representative head dims runs as Auto, unless
                // the full matrix runs: see common::runs_forced)
                let variant = if runs_forced(variant, d) { variant } else { AttentionVariant::Auto };
                let k = [1usize, 3, 10, nk, 0, nk + 1][topk].min(1024 + 1);
                // the score options, now and then invalid (a zero cap, a wrong count, a NaN sink)
                let window = (optk & 1 != 0).then(|| Window {
                    left: r.random_range(0..nk + 3),
                    right: r.random_bool(0.5).then(|| r.random_range(0..nk + 3)),
                });
                let softcap = (optk & 2 != 0).then(|| [1.0f32, 5.0, 30.0, 1e4, 0.0][r.random_range(0..5)]);
                let alibi = (optk & 4 != 0).then(|| {
                    let n = if r.random_bool(0.9) { h } else { h + 1 };
                    (0..n).map(|i| [0.0f32, 0.03, 0.5, -0.1, 1e30][(i + r.random_range(0..5)) % 5]).collect()
                });
                let sinks = (optk & 8 != 0).then(|| {
                    (0..h).map(|_| if r.random_bool(0.05) { f32::NAN } else { r.random_range(-3.0f32..3.0) }).collect()
                });
                Fuzz {
                    op,
                    qs,
                    ks,
                    vs,
                    layouts: [layout(0), layout(1), layout(2)],
                    f16,
                    amp: AMPS[amp],
                    inject,
                    mask,
                    causal,
                    key_lengths,
                    scale: SCALES[sc],
                    temperature: TEMPERATURES[tk],
                    variant,
                    k,
                    seed,
                    window,
                    softcap,
                    alibi,
                    sinks,
                }
            },
        )
}

/// The host data of a case (f32; rounded to f16 when the case is f16).
fn data(c: &Fuzz) -> [Vec<f32>; 3] {
    let amp = if c.f16 { c.amp.min(60000.0) } else { c.amp };
    let gen = |s: Shape, seed| -> Vec<f32> {
        let n = s.numel();
        if amp == 0.0 {
            vec![0.0; n]
        } else {
            rand_vec(seed, n, amp)
        }
    };
    let mut d = [gen(c.qs, c.seed), gen(c.ks, c.seed + 1), gen(c.vs, c.seed + 2)];
    if matches!(c.op, Op::WeightedSum) {
        d[0] = gen(c.qs, c.seed).iter().map(|x| x.abs()).collect();
    }
    if let Some((which, at, v)) = c.inject {
        let t = &mut d[which];
        if !t.is_empty() {
            let i = ((at * t.len() as f64) as usize).min(t.len() - 1);
            t[i] = v;
        }
    }
    if c.f16 {
        for t in &mut d {
            t.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        }
    }
    d
}

fn mask_values(c: &Fuzz) -> (Vec<bool>, Vec<f32>) {
    let mut r = ChaCha8Rng::seed_from_u64(c.seed + 9);
    match &c.mask {
        MaskChoice::Bool { shape } => ((0..shape.iter().product()).map(|_| r.random_bool(0.8)).collect(), vec![]),
        MaskChoice::Additive { shape, extremes } => {
            let vals = [0.0f32, 1.5, -2.0, f32::NEG_INFINITY, 3e38, -3e38, 1e-30, -1e10];
            let n: usize = shape.iter().product();
            let v = (0..n)
                .map(|_| {
                    if *extremes {
                        vals[r.random_range(0..vals.len())]
                    } else if r.random_bool(0.2) {
                        f32::NEG_INFINITY
                    } else {
                        r.random_range(-2.0..2.0)
                    }
                })
                .collect();
            (vec![], v)
        }
        MaskChoice::None => (vec![], vec![]),
    }
}

/// An operation's result: the main output, the log-sum-exp if any, and the top-k indices.
#[derive(Debug)]
struct Out {
    values: Vec<f32>,
    lse: Option<Vec<f32>>,
}

fn run<T: Element>(be: &Backend, c: &Fuzz, d: &[Vec<T>; 3]) -> Result<Out> {
    let ht = |i: usize, s: Shape| HostTensor::with_layout(&d[i][..], s, c.layouts[i]);
    let (bm, am) = mask_values(c);
    let mask = match &c.mask {
        MaskChoice::Bool { shape } => Some(HostMask::bool(&bm, *shape)?),
        MaskChoice::Additive { shape, .. } => Some(HostMask::additive(&am, *shape)?),
        MaskChoice::None => None,
    };
    let m = mask.as_ref();
    let kl = c.key_lengths.as_deref();
    let aopts = AttentionOptions {
        scale: c.scale,
        causal: c.causal,
        key_lengths: kl,
        variant: c.variant,
        window: c.window,
        softcap: c.softcap,
        alibi_slopes: c.alibi.as_deref(),
        sinks: c.sinks.as_deref(),
        // (the fuzzed contexts have no tensor cores: tests/tensor_cores.rs covers the opt-in)
        f32_on_tensor_cores: false,
        // (the crate's choice: tests/configs.rs runs every configuration)
        config: AttentionConfig::default(),
        // (tests/varlen.rs checks the fixed reduction order)
        fixed_order: false,
    };
    let out = |values| Ok(Out { values, lse: None });
    match c.op {
        Op::Attention { lse: true } => {
            let (o, l) = be.attention_with_lse(&ht(0, c.qs)?, &ht(1, c.ks)?, &ht(2, c.vs)?, m, &aopts)?;
            Ok(Out { values: o, lse: Some(l) })
        }
        Op::Attention { lse: false } => out(be.attention(&ht(0, c.qs)?, &ht(1, c.ks)?, &ht(2, c.vs)?, m, &aopts)?),
        Op::AttentionUnfused => {
            let (o, w) = be.attention_unfused(&ht(0, c.qs)?, &ht(1, c.ks)?, &ht(2, c.vs)?, m, &aopts)?;
            Ok(Out { values: o.into_iter().chain(w).collect(), lse: None })
        }
        Op::Softmax => {
            let opts = SoftmaxOptions { temperature: c.temperature, causal: c.causal, key_lengths: kl };
            out(be.softmax(&ht(0, c.qs)?, m, &opts)?)
        }
        Op::Similarity(metric) => out(be.similarity(&ht(0, c.qs)?, &ht(1, c.ks)?, metric)?),
        Op::WeightedSum => {
            let w = d[0].iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
            out(be.weighted_sum(&HostTensor::with_layout(&w, c.qs, c.layouts[0])?, &ht(2, c.vs)?)?)
        }
        Op::TopK(metric) => {
            let w = |i: usize| d[i].iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
            let t = be.top_k(&w(0), &w(1), c.qs.dim, c.k, metric)?;
            out(t.scores)
        }
        Op::Paged { .. } => unreachable!("paged cases run through run_paged"),
    }
}

/// The paged case: the fuzzed K and V are the pools (`[tokens, kv_heads, d]` with `nk` tokens,
/// pages of 1..=16 tokens), each sequence's pages drawn at random (now and then past the pool),
/// lengths up to the pool.
fn run_paged(ctx: Option<&Context>, c: &Fuzz, d: &[Vec<f32>; 3], lse: bool) -> Result<Out> {
    let mut r = ChaCha8Rng::seed_from_u64(c.seed + 77);
    let page_size = 1usize << r.random_range(0..5);
    let (kvh, dim) = (c.ks.heads, c.ks.dim);
    let num_pages = (c.ks.seq * c.ks.batch).div_ceil(page_size).max(1);
    let g = PageGeometry { num_pages, page_size, kv_heads: kvh, head_dim: dim };
    let pool = num_pages * page_size * kvh * dim;
    let fill = |x: &[f32]| -> Vec<f32> { x.iter().copied().cycle().take(pool.max(1)).collect() };
    let (kp, vp) = (
        if d[1].is_empty() { vec![0.0; pool] } else { fill(&d[1]) },
        if d[2].is_empty() { vec![0.0; pool] } else { fill(&d[2]) },
    );
    let batch = c.qs.batch;
    let blocks = r.random_range(1..=num_pages + 1);
    let mut lens = Vec::with_capacity(batch);
    for _ in 0..batch {
        let over = u32::from(r.random_bool(0.05));
        lens.push(r.random_range(0..=(blocks * page_size) as u32 + over));
    }
    let table: Vec<u32> = (0..batch * blocks)
        .map(|_| if r.random_bool(0.03) { num_pages as u32 } else { r.random_range(0..num_pages as u32) })
        .collect();
    let t = BlockTable::new(&table, blocks, &lens)?;
    let opts = AttentionOptions {
        scale: c.scale,
        causal: c.causal,
        variant: c.variant,
        window: c.window,
        softcap: c.softcap,
        alibi_slopes: c.alibi.as_deref(),
        sinks: c.sinks.as_deref(),
        ..Default::default()
    };
    let q = HostTensor::with_layout(&d[0][..], c.qs, c.layouts[0])?;
    match ctx {
        None => {
            let mut host = HostKvCache::new(g)?;
            host.k_mut().unwrap().copy_from_slice(&kp);
            host.v_mut().unwrap().copy_from_slice(&vp);
            let (o, l) = cpu::paged_attention(&q, &host, &t, &opts)?;
            Ok(Out { values: o, lse: lse.then_some(l) })
        }
        Some(ctx) => {
            // q and the pools as the caller's own buffers: not scanned, so NaN, infinities and
            // unknown magnitudes reach the kernel (whose results must then stay finite)
            let buffer = |data: &[f32]| {
                use wgpu::util::DeviceExt;
                ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("fuzz"),
                    contents: bytemuck::cast_slice(data),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                })
            };
            let cache = PagedKvCache::from_buffers(ctx, buffer(&kp), buffer(&vp), 0, g, DType::F32)?;
            let gq = Tensor::from_buffer(ctx, buffer(q.data()), 0, q.shape(), q.layout(), DType::F32)?;
            if lse {
                let (o, l) = ctx.paged_attention_with_lse(&gq, &cache, &t, &opts)?;
                Ok(Out { values: o.download_blocking(ctx)?, lse: Some(l.download_blocking(ctx)?) })
            } else {
                Ok(Out { values: ctx.paged_attention(&gq, &cache, &t, &opts)?.download_blocking(ctx)?, lse: None })
            }
        }
    }
}

fn run_case(ctx: Option<&Context>, c: &Fuzz) -> Result<Out> {
    let d = data(c);
    if let Op::Paged { lse } = c.op {
        return run_paged(ctx, c, &d, lse);
    }
    let be = ctx.map_or(Backend::Cpu, |c| Backend::Gpu(c.clone()));
    if c.f16 && !matches!(c.op, Op::TopK(_)) {
        let h: [Vec<half::f16>; 3] = d.map(|t| t.into_iter().map(half::f16::from_f32).collect());
        run(&be, c, &h)
    } else {
        run(&be, c, &d)
    }
}

/// Outputs are finite (the log-sum-exp may be ±inf, never NaN).
fn check_finite(c: &Fuzz, o: &Out, path: &str) {
    if let Some(i) = o.values.iter().position(|x| !x.is_finite()) {
        panic!("{path}: element {i} is {} in {c:?}", o.values[i]);
    }
    if let Some(l) = &o.lse {
        assert!(l.iter().all(|x| !x.is_nan()), "{path}: NaN lse in {c:?}");
    }
}

/// How far the GPU may be from the CPU path for this call: per output element, the f32 rounding
/// of the scores it depends on (relative 2^-22 of their magnitude), propagated through the
/// softmax (weights move by at most that much, relatively), plus f32 (or f16) output rounding.
/// `None` where the scores' rounding exceeds their differences (an argmax on ties): then only
/// the invariants are checked.
fn tolerance(c: &Fuzz, d: &[Vec<f32>; 3]) -> Option<f64> {
    // f16 outputs: also their absolute spacing near zero (2^-24, subnormal f16)
    let floor = if c.f16 { 2f64.powi(-23) } else { 0.0 };
    tolerance_f32(c, d).map(|t| t + floor)
}

fn tolerance_f32(c: &Fuzz, d: &[Vec<f32>; 3]) -> Option<f64> {
    let eps = 2f64.powi(-22);
    let out_eps = if c.f16 { 2e-3 } else { 2e-5 };
    // non-finite inputs are refused everywhere except in the paged pools' unread rows
    let maxabs = |v: &[f32]| v.iter().filter(|x| x.is_finite()).fold(0.0f64, |a, x| a.max(x.abs() as f64));
    let (mq, mk, mv) = (maxabs(&d[0]), maxabs(&d[1]), maxabs(&d[2]));
    let (_, am) = mask_values(c);
    let ma = am.iter().filter(|x| x.is_finite()).fold(0.0f64, |a, x| a.max(x.abs() as f64));
    let dim = c.qs.dim as f64;
    match c.op {
        Op::Attention { .. } | Op::AttentionUnfused | Op::Paged { .. } => {
            let scale = c.scale.map_or(1.0 / dim.sqrt(), |s| s as f64);
            let slope = c.alibi.iter().flatten().fold(0.0f64, |a, s| a.max(s.abs() as f64));
            let sink = c.sinks.iter().flatten().fold(0.0f64, |a, s| a.max(s.abs() as f64));
            let reach = (c.qs.seq + c.ks.seq) as f64;
            // capped scores are at most the cap; tanh adds a few roundings of it
            let dots = match c.softcap {
                Some(cap) => (scale.abs() * dim * mq * mk).min(cap as f64) + 8.0 * cap as f64,
                None => scale.abs() * dim * mq * mk,
            };
            // over a paged cache the GPU knows no magnitudes (the caller's buffers): where the
            // scores or the weighted sums of V could pass 2^100 they may saturate at f32's range
            if matches!(c.op, Op::Paged { .. }) && (dots.max(mv * 2f64.powi(20)) > 2f64.powi(100)) {
                return None;
            }
            let delta = eps * (dots + ma + slope * reach + sink);
            (delta < 0.05).then(|| {
                (3.0 * delta + out_eps) * mv.max(1e-30)
                    + if c.op == Op::AttentionUnfused { 3.0 * delta + out_eps } else { 0.0 }
            })
        }
        Op::Softmax => {
            let delta = eps * (mq / c.temperature as f64 + ma);
            (delta < 0.05).then_some(3.0 * delta + out_eps)
        }
        Op::Similarity(Similarity::Cosine) | Op::TopK(Metric::Cosine) => {
            // rows are normalised by their tensor's largest magnitude: a row more than 2^60
            // below it underflows in its squared norm, and f32 counts it as a zero vector
            let tiny = |t: &[f32], m: f64| {
                t.chunks(c.qs.dim.max(1))
                    .any(|r| r.iter().fold(0.0f64, |a, x| a.max(x.abs() as f64)) < m * 2f64.powi(-60))
            };
            (!tiny(&d[0], mq) && !tiny(&d[1], mk)).then_some(out_eps + 1e-6)
        }
        // L2 is |q|² + |k|² - 2 q·k: its rounding follows the squared norms
        Op::Similarity(Similarity::L2) | Op::TopK(Metric::L2) => {
            Some(out_eps * (dim * (mq + mk).powi(2)).max(1e-30) + 1e-6)
        }
        Op::Similarity(_) | Op::TopK(_) => Some(out_eps * (dim * mq * mk).max(1e-30) + 1e-6),
        Op::WeightedSum => Some(out_eps * (c.qs.dim as f64 * mq * mv).max(1e-30)),
    }
}

fn compare(c: &Fuzz, cpu: &Result<Out>, gpu: &Result<Out>, ctx: &Context) {
    match (cpu, gpu) {
        (Ok(_) | Err(Error::NonFinite { .. }), Err(Error::Unsupported(_))) if c.variant != AttentionVariant::Auto => {
            // a forced variant the device cannot run (the CPU path has no variants; over a
            // paged cache the GPU does not scan values, so the CPU's value check may differ)
            let case = Case::new(c.qs.batch, c.qs.heads, c.ks.heads, c.qs.seq, c.ks.seq, c.qs.dim);
            let (lse, paged) = match c.op {
                Op::Paged { lse } => (lse, true),
                op => (op == Op::Attention { lse: true }, false),
            };
            // (the unfused variant does not read a paged cache)
            let unfused_paged = paged && c.variant == AttentionVariant::Unfused;
            assert!(unfused_paged || !expect_supported(ctx, &case, c.variant, lse), "{c:?}: {gpu:?}");
        }
        (Err(Error::NonFinite { argument: "q" | "k_pages" | "v_pages", .. }), Ok(b))
            if matches!(c.op, Op::Paged { .. }) =>
        {
            // the CPU twin checks q and the pool rows it reads; the GPU reads the caller's
            // buffers unchecked, and documents finite (unspecified) results in the rows they touch
            check_finite(c, b, "gpu");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "{c:?}"),
        (Ok(a), Ok(b)) => {
            check_finite(c, b, "gpu");
            assert_eq!(a.values.len(), b.values.len(), "{c:?}");
            match tolerance(c, &data(c)) {
                Some(tol) => {
                    for (i, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
                        let saturated = x.abs() == f32::MAX && x == y;
                        assert!(
                            saturated || approx::abs_diff_eq!(*x as f64, *y as f64, epsilon = tol),
                            "element {i}: cpu {x} gpu {y} (tolerance {tol:e}) in {c:?}"
                        );
                    }
                    if let (Some(la), Some(lb)) = (&a.lse, &b.lse) {
                        for (x, y) in la.iter().zip(lb) {
                            let same_inf = x.is_infinite() && x == y;
                            assert!(
                                same_inf
                                    || approx::relative_eq!(*x as f64, *y as f64, epsilon = 1e-3, max_relative = 1e-4),
                                "lse cpu {x} gpu {y} in {c:?}"
                            );
                        }
                    }
                }
                None => {
                    if matches!(c.op, Op::Similarity(Similarity::Cosine)) {
                        assert!(b.values.iter().all(|x| x.abs() <= 1.0), "{c:?}");
                    }
                    // ill-conditioned: each output stays within the range of the values
                    if matches!(c.op, Op::Attention { .. } | Op::Paged { .. }) {
                        let (_, _, v) = (0, 0, &data(c)[2]);
                        let m = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                        // (a paged call's unscanned sums may saturate instead)
                        let saturated = |x: f32| matches!(c.op, Op::Paged { .. }) && x.abs() == f32::MAX;
                        assert!(b.values.iter().all(|&x| x.abs() <= m * (1.0 + 1e-3) + 1e-30 || saturated(x)), "{c:?}");
                    }
                }
            }
        }
        _ => panic!("cpu {:?} but gpu {:?} for {c:?}", cpu.as_ref().map(|_| ()), gpu.as_ref().map(|_| ())),
    }
}

fn config(cases_var: &str, default: u32) -> Config {
    Config {
        cases: std::env::var(cases_var).ok().and_then(|v| v.parse().ok()).unwrap_or(default),
        rng_seed: RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0xf022_5eed),
        ),
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn fuzz_cpu_path() {
    let mut runner = TestRunner::new(config("FUZZ_CPU_CASES", 1000));
    let (ok, err) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&fuzz_strategy(), |c| {
            match within(60, "a CPU call", || run_case(None, &c)) {
                Ok(o) => {
                    check_finite(&c, &o, "cpu");
                    ok.set(ok.get() + 1);
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    err.set(err.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    let (ok, err) = (ok.get(), err.get());
    eprintln!("fuzz (CPU path): {ok} calls computed, {err} refused");
    assert!(ok > 100 && err > 100, "the fuzzer exercises both outcomes ({ok} ok, {err} err)");
}

gpu_test! {
    fn fuzz_gpu_against_the_cpu_path() {
        let ctx = shared_gpu();
        // (80 calls by default, 200 in the full matrix: on lavapipe most of the time is Mesa
        // compiling the kernel variants the calls reach)
        let mut runner = TestRunner::new(config("FUZZ_GPU_CASES", if full_matrix() { 200 } else { 80 }));
        let (ok, err) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        runner
            .run(&fuzz_strategy(), |c| {
                let cpu = within(60, "a CPU call", || run_case(None, &c));
                let gpu = within(120, "a GPU call", || run_case(Some(&ctx), &c));
                if let Ok(o) = &cpu {
                    check_finite(&c, o, "cpu");
                }
                compare(&c, &cpu, &gpu, &ctx);
                let n = if gpu.is_ok() { &ok } else { &err };
                n.set(n.get() + 1);
                Ok(())
            })
            .unwrap();
        let (ok, err) = (ok.get(), err.get());
        eprintln!("fuzz (GPU vs CPU): {ok} calls computed, {err} refused");
        assert!(ok > 20 && err > 20, "the fuzzer exercises both outcomes ({ok} ok, {err} err)");
    }
}

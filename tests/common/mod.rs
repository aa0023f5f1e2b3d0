//! Shared test helpers: device, seeded data, an independent f64 reference, comparisons, and the
//! per-variant attention check.
#![allow(dead_code, unused_macros, unused_imports)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

/// A test that needs a GPU adapter. Built with `WGPU_ATTENTION_TESTS=cpu-only` it is compiled
/// as ignored, so a CPU-only run reports it as ignored, never as passed; otherwise a missing
/// adapter fails it.
macro_rules! gpu_test {
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        #[test]
        #[cfg_attr(cpu_only_tests, ignore = "WGPU_ATTENTION_TESTS=cpu-only: needs a GPU adapter")]
        $(#[$m])*
        fn $name() $body
    };
}
pub(crate) use gpu_test;

/// A new GPU context; no adapter is a failure (CPU-only runs never call this: see `gpu_test!`).
pub fn gpu() -> Context {
    Context::new_blocking().unwrap_or_else(|e| {
        panic!(
            "GPU test found no adapter ({e}); build the tests with WGPU_ATTENTION_TESTS=cpu-only to run CPU tests only"
        )
    })
}

/// Runs `f`, failing (not hanging) if it takes longer than `secs`.
pub fn within<T: Send>(secs: u64, what: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(f);
        let t0 = std::time::Instant::now();
        while !h.is_finished() {
            assert!(t0.elapsed().as_secs() < secs, "{what} did not return within {secs} s");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A new GPU context without subgroup operations (the kernels' workgroup-memory reductions).
pub fn gpu_without_subgroups() -> Context {
    let ctx = Context::with_options_blocking(ContextOptions {
        disable_features: wgpu::Features::SUBGROUP,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
    assert!(!ctx.caps().subgroups, "SUBGROUP was left out");
    ctx
}

/// A shared context (pipelines compile once per test binary).
pub fn shared_gpu() -> Context {
    static CTX: std::sync::OnceLock<Context> = std::sync::OnceLock::new();
    CTX.get_or_init(gpu).clone()
}

/// Seeded uniform values in [-amp, amp) (any finite amp, up to f32::MAX).
pub fn rand_vec(seed: u64, n: usize, amp: f32) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0) * amp).collect()
}

pub fn rand_bools(seed: u64, n: usize, p_keep: f64) -> Vec<bool> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_bool(p_keep)).collect()
}

/// Relative Frobenius error ||got - want|| / ||want|| (absolute if want is 0).
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Asserts relative Frobenius error <= tol, naming the first element off by more than
/// tol · max|want| (compared with `approx`).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!("{what}: element {i} is {} (want {})", got[i], want[i]);
    }
    let e = rel_err(got, want);
    if e > tol {
        let scale = want.iter().fold(0.0f64, |a, w| a.max(w.abs())).max(1e-30);
        let i = got
            .iter()
            .zip(want)
            .position(|(g, w)| !approx::abs_diff_eq!(*g as f64, *w, epsilon = tol * scale))
            .unwrap_or(0);
        panic!("{what}: relative error {e:.3e} > {tol:.1e}; first bad index {i}: got {} want {}", got[i], want[i]);
    }
}

/// Asserts two f32 results agree to relative Frobenius error <= tol.
pub fn assert_agree(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_close(what, got, &to_f64(want), tol)
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Element (b, h, s, d) of a host tensor stored in `layout`.
pub fn at(data: &[f32], shape: Shape, layout: Layout, b: usize, h: usize, s: usize, d: usize) -> f64 {
    let st = layout.strides(&shape);
    data[b * st.batch + h * st.head + s * st.seq + d] as f64
}

/// Masking rule of the reference (written independently of the crate).
#[derive(Default)]
pub struct RefMask<'a> {
    pub causal: bool,
    pub key_lengths: Option<&'a [u32]>,
    pub bool_mask: Option<(&'a [bool], [usize; 4])>,
    pub add_mask: Option<(&'a [f32], [usize; 4])>,
    /// (left, right): keys p - left ..= p + right around the query's position p
    pub window: Option<(usize, Option<usize>)>,
}

impl RefMask<'_> {
    pub fn none() -> Self {
        RefMask::default()
    }
    /// Additive term if (b, h, i, j) is kept; `nk` is the batch's key count (its sequence
    /// length over a paged cache), which positions are aligned to.
    pub fn term(&self, b: usize, h: usize, i: usize, j: usize, nq: usize, nk: usize) -> Option<f64> {
        let p = i as i64 + nk as i64 - nq as i64;
        if j >= nk {
            return None;
        }
        if self.causal && j as i64 > p {
            return None;
        }
        if let Some((left, right)) = self.window {
            // (in i128: windows up to usize::MAX wide)
            let (j, p) = (j as i128, p as i128);
            if j < p - left as i128 || right.is_some_and(|r| j > p + r as i128) {
                return None;
            }
        }
        if let Some(kl) = self.key_lengths {
            if j >= kl[b] as usize {
                return None;
            }
        }
        let idx = |s: [usize; 4]| {
            let bb = if s[0] == 1 { 0 } else { b };
            let hh = if s[1] == 1 { 0 } else { h };
            ((bb * s[1] + hh) * s[2] + i) * s[3] + j
        };
        if let Some((m, s)) = self.bool_mask {
            if !m[idx(s)] {
                return None;
            }
        }
        if let Some((m, s)) = self.add_mask {
            let a = m[idx(s)];
            if a == f32::NEG_INFINITY {
                return None;
            }
            return Some(a as f64);
        }
        Some(0.0)
    }
}

/// The score options of the reference: soft-cap, ALiBi slopes, sinks (per query head).
#[derive(Clone, Debug, Default)]
pub struct RefScores {
    pub softcap: Option<f64>,
    pub alibi: Option<Vec<f32>>,
    pub sinks: Option<Vec<f32>>,
}

/// f64 reference attention from the definition: materialised scores, softmax, weights·V.
/// Returns (output in q's layout, lse [b, h, nq], weights [b, h, nq, nk]).
#[allow(clippy::too_many_arguments)]
pub fn ref_attention(
    q: &[f32],
    qs: Shape,
    ql: Layout,
    k: &[f32],
    ks: Shape,
    kl: Layout,
    v: &[f32],
    vl: Layout,
    scale: f64,
    mask: &RefMask,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    ref_attention_with(q, qs, ql, k, ks, kl, v, vl, scale, mask, &RefScores::default())
}

/// [`ref_attention`] with the score options: `s = scale·q·k`, then `cap·tanh(s/cap)`, then
/// `- slope·|p - j|`, then the mask term; the softmax denominator counts `exp(sink)`.
#[allow(clippy::too_many_arguments)]
pub fn ref_attention_with(
    q: &[f32],
    qs: Shape,
    ql: Layout,
    k: &[f32],
    ks: Shape,
    kl: Layout,
    v: &[f32],
    vl: Layout,
    scale: f64,
    mask: &RefMask,
    opts: &RefScores,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b_, h_, nq, d) = (qs.batch, qs.heads, qs.seq, qs.dim);
    let nk = ks.seq;
    let group = h_ / ks.heads;
    let mut out = vec![0.0; qs.numel()];
    let mut lse = vec![f64::NEG_INFINITY; b_ * h_ * nq];
    let mut weights = vec![0.0; b_ * h_ * nq * nk];
    let ost = ql.strides(&qs);
    for b in 0..b_ {
        for h in 0..h_ {
            let hk = h / group;
            for i in 0..nq {
                let p = i as i64 + nk as i64 - nq as i64;
                let s: Vec<Option<f64>> = (0..nk)
                    .map(|j| {
                        mask.term(b, h, i, j, nq, nk).map(|add| {
                            let dot: f64 = (0..d).map(|x| at(q, qs, ql, b, h, i, x) * at(k, ks, kl, b, hk, j, x)).sum();
                            let mut s = dot * scale;
                            if let Some(cap) = opts.softcap {
                                s = cap * (s / cap).tanh();
                            }
                            if let Some(slopes) = &opts.alibi {
                                s -= slopes[h] as f64 * (p - j as i64).abs() as f64;
                            }
                            s + add
                        })
                    })
                    .collect();
                let sink = opts.sinks.as_ref().map(|s| s[h] as f64);
                let m = s.iter().flatten().cloned().fold(sink.unwrap_or(f64::NEG_INFINITY), f64::max);
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let l: f64 =
                    s.iter().flatten().map(|x| (x - m).exp()).sum::<f64>() + sink.map_or(0.0, |s| (s - m).exp());
                lse[(b * h_ + h) * nq + i] = m + l.ln();
                for j in 0..nk {
                    if let Some(x) = s[j] {
                        let p = (x - m).exp() / l;
                        weights[((b * h_ + h) * nq + i) * nk + j] = p;
                        for x in 0..d {
                            out[b * ost.batch + h * ost.head + i * ost.seq + x] += p * at(v, ks, vl, b, hk, j, x);
                        }
                    }
                }
            }
        }
    }
    (out, lse, weights)
}

/// One attention problem.
#[derive(Clone, Debug)]
pub struct Case {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub causal: bool,
    pub layout: Layout,
    pub scale: Option<f32>,
    pub key_lengths: Option<Vec<u32>>,
    /// Boolean mask of this shape (kept with probability 0.7).
    pub bool_mask: Option<[usize; 4]>,
    /// Additive mask of this shape (values in [-2, 2), 20% -inf).
    pub add_mask: Option<[usize; 4]>,
    pub amp: f32,
    pub seed: u64,
    pub window: Option<Window>,
    pub softcap: Option<f32>,
    pub alibi: Option<Vec<f32>>,
    pub sinks: Option<Vec<f32>>,
}

impl Case {
    pub fn new(b: usize, h: usize, hkv: usize, nq: usize, nk: usize, d: usize) -> Self {
        Case {
            b,
            h,
            hkv,
            nq,
            nk,
            d,
            causal: false,
            layout: Layout::Bhsd,
            scale: None,
            key_lengths: None,
            bool_mask: None,
            add_mask: None,
            amp: 1.0,
            seed: (b * 1000 + h * 100 + nq * 7 + nk * 13 + d) as u64,
            window: None,
            softcap: None,
            alibi: None,
            sinks: None,
        }
    }
    pub fn window(mut self, left: usize, right: Option<usize>) -> Self {
        self.window = Some(Window { left, right });
        self
    }
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }
    /// ALiBi with the usual geometric slopes 2^(-8(h+1)/H).
    pub fn alibi(mut self) -> Self {
        self.alibi = Some((0..self.h).map(|h| 2f32.powf(-8.0 * (h + 1) as f32 / self.h as f32)).collect());
        self
    }
    /// A sink per head, in [-2, 2).
    pub fn sinks(mut self) -> Self {
        self.sinks = Some(rand_vec(self.seed + 7, self.h, 2.0));
        self
    }
    pub fn causal(mut self) -> Self {
        self.causal = true;
        self
    }
    pub fn bshd(mut self) -> Self {
        self.layout = Layout::Bshd;
        self
    }
    pub fn key_lengths(mut self, kl: &[u32]) -> Self {
        self.key_lengths = Some(kl.to_vec());
        self
    }
    pub fn opts(&self) -> AttentionOptions<'_> {
        AttentionOptions {
            scale: self.scale,
            causal: self.causal,
            key_lengths: self.key_lengths.as_deref(),
            window: self.window,
            softcap: self.softcap,
            alibi_slopes: self.alibi.as_deref(),
            sinks: self.sinks.as_deref(),
            ..Default::default()
        }
    }
    pub fn ref_scores(&self) -> RefScores {
        RefScores { softcap: self.softcap.map(|c| c as f64), alibi: self.alibi.clone(), sinks: self.sinks.clone() }
    }
}

/// Inputs of a case: q, k, v, bool mask values, additive mask values.
pub struct CaseData {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub qs: Shape,
    pub ks: Shape,
    pub bmask: Vec<bool>,
    pub amask: Vec<f32>,
}

pub fn case_data(c: &Case) -> CaseData {
    let qs = Shape::new(c.b, c.h, c.nq, c.d);
    let ks = Shape::new(c.b, c.hkv, c.nk, c.d);
    let bmask = c.bool_mask.map(|s| rand_bools(c.seed + 4, s.iter().product(), 0.7)).unwrap_or_default();
    let amask = c
        .add_mask
        .map(|s| {
            let r = rand_vec(c.seed + 5, s.iter().product(), 2.0);
            let drop = rand_bools(c.seed + 6, r.len(), 0.2);
            r.iter().zip(drop).map(|(&x, d)| if d { f32::NEG_INFINITY } else { x }).collect()
        })
        .unwrap_or_default();
    CaseData {
        q: rand_vec(c.seed + 1, qs.numel(), c.amp),
        k: rand_vec(c.seed + 2, ks.numel(), c.amp),
        v: rand_vec(c.seed + 3, ks.numel(), 1.0),
        qs,
        ks,
        bmask,
        amask,
    }
}

pub fn host_mask<'a>(c: &Case, data: &'a CaseData) -> Option<HostMask<'a>> {
    if let Some(s) = c.bool_mask {
        return Some(HostMask::bool(&data.bmask, s).unwrap());
    }
    c.add_mask.map(|s| HostMask::additive(&data.amask, s).unwrap())
}

/// The f64 reference for a case: (out, lse, weights).
pub fn case_reference(c: &Case, data: &CaseData) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rm = RefMask {
        causal: c.causal,
        key_lengths: c.key_lengths.as_deref(),
        bool_mask: c.bool_mask.map(|s| (&data.bmask[..], s)),
        add_mask: c.add_mask.map(|s| (&data.amask[..], s)),
        window: c.window.map(|w| (w.left, w.right)),
    };
    let scale = c.scale.map(|s| s as f64).unwrap_or(1.0 / (c.d as f64).sqrt());
    let (q, k, v) = (&data.q, &data.k, &data.v);
    ref_attention_with(q, data.qs, c.layout, k, data.ks, c.layout, v, c.layout, scale, &rm, &c.ref_scores())
}

/// Compares log-sum-exp rows: -inf exactly where the reference has -inf, else relative error
/// (absolute near 0).
pub fn assert_lse(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if *w == f64::NEG_INFINITY {
            assert_eq!(*g, f32::NEG_INFINITY, "{what}: lse[{i}] = {g}, want -inf (fully masked row)");
        } else {
            assert!(
                approx::relative_eq!(*g as f64, *w, epsilon = tol, max_relative = tol),
                "{what}: lse[{i}] = {g}, want {w}"
            );
        }
    }
}

/// The CPU paths on a case against the test's own f64 reference: the fast path (fused and
/// unfused, f32 accumulation, tolerance 1e-5) and the crate's f64 reference (tolerance 1e-6).
pub fn check_cpu(c: &Case) {
    let data = case_data(c);
    let (want, want_lse, want_w) = case_reference(c, &data);
    let mask = host_mask(c, &data);
    let opts = c.opts();
    let hq = HostTensor::with_layout(&data.q, data.qs, c.layout).unwrap();
    let hk = HostTensor::with_layout(&data.k, data.ks, c.layout).unwrap();
    let hv = HostTensor::with_layout(&data.v, data.ks, c.layout).unwrap();
    let what = format!("{c:?}");
    let (out, lse) = cpu::attention(&hq, &hk, &hv, mask.as_ref(), &opts).unwrap();
    assert_close(&format!("cpu fused {what}"), &out, &want, 1e-5);
    assert_lse(&format!("cpu lse {what}"), &lse, &want_lse, 1e-5);
    let (out, w) = cpu::attention_unfused(&hq, &hk, &hv, mask.as_ref(), &opts).unwrap();
    assert_close(&format!("cpu unfused {what}"), &out, &want, 1e-5);
    assert_close(&format!("cpu weights {what}"), &w, &want_w, 1e-5);
    let (out, lse) = cpu::reference::attention(&hq, &hk, &hv, mask.as_ref(), &opts).unwrap();
    assert_close(&format!("cpu reference fused {what}"), &out, &want, 1e-6);
    assert_lse(&format!("cpu reference lse {what}"), &lse, &want_lse, 1e-6);
    let (out, w) = cpu::reference::attention_unfused(&hq, &hk, &hv, mask.as_ref(), &opts).unwrap();
    assert_close(&format!("cpu reference unfused {what}"), &out, &want, 1e-6);
    assert_close(&format!("cpu reference weights {what}"), &w, &want_w, 1e-6);
}

/// Whether the test expects `variant` to run for this case on this device (an independent
/// statement of the documented rules; the crate's own planner must agree).
pub fn expect_supported(ctx: &Context, c: &Case, variant: AttentionVariant, lse: bool) -> bool {
    let fused_fits = {
        // the smallest fused tile: Q chunks of 8 dims x (64 + 4) rows, K chunks of 8 dims x
        // (32 + 4) keys sharing memory with V chunks of 512 values, 32 x (64 + 4) weights, and
        // without subgroups of 8 lanes 2 x 256 reduction floats; two key bounds
        let caps = ctx.caps();
        let red = if caps.subgroups && caps.subgroup_min_size >= 8 { 0 } else { 512 };
        // (the K chunk, 8 x 36 floats, is smaller than the V chunk it shares memory with)
        4 * (8 * 68 + 512 + 32 * 68 + red) + 8 <= caps.max_workgroup_storage
    };
    match variant {
        AttentionVariant::Fused(l) | AttentionVariant::SplitK(l) => {
            fused_fits && (l == Loads::Scalar || c.d.is_multiple_of(4))
        }
        AttentionVariant::Decode(l) => {
            // head dims up to 128; one dispatch over whole buffers: every input and the partials
            // (a row of d + 2 floats per query row and split) within the binding limit
            let max = ctx.caps().max_binding as usize;
            let mask = c.bool_mask.or(c.add_mask).map_or(0, |s| s.iter().product::<usize>() * 4);
            let fits =
                [c.b * c.h * c.nq * c.d * 4, c.b * c.hkv * c.nk * c.d * 4, mask, c.b * c.h * c.nq * (c.d + 2) * 4]
                    .iter()
                    .all(|&bytes| bytes <= max);
            c.d <= 128 && fits && (l == Loads::Scalar || c.d.is_multiple_of(4))
        }
        AttentionVariant::Unfused => !lse,
        // f16 inputs only (these cases are f32): tests/tensor_cores.rs runs it
        AttentionVariant::TensorCores => false,
        _ => true,
    }
}

/// Whether the full test matrix runs: `WGPU_ATTENTION_FULL_MATRIX=1` (the device script sets
/// it). See [`runs_forced`].
pub fn full_matrix() -> bool {
    std::env::var("WGPU_ATTENTION_FULL_MATRIX").is_ok_and(|v| v == "1")
}

/// Whether a GPU test runs the forced `variant` on a case of head dim `d` (its refusal, where
/// the device cannot run it, is always checked: that compiles nothing).
///
/// On lavapipe nearly all of a test's time is Mesa compiling kernel variants (a case's
/// pipelines compile in seconds, run in milliseconds), and the tile of the fused, split-K and
/// decode kernels is the same WGSL at every head dim, with other constants. So by default every
/// variant runs on the cases of one representative head-dim class, head dims up to 32 (the
/// cheapest to compile, and where most semantic cases lie), while `Auto` (and with it the
/// variant it picks) runs on every case and the unfused chain (no head-dim constants) too; the
/// full matrix runs every variant on every case.
pub fn runs_forced(variant: AttentionVariant, d: usize) -> bool {
    variant == AttentionVariant::Auto || variant == AttentionVariant::Unfused || d <= 32 || full_matrix()
}

/// Every attention variant on the GPU against the f64 reference (f32 tolerance 1e-5) and
/// against `Auto`: `Auto` with the log-sum-exp, each forced variant that the device supports
/// (where [`runs_forced`] says), and for each one it does not, its refusal.
pub fn check_gpu(ctx: &Context, c: &Case) {
    check_gpu_loads(ctx, c, &[Loads::Vec4, Loads::Scalar])
}

/// [`check_gpu`], running forced variants with the given loads only (the others' refusals are
/// still checked where the device cannot run them).
pub fn check_gpu_loads(ctx: &Context, c: &Case, loads: &[Loads]) {
    let data = case_data(c);
    let (want, want_lse, want_w) = case_reference(c, &data);
    let mask = host_mask(c, &data);
    let up = |v: &[f32], s| ctx.upload_with_layout(v, s, c.layout).unwrap();
    let (q, k, v) = (up(&data.q, data.qs), up(&data.k, data.ks), up(&data.v, data.ks));
    let gmask = mask.as_ref().map(|m| ctx.upload_mask(m).unwrap());
    let what = format!("{c:?}");
    let (o, l) = ctx.attention_with_lse(&q, &k, &v, gmask.as_ref(), &c.opts()).unwrap();
    assert_eq!(o.layout(), c.layout);
    let auto = o.download_blocking(ctx).unwrap();
    assert_close(&format!("gpu auto {what}"), &auto, &want, 1e-5);
    assert_lse(&format!("gpu auto lse {what}"), &l.download_blocking(ctx).unwrap(), &want_lse, 1e-5);
    for variant in AttentionVariant::ALL {
        let opts = AttentionOptions { variant, ..c.opts() };
        let lse = variant != AttentionVariant::Unfused;
        let plan = ctx.plan_attention(&q, &k, &v, gmask.as_ref(), &opts, lse);
        if !expect_supported(ctx, c, variant, lse) {
            let e = plan.expect_err(&format!("{variant} should be refused for {what}"));
            assert!(matches!(e, Error::Unsupported(_)), "{variant}: {e}");
            let run = ctx.attention_with_lse(&q, &k, &v, gmask.as_ref(), &opts).unwrap_err();
            assert_eq!(run, e, "{variant}: the call gives the planner's refusal");
            continue;
        }
        assert_eq!(plan.unwrap().variant, variant, "{what}");
        let load = match variant {
            AttentionVariant::Fused(l) | AttentionVariant::SplitK(l) | AttentionVariant::Decode(l) => Some(l),
            _ => None,
        };
        if !runs_forced(variant, c.d) || load.is_some_and(|l| !loads.contains(&l)) {
            continue;
        }
        let tag = format!("gpu {variant} {what}");
        if lse {
            let (o, l) = ctx.attention_with_lse(&q, &k, &v, gmask.as_ref(), &opts).unwrap();
            let got = o.download_blocking(ctx).unwrap();
            assert_close(&tag, &got, &want, 1e-5);
            assert_agree(&format!("{tag} vs auto"), &got, &auto, 1e-5);
            assert_lse(&format!("{tag} lse"), &l.download_blocking(ctx).unwrap(), &want_lse, 1e-5);
        } else {
            let got = ctx.attention(&q, &k, &v, gmask.as_ref(), &opts).unwrap().download_blocking(ctx).unwrap();
            assert_close(&tag, &got, &want, 1e-5);
            assert_agree(&format!("{tag} vs auto"), &got, &auto, 1e-5);
        }
    }
    let (o, w) = ctx.attention_unfused(&q, &k, &v, gmask.as_ref(), &c.opts()).unwrap();
    assert_close(&format!("gpu unfused {what}"), &o.download_blocking(ctx).unwrap(), &want, 1e-5);
    assert_close(&format!("gpu weights {what}"), &w.download_blocking(ctx).unwrap(), &want_w, 1e-5);
}

/// A CPU test and a GPU test (every variant) over the same cases, as `<name>::cpu` and
/// `<name>::gpu`.
macro_rules! attention_cases {
    ($name:ident, $cases:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn cpu() {
                for c in $cases {
                    check_cpu(&c);
                }
            }
            gpu_test! {
                fn gpu() {
                    let ctx = shared_gpu();
                    for c in $cases {
                        check_gpu(&ctx, &c);
                    }
                }
            }
        }
    };
}
pub(crate) use attention_cases;

/// Whether the adapter stores f16. Where it does not, asserts instead that f16 is refused with
/// the documented error (so an f16 test checks real behaviour on every adapter).
pub fn f16_supported(ctx: &Context) -> bool {
    if ctx.supports_f16() {
        return true;
    }
    let e = ctx.upload(&[half::f16::ONE; 4], Shape::new(1, 1, 2, 2)).unwrap_err();
    assert!(matches!(e, Error::F16Unsupported { .. }), "{e}");
    let e = Index::new(ctx, 4, Metric::Dot, DType::F16).unwrap_err();
    assert!(matches!(e, Error::F16Unsupported { .. }), "{e}");
    eprintln!("{} has no SHADER_F16: checked that f16 is refused", ctx.info().adapter);
    false
}

/// The backward tests' option families (tests/backward.rs, tests/backward_gpu.rs), each alone
/// and combined, on small shapes (finite differences are O(elements)).
pub fn backward_cases() -> Vec<Case> {
    let base = Case::new(1, 2, 2, 4, 6, 8);
    let mut v = vec![
        base.clone(),
        base.clone().causal(),
        // bottom-right causal with more queries than keys: the first rows keep nothing
        Case::new(1, 2, 1, 6, 3, 4).causal(),
        Case::new(2, 4, 2, 5, 7, 4).causal(),
        Case::new(1, 2, 1, 3, 5, 1),
        Case::new(1, 3, 1, 3, 5, 5).bshd(),
        Case::new(2, 2, 2, 3, 6, 4).key_lengths(&[2, 6]),
        base.clone().window(2, Some(1)),
        base.clone().softcap(2.0),
        base.clone().alibi(),
        base.clone().sinks(),
        Case { scale: Some(0.7), ..base.clone() },
        Case { bool_mask: Some([1, 2, 4, 6]), ..base.clone() },
        Case { add_mask: Some([1, 1, 4, 6]), ..base.clone() },
        // everything at once, GQA, BSHD
        Case {
            add_mask: Some([2, 1, 5, 7]),
            ..Case::new(2, 4, 2, 5, 7, 4).causal().window(3, Some(0)).softcap(3.0).alibi().sinks().bshd()
        },
    ];
    // soft-cap near saturation: large scores, the tanh's slope near 0
    v.push(Case { amp: 4.0, ..base.softcap(1.5) });
    v
}

/// The forward's output and log-sum-exp (the crate's f64 reference, f32 results) and the
/// gradients of `L = Σ dO · O` from the reference backward and the fast path.
pub fn backward_grads(c: &Case, data: &CaseData, d_o: &[f32]) -> (cpu::AttentionGrads, cpu::AttentionGrads) {
    let q = HostTensor::with_layout(&data.q, data.qs, c.layout).unwrap();
    let k = HostTensor::with_layout(&data.k, data.ks, c.layout).unwrap();
    let v = HostTensor::with_layout(&data.v, data.ks, c.layout).unwrap();
    let mask = host_mask(c, data);
    let opts = c.opts();
    let (o, lse) = cpu::reference::attention(&q, &k, &v, mask.as_ref(), &opts).unwrap();
    let o = HostTensor::with_layout(&o, data.qs, c.layout).unwrap();
    let d_o = HostTensor::with_layout(d_o, data.qs, c.layout).unwrap();
    let call = cpu::BackwardInputs { q: &q, k: &k, v: &v, mask: mask.as_ref(), o: &o, lse: &lse, d_o: &d_o };
    let r = cpu::reference::attention_backward(&call, &opts).unwrap();
    let f = cpu::attention_backward(&call, &opts).unwrap();
    (r, f)
}

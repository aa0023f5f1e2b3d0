//! Shared test helpers: device, seeded data, an independent f64 reference, comparisons.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

/// The GPU context for tests. No adapter is a failure, unless `WGPU_ATTENTION_TESTS=cpu-only`
/// explicitly selects CPU-only runs (then GPU tests return early, saying so).
pub fn gpu() -> Option<Context> {
    if std::env::var("WGPU_ATTENTION_TESTS").is_ok_and(|v| v == "cpu-only") {
        eprintln!("WGPU_ATTENTION_TESTS=cpu-only: GPU part of this test not run");
        return None;
    }
    match Context::new_blocking() {
        Ok(c) => Some(c),
        Err(e) => panic!("GPU test found no adapter ({e}); set WGPU_ATTENTION_TESTS=cpu-only to run CPU tests only"),
    }
}

/// A shared context (pipelines compile once per test binary).
pub fn shared_gpu() -> Option<Context> {
    static CTX: std::sync::OnceLock<Option<Context>> = std::sync::OnceLock::new();
    CTX.get_or_init(gpu).clone()
}

/// Seeded uniform values in [-amp, amp).
pub fn rand_vec(seed: u64, n: usize, amp: f32) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-amp..amp)).collect()
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

/// Asserts relative error <= tol, naming the first element off by more than tol * max|want|.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!("{what}: element {i} is {} (want {})", got[i], want[i]);
    }
    let e = rel_err(got, want);
    if e > tol {
        let scale = want.iter().fold(0.0f64, |a, w| a.max(w.abs())).max(1e-30);
        let i = got.iter().zip(want).position(|(g, w)| (*g as f64 - w).abs() > tol * scale).unwrap_or(0);
        panic!("{what}: relative error {e:.3e} > {tol:.1e}; first bad index {i}: got {} want {}", got[i], want[i]);
    }
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
pub struct RefMask<'a> {
    pub causal: bool,
    pub key_lengths: Option<&'a [u32]>,
    pub bool_mask: Option<(&'a [bool], [usize; 4])>,
    pub add_mask: Option<(&'a [f32], [usize; 4])>,
}

impl RefMask<'_> {
    pub fn none() -> Self {
        RefMask { causal: false, key_lengths: None, bool_mask: None, add_mask: None }
    }
    /// Additive term if (b, h, i, j) is kept.
    pub fn term(&self, b: usize, h: usize, i: usize, j: usize, nq: usize, nk: usize) -> Option<f64> {
        if self.causal && j as i64 > i as i64 + nk as i64 - nq as i64 {
            return None;
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
                let s: Vec<Option<f64>> = (0..nk)
                    .map(|j| {
                        mask.term(b, h, i, j, nq, nk).map(|add| {
                            let dot: f64 = (0..d).map(|x| at(q, qs, ql, b, h, i, x) * at(k, ks, kl, b, hk, j, x)).sum();
                            dot * scale + add
                        })
                    })
                    .collect();
                let m = s.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let l: f64 = s.iter().flatten().map(|x| (x - m).exp()).sum();
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
        }
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
    };
    let scale = c.scale.map(|s| s as f64).unwrap_or(1.0 / (c.d as f64).sqrt());
    ref_attention(&data.q, data.qs, c.layout, &data.k, data.ks, c.layout, &data.v, c.layout, scale, &rm)
}

/// Compares log-sum-exp rows: -inf exactly where the reference has -inf, else relative error.
pub fn assert_lse(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if *w == f64::NEG_INFINITY {
            assert_eq!(*g, f32::NEG_INFINITY, "{what}: lse[{i}] = {g}, want -inf (fully masked row)");
        } else {
            let err = (*g as f64 - w).abs() / w.abs().max(1.0);
            assert!(err <= tol, "{what}: lse[{i}] = {g}, want {w} (error {err:.2e})");
        }
    }
}

/// Runs a case on the CPU path and (if `ctx`) the GPU fused and unfused paths, checking each
/// against the f64 reference with the f32 tolerances.
pub fn check_case(ctx: Option<&Context>, c: &Case) {
    let data = case_data(c);
    let (want, want_lse, want_w) = case_reference(c, &data);
    let mask = host_mask(c, &data);
    let opts = AttentionOptions { scale: c.scale, causal: c.causal, key_lengths: c.key_lengths.as_deref() };
    let hq = HostTensor::with_layout(&data.q, data.qs, c.layout).unwrap();
    let hk = HostTensor::with_layout(&data.k, data.ks, c.layout).unwrap();
    let hv = HostTensor::with_layout(&data.v, data.ks, c.layout).unwrap();
    let what = format!("{c:?}");

    let (out, lse) = cpu::attention(&hq, &hk, &hv, mask.as_ref(), &opts).unwrap();
    assert_close(&format!("cpu fused {what}"), &out, &want, 1e-6);
    assert_lse(&format!("cpu lse {what}"), &lse, &want_lse, 1e-6);
    let (out, w) = cpu::attention_unfused(&hq, &hk, &hv, mask.as_ref(), &opts).unwrap();
    assert_close(&format!("cpu unfused {what}"), &out, &want, 1e-6);
    assert_close(&format!("cpu weights {what}"), &w, &want_w, 1e-6);

    let Some(ctx) = ctx else { return };
    let up = |v: &[f32], s| ctx.upload_with_layout(v, s, c.layout).unwrap();
    let (gq, gk, gv) = (up(&data.q, data.qs), up(&data.k, data.ks), up(&data.v, data.ks));
    let gmask = mask.as_ref().map(|m| ctx.upload_mask(m).unwrap());
    let (o, l) = ctx.attention_with_lse(&gq, &gk, &gv, gmask.as_ref(), &opts).unwrap();
    assert_eq!(o.layout(), c.layout);
    assert_close(&format!("gpu fused {what}"), &o.download_blocking(ctx).unwrap(), &want, 1e-5);
    assert_lse(&format!("gpu lse {what}"), &l.download_blocking(ctx).unwrap(), &want_lse, 1e-5);
    let (o, w) = ctx.attention_unfused(&gq, &gk, &gv, gmask.as_ref(), &opts).unwrap();
    assert_close(&format!("gpu unfused {what}"), &o.download_blocking(ctx).unwrap(), &want, 1e-5);
    assert_close(&format!("gpu weights {what}"), &w.download_blocking(ctx).unwrap(), &want_w, 1e-5);
}

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

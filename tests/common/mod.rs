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
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
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
    q: &[f32], qs: Shape, ql: Layout,
    k: &[f32], ks: Shape, kl: Layout,
    v: &[f32], vl: Layout,
    scale: f64, mask: &RefMask,
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

//! Similarity scores `S = metric(Q, K)` (`shaders/similarity.wgsl`, `cpu::similarity`).

use super::{check_output, pow2, qk_dims, same_dtype, Dims, Operand};
use crate::error::{Error, Result};
use crate::options::Similarity;
use crate::shape::{DType, Shape};

/// A checked similarity call.
#[derive(Clone, Debug)]
pub(crate) struct SimilarityProblem {
    pub dims: Dims,
    pub dtype: DType,
    pub q: Operand,
    pub k: Operand,
    pub metric: Similarity,
    pub scale: f32,
}

/// Power-of-two factors that keep the similarity kernel's sums in f32 range: Q and K are
/// multiplied by `q`, `k` as they are loaded; the result by `post` then by `post2` (each step
/// saturating at ±f32::MAX).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SimilarityScaling {
    pub q: f32,
    pub k: f32,
    pub post: f32,
    pub post2: f32,
}

impl SimilarityProblem {
    /// Checks, in this order: `q`, `k` each; `k` against `q`; dtypes; the scale (finite).
    pub fn new(q: Operand, k: Operand, metric: Similarity) -> Result<Self> {
        let dims = qk_dims(&q, &k)?;
        same_dtype("k", &k, q.dtype)?;
        let scale = metric.scale(dims.d);
        if !scale.is_finite() {
            return Err(Error::InvalidArgument { argument: "scale", message: format!("{scale} is not finite") });
        }
        Ok(SimilarityProblem { dims, dtype: q.dtype, q, k, metric, scale })
    }

    /// The scores step of a checked attention call (scaled dot product), without checking again.
    pub fn of_attention(p: &super::AttentionProblem) -> Self {
        SimilarityProblem {
            dims: p.dims,
            dtype: p.dtype,
            q: p.q,
            k: p.k,
            metric: Similarity::ScaledDot(Some(p.scale)),
            scale: p.scale,
        }
    }

    /// A chunk of keys of a checked top-k call, without checking again.
    pub fn of_top_k(q: Operand, k: Operand, metric: Similarity) -> Self {
        let dims = Dims { batch: 1, heads: 1, kv_heads: 1, nq: q.shape.seq, nk: k.shape.seq, d: q.shape.dim };
        SimilarityProblem { dims, dtype: q.dtype, q, k, metric, scale: 1.0 }
    }

    /// Records the magnitudes found by scanning the inputs.
    pub fn with_magnitudes(mut self, q: f32, k: f32) -> Self {
        self.q.max_abs = Some(q);
        self.k.max_abs = Some(k);
        self
    }

    /// Shape of the scores: f32 `[batch, heads, nq, nk]`.
    pub fn out_shape(&self) -> Shape {
        Shape::new(self.dims.batch, self.dims.heads, self.dims.nq, self.dims.nk)
    }

    /// Checks a caller-provided output.
    pub fn check_output(&self, out: &Operand) -> Result<()> {
        check_output("out", out, self.out_shape(), DType::F32)
    }

    /// The kernel's scaling: Q and K are brought to magnitudes near 1 by exact powers of two
    /// (from the known magnitudes), so that neither the sums nor the norms overflow or underflow
    /// in f32; the result is then taken back by `post` and `post2`. A score representable in f32
    /// is thus computed without intermediate overflow or underflow, and one beyond f32's range
    /// saturates. Unknown magnitudes give factors of 1.
    pub fn scaling(&self) -> SimilarityScaling {
        // the exponent that brings a magnitude m into [1/2, 1), within the range pow2 accepts
        let exp = |m: Option<f32>| -> i32 {
            m.filter(|&m| m > 0.0).map_or(0, |m| ((m as f64).log2().floor() as i32 + 1).clamp(-126, 126))
        };
        let (eq, ek) = (exp(self.q.max_abs), exp(self.k.max_abs));
        match self.metric {
            Similarity::Dot | Similarity::ScaledDot(_) => {
                let (post, post2) = split_factor(self.scale as f64 * 2f64.powi(eq + ek));
                SimilarityScaling { q: pow2(-eq), k: pow2(-ek), post, post2 }
            }
            // scale-free: each side normalised on its own
            Similarity::Cosine => SimilarityScaling { q: pow2(-eq), k: pow2(-ek), post: 1.0, post2: 1.0 },
            Similarity::L2 => {
                // a distance needs one scale for both sides
                let e = eq.max(ek);
                let (post, post2) = split_factor(2f64.powi(2 * e));
                SimilarityScaling { q: pow2(-e), k: pow2(-e), post, post2 }
            }
        }
    }
}

/// A factor `f` as `(a, b)` with `f = a·b`, both f32: `(f, 1)` when f32 holds `f`; otherwise
/// `b` a power of two that brings `a` into [1, 2), so that a result `x·a·b` representable in f32
/// is computed without spurious overflow or underflow (and one beyond f32 saturates).
fn split_factor(f: f64) -> (f32, f32) {
    let normal = |x: f64| x == 0.0 || (x.abs() >= f32::MIN_POSITIVE as f64 && x.abs() <= f32::MAX as f64);
    if normal(f) {
        return (f as f32, 1.0);
    }
    let p = (f.abs().log2().floor() as i32).clamp(-126, 127);
    let a = f / 2f64.powi(p);
    (a.clamp(-(f32::MAX as f64), f32::MAX as f64) as f32, pow2(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{Layout, Shape};

    fn problem(metric: Similarity, mq: f32, mk: f32) -> SimilarityProblem {
        let op =
            |m| Operand { shape: Shape::new(1, 1, 2, 64), layout: Layout::Bhsd, dtype: DType::F32, max_abs: Some(m) };
        SimilarityProblem::new(op(mq), op(mk), metric).unwrap()
    }

    #[test]
    fn scaling_keeps_sums_in_range_and_is_exact() {
        for (mq, mk) in [(1.0f32, 1.0f32), (1e-30, 1e-30), (3e38, 1e-38), (1e19, 1e19), (0.0, 5.0)] {
            for metric in [Similarity::Dot, Similarity::ScaledDot(Some(1e-30)), Similarity::Cosine, Similarity::L2] {
                let p = problem(metric, mq, mk);
                let sc = p.scaling();
                // normalised magnitudes are near 1 (at most 4: 2^-126 is the smallest factor)
                for (m, f) in [(mq, sc.q), (mk, sc.k)] {
                    let n = m as f64 * f as f64;
                    assert!(n <= 4.0 && (m == 0.0 || n >= 0.25 || metric == Similarity::L2), "{metric:?} {m} -> {n}");
                }
                // the factors put the scale and the powers of two back exactly
                if let Similarity::Dot | Similarity::ScaledDot(_) = metric {
                    let back = sc.post as f64 * sc.post2 as f64 * sc.q as f64 * sc.k as f64;
                    let want = p.scale as f64;
                    // (where the scores themselves are beyond f32, the factors saturate or vanish)
                    let scores = want.abs() * mq as f64 * mk as f64;
                    let representable = scores == 0.0 || (1e-37..1e37).contains(&scores);
                    assert!(
                        !representable || (back - want).abs() <= want.abs() * 1e-6,
                        "{metric:?} {mq} {mk}: {back} vs {want}"
                    );
                }
            }
        }
        assert_eq!(split_factor(3.0), (3.0, 1.0));
        for f in [1e50, -1e50, 1e-50, 1e300] {
            let (a, b) = split_factor(f);
            assert!(a.is_finite() && b.is_normal(), "{f}: {a} {b}");
            let back = a as f64 * b as f64;
            assert!((back - f).abs() <= f.abs() * 1e-6 || a.abs() == f32::MAX, "{f}: {back}");
        }
    }
}

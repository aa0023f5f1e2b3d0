//! What every problem type shares: operands and masks as the validation layer sees them, the
//! checks of shapes, dtypes and multipliers, and the score transform that keeps the kernels' f32
//! arithmetic within range.

use crate::error::{Error, Result};
use crate::host::{HostMask, HostTensor, MaskKind};
use crate::shape::{DType, Element, Layout, Shape};

/// What the validation layer knows of a tensor argument: shape, layout, dtype and, where its
/// values were scanned by this crate (host data, uploads), the largest magnitude.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Operand {
    pub shape: Shape,
    pub layout: Layout,
    pub dtype: DType,
    pub max_abs: Option<f32>,
}

impl Operand {
    /// A host tensor, not yet scanned.
    pub fn host<T: Element>(t: &HostTensor<T>) -> Self {
        Operand { shape: t.shape(), layout: t.layout(), dtype: T::DTYPE, max_abs: None }
    }

    /// With the magnitude found by a scan.
    pub fn scanned(self, max_abs: f32) -> Self {
        Operand { max_abs: Some(max_abs), ..self }
    }
}

/// A mask argument: shape and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MaskSpec {
    pub shape: [usize; 4],
    pub kind: MaskKind,
}

impl MaskSpec {
    pub fn host(m: &HostMask) -> Self {
        MaskSpec { shape: m.shape(), kind: m.kind() }
    }
}

/// Checks a tensor argument on its own: every dimension at least 1, and its element and byte
/// counts representable (`usize` elements, `u64` bytes).
pub(crate) fn check_operand(argument: &'static str, t: &Operand) -> Result<()> {
    let s = t.shape;
    for (v, dim) in [(s.batch, "batch"), (s.heads, "heads"), (s.seq, "seq"), (s.dim, "dim")] {
        if v == 0 {
            return Err(Error::EmptyDimension { argument, dim });
        }
    }
    let n = s.checked_numel(argument)?;
    (n as u64)
        .checked_mul(t.dtype.size())
        .ok_or_else(|| Error::TooLarge { argument, message: format!("{n} elements overflow a 64-bit byte count") })?;
    Ok(())
}

/// Dimensions of a checked query/key(/value) problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

impl Dims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    /// `batch · heads` slices.
    pub fn slices(&self) -> usize {
        self.batch * self.heads
    }
}

/// Checks Q against K (similarity and attention): each on its own, then batch and dim match
/// and heads divide.
pub(crate) fn qk_dims(q: &Operand, k: &Operand) -> Result<Dims> {
    check_operand("q", q)?;
    check_operand("k", k)?;
    let (qs, ks) = (q.shape, k.shape);
    if ks.batch != qs.batch {
        return Err(Error::ShapeMismatch {
            argument: "k",
            other: "q",
            dim: "batch",
            got: ks.batch,
            expected: qs.batch,
        });
    }
    if ks.dim != qs.dim {
        return Err(Error::ShapeMismatch { argument: "k", other: "q", dim: "dim", got: ks.dim, expected: qs.dim });
    }
    if !qs.heads.is_multiple_of(ks.heads) {
        return Err(Error::HeadsNotDivisible { argument: "k", q_heads: qs.heads, kv_heads: ks.heads });
    }
    Ok(Dims { batch: qs.batch, heads: qs.heads, kv_heads: ks.heads, nq: qs.seq, nk: ks.seq, d: qs.dim })
}

/// Checks that `t` has the dtype of `other` (named `other_name`).
pub(crate) fn same_dtype(argument: &'static str, t: &Operand, expected: DType) -> Result<()> {
    if t.dtype != expected {
        return Err(Error::DTypeMismatch { argument, got: t.dtype, expected });
    }
    Ok(())
}

/// Checks a mask shape `[mb, mh, nq, nk]` against scores `[batch, heads, nq, nk]`.
pub(crate) fn check_mask(m: &MaskSpec, batch: usize, heads: usize, nq: usize, nk: usize) -> Result<()> {
    let s = m.shape;
    if s.contains(&0) {
        return Err(Error::EmptyDimension { argument: "mask", dim: "shape" });
    }
    let ok = (s[0] == 1 || s[0] == batch) && (s[1] == 1 || s[1] == heads) && s[2] == nq && s[3] == nk;
    if !ok {
        return Err(Error::MaskShape { got: s, batch, heads, nq, nk });
    }
    Ok(())
}

/// Checks per-batch key lengths: one per batch, each at most `nk`.
pub(crate) fn check_key_lengths(kl: Option<&[u32]>, batch: usize, nk: usize) -> Result<()> {
    if let Some(kl) = kl {
        if kl.len() != batch {
            return Err(Error::KeyLengths(format!("{} entries, expected one per batch ({batch})", kl.len())));
        }
        if let Some((b, &l)) = kl.iter().enumerate().find(|(_, &l)| l as usize > nk) {
            return Err(Error::KeyLengths(format!("entry {b} is {l}, more than the {nk} keys")));
        }
    }
    Ok(())
}

/// Checks a caller-provided output against the shape and dtype the call produces.
pub(crate) fn check_output(argument: &'static str, t: &Operand, shape: Shape, dtype: DType) -> Result<()> {
    for (dim, got, expected) in [
        ("batch", t.shape.batch, shape.batch),
        ("heads", t.shape.heads, shape.heads),
        ("seq", t.shape.seq, shape.seq),
        ("dim", t.shape.dim, shape.dim),
    ] {
        if got != expected {
            return Err(Error::ShapeMismatch { argument, other: "inputs", dim, got, expected });
        }
    }
    same_dtype(argument, t, dtype)
}

/// Smallest and largest accepted magnitude of a score multiplier (the attention `scale`, the
/// softmax `temperature`): 2^-100 and 2^100. Beyond, f32 cannot carry the mask terms and the
/// scaled inputs at once (the README's "Extreme values" says how scores are carried).
pub const SCALE_RANGE: (f32, f32) = (7.888_609e-31, 1.267_650_6e30);

/// Checks a score multiplier: finite, within [`SCALE_RANGE`] in magnitude, and either 0 or of
/// any sign (`signed`, the attention scale) or positive (the softmax temperature).
pub(crate) fn check_multiplier(argument: &'static str, v: f32, signed: bool, what: &str) -> Result<()> {
    let (lo, hi) = SCALE_RANGE;
    let in_range = v.abs() >= lo && v.abs() <= hi;
    let ok = v.is_finite() && if signed { v == 0.0 || in_range } else { v > 0.0 && in_range };
    if !ok {
        let allowed = if signed { "0, or of magnitude" } else { "positive," };
        return Err(Error::InvalidArgument {
            argument,
            message: format!(
                "{v:e} is out of range: {what} must be {allowed} between 2^-100 ({lo:e}) and 2^100 ({hi:e}); \
                 beyond that f32 cannot hold the scaled scores and the mask terms together"
            ),
        });
    }
    Ok(())
}

/// Largest |z| the kernels carry (2^126): scores beyond saturate here, NaN-free.
pub(crate) const ZSAT: f32 = 8.507_059e37;
/// The running maximum before any key (-2^127), below every saturated z.
pub(crate) const ZNONE: f32 = -1.701_411_8e38;
/// Exponents below -`EXP_FLOOR` (base 2) give weight 0 in f32; differences are clamped there
/// before they are multiplied, so nothing overflows.
pub(crate) const EXP_FLOOR: f64 = 256.0;

/// `2^e` as f32, exactly (for `e` in the normal range).
pub(crate) fn pow2(e: i32) -> f32 {
    debug_assert!((-126..=127).contains(&e));
    f32::from_bits(((e + 127) as u32) << 23)
}

/// The smallest `e >= 0` with `bound · 2^-e <= 2^target`.
pub(crate) fn headroom(bound: f64, target: i32) -> i32 {
    if bound.is_finite() && bound > 0.0 {
        (bound.log2().ceil() as i32 - target).max(0)
    } else {
        0
    }
}

/// How the kernels carry a score `s = σ·x + a` (σ the scale or 1/temperature, x the dot product
/// or softmax input, a the additive mask term) through f32 without overflow:
///
/// `z = x·pre + a·mask`, so that `s = z·unit` exactly (up to one rounding of each product).
/// `pre`, `mask` and `unit` are powers of two times σ, chosen so that |z| stays below 2^126 for
/// every finite input whose magnitude is known (and saturates there, NaN-free, otherwise).
/// Weights are `exp2(max(z - zmax, floor)·ex)` with `ex = unit·log2(e)`: the difference is
/// clamped before it is multiplied, so it never overflows; the log-sum-exp is
/// `zmax·unit + ln(l)`, ±inf when |zmax| > `zcap` (the true value is beyond f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ScoreTransform {
    pub pre: f32,
    pub mask: f32,
    pub unit: f32,
    pub ex: f32,
    pub floor: f32,
    pub zcap: f32,
}

impl ScoreTransform {
    /// For multiplier `sigma` (already range-checked) and, if known, a bound on |x|.
    pub fn new(sigma: f32, x_bound: Option<f64>) -> Result<Self> {
        let s = sigma as f64;
        let small = s.abs() <= 1.0;
        // the part of σ applied to x before anything is summed: σ itself when |σ| <= 1, else its sign
        let s_pre = if small { s } else { s.signum() };
        let e = 3 + x_bound.map_or(0, |b| headroom(s_pre.abs() * b, 125 + 3).max(0));
        let k = 2f64.powi(e);
        let unit = if small { k } else { k * s.abs() };
        let pre = s_pre / k;
        if unit > 2f64.powi(124) || (pre != 0.0 && pre.abs() < 2f64.powi(-126)) {
            return Err(Error::TooLarge {
                argument: "q, k",
                message: format!(
                    "the scaled dot products can reach {:e}: beyond what f32 arithmetic can carry",
                    s.abs() * x_bound.unwrap_or(0.0)
                ),
            });
        }
        let ex = unit * std::f64::consts::LOG2_E;
        Ok(ScoreTransform {
            pre: pre as f32,
            mask: (1.0 / unit) as f32,
            unit: unit as f32,
            ex: ex as f32,
            floor: (-EXP_FLOOR / ex) as f32,
            zcap: (f32::MAX as f64 / unit) as f32,
        })
    }
}

/// A power-of-two prescale for values summed `n` at a time: `(pre, post)` with
/// `bound·pre <= 2^126` and `post = 1/pre`, or `(1, 1)` when the bound is unknown or small.
pub(crate) fn sum_prescale(bound: Option<f64>) -> (f32, f32) {
    let e = bound.map_or(0, |b| headroom(b, 126)).min(100);
    (pow2(-e), pow2(e))
}

/// An f64 result as f32, saturating at ±`f32::MAX` (the rule for results beyond f32's range).
pub(crate) fn saturate(x: f64) -> f32 {
    x.clamp(-(f32::MAX as f64), f32::MAX as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_powers_of_two_they_claim() {
        assert_eq!(ZSAT, 2f32.powi(126));
        assert_eq!(ZNONE, -(2f32.powi(127)));
        assert_eq!(SCALE_RANGE.0, 2f32.powi(-100));
        assert_eq!(SCALE_RANGE.1, 2f32.powi(100));
        assert_eq!(pow2(-126), f32::MIN_POSITIVE);
        assert_eq!(pow2(0), 1.0);
        assert_eq!(pow2(127), 2f32.powi(127));
    }

    #[test]
    fn transform_reconstructs_scores_and_bounds_z() {
        for sigma in [0.0f32, 1.0, -0.125, 0.088, 3.0, 1e10, -1e20, 2f32.powi(100), 2f32.powi(-100)] {
            let t = ScoreTransform::new(sigma, None).unwrap();
            // s = z·unit for z = x·pre + a·mask
            for (x, a) in [(1.0f64, 0.0f64), (-2.5, 3.0), (1e30, -1e30)] {
                let z = x * t.pre as f64 + a * t.mask as f64;
                let s = sigma as f64 * x + a;
                let rel = (z * t.unit as f64 - s).abs() / s.abs().max(1e-30);
                assert!(rel < 1e-6, "sigma {sigma} x {x} a {a}: z·unit {} vs {s}", z * t.unit as f64);
            }
            // any f32 x (at most 2^125 after pre when |σ| <= 1) and mask (at most MAX/8) stay under ZSAT
            assert!((t.pre.abs() as f64) * (f32::MAX as f64) / 8.0 < ZSAT as f64 * 1.0001 || sigma.abs() > 1.0);
            assert!((t.mask as f64) * (f32::MAX as f64) <= ZSAT as f64);
            assert!(t.floor < 0.0 && t.floor.is_normal());
            assert!(((t.floor * t.ex) as f64 + EXP_FLOOR).abs() < 1e-3);
            assert!(t.zcap.is_finite() && t.ex.is_finite());
        }
    }

    #[test]
    fn known_magnitudes_raise_the_headroom() {
        // q·k can reach 256 · 1e30 · 1e30: z must stay under 2^126
        let bound = 256.0 * 1e30 * 1e30;
        let t = ScoreTransform::new(1.0, Some(bound)).unwrap();
        assert!(t.pre as f64 * bound <= 2f64.powi(125));
        let t0 = ScoreTransform::new(1.0, Some(10.0)).unwrap();
        assert_eq!(t0, ScoreTransform::new(1.0, None).unwrap());
        // absurd: the dot products overflow even f64's idea of f32 arithmetic
        assert!(ScoreTransform::new(1e20, Some(1e300)).is_err());
    }

    #[test]
    fn multipliers_out_of_range_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, 1e38, 1e-45, 1e-35, 2f32.powi(101)] {
            assert!(check_multiplier("scale", bad, true, "the scale").is_err(), "{bad}");
        }
        for good in [0.0, 1.0, -1.0, 2f32.powi(100), -(2f32.powi(-100)), 0.125] {
            assert!(check_multiplier("scale", good, true, "the scale").is_ok(), "{good}");
        }
        assert!(check_multiplier("temperature", 0.0, false, "the temperature").is_err());
        assert!(check_multiplier("temperature", -1.0, false, "the temperature").is_err());
        assert!(check_multiplier("temperature", 2f32.powi(100), false, "the temperature").is_ok());
    }

    #[test]
    fn prescale_for_sums() {
        assert_eq!(sum_prescale(None), (1.0, 1.0));
        assert_eq!(sum_prescale(Some(1e10)), (1.0, 1.0));
        let (pre, post) = sum_prescale(Some(1e40));
        assert!(1e40 * pre as f64 <= 2f64.powi(126) && pre * post == 1.0);
    }
}

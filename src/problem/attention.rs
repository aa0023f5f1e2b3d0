//! Attention: `O = softmax(scale · Q Kᵀ + mask) V` (fused, split-K or unfused on the GPU;
//! `cpu::attention` and `cpu::attention_unfused` on the CPU).

use super::{
    check_key_lengths, check_mask, check_operand, check_output, qk_dims, same_dtype, sum_prescale, Dims, MaskSpec,
    Operand, ScoreTransform,
};
use crate::error::{Error, Result};
use crate::options::{AttentionConfig, AttentionOptions, AttentionVariant, Window};
use crate::shape::{DType, Layout, Shape, MAX_HEAD_DIM};

/// A checked attention call.
#[derive(Clone, Debug)]
pub(crate) struct AttentionProblem<'a> {
    pub dims: Dims,
    pub dtype: DType,
    pub q: Operand,
    pub k: Operand,
    pub v: Operand,
    pub causal: bool,
    pub key_lengths: Option<&'a [u32]>,
    pub scale: f32,
    pub window: Option<Window>,
    pub softcap: Option<f32>,
    pub alibi_slopes: Option<&'a [f32]>,
    pub sinks: Option<&'a [f32]>,
    pub variant: AttentionVariant,
    pub f32_on_tensor_cores: bool,
    pub config: AttentionConfig,
    /// `AttentionOptions::fixed_order`.
    pub fixed_order: bool,
}

/// The score options of an attention call, checked: shared by the contiguous and the paged
/// problems.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ScoreOptions<'a> {
    pub window: Option<Window>,
    pub softcap: Option<f32>,
    pub alibi_slopes: Option<&'a [f32]>,
    pub sinks: Option<&'a [f32]>,
}

/// Largest accepted magnitude of an ALiBi slope (2^64): beyond, every key but the query's own
/// position gets weight 0 anyway, and the bias would leave f32's range.
pub const MAX_ALIBI_SLOPE: f32 = 1.844_674_4e19;

impl<'a> ScoreOptions<'a> {
    /// Checks, in this order: the soft-cap (finite, within the scale range), the ALiBi slopes
    /// (one per query head, finite, magnitude at most 2^64), the sinks (one per query head,
    /// finite). Windows need no check: any width is valid.
    pub fn new(opts: &AttentionOptions<'a>, heads: usize) -> Result<Self> {
        if let Some(cap) = opts.softcap {
            super::check_multiplier("softcap", cap, false, "the soft-cap")?;
        }
        let per_head = |argument: &'static str, v: Option<&'a [f32]>, max: f32| -> Result<()> {
            let Some(v) = v else { return Ok(()) };
            if v.len() != heads {
                return Err(Error::LengthMismatch { argument, expected: heads, got: v.len() });
            }
            if let Some((index, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite() || x.abs() > max) {
                if !value.is_finite() {
                    return Err(Error::NonFinite { argument, index, value });
                }
                return Err(Error::InvalidArgument {
                    argument,
                    message: format!("entry {index} is {value:e}, over the largest accepted magnitude {max:e}"),
                });
            }
            Ok(())
        };
        per_head("alibi_slopes", opts.alibi_slopes, MAX_ALIBI_SLOPE)?;
        per_head("sinks", opts.sinks, f32::MAX)?;
        Ok(ScoreOptions {
            window: opts.window,
            softcap: opts.softcap,
            alibi_slopes: opts.alibi_slopes,
            sinks: opts.sinks,
        })
    }

    /// The soft-cap's factors in the units the kernels carry scores in (`s = z·unit`):
    /// `z = cap_out · tanh(z · cap_in)`, or `None` without a cap. `Err` where the two would leave
    /// f32's range (a cap tiny or huge next to the call's score unit).
    pub fn cap_factors(&self, t: &ScoreTransform) -> Result<Option<(f32, f32)>> {
        let Some(cap) = self.softcap else { return Ok(None) };
        let ratio = t.unit as f64 / cap as f64;
        if !(2f64.powi(-120)..=2f64.powi(120)).contains(&ratio) {
            return Err(Error::InvalidArgument {
                argument: "softcap",
                message: format!("{cap:e} is too far from the scores' scale ({:e}) to be applied in f32", t.unit),
            });
        }
        Ok(Some((ratio as f32, (1.0 / ratio) as f32)))
    }

    /// Per query head: the ALiBi slope and the sink, in the kernels' units (times `mscale`).
    pub fn head_params(&self, t: &ScoreTransform, heads: usize) -> Vec<f32> {
        let m = t.mask as f64;
        (0..heads)
            .flat_map(|h| {
                let slope = self.alibi_slopes.map_or(0.0, |s| s[h] as f64 * m);
                let sink = self.sinks.map_or(0.0, |s| s[h] as f64 * m);
                [slope as f32, sink as f32]
            })
            .collect()
    }

    /// Whether any option needs the per-head parameters.
    pub fn has_head_params(&self) -> bool {
        self.alibi_slopes.is_some() || self.sinks.is_some()
    }
}

impl<'a> AttentionProblem<'a> {
    /// Checks, in this order: `q`, `k`, `v` each (non-empty, countable); `k` against `q` (batch,
    /// dim, heads divisible); `v` against `k` (batch, heads, seq) and `q` (dim); the head dim;
    /// dtypes (`k`, `v` like `q`); the mask's shape; key lengths; the scale.
    pub fn new(
        q: Operand,
        k: Operand,
        v: Operand,
        mask: Option<MaskSpec>,
        opts: &AttentionOptions<'a>,
    ) -> Result<Self> {
        let dims = qk_dims(&q, &k)?;
        check_operand("v", &v)?;
        let (ks, vs) = (k.shape, v.shape);
        for (dim, got, expected) in
            [("batch", vs.batch, ks.batch), ("heads", vs.heads, ks.heads), ("seq", vs.seq, ks.seq)]
        {
            if got != expected {
                return Err(Error::ShapeMismatch { argument: "v", other: "k", dim, got, expected });
            }
        }
        if vs.dim != dims.d {
            return Err(Error::ShapeMismatch { argument: "v", other: "q", dim: "dim", got: vs.dim, expected: dims.d });
        }
        if dims.d > MAX_HEAD_DIM {
            return Err(Error::UnsupportedHeadDim { argument: "q", got: dims.d, max: MAX_HEAD_DIM });
        }
        same_dtype("k", &k, q.dtype)?;
        same_dtype("v", &v, q.dtype)?;
        if let Some(m) = &mask {
            check_mask(m, dims.batch, dims.heads, dims.nq, dims.nk)?;
        }
        check_key_lengths(opts.key_lengths, dims.batch, dims.nk)?;
        let scale = opts.scale_for(dims.d);
        super::check_multiplier("scale", scale, true, "the scale")?;
        let so = ScoreOptions::new(opts, dims.heads)?;
        Ok(AttentionProblem {
            dims,
            dtype: q.dtype,
            q,
            k,
            v,
            causal: opts.causal,
            key_lengths: opts.key_lengths,
            scale,
            window: so.window,
            softcap: so.softcap,
            alibi_slopes: so.alibi_slopes,
            sinks: so.sinks,
            variant: opts.variant,
            f32_on_tensor_cores: opts.f32_on_tensor_cores,
            config: opts.config,
            fixed_order: opts.fixed_order,
        })
    }

    /// The checked score options.
    pub fn score_options(&self) -> ScoreOptions<'a> {
        ScoreOptions { window: self.window, softcap: self.softcap, alibi_slopes: self.alibi_slopes, sinks: self.sinks }
    }

    /// Records the magnitudes found by scanning the inputs, and checks that the scores they
    /// allow can be carried in f32 at all (see [`ScoreTransform`]), soft-cap included.
    pub fn with_magnitudes(mut self, q: f32, k: f32, v: f32) -> Result<Self> {
        self.q.max_abs = Some(q);
        self.k.max_abs = Some(k);
        self.v.max_abs = Some(v);
        self.score_options().cap_factors(&self.transform()?)?;
        Ok(self)
    }

    /// Bound on |q·k| from the known magnitudes.
    fn dot_bound(&self) -> Option<f64> {
        // in the fixed reduction order, one transform whatever the inputs' magnitudes
        if self.fixed_order {
            return None;
        }
        Some(self.dims.d as f64 * self.q.max_abs? as f64 * self.k.max_abs? as f64)
    }

    /// How the kernels carry the scores (see [`ScoreTransform`]).
    pub fn transform(&self) -> Result<ScoreTransform> {
        ScoreTransform::new(self.scale, self.dot_bound())
    }

    /// `(pre, post)` for V: the output accumulator sums at most `nk` values of |v| times weights <= 1.
    pub fn v_prescale(&self) -> (f32, f32) {
        if self.fixed_order {
            return sum_prescale(None);
        }
        sum_prescale(self.v.max_abs.map(|m| self.dims.nk as f64 * m as f64))
    }

    /// Shape of the output (that of `q`).
    pub fn out_shape(&self) -> Shape {
        self.q.shape
    }

    /// Shape of the log-sum-exp output, `[batch, heads, nq, 1]`.
    pub fn lse_shape(&self) -> Shape {
        Shape::new(self.dims.batch, self.dims.heads, self.dims.nq, 1)
    }

    /// Shape of the scores and weights of the unfused path, `[batch, heads, nq, nk]`.
    pub fn scores_shape(&self) -> Shape {
        Shape::new(self.dims.batch, self.dims.heads, self.dims.nq, self.dims.nk)
    }

    /// Checks caller-provided outputs: `out` like `q` (any layout), `lse` f32 `[b, h, nq, 1]`.
    pub fn check_outputs(&self, out: &Operand, lse: Option<&Operand>) -> Result<()> {
        check_output("out", out, self.out_shape(), self.dtype)?;
        if let Some(l) = lse {
            check_output("lse", l, self.lse_shape(), DType::F32)?;
        }
        Ok(())
    }

    /// Checks the caller-provided weights of the unfused path: f32 `[b, h, nq, nk]`.
    pub fn check_weights(&self, w: &Operand) -> Result<()> {
        check_output("weights", w, self.scores_shape(), DType::F32)
    }

    /// The layout of the output tensors this crate allocates (that of `q`).
    pub fn out_layout(&self) -> Layout {
        self.q.layout
    }

    /// FLOPs of the call (FlashAttention convention: 4·B·H·Nq·Nk·D, halved when causal).
    #[allow(dead_code)]
    pub fn flops(&self) -> f64 {
        let d = self.dims;
        4.0 * d.slices() as f64 * d.nq as f64 * d.nk as f64 * d.d as f64 / if self.causal { 2.0 } else { 1.0 }
    }
}

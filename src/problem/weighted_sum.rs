//! Weighted sum `O = P·V` (`shaders/weighted_sum.wgsl`, `cpu::weighted_sum`).

use super::{check_operand, check_output, same_dtype, sum_prescale, Operand};
use crate::error::{Error, Result};
use crate::shape::{DType, Shape};

/// A checked weighted sum: weights `[batch, heads, nq, nk]` (f32) times values
/// `[batch, kv_heads, nk, d]`.
#[derive(Clone, Debug)]
pub(crate) struct WeightedSumProblem {
    pub weights: Operand,
    pub v: Operand,
    pub group: usize,
}

impl WeightedSumProblem {
    /// Checks, in this order: `weights`, `v` each; `v` against `weights` (batch; seq = the
    /// weights' last dimension; heads divisible); the weights' dtype (f32).
    pub fn new(weights: Operand, v: Operand) -> Result<Self> {
        check_operand("weights", &weights)?;
        check_operand("v", &v)?;
        let (w, vs) = (weights.shape, v.shape);
        for (dim, got, expected) in [("batch", vs.batch, w.batch), ("seq", vs.seq, w.dim)] {
            if got != expected {
                return Err(Error::ShapeMismatch { argument: "v", other: "weights", dim, got, expected });
            }
        }
        if !w.heads.is_multiple_of(vs.heads) {
            return Err(Error::HeadsNotDivisible { argument: "v", q_heads: w.heads, kv_heads: vs.heads });
        }
        same_dtype("weights", &weights, DType::F32)?;
        Ok(WeightedSumProblem { weights, v, group: w.heads / vs.heads })
    }

    /// The weighted-sum step of a checked attention call (weights in [0, 1]), without checking again.
    pub fn of_attention(p: &super::AttentionProblem) -> Self {
        let weights = Operand {
            shape: p.scores_shape(),
            layout: crate::shape::Layout::Bhsd,
            dtype: DType::F32,
            max_abs: Some(1.0),
        };
        WeightedSumProblem { weights, v: p.v, group: p.dims.group() }
    }

    /// Records the magnitudes found by scanning the inputs.
    pub fn with_magnitudes(mut self, w: f32, v: f32) -> Self {
        self.weights.max_abs = Some(w);
        self.v.max_abs = Some(v);
        self
    }

    /// Shape of the output `[batch, heads, nq, d]`, dtype of `v`.
    pub fn out_shape(&self) -> Shape {
        let w = self.weights.shape;
        Shape::new(w.batch, w.heads, w.seq, self.v.shape.dim)
    }

    /// Checks a caller-provided output.
    pub fn check_output(&self, out: &Operand) -> Result<()> {
        check_output("out", out, self.out_shape(), self.v.dtype)
    }

    /// `(pre, post)` for V: each output sums `nk` products |w|·|v|.
    pub fn v_prescale(&self) -> (f32, f32) {
        let nk = self.weights.shape.dim as f64;
        sum_prescale(match (self.weights.max_abs, self.v.max_abs) {
            (Some(w), Some(v)) => Some(nk * w as f64 * v as f64),
            _ => None,
        })
    }
}

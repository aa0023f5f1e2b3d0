//! Softmax over the last dimension (`shaders/softmax.wgsl`, `cpu::softmax`).

use super::{
    check_key_lengths, check_mask, check_operand, check_output, MaskSpec, Operand, ScoreOptions, ScoreTransform,
};
use crate::error::Result;
use crate::options::SoftmaxOptions;

/// A checked softmax call over `x` = `[batch, heads, rows, cols]`.
#[derive(Clone, Debug)]
pub(crate) struct SoftmaxProblem<'a> {
    pub x: Operand,
    pub causal: bool,
    pub key_lengths: Option<&'a [u32]>,
    pub temperature: f32,
    /// Attention's score options, for the unfused attention (none for a plain softmax).
    pub score: ScoreOptions<'a>,
}

impl<'a> SoftmaxProblem<'a> {
    /// Checks, in this order: `x` (non-empty, countable), the mask's shape, key lengths (one per
    /// batch, each at most `cols`), the temperature.
    pub fn new(x: Operand, mask: Option<MaskSpec>, opts: &SoftmaxOptions<'a>) -> Result<Self> {
        check_operand("x", &x)?;
        let s = x.shape;
        if let Some(m) = &mask {
            check_mask(m, s.batch, s.heads, s.seq, s.dim)?;
        }
        check_key_lengths(opts.key_lengths, s.batch, s.dim)?;
        super::check_multiplier("temperature", opts.temperature, false, "the temperature")?;
        Ok(SoftmaxProblem {
            x,
            causal: opts.causal,
            key_lengths: opts.key_lengths,
            temperature: opts.temperature,
            score: ScoreOptions::default(),
        })
    }

    /// The softmax step of a checked attention call over its f32 scores, without checking again.
    pub fn of_attention(p: &super::AttentionProblem<'a>) -> Self {
        let x = Operand {
            shape: p.scores_shape(),
            layout: crate::shape::Layout::Bhsd,
            dtype: crate::shape::DType::F32,
            max_abs: None,
        };
        SoftmaxProblem { x, causal: p.causal, key_lengths: p.key_lengths, temperature: 1.0, score: p.score_options() }
    }

    /// How the kernel carries the scores `x / temperature + mask` (any finite x fits).
    pub fn transform(&self) -> Result<ScoreTransform> {
        ScoreTransform::new((1.0 / self.temperature as f64) as f32, None)
    }

    /// Checks a caller-provided output: `x`'s shape and dtype (any layout).
    pub fn check_output(&self, out: &Operand) -> Result<()> {
        check_output("out", out, self.x.shape, self.x.dtype)
    }
}

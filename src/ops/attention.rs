//! Attention on [`Context`]: fused, split-K and unfused (`crate::kernels::attention` and the
//! similarity → softmax → weighted-sum chain).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention::{resolve, AttentionPlan, KvSource, Resolved};
use crate::kernels::{similarity, softmax, weighted_sum};
use crate::options::AttentionOptions;
use crate::problem::{AttentionProblem, MaskSpec, Operand, SimilarityProblem, SoftmaxProblem, WeightedSumProblem};
use crate::shape::{DType, Layout};
use crate::tensor::{Mask, Tensor};

impl Context {
    /// The checked problem of an attention call on this context's tensors.
    fn attention_problem<'a>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions<'a>,
    ) -> Result<AttentionProblem<'a>> {
        let p =
            AttentionProblem::new(Operand::gpu(q), Operand::gpu(k), Operand::gpu(v), mask.map(MaskSpec::gpu), opts)?;
        self.check_tensors(&[("q", q), ("k", k), ("v", v)], mask)?;
        Ok(p)
    }

    /// What an attention call would run here: the variant (chosen, or checked when forced in
    /// `opts.variant`), its tile, its splits and its scratch memory. `lse`: whether the
    /// log-sum-exp is wanted (the unfused variant does not produce it).
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let q = ctx.zeros(Shape::new(1, 32, 1, 128), Layout::Bhsd, DType::F32)?;
    /// let kv = ctx.zeros(Shape::new(1, 8, 32768, 128), Layout::Bhsd, DType::F32)?;
    /// let plan = ctx.plan_attention(&q, &kv, &kv, None, &AttentionOptions::default(), false)?;
    /// println!("{} with {} splits: {}", plan.variant, plan.splits, plan.reason);
    /// # Ok(()) }
    /// ```
    pub fn plan_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
        lse: bool,
    ) -> Result<AttentionPlan> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        self.check_alive_now()?;
        Ok(resolve(&p, self.caps(), aligned(q, k, v), lse, false)?.1)
    }

    /// Fused attention `O = softmax(scale · Q Kᵀ + mask) V` into a new tensor shaped, typed and
    /// laid out like `q`. The nq×nk scores are never stored (unless the unfused variant is
    /// forced, or chosen on a device too small for the fused kernels).
    ///
    /// `k` and `v` are `[batch, kv_heads, nk, d]` with `kv_heads` dividing `q`'s heads (GQA/MQA);
    /// `mask` is `[mb, mh, nq, nk]`. See [`AttentionOptions`] for scale, causal alignment, key
    /// lengths and the kernel variant. Rows with every key masked give zeros.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let shape = Shape::new(1, 2, 5, 8);
    /// let data: Vec<f32> = (0..shape.numel()).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let q = ctx.upload(&data, shape)?;
    /// let opts = AttentionOptions { causal: true, ..Default::default() };
    /// let out = ctx.attention(&q, &q, &q, None, &opts)?.download_blocking(&ctx)?;
    /// assert_eq!(out.len(), shape.numel());
    /// # Ok(()) }
    /// ```
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        Ok(self.attention_checked(&p, (q, k, v), mask, false)?.0)
    }

    /// Like [`Context::attention`], also returning the per-row natural log-sum-exp of the kept
    /// scaled scores, an f32 tensor `[batch, heads, nq, 1]` (`-inf` for fully masked rows).
    pub fn attention_with_lse(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        let (out, lse) = self.attention_checked(&p, (q, k, v), mask, true)?;
        Ok((out, lse.ok_or_else(|| crate::Error::Gpu("no log-sum-exp recorded".into()))?))
    }

    /// Attention for a checked problem (tensors already checked against this context): the
    /// output and, if `with_lse`, the log-sum-exp.
    pub(crate) fn attention_checked(
        &self,
        p: &AttentionProblem,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        with_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let out = self.zeros(p.out_shape(), p.out_layout(), p.dtype)?;
        let lse = with_lse.then(|| self.zeros(p.lse_shape(), Layout::Bhsd, DType::F32)).transpose()?;
        self.submit(|enc| self.record_attention(enc, p, (q, k, v), mask, &out, lse.as_ref()))?;
        Ok((Tensor { max_abs: p.v.max_abs, ..out }, lse))
    }

    /// Records attention into `encoder`: no submit, no readback. `out` has `q`'s shape and dtype
    /// (any layout); `lse`, if given, is f32 `[batch, heads, nq, 1]`. Outputs may not share a
    /// buffer with `q`, `k`, `v` or the mask ([`Error::Aliasing`](crate::Error::Aliasing)).
    ///
    /// Split-K allocates a temporary f32 buffer of `splits · batch · heads · nq · (d + 2)`
    /// partials for the call; the unfused variant two of `batch · heads · nq · nk` scores.
    /// [`Context`] lists the errors that surface only at the caller's `finish()` or `submit()`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        p.check_outputs(&Operand::gpu(out), lse.map(Operand::gpu).as_ref())?;
        let mut outs = vec![("out", out)];
        outs.extend(lse.map(|l| ("lse", l)));
        self.check_tensors(&outs, None)?;
        self.record_attention(encoder, &p, (q, k, v), mask, out, lse)
    }

    /// Records a checked attention call: resolves the variant, checks aliasing, launches.
    fn record_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &AttentionProblem,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let mut outputs = vec![Region::tensor("out", out)];
        outputs.extend(lse.map(|l| Region::tensor("lse", l)));
        check_aliasing(&outputs, &inputs(q, k, v, mask))?;
        let (resolved, _) = resolve(p, self.caps(), aligned(q, k, v), lse.is_some(), false)?;
        match resolved {
            Resolved::Unfused => {
                let weights = self.zeros(p.scores_shape(), Layout::Bhsd, DType::F32)?;
                self.record_unfused(encoder, p, (q, k, v), mask, out, &weights)
            }
            fused => {
                let kv = KvSource::Tensors(k, v);
                crate::kernels::attention::record(self, encoder, p, fused, q, kv, mask, out, lse)
            }
        }
    }

    /// The unfused chain for a checked problem: scores into a temporary buffer, softmax into
    /// `weights`, weighted sum into `out`.
    fn record_unfused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &AttentionProblem,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        out: &Tensor,
        weights: &Tensor,
    ) -> Result<()> {
        let scores = self.zeros(p.scores_shape(), Layout::Bhsd, DType::F32)?;
        similarity::record(self, encoder, &SimilarityProblem::of_attention(p), q, k, &scores)?;
        softmax::record(self, encoder, &SoftmaxProblem::of_attention(p), &scores, mask, weights)?;
        weighted_sum::record(self, encoder, &WeightedSumProblem::of_attention(p), weights, v, out)
    }

    /// Unfused attention, step by step: scores (scaled dot), softmax with the same masking,
    /// then weights · V. Returns `(output, weights)`: output like `q`; weights f32
    /// `[batch, heads, nq, nk]`. Same semantics as [`Context::attention`], except that the
    /// scores are stored in f32, so scores beyond f32's range saturate before the softmax.
    pub fn attention_unfused(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        self.attention_unfused_checked(&p, (q, k, v), mask)
    }

    /// Unfused attention for a checked problem: `(output, weights)`.
    pub(crate) fn attention_unfused_checked(
        &self,
        p: &AttentionProblem,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
    ) -> Result<(Tensor, Tensor)> {
        let out = self.zeros(p.out_shape(), p.out_layout(), p.dtype)?;
        let weights = self.zeros(p.scores_shape(), Layout::Bhsd, DType::F32)?;
        self.submit(|enc| self.record_unfused(enc, p, (q, k, v), mask, &out, &weights))?;
        Ok((Tensor { max_abs: p.v.max_abs, ..out }, Tensor { max_abs: Some(1.0), ..weights }))
    }

    /// Records unfused attention into `encoder`: `weights` (f32 `[batch, heads, nq, nk]`)
    /// receives the softmax weights and `out` the output. The raw scores go to a temporary
    /// buffer of the same size, allocated here. Outputs may not share a buffer with the inputs,
    /// nor overlap each other.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_attention_unfused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
        out: &Tensor,
        weights: &Tensor,
    ) -> Result<()> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        p.check_weights(&Operand::gpu(weights))?;
        p.check_outputs(&Operand::gpu(out), None)?;
        self.check_tensors(&[("out", out), ("weights", weights)], None)?;
        let outputs = [Region::tensor("weights", weights), Region::tensor("out", out)];
        let mut ins = inputs(q, k, v, mask);
        // the weighted sum reads the weights while it writes the output
        ins.push(Region::tensor("weights", weights));
        check_aliasing(&outputs[1..], &ins)?;
        check_aliasing(&outputs[..1], &inputs(q, k, v, mask))?;
        self.record_unfused(encoder, &p, (q, k, v), mask, out, weights)
    }
}

/// The buffers an attention call reads.
fn inputs<'a>(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, mask: Option<&'a Mask>) -> Vec<Region<'a>> {
    let mut v = vec![Region::tensor("q", q), Region::tensor("k", k), Region::tensor("v", v)];
    v.extend(mask.map(Region::mask));
    v
}

/// Whether Q, K and V start on multiples of 4 elements (vector loads; windows start 16-byte
/// aligned, so the bound views keep that alignment).
fn aligned(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v].iter().all(|t| t.offset.is_multiple_of(4))
}

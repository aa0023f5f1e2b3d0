//! Attention on [`Context`]: fused, split-K and unfused (`crate::kernels::attention` and the
//! similarity → softmax → weighted-sum chain).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention_plan::{AttentionPlan, Resolved};
use crate::launch::attention::KvSource;
use crate::launch::{similarity, softmax, weighted_sum};
use crate::options::AttentionOptions;
use crate::problem::{AttentionProblem, MaskSpec, Operand, SimilarityProblem, SoftmaxProblem, WeightedSumProblem};
use crate::shape::{DType, Layout};
use crate::tensor::{Mask, Tensor};

impl Context {
    /// The checked problem of an attention call on this context's tensors.
    pub(crate) fn attention_problem<'a>(
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
        let whole = self.whole_fits(&[q, k, v], mask);
        Ok(pollster::block_on(self.resolve_attention(&p, aligned(q, k, v), lse, false, whole))?.1)
    }

    /// Every kernel variant and configuration that could run this call on this device: the
    /// candidates a sweep (`attn-bench --sweep`) or the tuner (`Tuning::OnFirstUse`) times.
    /// Each plan's `variant` and `config`, passed back in [`AttentionOptions`], run that
    /// candidate; `opts.variant` and `opts.config` are ignored here. The tensor-core kernel's
    /// candidates are listed before its self-check for their class has run: a class that then
    /// fails is refused when forced.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let x = ctx.zeros(Shape::new(1, 16, 4096, 128), Layout::Bhsd, DType::F16)?;
    /// for plan in ctx.attention_candidates(&x, &x, &x, None, &AttentionOptions::default(), false)? {
    ///     let opts = AttentionOptions { variant: plan.variant, config: plan.config, ..Default::default() };
    ///     let out = ctx.attention(&x, &x, &x, None, &opts)?;
    ///     # let _ = out;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn attention_candidates(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
        lse: bool,
    ) -> Result<Vec<AttentionPlan>> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        self.check_alive_now()?;
        let tc = pollster::block_on(self.tensor_core_choice(p.dtype, p.f32_on_tensor_cores));
        let whole = self.whole_fits(&[q, k, v], mask);
        Ok(crate::kernels::attention_plan::candidates(&p, self.caps(), aligned(q, k, v), lse, false, whole, &tc)
            .into_iter()
            .map(|c| c.1)
            .collect())
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
        pollster::block_on(self.attention_async(q, k, v, mask, opts))
    }

    /// Async twin of [`Context::attention`]: allocations, pipeline compilation and submission
    /// are checked through error scopes that are awaited, never blocked on.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # async fn run(ctx: &Context, q: &Tensor) -> Result<Vec<f32>> {
    /// let out = ctx.attention_async(q, q, q, None, &AttentionOptions::default()).await?;
    /// out.download(ctx).await
    /// # }
    /// ```
    pub async fn attention_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        Ok(self.attention_checked(&p, (q, k, v), mask, false).await?.0)
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
        pollster::block_on(self.attention_with_lse_async(q, k, v, mask, opts))
    }

    /// Async twin of [`Context::attention_with_lse`].
    pub async fn attention_with_lse_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        let (out, lse) = self.attention_checked(&p, (q, k, v), mask, true).await?;
        Ok((out, lse.ok_or_else(|| crate::Error::Gpu("no log-sum-exp recorded".into()))?))
    }

    /// Attention for a checked problem (tensors already checked against this context): the
    /// output and, if `with_lse`, the log-sum-exp.
    pub(crate) async fn attention_checked(
        &self,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        with_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let out = self.zeros_async(p.out_shape(), p.out_layout(), p.dtype).await?;
        let lse = match with_lse {
            true => Some(self.zeros_async(p.lse_shape(), Layout::Bhsd, DType::F32).await?),
            false => None,
        };
        let mut enc = self.encoder()?;
        self.record_attention(&mut enc, p, (q, k, v), mask, &out, lse.as_ref()).await?;
        self.submit_async(enc).await?;
        Ok((Tensor { max_abs: p.v.max_abs, ..out }, lse))
    }

    /// Records attention into `encoder`: no submit, no readback. The call's tensors are named
    /// in an [`AttentionCall`]: `out` has `q`'s shape and dtype (any layout, or a strided view);
    /// `lse`, if given, is f32 `[batch, heads, nq, 1]`. Outputs may not share a buffer with `q`,
    /// `k`, `v` or the mask ([`Error::Aliasing`](crate::Error::Aliasing)).
    ///
    /// Split-K allocates a temporary f32 buffer of `splits · batch · heads · nq · (d + 2)`
    /// partials for the call; the unfused variant two of `batch · heads · nq · nk` scores.
    /// [`Context`] lists the errors that surface only at the caller's `finish()` or `submit()`.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let shape = Shape::new(1, 4, 64, 32);
    /// let (q, k, v) = (ctx.zeros(shape, Layout::Bhsd, DType::F32)?, ctx.zeros(shape, Layout::Bhsd, DType::F32)?, ctx.zeros(shape, Layout::Bhsd, DType::F32)?);
    /// let out = ctx.zeros(shape, Layout::Bhsd, DType::F32)?;
    /// let lse = ctx.zeros(Shape::new(1, 4, 64, 1), Layout::Bhsd, DType::F32)?;
    /// let mut encoder = ctx.device().create_command_encoder(&Default::default());
    /// let call = AttentionCall { q: &q, k: &k, v: &v, mask: None, out: &out, lse: Some(&lse) };
    /// ctx.encode_attention(&mut encoder, &call, &AttentionOptions { causal: true, ..Default::default() })?;
    /// ctx.queue().submit([encoder.finish()]);
    /// # Ok(()) }
    /// ```
    pub fn encode_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &AttentionCall,
        opts: &AttentionOptions,
    ) -> Result<()> {
        let AttentionCall { q, k, v, mask, out, lse } = *call;
        let p = self.attention_problem(q, k, v, mask, opts)?;
        p.check_outputs(&Operand::gpu(out), lse.map(Operand::gpu).as_ref())?;
        let mut outs = vec![("out", out)];
        outs.extend(lse.map(|l| ("lse", l)));
        self.check_outputs(&outs)?;
        pollster::block_on(self.record_attention(encoder, &p, (q, k, v), mask, out, lse))
    }

    /// Records a checked attention call: resolves the variant, checks aliasing, launches.
    pub(crate) async fn record_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let mut outputs = vec![Region::tensor("out", out)];
        outputs.extend(lse.map(|l| Region::tensor("lse", l)));
        check_aliasing(&outputs, &inputs(q, k, v, mask))?;
        let whole = self.whole_fits(&[q, k, v], mask);
        self.tune_if_new(p, (q, k, v), mask, aligned(q, k, v), lse.is_some(), whole).await;
        let (resolved, _) = self.resolve_attention(p, aligned(q, k, v), lse.is_some(), false, whole).await?;
        match resolved {
            Resolved::Unfused => {
                let weights = self.zeros_async(p.scores_shape(), Layout::Bhsd, DType::F32).await?;
                self.record_unfused(encoder, p, (q, k, v), mask, out, &weights).await
            }
            fused => {
                let kv = KvSource::Tensors(k, v);
                crate::launch::attention::record(self, encoder, p, fused, q, kv, mask, out, lse).await
            }
        }
    }

    /// The unfused chain for a checked problem: scores into a temporary buffer, softmax into
    /// `weights`, weighted sum into `out`.
    async fn record_unfused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        out: &Tensor,
        weights: &Tensor,
    ) -> Result<()> {
        let scores = self.zeros_async(p.scores_shape(), Layout::Bhsd, DType::F32).await?;
        // the scores' kernel as similarity's entries say (never timed here)
        let sp = SimilarityProblem::of_attention(p);
        let (mma, _) = self.similarity_route(&sp, None).await?;
        similarity::record(self, encoder, &sp, q, k, &scores, None, mma).await?;
        softmax::record(self, encoder, &SoftmaxProblem::of_attention(p), &scores, mask, weights).await?;
        weighted_sum::record(self, encoder, &WeightedSumProblem::of_attention(p), weights, v, out).await
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
        pollster::block_on(self.attention_unfused_async(q, k, v, mask, opts))
    }

    /// Async twin of [`Context::attention_unfused`].
    pub async fn attention_unfused_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let p = self.attention_problem(q, k, v, mask, opts)?;
        self.attention_unfused_checked(&p, (q, k, v), mask).await
    }

    /// Unfused attention for a checked problem: `(output, weights)`.
    pub(crate) async fn attention_unfused_checked(
        &self,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
    ) -> Result<(Tensor, Tensor)> {
        let out = self.zeros_async(p.out_shape(), p.out_layout(), p.dtype).await?;
        let weights = self.zeros_async(p.scores_shape(), Layout::Bhsd, DType::F32).await?;
        let mut enc = self.encoder()?;
        self.record_unfused(&mut enc, p, (q, k, v), mask, &out, &weights).await?;
        self.submit_async(enc).await?;
        Ok((Tensor { max_abs: p.v.max_abs, ..out }, Tensor { max_abs: Some(1.0), ..weights }))
    }

    /// Records unfused attention into `encoder`: `weights` (f32 `[batch, heads, nq, nk]`)
    /// receives the softmax weights and `call.out` the output (`call.lse` must be `None`: the
    /// unfused chain has no log-sum-exp). The raw scores go to a temporary buffer of the same
    /// size, allocated here. Outputs may not share a buffer with the inputs, nor overlap each
    /// other.
    pub fn encode_attention_unfused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &AttentionCall,
        weights: &Tensor,
        opts: &AttentionOptions,
    ) -> Result<()> {
        let AttentionCall { q, k, v, mask, out, lse } = *call;
        if lse.is_some() {
            return Err(crate::Error::InvalidArgument {
                argument: "lse",
                message: "the unfused variant does not produce the log-sum-exp; pass None".into(),
            });
        }
        let p = self.attention_problem(q, k, v, mask, opts)?;
        p.check_weights(&Operand::gpu(weights))?;
        p.check_outputs(&Operand::gpu(out), None)?;
        self.check_outputs(&[("out", out), ("weights", weights)])?;
        let outputs = [Region::tensor("weights", weights), Region::tensor("out", out)];
        let mut ins = inputs(q, k, v, mask);
        // the weighted sum reads the weights while it writes the output
        ins.push(Region::tensor("weights", weights));
        check_aliasing(&outputs[1..], &ins)?;
        check_aliasing(&outputs[..1], &inputs(q, k, v, mask))?;
        pollster::block_on(self.record_unfused(encoder, &p, (q, k, v), mask, out, weights))
    }
}

/// The tensors of one recorded attention call ([`Context::encode_attention`],
/// [`Context::encode_attention_unfused`]), named rather than positional.
///
/// ```
/// # use wgpu_attention::*;
/// # fn f(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, lse: &Tensor) {
/// let call = AttentionCall { q, k, v, mask: None, out, lse: Some(lse) };
/// // or: AttentionCall::new(q, k, v, out).with_lse(lse)
/// # let _ = call; }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AttentionCall<'a> {
    /// Queries `[batch, heads, nq, d]`.
    pub q: &'a Tensor,
    /// Keys `[batch, kv_heads, nk, d]`.
    pub k: &'a Tensor,
    /// Values `[batch, kv_heads, nk, d]`.
    pub v: &'a Tensor,
    /// Optional mask `[mb, mh, nq, nk]`.
    pub mask: Option<&'a Mask>,
    /// Output, `q`'s shape and dtype.
    pub out: &'a Tensor,
    /// Optional log-sum-exp output, f32 `[batch, heads, nq, 1]`.
    pub lse: Option<&'a Tensor>,
}

impl<'a> AttentionCall<'a> {
    /// Inputs and output, with no mask and no log-sum-exp.
    pub fn new(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, out: &'a Tensor) -> Self {
        AttentionCall { q, k, v, mask: None, out, lse: None }
    }
    /// With a mask.
    pub fn with_mask(self, mask: &'a Mask) -> Self {
        AttentionCall { mask: Some(mask), ..self }
    }
    /// With a log-sum-exp output.
    pub fn with_lse(self, lse: &'a Tensor) -> Self {
        AttentionCall { lse: Some(lse), ..self }
    }
}

/// The buffers an attention call reads.
fn inputs<'a>(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, mask: Option<&'a Mask>) -> Vec<Region<'a>> {
    let mut v = vec![Region::tensor("q", q), Region::tensor("k", k), Region::tensor("v", v)];
    v.extend(mask.map(Region::mask));
    v
}

/// Whether every row of Q, K and V starts on a multiple of 4 elements (vector loads; windows
/// start 16-byte aligned, so the bound views keep that alignment).
impl Context {
    /// Whether each buffer of `tensors` (and of `mask`) fits one binding whole.
    pub(crate) fn whole_fits(&self, tensors: &[&Tensor], mask: Option<&Mask>) -> bool {
        let max = self.caps().max_binding;
        tensors.iter().all(|t| t.buffer().size() <= max) && mask.is_none_or(|m| m.buffer.size() <= max)
    }
}

fn aligned(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v].iter().all(|t| t.vec4_aligned())
}

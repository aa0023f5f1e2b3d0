//! The backward pass of attention on the GPU ([`Context::attention_backward`]): dQ, dK, dV (and
//! the sink logits' gradient) from the forward's inputs, output and log-sum-exp and the output's
//! gradient, in three to five dispatches of `shaders/attention_backward.wgsl` (FlashAttention-2's shape:
//! no `nq x nk` buffer, no atomics, the same bits run to run).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::backward_call::{AttentionBackwardCall, AttentionGradOutputs, AttentionGradTensors};
use crate::launch::attention_backward::record;
use crate::options::AttentionOptions;
use crate::problem::{AttentionProblem, Operand};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

impl Context {
    /// The gradients of attention with respect to `q`, `k`, `v` (and the sink logits): the
    /// backward of [`Context::attention_with_lse`] with the same options. Every forward option
    /// differentiates: causal, key lengths, boolean and additive masks (constants: no
    /// gradient), sliding windows, soft-capping (through its tanh), ALiBi (constant slopes),
    /// sinks (`d_sinks`), GQA/MQA (`dk`, `dv` summed over each group), the scale; every head dim
    /// the forward takes (up to [`MAX_HEAD_DIM`](crate::MAX_HEAD_DIM)). Rows whose log-sum-exp is
    /// not finite (`-inf`: nothing kept) get zero gradients. Results are f32 whatever the
    /// inputs' dtype (f16 inputs are widened; sums run in f32) and saturate at ±`f32::MAX`.
    ///
    /// Values that the GPU holds are not scanned: a NaN in `o`, `d_o` or `lse` gives
    /// unspecified (finite) gradients. The options' `variant` and `fixed_order` choose among
    /// forward kernels and do not apply here (the backward has one kernel family, and its
    /// results are always the same bits run to run); of `config`, only `backward_keys` applies
    /// (the other fields name forward kernels).
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let s = Shape::new(1, 2, 5, 8);
    /// let x: Vec<f32> = (0..s.numel()).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let t = ctx.upload(&x, s)?;
    /// let opts = AttentionOptions { causal: true, ..Default::default() };
    /// // forward with the log-sum-exp, then backward with dL/dO = 1 everywhere
    /// let (o, lse) = ctx.attention_with_lse(&t, &t, &t, None, &opts)?;
    /// let d_o = ctx.upload(&vec![1.0f32; s.numel()], s)?;
    /// let call = AttentionBackwardCall { q: &t, k: &t, v: &t, mask: None, o: &o, lse: &lse, d_o: &d_o };
    /// let g = ctx.attention_backward(&call, &opts)?;
    /// assert_eq!(g.dq.download_blocking(&ctx)?.len(), s.numel());
    /// # Ok(()) }
    /// ```
    pub fn attention_backward(
        &self,
        call: &AttentionBackwardCall,
        opts: &AttentionOptions,
    ) -> Result<AttentionGradTensors> {
        pollster::block_on(self.attention_backward_async(call, opts))
    }

    /// Async twin of [`Context::attention_backward`].
    pub async fn attention_backward_async(
        &self,
        call: &AttentionBackwardCall<'_>,
        opts: &AttentionOptions<'_>,
    ) -> Result<AttentionGradTensors> {
        let p = self.backward_problem(call, opts)?;
        let d = p.dims;
        let dq = self.zeros_async(p.q.shape, Layout::Bhsd, DType::F32).await?;
        let dk = self.zeros_async(p.k.shape, Layout::Bhsd, DType::F32).await?;
        let dv = self.zeros_async(p.k.shape, Layout::Bhsd, DType::F32).await?;
        let d_sinks = match opts.sinks {
            Some(_) => Some(self.zeros_async(Shape::new(1, d.heads, 1, 1), Layout::Bhsd, DType::F32).await?),
            None => None,
        };
        let outs = AttentionGradOutputs { dq: &dq, dk: &dk, dv: &dv, d_sinks: d_sinks.as_ref() };
        let mut enc = self.encoder()?;
        self.record_backward(&mut enc, &p, call, &outs).await?;
        self.submit_async(enc).await?;
        Ok(AttentionGradTensors { dq, dk, dv, d_sinks })
    }

    /// Records [`Context::attention_backward`] into `encoder`, writing the caller's tensors
    /// (see [`AttentionGradOutputs`]): no submit, no readback. The gradients may not share a
    /// buffer with an input ([`Error::Aliasing`]) or with each other.
    pub fn encode_attention_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &AttentionBackwardCall,
        grads: &AttentionGradOutputs,
        opts: &AttentionOptions,
    ) -> Result<()> {
        let p = self.backward_problem(call, opts)?;
        let heads = p.dims.heads;
        let sinks_shape = Shape::new(1, heads, 1, 1);
        for (name, t, shape) in [("dq", grads.dq, p.q.shape), ("dk", grads.dk, p.k.shape), ("dv", grads.dv, p.k.shape)]
            .into_iter()
            .chain(grads.d_sinks.map(|t| ("d_sinks", t, sinks_shape)))
        {
            check_grad_tensor(name, t, shape)?;
        }
        match (opts.sinks.is_some(), grads.d_sinks.is_some()) {
            (true, false) => {
                return Err(Error::InvalidArgument {
                    argument: "d_sinks",
                    message: "the call has sinks: give d_sinks".into(),
                })
            }
            (false, true) => {
                return Err(Error::InvalidArgument { argument: "d_sinks", message: "the call has no sinks".into() })
            }
            _ => {}
        }
        let mut outs = vec![("dq", grads.dq), ("dk", grads.dk), ("dv", grads.dv)];
        outs.extend(grads.d_sinks.map(|t| ("d_sinks", t)));
        self.check_outputs(&outs)?;
        let outs = *grads;
        pollster::block_on(self.record_backward(encoder, &p, call, &outs))
    }

    /// The checked problem of a backward call: the forward's checks, then `o`, `d_o` and
    /// `lse`, then the context's checks of every tensor.
    fn backward_problem<'a>(
        &self,
        call: &AttentionBackwardCall,
        opts: &AttentionOptions<'a>,
    ) -> Result<AttentionProblem<'a>> {
        let p = self.attention_problem(call.q, call.k, call.v, call.mask, opts)?;
        crate::problem::backward::check_tensors(
            &p,
            &Operand::gpu(call.o),
            &Operand::gpu(call.d_o),
            &Operand::gpu(call.lse),
        )?;
        self.check_tensors(&[("o", call.o), ("d_o", call.d_o), ("lse", call.lse)], None)?;
        Ok(p)
    }

    async fn record_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &AttentionProblem<'_>,
        call: &AttentionBackwardCall<'_>,
        outs: &AttentionGradOutputs<'_>,
    ) -> Result<()> {
        let mut outputs =
            vec![Region::tensor("dq", outs.dq), Region::tensor("dk", outs.dk), Region::tensor("dv", outs.dv)];
        outputs.extend(outs.d_sinks.map(|t| Region::tensor("d_sinks", t)));
        let mut inputs = vec![
            Region::tensor("q", call.q),
            Region::tensor("k", call.k),
            Region::tensor("v", call.v),
            Region::tensor("o", call.o),
            Region::tensor("lse", call.lse),
            Region::tensor("d_o", call.d_o),
        ];
        inputs.extend(call.mask.map(Region::mask));
        check_aliasing(&outputs, &inputs)?;
        record(self, encoder, p, call, outs).await
    }
}

/// A caller's gradient tensor: f32, `shape`, BHSD, contiguous from its buffer's start.
fn check_grad_tensor(argument: &'static str, t: &Tensor, shape: Shape) -> Result<()> {
    crate::problem::check_output(argument, &Operand::gpu(t), shape, DType::F32)?;
    if t.layout != Layout::Bhsd || !t.is_contiguous() || t.offset != 0 {
        return Err(Error::InvalidArgument {
            argument,
            message: "a gradient tensor must be BHSD and contiguous from the start of its buffer".into(),
        });
    }
    Ok(())
}

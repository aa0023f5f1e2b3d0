//! Packed variable-length attention with the offsets on the GPU ([`VarlenBuffers`]): the whole
//! pack in one dispatch of the fused SIMT kernel, which reads `cu_seqlens_q` and
//! `cu_seqlens_k` itself, so a serving step can build its pack on the GPU and never read it
//! back.

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::attention_plan::resolve;
use crate::launch::attention::KvSource;
use crate::options::{AttentionOptions, AttentionVariant, Loads};
use crate::problem::{AttentionProblem, Operand};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

/// The offsets of a pack held in device buffers (FlashAttention's `cu_seqlens_q` and
/// `cu_seqlens_k` as GPU tensors): the first `batch + 1` u32 words of each buffer, sequence
/// `b` owning query rows `cu_seqlens_q[b]..cu_seqlens_q[b + 1]` and key rows
/// `cu_seqlens_k[b]..cu_seqlens_k[b + 1]` of the packed tensors, as [`crate::Varlen`] says.
///
/// The buffers need `STORAGE` usage; [`Context::upload_offsets`] makes one from host offsets
/// (checked), and a step may write them with its own kernels or copies. Their contents are not
/// checked (that would take a readback): the kernel clamps every entry to the packed rows and
/// treats a decreasing pair as an empty sequence, so no offsets read or write outside the
/// tensors; rows that no valid sequence covers are not written.
#[derive(Debug, Clone, Copy)]
pub struct VarlenBuffers<'a> {
    /// `batch + 1` query offsets (u32, from the buffer's start).
    pub cu_seqlens_q: &'a wgpu::Buffer,
    /// `batch + 1` key offsets (u32, from the buffer's start).
    pub cu_seqlens_k: &'a wgpu::Buffer,
    /// Sequences in the pack (at least 1).
    pub batch: usize,
}

impl<'a> VarlenBuffers<'a> {
    /// The offsets of `batch` sequences, checked: `batch` at least 1 and below 2^31, each
    /// buffer holding at least `batch + 1` words with `STORAGE` usage (`Err(InvalidArgument)`
    /// naming `batch`, `cu_seqlens_q` or `cu_seqlens_k`).
    pub fn new(cu_seqlens_q: &'a wgpu::Buffer, cu_seqlens_k: &'a wgpu::Buffer, batch: usize) -> Result<Self> {
        if batch == 0 || batch >= i32::MAX as usize {
            return Err(Error::InvalidArgument {
                argument: "batch",
                message: format!("{batch} sequences: a pack holds 1 to 2^31 - 2"),
            });
        }
        for (argument, b) in [("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)] {
            let need = 4 * (batch as u64 + 1);
            if b.size() < need {
                return Err(Error::InvalidArgument {
                    argument,
                    message: format!("{} bytes, fewer than the {need} of {} u32 offsets", b.size(), batch + 1),
                });
            }
            if !b.usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(Error::InvalidArgument {
                    argument,
                    message: format!("usage {:?}: the kernel binds it as storage (BufferUsages::STORAGE)", b.usage()),
                });
            }
        }
        Ok(VarlenBuffers { cu_seqlens_q, cu_seqlens_k, batch })
    }

    fn regions(&self) -> [Region<'a>; 2] {
        let bytes = 4 * (self.batch as u64 + 1);
        [Region::words("cu_seqlens_q", self.cu_seqlens_q, bytes), Region::words("cu_seqlens_k", self.cu_seqlens_k, bytes)]
    }
}

/// The tensors of one recorded pack with device offsets
/// ([`Context::encode_attention_varlen_buffers`]).
#[derive(Debug, Clone, Copy)]
pub struct VarlenBuffersCall<'a> {
    /// Packed queries `[1, heads, total_q, dim]`.
    pub q: &'a Tensor,
    /// Packed keys `[1, kv_heads, total_k, dim]`.
    pub k: &'a Tensor,
    /// Packed values, as `k`.
    pub v: &'a Tensor,
    /// Each sequence's rows.
    pub offsets: &'a VarlenBuffers<'a>,
    /// Output, `q`'s shape and dtype (any layout).
    pub out: &'a Tensor,
    /// Optional log-sum-exp, f32 `[1, heads, total_q, 1]`.
    pub lse: Option<&'a Tensor>,
}

impl Context {
    /// A storage buffer holding `offsets` (checked as one offsets array of a pack: at least 2
    /// entries, from 0, never decreasing), for [`VarlenBuffers`].
    pub fn upload_offsets(&self, offsets: &[u32]) -> Result<wgpu::Buffer> {
        crate::varlen::check_offsets("offsets", offsets)?;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        pollster::block_on(self.buffer_with(bytemuck::cast_slice(offsets), usage, "cu_seqlens"))
    }

    /// [`Context::attention_varlen`] with the offsets in device buffers: the pack runs as one
    /// dispatch of the fused SIMT kernel (`AttentionVariant::Fused`, its vector or scalar
    /// loads), whose workgroups find their sequence in the offsets (README, "Packed
    /// variable-length sequences", for the grid). Every option of the host-offsets call but
    /// `fixed_order` (split-K only) and forced variants other than `Fused`; no tensor cores
    /// and no key splits, so a pack of few queries over long keys runs faster with host offsets.
    /// A sequence's output and log-sum-exp are bitwise the same whatever else is in the pack
    /// (they may differ in the last bits from the host-offsets call, which chooses a kernel per
    /// sequence).
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let s = Shape::new(1, 8, 8, 64);
    /// let qkv = ctx.upload_with_layout(&vec![0.1f32; s.numel()], s, Layout::Bshd)?;
    /// // two prompts of 3 and 5 tokens; a serving loop would write these buffers on the GPU
    /// let cu = ctx.upload_offsets(&[0, 3, 8])?;
    /// let offsets = VarlenBuffers::new(&cu, &cu, 2)?;
    /// let opts = AttentionOptions { causal: true, ..Default::default() };
    /// let out = ctx.attention_varlen_buffers(&qkv, &qkv, &qkv, &offsets, &opts)?;
    /// # let _ = out;
    /// # Ok(()) }
    /// ```
    pub fn attention_varlen_buffers(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offsets: &VarlenBuffers,
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        pollster::block_on(self.attention_varlen_buffers_async(q, k, v, offsets, opts))
    }

    /// Async twin of [`Context::attention_varlen_buffers`].
    pub async fn attention_varlen_buffers_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offsets: &VarlenBuffers<'_>,
        opts: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        Ok(self.varlen_buffers_checked(q, k, v, offsets, opts, false).await?.0)
    }

    /// Like [`Context::attention_varlen_buffers`], also returning the log-sum-exp (f32
    /// `[1, heads, total_q, 1]`).
    pub fn attention_varlen_buffers_with_lse(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offsets: &VarlenBuffers,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        pollster::block_on(self.attention_varlen_buffers_with_lse_async(q, k, v, offsets, opts))
    }

    /// Async twin of [`Context::attention_varlen_buffers_with_lse`].
    pub async fn attention_varlen_buffers_with_lse_async(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offsets: &VarlenBuffers<'_>,
        opts: &AttentionOptions<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let (out, lse) = self.varlen_buffers_checked(q, k, v, offsets, opts, true).await?;
        Ok((out, lse.ok_or_else(|| Error::Gpu("no log-sum-exp recorded".into()))?))
    }

    /// Records [`Context::attention_varlen_buffers`] into `encoder`, writing `call.out` and
    /// `call.lse` if given (rows no sequence covers are left as they were). Outputs may not
    /// share a buffer with the inputs or the offsets.
    pub fn encode_attention_varlen_buffers(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &VarlenBuffersCall,
        opts: &AttentionOptions,
    ) -> Result<()> {
        let VarlenBuffersCall { q, k, v, offsets, out, lse } = *call;
        let p = self.varlen_buffers_problem(q, k, v, opts)?;
        super::varlen::check_packed_outputs(q, out, lse)?;
        let mut outs = vec![("out", out)];
        outs.extend(lse.map(|l| ("lse", l)));
        self.check_outputs(&outs)?;
        pollster::block_on(self.record_varlen_buffers(encoder, &p, (q, k, v), offsets, out, lse))
    }

    /// The checked problem of the whole pack (batch 1, every packed row), its variant the
    /// fused kernel.
    fn varlen_buffers_problem<'a>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions<'a>,
    ) -> Result<AttentionProblem<'a>> {
        crate::problem::varlen::check_packs(&Operand::gpu(q), &Operand::gpu(k), &Operand::gpu(v))?;
        crate::problem::varlen::check_no_key_lengths(opts)?;
        if opts.fixed_order {
            return Err(Error::Unsupported(
                "fixed_order: a pack with device offsets runs on the unsplit fused kernel; pass host offsets (Context::attention_varlen)".into(),
            ));
        }
        let aligned = [q, k, v].iter().all(|t| t.vec4_aligned()) && q.shape().dim.is_multiple_of(4);
        let variant = match opts.variant {
            AttentionVariant::Auto => AttentionVariant::Fused(if aligned { Loads::Vec4 } else { Loads::Scalar }),
            v @ AttentionVariant::Fused(_) => v,
            other => {
                return Err(Error::Unsupported(format!(
                    "variant: a pack with device offsets runs on the fused kernel in one dispatch, not {}",
                    other.name()
                )))
            }
        };
        self.attention_problem(q, k, v, None, &AttentionOptions { variant, ..*opts })
    }

    async fn varlen_buffers_checked(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offsets: &VarlenBuffers<'_>,
        opts: &AttentionOptions<'_>,
        with_lse: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let p = self.varlen_buffers_problem(q, k, v, opts)?;
        let qs = q.shape();
        let out = self.zeros_async(qs, q.layout(), q.dtype()).await?;
        let lse = match with_lse {
            true => Some(self.zeros_async(Shape::new(1, qs.heads, qs.seq, 1), Layout::Bhsd, DType::F32).await?),
            false => None,
        };
        let mut enc = self.encoder()?;
        self.record_varlen_buffers(&mut enc, &p, (q, k, v), offsets, &out, lse.as_ref()).await?;
        self.submit_async(enc).await?;
        Ok((out, lse))
    }

    /// Resolves the fused kernel for the pack and records its one dispatch.
    async fn record_varlen_buffers(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        offsets: &VarlenBuffers<'_>,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let mut outputs = vec![Region::tensor("out", out)];
        outputs.extend(lse.map(|l| Region::tensor("lse", l)));
        let mut ins = vec![Region::tensor("q", q), Region::tensor("k", k), Region::tensor("v", v)];
        ins.extend(offsets.regions());
        check_aliasing(&outputs, &ins)?;
        let aligned = [q, k, v].iter().all(|t| t.vec4_aligned());
        let no_tc = Err("a pack with device offsets runs on the SIMT kernel".to_string());
        let (resolved, _) = resolve(p, self.caps(), aligned, lse.is_some(), false, true, &no_tc)?;
        let kv = KvSource::Packed {
            k,
            v,
            cu_q: offsets.cu_seqlens_q,
            cu_k: offsets.cu_seqlens_k,
            batch: offsets.batch,
        };
        crate::launch::attention::record(self, encoder, p, resolved, q, kv, None, out, lse).await
    }
}

//! Host side of `shaders/softmax.wgsl`.

use crate::context::Context;
use crate::dispatch::{flags, Arg, Grid, Launch, Params, Rows};
use crate::error::Result;
use crate::ops::{check_dtype, check_out, key_lengths_buffer};
use crate::options::{check_key_lengths, check_mask_shape, check_scalar, SoftmaxOptions};
use crate::pipeline::Family;
use crate::shape::MaskKind;
use crate::tensor::{Mask, Tensor};

impl Context {
    /// Softmax over the last dimension of `x` (`[batch, heads, rows, cols]`) into a new tensor
    /// of the same shape, dtype and layout. See [`SoftmaxOptions`] for temperature, causal and
    /// key lengths; `mask` is `[mb, mh, rows, cols]`. Masked columns give 0, fully masked rows 0.
    pub fn softmax(&self, x: &Tensor, mask: Option<&Mask>, opts: &SoftmaxOptions) -> Result<Tensor> {
        x.shape.check_nonempty("x")?;
        let out = self.zeros(x.shape, x.layout, x.dtype)?;
        self.submit(|enc| self.encode_softmax(enc, x, mask, opts, &out))?;
        Ok(out)
    }

    /// Records [`Context::softmax`] into `encoder`, writing `out` (same shape and dtype as `x`).
    /// `out` may be `x` itself only if it is a different buffer region; in-place is not supported.
    pub fn encode_softmax(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        mask: Option<&Mask>,
        opts: &SoftmaxOptions,
        out: &Tensor,
    ) -> Result<()> {
        let s = x.shape;
        s.check_nonempty("x")?;
        check_dtype(self, "x", x, None)?;
        check_out(self, "out", out, s, x.dtype)?;
        check_scalar("temperature", opts.temperature, true)?;
        check_key_lengths(opts.key_lengths, s.batch, s.dim)?;
        let mut fl = 0;
        if let Some(m) = mask {
            check_mask_shape(m.shape, s.batch, s.heads, s.seq, s.dim)?;
            fl |= flags::MASK | if m.kind == MaskKind::Additive { flags::MASK_ADDITIVE } else { 0 };
        }
        if opts.causal {
            fl |= flags::CAUSAL;
        }
        let kl = key_lengths_buffer(self, opts.key_lengths)?;
        if kl.is_some() {
            fl |= flags::KEY_LENGTHS;
        }
        let workgroups = |nbh: usize, nr: usize| (nbh * nr) as u64;
        Launch {
            family: Family::Softmax,
            dtype: x.dtype,
            consts: vec![],
            grid: Grid { bh: s.batch * s.heads, heads: s.heads, nq: s.seq, row_tile: 1 },
            args: vec![
                Arg::tensor("x", x, 1, Rows::Query, 0, 1),
                mask_arg(self, mask, s.heads, 2),
                Arg::whole("key_lengths", kl.as_ref().unwrap_or(&self.inner.placeholder_read), 3),
                Arg::tensor("out", out, 1, Rows::Query, 4, 4),
            ],
            params: Params {
                heads: s.heads as u32,
                group: 1,
                nq: s.seq as u32,
                nk: s.dim as u32,
                d: s.dim as u32,
                flags: fl,
                scale: 1.0 / opts.temperature,
                ..Default::default()
            },
            workgroups: &workgroups,
        }
        .record(self, encoder)
    }
}

/// The mask argument (view v3), or a placeholder.
pub(crate) fn mask_arg<'a>(ctx: &'a Context, mask: Option<&'a Mask>, heads: usize, binding: u32) -> Arg<'a> {
    match mask {
        Some(m) => {
            let [mb, mh, nq, nk] = m.shape;
            Arg {
                name: "mask",
                buffer: &m.buffer,
                elem: 4,
                offset: 0,
                sb: if mb == 1 { 0 } else { (mh * nq * nk) as u64 },
                sh: if mh == 1 { 0 } else { (nq * nk) as u64 },
                ss: nk as u64,
                row_len: nk as u64,
                // broadcast heads have stride 0, so the head index does not matter
                group: if mh == 1 { heads } else { 1 },
                rows: Rows::Query,
                view: Some(3),
                binding,
            }
        }
        None => Arg::whole("mask", &ctx.inner.placeholder_read, binding),
    }
}

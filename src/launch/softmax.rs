//! Launching `shaders/softmax.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/softmax.rs`).

use crate::kernels::{flags, Kernel, Params};
use crate::context::Context;
use crate::error::Result;
use crate::host::MaskKind;
use crate::plan::{Grid, Rows};
use crate::problem::SoftmaxProblem;
use crate::record::{Arg, Launch};
use crate::tensor::{Mask, Tensor};
use crate::kernels::softmax::*;
use crate::launch::ScoreArgs;

/// Softmax of `x` into `out` for a checked problem.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &SoftmaxProblem<'_>,
    x: &Tensor,
    mask: Option<&Mask>,
    out: &Tensor,
) -> Result<()> {
    let s = x.shape;
    let mut fl = 0;
    if let Some(m) = mask {
        fl |= flags::MASK | if m.kind == MaskKind::Additive { flags::MASK_ADDITIVE } else { 0 };
    }
    if p.causal {
        fl |= flags::CAUSAL;
    }
    let kl = match p.key_lengths {
        Some(kl) => Some(ctx.create_init(bytemuck::cast_slice(kl), "key_lengths").await?),
        None => None,
    };
    if kl.is_some() {
        fl |= flags::KEY_LENGTHS;
    }
    let transform = p.transform()?;
    let so = ScoreArgs::new(ctx, &p.score, &transform, s.heads).await?;
    let workgroups = |nbh: usize, nr: usize| (nbh * nr) as u64;
    Launch {
        kernel: Kernel::Softmax(SoftmaxKernel::for_rows(x.dtype, s.dim, ctx.caps())),
        grid: Grid { bh: s.batch * s.heads, heads: s.heads, nq: s.seq, row_tile: 1 },
        args: vec![
            Arg::tensor("x", x, 1, Rows::Query, 0, 1),
            Arg::mask(ctx, mask, s.heads, 2),
            Arg::whole("key_lengths", kl.as_ref().unwrap_or(&ctx.inner.placeholder_read), 3),
            Arg::tensor("out", out, 1, Rows::Query, 4, 4),
            Arg::whole("heads", so.heads.as_ref().unwrap_or(&ctx.inner.placeholder_read), 5),
        ],
        params: so.apply(
            Params {
                heads: s.heads as u32,
                group: 1,
                nq: s.seq as u32,
                nk: s.dim as u32,
                d: s.dim as u32,
                flags: fl,
                ..Params::unscaled()
            }
            .with_transform(&transform),
        ),
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}

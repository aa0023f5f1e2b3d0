//! Host side of `shaders/softmax.wgsl` (CPU twin: `cpu::softmax`).

use super::{b, flags, Access, Binding, Kernel, Params, ScoreArgs, Variant, PARAMS};
use crate::context::Context;
use crate::error::Result;
use crate::host::MaskKind;
use crate::plan::{Grid, Rows};
use crate::problem::SoftmaxProblem;
use crate::record::{Arg, Launch};
use crate::shape::DType;
use crate::tensor::{Mask, Tensor};

/// Threads per workgroup (one workgroup per row).
const WG: u32 = 256;

/// The softmax kernel for one storage dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SoftmaxKernel {
    pub dtype: DType,
}

impl Variant for SoftmaxKernel {
    const NAME: &'static str = "softmax";
    const SOURCE: &'static str = include_str!("../../shaders/softmax.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 6] = [
            PARAMS,
            b(1, "x", Access::Read),
            b(2, "mask", Access::Read),
            b(3, "key_lengths", Access::Read),
            b(4, "out", Access::ReadWrite),
            b(5, "heads", Access::Read),
        ];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG)]
    }
    /// The running (max, sum) of every thread.
    fn workgroup_bytes(&self) -> u32 {
        2 * 4 * WG
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![include_str!("../../shaders/masking.wgsl")]
    }
}

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
        kernel: Kernel::Softmax(SoftmaxKernel { dtype: x.dtype }),
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

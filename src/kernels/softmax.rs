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

/// The softmax kernel for one storage dtype: elements per thread held in registers (`e`: 4, 8 or
/// 16 for rows up to that many times `WG`; 0 streams longer rows twice), and row reductions by
/// subgroup shuffles or through workgroup memory (`sg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SoftmaxKernel {
    pub dtype: DType,
    pub e: u32,
    pub sg: bool,
}

impl SoftmaxKernel {
    /// The variant for rows of `n` columns on a device with `caps`.
    pub fn for_rows(dtype: DType, n: usize, caps: &crate::caps::Caps) -> Self {
        let e = [4u32, 8, 16].into_iter().find(|&e| n <= (e * WG) as usize).unwrap_or(0);
        SoftmaxKernel { dtype, e, sg: super::attention::subgroups_of_8(caps) }
    }

    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = SoftmaxKernel> {
        [0u32, 4, 8, 16]
            .into_iter()
            .flat_map(move |e| [false, true].into_iter().map(move |sg| SoftmaxKernel { dtype, e, sg }))
    }
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
        vec![("WG", WG), ("E", self.e), ("ROW_LANES", 8)]
    }
    /// The partials of the reductions (and without subgroups, the 8-lane reduction buffer).
    fn workgroup_bytes(&self) -> u32 {
        4 * (WG / 8 + if self.sg { 0 } else { 2 * WG })
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![
            include_str!("../../shaders/masking.wgsl"),
            if self.sg {
                include_str!("../../shaders/rows_subgroup.wgsl")
            } else {
                include_str!("../../shaders/rows_workgroup.wgsl")
            },
        ]
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

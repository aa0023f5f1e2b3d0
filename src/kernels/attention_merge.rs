//! Host side of `shaders/attention_merge.wgsl`: combines the partial results of split-K
//! attention by their log-sum-exp (CPU twin: `cpu::attention_merge`).

use super::{b, Access, Binding, Kernel, Params, Variant, PARAMS};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{Grid, Rows};
use crate::problem::AttentionProblem;
use crate::record::{Arg, Launch};
use crate::shape::DType;
use crate::tensor::Tensor;

/// Threads per workgroup (one workgroup per query row).
const WG: u32 = 64;

/// The merge kernel for one output dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MergeKernel {
    pub dtype: DType,
}

impl Variant for MergeKernel {
    const NAME: &'static str = "attention_merge";
    const SOURCE: &'static str = include_str!("../../shaders/attention_merge.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 5] = [
            PARAMS,
            b(1, "partials", Access::Read),
            b(2, "out", Access::ReadWrite),
            b(3, "lse", Access::ReadWrite),
            b(4, "heads", Access::Read),
        ];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG)]
    }
    fn workgroup_bytes(&self) -> u32 {
        0
    }
}

/// Merges `splits` partials (f32 `[b, h, nq, splits·(d + 2)]`) into `out` and `lse`. `attention`
/// are the parameters of the split-K launch (its score transform and output factor).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: MergeKernel,
    p: &AttentionProblem<'_>,
    partials: &Tensor,
    splits: usize,
    out: &Tensor,
    lse: Option<&Tensor>,
    attention: Params,
    heads: &wgpu::Buffer,
) -> Result<()> {
    let d = p.dims;
    let workgroups = |nbh: usize, nr: usize| (nbh * nr) as u64;
    Launch {
        kernel: Kernel::AttentionMerge(kernel),
        grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: 1 },
        args: vec![
            Arg::tensor("partials", partials, 1, Rows::Query, 0, 1),
            Arg::tensor("out", out, 1, Rows::Query, 1, 2),
            match lse {
                Some(l) => Arg::tensor("lse", l, 1, Rows::Query, 2, 3),
                None => Arg::whole("lse", &ctx.inner.placeholder_write, 3),
            },
            Arg::whole("heads", heads, 4),
        ],
        params: Params {
            heads: d.heads as u32,
            group: 1,
            nq: d.nq as u32,
            nk: d.nk as u32,
            d: d.d as u32,
            flags: attention.flags & (super::flags::LSE | super::flags::SINK),
            split_len: splits as u32,
            views: Default::default(),
            ..attention
        },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}

//! Launching `shaders/attention_merge.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/attention_merge.rs`).

use crate::kernels::{Kernel, Params};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{Grid, Rows};
use crate::problem::AttentionProblem;
use crate::record::{Arg, Launch};
use crate::tensor::Tensor;
use crate::kernels::attention_merge::*;

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
            flags: attention.flags & (crate::kernels::flags::LSE | crate::kernels::flags::SINK),
            split_len: splits as u32,
            views: Default::default(),
            ..attention
        },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}

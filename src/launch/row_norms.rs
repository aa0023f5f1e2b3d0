//! Launching `shaders/row_norms.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/row_norms.rs`).

use crate::kernels::{Kernel, Params};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{Grid, Rows};
use crate::record::{Arg, Launch};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;
use crate::kernels::row_norms::*;

/// The norms of every row of `x` (`[batch, heads, rows, d]`, any layout or strides), prescaled
/// by `pre`, into a new f32 tensor: `[batch, heads, rows, 2]` for cosine (an exponent and a
/// factor), `[batch, heads, rows, 1]` for L2.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: RowNormsKernel,
    x: &Tensor,
    pre: f32,
) -> Result<Tensor> {
    let s = x.shape;
    let per_row = if kernel.metric == 1 { 2 } else { 1 };
    let norms = ctx.zeros_async(Shape::new(s.batch, s.heads, s.seq, per_row), Layout::Bhsd, DType::F32).await?;
    let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(WG as usize)) as u64;
    Launch {
        kernel: Kernel::RowNorms(kernel),
        grid: Grid { bh: s.batch * s.heads, heads: s.heads, nq: s.seq, row_tile: WG as usize },
        args: vec![Arg::tensor("x", x, 1, Rows::Query, 0, 1), Arg::tensor("norms", &norms, 1, Rows::Query, 1, 2)],
        params: Params { heads: s.heads as u32, group: 1, nq: s.seq as u32, d: s.dim as u32, pre, ..Params::default() },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await?;
    Ok(norms)
}

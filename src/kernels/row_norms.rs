//! Host side of `shaders/row_norms.wgsl`: the per-row factors of cosine similarity and the
//! squared lengths of L2 similarity, computed once per row of Q and of K before the similarity
//! GEMM (CPU twin: part of `cpu::similarity`).

use super::{b, Access, Binding, Kernel, Params, Variant, PARAMS};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{Grid, Rows};
use crate::record::{Arg, Launch};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

/// Threads (rows) per workgroup.
const WG: u32 = 64;

/// One variant of `shaders/row_norms.wgsl`: storage dtype and metric (1 cosine, 2 L2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RowNormsKernel {
    pub dtype: DType,
    pub metric: u32,
}

impl Variant for RowNormsKernel {
    const NAME: &'static str = "row_norms";
    const SOURCE: &'static str = include_str!("../../shaders/row_norms.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 3] = [PARAMS, b(1, "x", Access::Read), b(2, "norms", Access::ReadWrite)];
        &BINDINGS
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("METRIC", self.metric)]
    }
    fn workgroup_bytes(&self) -> u32 {
        0
    }
}

impl RowNormsKernel {
    /// Every variant for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = RowNormsKernel> {
        (1..3).map(move |metric| RowNormsKernel { dtype, metric })
    }
}

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

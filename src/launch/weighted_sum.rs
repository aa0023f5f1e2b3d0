//! Launching `shaders/weighted_sum.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/weighted_sum.rs`).

use crate::kernels::{Kernel, Params};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{Grid, Rows};
use crate::problem::WeightedSumProblem;
use crate::record::{Arg, Launch};
use crate::tensor::Tensor;
use crate::kernels::weighted_sum::*;

/// `weights · v` into `out` for a checked problem.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &WeightedSumProblem,
    weights: &Tensor,
    v: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let (w, vs) = (weights.shape, v.shape);
    let (vpre, vpost) = p.v_prescale();
    let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(TM as usize) * vs.dim.div_ceil(TN as usize)) as u64;
    Launch {
        kernel: Kernel::WeightedSum(WeightedSumKernel { dtype: v.dtype }),
        grid: Grid { bh: w.batch * w.heads, heads: w.heads, nq: w.seq, row_tile: TM as usize },
        args: vec![
            Arg::tensor("weights", weights, 1, Rows::Query, 0, 1),
            Arg::tensor("v", v, p.group, Rows::All(vs.seq), 1, 2),
            Arg::tensor("out", out, 1, Rows::Query, 2, 3),
        ],
        params: Params {
            heads: w.heads as u32,
            group: p.group as u32,
            nq: w.seq as u32,
            nk: w.dim as u32,
            d: vs.dim as u32,
            kpre: vpre,
            post: vpost,
            ..Params::unscaled()
        },
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await
}

//! Host side of `shaders/weighted_sum.wgsl` (CPU twin: `cpu::weighted_sum`).

use super::{b, Access, Binding, Kernel, Params, Variant, PARAMS};
use crate::context::Context;
use crate::error::Result;
use crate::plan::{Grid, Rows};
use crate::problem::WeightedSumProblem;
use crate::record::{Arg, Launch};
use crate::shape::DType;
use crate::tensor::Tensor;

const WG: u32 = 256;
/// Output tile rows, columns (head dims), and keys per step.
const TM: u32 = 64;
const TN: u32 = 64;
const TK: u32 = 16;

/// The weighted-sum kernel for one storage dtype of V and the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WeightedSumKernel {
    pub dtype: DType,
}

impl Variant for WeightedSumKernel {
    const NAME: &'static str = "weighted_sum";
    const SOURCE: &'static str = include_str!("../../shaders/weighted_sum.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 4] =
            [PARAMS, b(1, "weights", Access::Read), b(2, "v", Access::Read), b(3, "out", Access::ReadWrite)];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("TM", TM), ("TN", TN), ("TK", TK)]
    }
    /// The weights and V tiles, `TK × TM` and `TK × TN` f32.
    fn workgroup_bytes(&self) -> u32 {
        4 * TK * (TM + TN)
    }
}

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

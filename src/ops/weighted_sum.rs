//! Weighted sum on [`Context`] (`crate::kernels::weighted_sum`).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::Result;
use crate::launch::weighted_sum;
use crate::problem::{Operand, WeightedSumProblem};
use crate::tensor::Tensor;

impl Context {
    fn weighted_sum_problem(&self, weights: &Tensor, v: &Tensor) -> Result<WeightedSumProblem> {
        let p = WeightedSumProblem::new(Operand::gpu(weights), Operand::gpu(v))?;
        self.check_tensors(&[("weights", weights), ("v", v)], None)?;
        Ok(p)
    }

    /// `O[b, h, i] = Σ_j W[b, h, i, j] · V[b, h / group, j]` into a new tensor like `v` with
    /// `weights`' heads and rows. `weights` is f32 `[batch, heads, nq, nk]`, `v`
    /// `[batch, kv_heads, nk, d]`. Outputs beyond f32's range saturate at ±`f32::MAX`.
    pub fn weighted_sum(&self, weights: &Tensor, v: &Tensor) -> Result<Tensor> {
        pollster::block_on(self.weighted_sum_async(weights, v))
    }

    /// Async twin of [`Context::weighted_sum`]: allocations and submission are checked through
    /// error scopes that are awaited, never blocked on.
    pub async fn weighted_sum_async(&self, weights: &Tensor, v: &Tensor) -> Result<Tensor> {
        let p = self.weighted_sum_problem(weights, v)?;
        self.weighted_sum_checked(&p, weights, v).await
    }

    /// Weighted sum for a checked problem.
    pub(crate) async fn weighted_sum_checked(
        &self,
        p: &WeightedSumProblem,
        weights: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let out = self.zeros_async(p.out_shape(), v.layout, v.dtype).await?;
        let mut enc = self.encoder()?;
        weighted_sum::record(self, &mut enc, p, weights, v, &out).await?;
        self.submit_async(enc).await?;
        Ok(out)
    }

    /// Records [`Context::weighted_sum`] into `encoder`, writing `out` (not sharing a buffer
    /// with `weights` or `v`).
    pub fn encode_weighted_sum(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        weights: &Tensor,
        v: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        let p = self.weighted_sum_problem(weights, v)?;
        p.check_output(&Operand::gpu(out))?;
        self.check_outputs(&[("out", out)])?;
        check_aliasing(&[Region::tensor("out", out)], &[Region::tensor("weights", weights), Region::tensor("v", v)])?;
        pollster::block_on(weighted_sum::record(self, encoder, &p, weights, v, out))
    }
}

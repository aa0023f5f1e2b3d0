//! Similarity on [`Context`] (`crate::kernels::similarity`).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::Result;
use crate::launch::similarity;
use crate::options::Similarity;
use crate::problem::{Operand, SimilarityProblem};
use crate::shape::{DType, Layout};
use crate::tensor::Tensor;
use crate::tuning::SimilarityKernel;

/// What [`Context::similarity`] runs for a call ([`Context::plan_similarity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimilarityPlan {
    /// The kernel.
    pub kernel: SimilarityKernel,
    /// Why: which table entry, or the heuristic.
    pub reason: String,
}

impl Context {
    fn similarity_problem(&self, q: &Tensor, k: &Tensor, metric: Similarity) -> Result<SimilarityProblem> {
        let p = SimilarityProblem::new(Operand::gpu(q), Operand::gpu(k), metric)?;
        self.check_tensors(&[("q", q), ("k", k)], None)?;
        Ok(p)
    }

    /// Scores `S[b, h, i, j] = metric(q[b, h, i], k[b, h / group, j])` as a new f32 tensor
    /// `[batch, heads, nq, nk]` (BHSD). `k` may have fewer heads (a divisor of q's). Scores
    /// beyond f32's range are reported as ±`f32::MAX`.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let q = ctx.upload(&[1.0f32, 0.0, 0.0, 1.0], Shape::new(1, 1, 2, 2))?;
    /// let s = ctx.similarity(&q, &q, Similarity::Cosine)?.download_blocking(&ctx)?;
    /// assert_eq!(s, vec![1.0, 0.0, 0.0, 1.0]);
    /// # Ok(()) }
    /// ```
    pub fn similarity(&self, q: &Tensor, k: &Tensor, metric: Similarity) -> Result<Tensor> {
        pollster::block_on(self.similarity_async(q, k, metric))
    }

    /// Async twin of [`Context::similarity`]: allocations and submission are checked through
    /// error scopes that are awaited, never blocked on.
    pub async fn similarity_async(&self, q: &Tensor, k: &Tensor, metric: Similarity) -> Result<Tensor> {
        let p = self.similarity_problem(q, k, metric)?;
        self.similarity_checked(&p, q, k).await
    }

    /// Similarity for a checked problem.
    pub(crate) async fn similarity_checked(&self, p: &SimilarityProblem, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        let (mma, _) = self.similarity_route(p, Some((q, k))).await?;
        let out = self.zeros_async(p.out_shape(), Layout::Bhsd, DType::F32).await?;
        let mut enc = self.encoder()?;
        similarity::record(self, &mut enc, p, q, k, &out, None, mma).await?;
        self.submit_async(enc).await?;
        Ok(out)
    }

    /// What [`Context::similarity`] would run for `q` and `k` on this context, and why: the SIMT
    /// kernel or the tensor-core one (f16 on a context with tensor cores), by the context's
    /// tuned entry for the call's [`ShapeClass`](crate::ShapeClass), the built-in table, or the
    /// heuristic (tensor cores where the context has them). Nothing runs; under
    /// `Tuning::OnFirstUse` a class with no entry is timed by the first call, not here.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let q = ctx.upload(&vec![half::f16::ONE; 4 * 64], Shape::new(1, 1, 4, 64))?;
    /// let plan = ctx.plan_similarity(&q, &q, Similarity::Dot)?;
    /// println!("{}: {}", plan.kernel, plan.reason);
    /// # Ok(()) }
    /// ```
    pub fn plan_similarity(&self, q: &Tensor, k: &Tensor, metric: Similarity) -> Result<SimilarityPlan> {
        let p = self.similarity_problem(q, k, metric)?;
        pollster::block_on(async {
            let (mma, reason) = self.similarity_route(&p, None).await?;
            // the fragment kernel runs where its workgroup memory fits (else SIMT); the
            // output: a new BHSD tensor
            let vec_out = p.out_shape().dim.is_multiple_of(4);
            let fits = mma.is_some() && similarity::kernels(self, &p, q, k, vec_out, false, mma).1.is_some();
            Ok(match (mma, fits) {
                (Some(_), false) => SimilarityPlan {
                    kernel: SimilarityKernel::Simt,
                    reason: format!(
                        "SIMT: the tensor-core kernel's workgroup memory does not fit this device ({reason})"
                    ),
                },
                (Some(_), true) => SimilarityPlan { kernel: SimilarityKernel::TensorCores, reason },
                (None, _) => SimilarityPlan { kernel: SimilarityKernel::Simt, reason },
            })
        })
    }

    /// Records [`Context::similarity`] into `encoder`, writing the f32 tensor `out`
    /// (`[batch, heads, nq, nk]`, any layout, not sharing a buffer with `q` or `k`).
    pub fn encode_similarity(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        k: &Tensor,
        metric: Similarity,
        out: &Tensor,
    ) -> Result<()> {
        let p = self.similarity_problem(q, k, metric)?;
        p.check_output(&Operand::gpu(out))?;
        self.check_outputs(&[("out", out)])?;
        check_aliasing(&[Region::tensor("out", out)], &[Region::tensor("q", q), Region::tensor("k", k)])?;
        pollster::block_on(async {
            let (mma, _) = self.similarity_route(&p, Some((q, k))).await?;
            similarity::record(self, encoder, &p, q, k, out, None, mma).await
        })
    }
}

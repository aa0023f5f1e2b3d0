//! Exact top-k on [`Context`] (`crate::kernels::top_k`).

use crate::context::Context;
use crate::error::{Error, Result};
use crate::launch::top_k::{self, TopKOutput};
use crate::retrieval::{Metric, TopK};
use crate::problem::{same_dtype, TopKProblem};
use crate::tensor::Tensor;

impl Context {
    fn top_k_problem(&self, queries: &Tensor, keys: &Tensor, k: usize, metric: Metric) -> Result<TopKProblem> {
        let (qs, ks) = (queries.shape, keys.shape);
        for (argument, s) in [("queries", qs), ("keys", ks)] {
            if s.batch != 1 || s.heads != 1 {
                return Err(Error::InvalidArgument {
                    argument,
                    message: format!("expected shape [1, 1, rows, dim], got {:?}", s.dims()),
                });
            }
        }
        let p = TopKProblem::new(qs.seq, ks.seq, qs.dim, ks.dim, k, metric)?;
        same_dtype("keys", &crate::problem::Operand::gpu(keys), queries.dtype)?;
        self.check_tensors(&[("queries", queries), ("keys", keys)], None)?;
        Ok(p)
    }

    /// Exact top-k: for each query row of `queries` (`[1, 1, nq, d]`) the `k` best rows of
    /// `keys` (`[1, 1, nk, d]`) by `metric`, best first, ties to the lower index. `k` is
    /// 1..=min(nk, 1024). Keys larger than one binding or one dispatch are processed in chunks
    /// merged on the GPU.
    pub fn top_k(&self, queries: &Tensor, keys: &Tensor, k: usize, metric: Metric) -> Result<TopK> {
        let p = self.top_k_problem(queries, keys, k, metric)?;
        pollster::block_on(self.top_k_checked(&p, queries, keys, true))
    }

    /// Async twin of [`Context::top_k`]: the results are read back with
    /// [`Tensor::download`](crate::Tensor::download)'s polling, so no thread waits.
    pub async fn top_k_async(&self, queries: &Tensor, keys: &Tensor, k: usize, metric: Metric) -> Result<TopK> {
        let p = self.top_k_problem(queries, keys, k, metric)?;
        self.top_k_checked(&p, queries, keys, false).await
    }

    /// Top-k for a checked problem; `block`: read back by waiting on the device (else polling).
    pub(crate) async fn top_k_checked(
        &self,
        p: &TopKProblem,
        queries: &Tensor,
        keys: &Tensor,
        block: bool,
    ) -> Result<TopK> {
        let mut enc = self.encoder()?;
        let out = top_k::record(self, &mut enc, p, queries, keys, self.fragments_for(keys.dtype).await).await?;
        self.submit_async(enc).await?;
        match block {
            true => out.read(self),
            false => out.read_async(self).await,
        }
    }

    /// Records [`Context::top_k`] into `encoder` (no submit, no readback); the results stay on
    /// the GPU in the returned [`TopKOutput`] (read them after submitting). Scratch buffers for one
    /// chunk of scores and the candidates (at most 256 MiB or one binding each) are allocated for
    /// the call.
    pub fn encode_top_k(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        queries: &Tensor,
        keys: &Tensor,
        k: usize,
        metric: Metric,
    ) -> Result<TopKOutput> {
        let p = self.top_k_problem(queries, keys, k, metric)?;
        pollster::block_on(async {
            let mma = self.fragments_for(keys.dtype).await;
            top_k::record(self, encoder, &p, queries, keys, mma).await
        })
    }
}

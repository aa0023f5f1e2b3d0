//! Host side of `shaders/similarity.wgsl`.

use crate::context::Context;
use crate::dispatch::{Arg, Grid, Launch, Params, Rows};
use crate::error::Result;
use crate::ops::{check_dtype, check_out};
use crate::options::{check_qk, check_scalar, Similarity};
use crate::pipeline::Family;
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

impl Context {
    /// Scores `S[b, h, i, j] = metric(q[b, h, i], k[b, h / group, j])` as a new f32 tensor
    /// `[batch, heads, nq, nk]` (BHSD). `k` may have fewer heads (a divisor of q's).
    ///
    /// ```
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let q = ctx.upload(&[1.0f32, 0.0, 0.0, 1.0], Shape::new(1, 1, 2, 2))?;
    /// let s = ctx.similarity(&q, &q, Similarity::Cosine)?.download_blocking(&ctx)?;
    /// assert_eq!(s, vec![1.0, 0.0, 0.0, 1.0]);
    /// # Ok(()) }
    /// ```
    pub fn similarity(&self, q: &Tensor, k: &Tensor, metric: Similarity) -> Result<Tensor> {
        let dims = check_qk(&q.shape, &k.shape)?;
        let out = self.zeros(Shape::new(dims.batch, dims.heads, dims.nq, dims.nk), Layout::Bhsd, DType::F32)?;
        self.submit(|enc| self.encode_similarity(enc, q, k, metric, &out))?;
        Ok(out)
    }

    /// Records [`Context::similarity`] into `encoder`, writing the f32 tensor `out`
    /// (`[batch, heads, nq, nk]`, any layout).
    pub fn encode_similarity(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        k: &Tensor,
        metric: Similarity,
        out: &Tensor,
    ) -> Result<()> {
        let dims = check_qk(&q.shape, &k.shape)?;
        check_dtype(self, "q", q, None)?;
        check_dtype(self, "k", k, Some(q.dtype))?;
        check_out(self, "out", out, Shape::new(dims.batch, dims.heads, dims.nq, dims.nk), DType::F32)?;
        let scale = metric.scale(dims.d);
        check_scalar("scale", scale, false)?;
        let metric_id = match metric {
            Similarity::Dot | Similarity::ScaledDot(_) => 0,
            Similarity::Cosine => 1,
            Similarity::L2 => 2,
        };
        let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(64) * dims.nk.div_ceil(64)) as u64;
        Launch {
            family: Family::Similarity,
            dtype: q.dtype,
            consts: vec![("METRIC", metric_id)],
            grid: Grid { bh: dims.batch * dims.heads, heads: dims.heads, nq: dims.nq, row_tile: 64 },
            args: vec![
                Arg::tensor("q", q, 1, Rows::Query, 0, 1),
                Arg::tensor("k", k, dims.group(), Rows::All(dims.nk), 1, 2),
                Arg::tensor("out", out, 1, Rows::Query, 2, 3),
            ],
            params: Params {
                heads: dims.heads as u32,
                group: dims.group() as u32,
                nq: dims.nq as u32,
                nk: dims.nk as u32,
                d: dims.d as u32,
                scale,
                ..Default::default()
            },
            workgroups: &workgroups,
        }
        .record(self, encoder)
    }
}

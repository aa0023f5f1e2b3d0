//! Softmax on [`Context`] (`crate::kernels::softmax`).

use super::{check_aliasing, Region};
use crate::context::Context;
use crate::error::Result;
use crate::launch::softmax;
use crate::options::SoftmaxOptions;
use crate::problem::{MaskSpec, Operand, SoftmaxProblem};
use crate::tensor::{Mask, Tensor};

impl Context {
    fn softmax_problem<'a>(
        &self,
        x: &Tensor,
        mask: Option<&Mask>,
        opts: &SoftmaxOptions<'a>,
    ) -> Result<SoftmaxProblem<'a>> {
        let p = SoftmaxProblem::new(Operand::gpu(x), mask.map(MaskSpec::gpu), opts)?;
        self.check_tensors(&[("x", x)], mask)?;
        Ok(p)
    }

    /// Softmax over the last dimension of `x` (`[batch, heads, rows, cols]`) into a new tensor
    /// of the same shape, dtype and layout. See [`SoftmaxOptions`] for temperature, causal and
    /// key lengths; `mask` is `[mb, mh, rows, cols]`. Masked columns give 0, fully masked rows 0.
    pub fn softmax(&self, x: &Tensor, mask: Option<&Mask>, opts: &SoftmaxOptions) -> Result<Tensor> {
        pollster::block_on(self.softmax_async(x, mask, opts))
    }

    /// Async twin of [`Context::softmax`]: allocations and submission are checked through
    /// error scopes that are awaited, never blocked on.
    pub async fn softmax_async(&self, x: &Tensor, mask: Option<&Mask>, opts: &SoftmaxOptions<'_>) -> Result<Tensor> {
        let p = self.softmax_problem(x, mask, opts)?;
        self.softmax_checked(&p, x, mask).await
    }

    /// Softmax for a checked problem.
    pub(crate) async fn softmax_checked(
        &self,
        p: &SoftmaxProblem<'_>,
        x: &Tensor,
        mask: Option<&Mask>,
    ) -> Result<Tensor> {
        let out = self.zeros_async(x.shape, x.layout, x.dtype).await?;
        let mut enc = self.encoder()?;
        softmax::record(self, &mut enc, p, x, mask, &out).await?;
        self.submit_async(enc).await?;
        Ok(Tensor { max_abs: Some(1.0), ..out })
    }

    /// Records [`Context::softmax`] into `encoder`, writing `out` (same shape and dtype as `x`,
    /// any layout). In place is not supported: `out` may not share a buffer with `x` or the mask.
    pub fn encode_softmax(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        mask: Option<&Mask>,
        opts: &SoftmaxOptions,
        out: &Tensor,
    ) -> Result<()> {
        let p = self.softmax_problem(x, mask, opts)?;
        p.check_output(&Operand::gpu(out))?;
        self.check_outputs(&[("out", out)])?;
        let mut inputs = vec![Region::tensor("x", x)];
        inputs.extend(mask.map(Region::mask));
        check_aliasing(&[Region::tensor("out", out)], &inputs)?;
        pollster::block_on(softmax::record(self, encoder, &p, x, mask, out))
    }
}

//! The backward pass of attention, checked (`cpu::attention_backward`,
//! `cpu::reference::attention_backward`): the forward's problem, then the forward's output,
//! its log-sum-exp and the output gradient against it.

use super::{check_output, AttentionProblem, Operand};
use crate::error::{Error, Result};

/// Checks, after the forward's arguments (`AttentionProblem::new`), in this order: `o` and then
/// `d_o` with `q`'s shape and dtype (any layout), `lse` with `batch · heads · nq` entries, none
/// NaN (`-inf` marks a row with nothing kept, `+inf` one beyond f32's range: both give zero
/// gradients for the row).
pub(crate) fn check(p: &AttentionProblem, o: &Operand, d_o: &Operand, lse: &[f32]) -> Result<()> {
    check_output("o", o, p.q.shape, p.dtype)?;
    check_output("d_o", d_o, p.q.shape, p.dtype)?;
    let rows = p.dims.slices() * p.dims.nq;
    if lse.len() != rows {
        return Err(Error::LengthMismatch { argument: "lse", expected: rows, got: lse.len() });
    }
    if let Some((index, &value)) = lse.iter().enumerate().find(|(_, x)| x.is_nan()) {
        return Err(Error::NonFinite { argument: "lse", index, value });
    }
    Ok(())
}

/// The GPU form of [`check`]: `o` and `d_o` as there, `lse` an f32 tensor `[batch, heads, nq,
/// 1]` (as `attention_with_lse` returns it; its values are the kernels' to read).
pub(crate) fn check_tensors(p: &AttentionProblem, o: &Operand, d_o: &Operand, lse: &Operand) -> Result<()> {
    check_output("o", o, p.q.shape, p.dtype)?;
    check_output("d_o", d_o, p.q.shape, p.dtype)?;
    check_output("lse", lse, p.lse_shape(), crate::shape::DType::F32)
}

//! The arguments and results of the CPU backward pass, and its checks: shared by the fast path
//! (`cpu::attention_backward`) and the f64 reference (`cpu::reference::attention_backward`).

use super::attention::problem;
use super::to_layout;
use crate::error::Result;
use crate::host::{scan, HostMask, HostTensor};
use crate::options::AttentionOptions;
use crate::problem::{AttentionProblem, Operand};
use crate::shape::{Element, Shape};

/// The arguments of a backward call: the forward's inputs and mask (with the same options), its
/// output `o` and log-sum-exp `lse` (`[batch, heads, nq]`, as [`crate::cpu::attention`] returns
/// them; `attention_with_lse` on the GPU), and the output gradient `d_o` (`q`'s shape and
/// dtype). Named rather than positional.
#[derive(Clone, Copy)]
pub struct BackwardInputs<'a, T> {
    /// Queries `[batch, heads, nq, d]`.
    pub q: &'a HostTensor<'a, T>,
    /// Keys `[batch, kv_heads, nk, d]`.
    pub k: &'a HostTensor<'a, T>,
    /// Values, as `k`.
    pub v: &'a HostTensor<'a, T>,
    /// The forward's mask, if any (no gradient flows to it).
    pub mask: Option<&'a HostMask<'a>>,
    /// The forward's output, `q`'s shape (any layout).
    pub o: &'a HostTensor<'a, T>,
    /// The forward's natural log-sum-exp per row, `[batch, heads, nq]` (sinks included).
    pub lse: &'a [f32],
    /// The gradient of the loss with respect to the output, `q`'s shape (any layout).
    pub d_o: &'a HostTensor<'a, T>,
}

/// Gradients of attention: each like its input (shape and layout), f32.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionGrads {
    /// With respect to `q`.
    pub dq: Vec<f32>,
    /// With respect to `k` (summed over the query heads that share each key/value head).
    pub dk: Vec<f32>,
    /// With respect to `v` (summed likewise).
    pub dv: Vec<f32>,
    /// With respect to the sink logits (one per query head), when the call has sinks.
    pub d_sinks: Option<Vec<f32>>,
}

/// The checked problem of a backward call: the forward's checks and scans of `q`, `k`, `v`,
/// then `o`, `d_o` and `lse` (`problem::backward`), then one scan of `o` and `d_o` (NaN and
/// infinities refused, naming them).
pub(crate) fn backward_problem<'a, T: Element>(
    call: &BackwardInputs<T>,
    opts: &AttentionOptions<'a>,
) -> Result<AttentionProblem<'a>> {
    let p = problem(call.q, call.k, call.v, call.mask, opts)?;
    crate::problem::backward::check(&p, &Operand::host(call.o), &Operand::host(call.d_o), call.lse)?;
    scan("o", call.o.data())?;
    scan("d_o", call.d_o.data())?;
    Ok(p)
}

impl AttentionGrads {
    /// The gradients from BHSD-ordered buffers (`nk` keys), each put in its input's layout.
    pub(crate) fn from_bhsd<T>(
        call: &BackwardInputs<T>,
        nk: usize,
        (dq, dk, dv): (Vec<f32>, Vec<f32>, Vec<f32>),
        d_sinks: Option<Vec<f32>>,
    ) -> Self {
        let ks = Shape { seq: nk, ..call.k.shape() };
        AttentionGrads {
            dq: to_layout(dq, &call.q.shape(), call.q.layout()),
            dk: to_layout(dk, &ks, call.k.layout()),
            dv: to_layout(dv, &ks, call.v.layout()),
            d_sinks,
        }
    }
}

//! The public tensors of a backward call on the GPU ([`AttentionBackwardCall`]) and of its
//! gradients ([`AttentionGradTensors`], [`AttentionGradOutputs`]): plain groupings of
//! [`Tensor`]s, in the device layer so that the launcher (`launch::attention_backward`) and the
//! operation (`ops::attention_backward`, which documents and checks them) share one definition.

use crate::tensor::{Mask, Tensor};

/// The tensors of a backward call on the GPU: the forward's inputs and mask (with the same
/// [`AttentionOptions`](crate::AttentionOptions)), its output `o` and log-sum-exp `lse` (as
/// [`Context::attention_with_lse`](crate::Context::attention_with_lse) returns them), and `d_o`, the loss's gradient with respect to
/// `o` (`q`'s shape and dtype, any layout).
#[derive(Clone, Copy, Debug)]
pub struct AttentionBackwardCall<'a> {
    /// Queries `[batch, heads, nq, d]`, f32 or f16, any layout or strided view.
    pub q: &'a Tensor,
    /// Keys `[batch, kv_heads, nk, d]`.
    pub k: &'a Tensor,
    /// Values, as `k`.
    pub v: &'a Tensor,
    /// The forward's mask, if any (no gradient flows to it).
    pub mask: Option<&'a Mask>,
    /// The forward's output, `q`'s shape and dtype.
    pub o: &'a Tensor,
    /// The forward's natural log-sum-exp, f32 `[batch, heads, nq, 1]`.
    pub lse: &'a Tensor,
    /// The output's gradient, `q`'s shape and dtype.
    pub d_o: &'a Tensor,
}

/// Gradients on the GPU: f32 tensors in BHSD layout, `dq` with `q`'s shape, `dk` and `dv` with
/// `k`'s (summed over the query heads that share each key/value head), `d_sinks` `[1, heads, 1,
/// 1]` when the call has sinks.
#[derive(Clone, Debug)]
pub struct AttentionGradTensors {
    /// With respect to `q`.
    pub dq: Tensor,
    /// With respect to `k`.
    pub dk: Tensor,
    /// With respect to `v`.
    pub dv: Tensor,
    /// With respect to the sink logits, one per query head (`AttentionOptions::sinks`).
    pub d_sinks: Option<Tensor>,
}

/// A caller's tensors for the gradients ([`Context::encode_attention_backward`](crate::Context::encode_attention_backward)): each f32,
/// BHSD and contiguous from the start of its buffer, with the shapes of
/// [`AttentionGradTensors`]; `d_sinks` exactly when the call has sinks.
#[derive(Clone, Copy, Debug)]
pub struct AttentionGradOutputs<'a> {
    /// `q`'s shape.
    pub dq: &'a Tensor,
    /// `k`'s shape.
    pub dk: &'a Tensor,
    /// `k`'s shape.
    pub dv: &'a Tensor,
    /// `[1, heads, 1, 1]`, with sinks.
    pub d_sinks: Option<&'a Tensor>,
}

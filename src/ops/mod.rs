//! GPU operations on [`Context`](crate::Context): argument checks, then kernel launches.
//!
//! Each operation comes in two forms: `op(..)` allocates its output, records and submits
//! (no readback: call [`Tensor::download_blocking`](crate::Tensor::download_blocking) when you want
//! the numbers), and `encode_op(encoder, .., out)` records into the caller's encoder with no
//! submit, writing into a caller-provided output tensor.

mod attention;
mod similarity;
pub(crate) mod topk;

pub(crate) use attention::AttentionTile;
mod softmax;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::shape::{DType, Shape};
use crate::tensor::Tensor;

/// Checks a tensor's dtype is usable on this device and equal to `expected` (if given).
pub(crate) fn check_dtype(ctx: &Context, argument: &'static str, t: &Tensor, expected: Option<DType>) -> Result<()> {
    if let Some(e) = expected {
        if t.dtype != e {
            return Err(Error::DTypeMismatch { argument, got: t.dtype, expected: e });
        }
    }
    if t.dtype == DType::F16 && !ctx.supports_f16() {
        return Err(Error::F16Unsupported { argument });
    }
    Ok(())
}

/// Checks a caller-provided output: shape, dtype, storage usage.
pub(crate) fn check_out(ctx: &Context, argument: &'static str, t: &Tensor, shape: Shape, dtype: DType) -> Result<()> {
    for (dim, got, expected) in [
        ("batch", t.shape.batch, shape.batch),
        ("heads", t.shape.heads, shape.heads),
        ("seq", t.shape.seq, shape.seq),
        ("dim", t.shape.dim, shape.dim),
    ] {
        if got != expected {
            return Err(Error::ShapeMismatch { argument, other: "inputs", dim, got, expected });
        }
    }
    check_dtype(ctx, argument, t, Some(dtype))
}

/// Uploads per-batch key lengths (if any).
pub(crate) fn key_lengths_buffer(ctx: &Context, kl: Option<&[u32]>) -> Result<Option<wgpu::Buffer>> {
    kl.map(|kl| ctx.create_init(bytemuck::cast_slice(kl), "key_lengths")).transpose()
}

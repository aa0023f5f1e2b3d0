//! # wgpu-attention
//!
//! Attention as soft retrieval, on any Vulkan, Metal or DX12 GPU through [wgpu], with a CPU
//! path of the same semantics.
//!
//! - [`Context`]: a device (chosen for you, or your own via [`Context::from_device`]) with cached
//!   pipelines. GPU-resident [`Tensor`]s of logical shape `[batch, heads, seq, dim]`, stored
//!   [`Layout::Bhsd`] or [`Layout::Bshd`], f32 or f16.
//! - Operations: [`Context::similarity`] (dot, scaled dot, cosine), [`Context::softmax`]
//!   (temperature, masks, causal, key lengths), [`Context::attention`] (fused, online softmax,
//!   GQA/MQA, masks, causal, key lengths, head dims 1..=256, optional log-sum-exp) and
//!   [`Context::attention_unfused`] (returns the weights). Each has an `encode_*` twin that
//!   records into your `CommandEncoder`.
//! - Retrieval: [`Context::top_k`] (exact top-k by dot, cosine or L2, best first, ties to the
//!   lower index) and a resident [`Index`] that keys are added to and searched
//!   ([`Index::search`]), with ids of your own if you like.
//! - Your buffers: [`Tensor::from_buffer`] (contiguous) and [`Tensor::from_buffer_strided`]
//!   (any batch, head and sequence strides, e.g. views into a fused QKV projection) wrap them
//!   without a copy; [`AttentionCall`] names the tensors of a recorded call.
//! - Async: every one-shot operation has an `_async` twin (e.g. [`Context::attention_async`],
//!   [`Index::search_async`], [`Tensor::download`]) that never blocks a thread; the blocking
//!   forms wrap them. The crate reports through the `log` crate and never prints.
//! - [`cpu`]: the same operations on the CPU, fast (f32 blocks through a GEMM, vectorised,
//!   multi-threaded); [`cpu::reference`] computes them in f64 from their definitions, the
//!   reference everything is tested against.
//! - [`Backend`]: one-shot helpers on host slices that use the GPU when there is one.
//!
//! ## Kernel variants
//! Attention runs one of several kernel variants ([`AttentionVariant`]: fused with vector or
//! scalar loads, split-K, unfused). The crate chooses by default;
//! [`Context::plan_attention`] says what it chose and why, and [`AttentionOptions::variant`]
//! forces one (a variant the device cannot run is an [`Error::Unsupported`], never swapped).
//!
//! ## Semantics in brief
//! - Scores are `scale · q·k` (default scale `1/sqrt(d)`), plus an additive mask if given.
//! - Boolean masks: `true` keeps a key. Additive masks: only `-inf` drops a key; every finite
//!   value is added.
//! - Causal is aligned bottom-right (FlashAttention): query `i` sees keys `j <= i + nk - nq`.
//! - A row with every key masked gives zeros (and log-sum-exp `-inf`), never NaN.
//! - Host inputs with NaN or ±inf are refused with [`Error::NonFinite`] (additive masks may hold
//!   `-inf`). Buffers wrapped with [`Tensor::from_buffer`] are not scanned; non-finite values there
//!   give unspecified but finite values in the rows they touch.
//! - Finite inputs never give NaN: scores are carried through f32 without overflow (the scale and
//!   temperature must lie within [`SCALE_RANGE`]); results beyond f32's range saturate.
//! - One validation layer serves the GPU, the CPU path and [`Backend`]: the same invalid call
//!   gets the same [`Error`] on each, before any GPU work.
//!
//! ```no_run
//! use wgpu_attention::*;
//! # fn main() -> Result<()> {
//! let ctx = Context::new_blocking()?;
//! let shape = Shape::new(2, 8, 128, 64); // batch, heads, seq, head dim
//! let data: Vec<f32> = (0..shape.numel()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
//! let q = ctx.upload(&data, shape)?;
//! let k = ctx.upload(&data, shape)?;
//! let v = ctx.upload(&data, shape)?;
//! let out = ctx.attention(&q, &k, &v, None, &AttentionOptions { causal: true, ..Default::default() })?;
//! let host: Vec<f32> = out.download_blocking(&ctx)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod backend;
mod backward_call;
mod block_table;
mod caps;
mod context;
pub mod cpu;
mod diagnostics;
mod dtype;
mod error;
mod host;
mod index;
mod kernels;
mod kv_dtype;
mod launch;
mod ops;
mod options;
mod pages;
mod paged;
mod pipeline;
mod pipeline_cache;
mod plan;
mod problem;
mod readback;
mod record;
mod retrieval;
mod reuse;
mod shape;
mod tensor;
mod tensor_cores;
mod vecmath;
mod timestamps;
mod timing;
mod tuning;
mod varlen;

pub use backend::Backend;
pub use block_table::{DeviceBlockTable, PagedTable};
pub use caps::Caps;
pub use context::{list_adapters, Context, ContextInfo, ContextOptions, USEFUL_FEATURES};
pub use diagnostics::{AllocatorTotals, Diagnostics, WgpuCounters};
pub use error::{Error, Result};
pub use host::{HostMask, HostMaskValues, HostTensor, MaskKind};
pub use index::{Index, SearchResult};
pub use kernels::attention_plan::{AttentionPlan, FIXED_ORDER_BLOCK};
pub use launch::top_k::TopKOutput;
pub use retrieval::{Metric, TopK, MAX_K};
pub use backward_call::{AttentionBackwardCall, AttentionGradOutputs, AttentionGradTensors};
pub use ops::{AttentionCall, AttentionShapes, PagedAttentionCall, SimilarityPlan, TensorCoreCheck, VarlenBuffers, VarlenBuffersCall, VarlenCall};
pub use options::{AttentionConfig, AttentionOptions, AttentionVariant, Loads, Similarity, SoftmaxOptions, Window};
pub use kv_dtype::{
    dequantize_q4_0, dequantize_q8_0, fp8_e4m3_from_f32, fp8_e4m3_to_f32, fp8_scales_for, quantize_q4_0, quantize_q8_0,
    BlockQ4_0, BlockQ8_0, KvDType, FP8_E4M3_MAX, QK,
};
pub use pages::{BlockTable, HostKvCache, KvFormat, PageGeometry};
pub use paged::PagedKvCache;
pub use problem::{MAX_ALIBI_SLOPE, SCALE_RANGE};
pub use shape::{DType, Element, Layout, Shape, Strides, MAX_HEAD_DIM};
pub use tensor::{Mask, Tensor};
pub use tensor_cores::{TensorCoreState, TensorCores};
pub use tuning::{ShapeClass, SimilarityKernel, TunedChoice, Tuning, TuningTable};
pub use varlen::Varlen;

/// Re-export of `half` (for `f16`).
pub use half;
/// Re-export of the wgpu version this crate is built against.
pub use wgpu;

/// The README's code blocks, compiled as doctests so the API tour stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

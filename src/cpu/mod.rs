//! The CPU path: every GPU operation with the same semantics, fast and multi-threaded.
//!
//! Each function mirrors the GPU kernel of the same name (`shaders/<name>.wgsl`, launched from
//! `src/kernels/<name>.rs`): f32 arithmetic in blocks, the products through a GEMM
//! (the `gemm` crate, SIMD kernels chosen at run time), the exponentials and row reductions vectorised
//! (AVX-512 or AVX2 where the processor has them), threads over (batch, head, block of rows)
//! with rayon. Attention never forms the `nq × nk` scores; top-k never stores all scores.
//! f16 inputs are widened a block of rows at a time.
//!
//! [`reference`](mod@reference) holds the same operations computed from their definitions in f64, one row at a
//! time: the reference that the GPU kernels and this path are tested against. Calls whose
//! scores, biases or sums could pass 1e30 in magnitude (far beyond ordinary data) run on it
//! here too, so the extreme-value rules (saturation, no NaN from finite inputs) have one
//! implementation.
//!
//! Outputs are f32, in the layout of the first input (scores and weights are always
//! `[batch, heads, nq, nk]` row-major). Arguments are checked by the same validation layer as
//! the GPU path, so an invalid call gets the same error on both.

pub(crate) mod attention;
pub(crate) mod attention_backward;
mod attention_merge;
mod backward_inputs;
mod gemm;
mod kv_append;
mod varlen;
pub mod reference;
pub(crate) mod similarity;
pub(crate) mod softmax;
pub(crate) mod top_k;
pub(crate) mod weighted_sum;

pub use attention::{attention, attention_unfused, paged_attention};
pub use attention_backward::{attention_backward, AttentionGrads, BackwardInputs};
pub use attention_merge::{attention_merge, AttentionPartial};
pub use kv_append::append_kv;
pub use varlen::{append_kv_varlen, attention_varlen, paged_attention_varlen};
pub use similarity::similarity;
pub use softmax::softmax;
pub use top_k::top_k;
pub use weighted_sum::weighted_sum;

mod common;
pub(crate) use common::{dist2_64, dot64, tensor_rows, to_layout, view, widen, RowMask, Scoring, F32_SAFE};

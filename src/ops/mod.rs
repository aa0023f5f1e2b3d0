//! GPU operations on [`Context`](crate::Context): validation (one problem per call, see
//! `crate::problem`), the device-side checks below, then the kernels' launchers.
//!
//! Each operation comes in two forms: `op(..)` allocates its output, records and submits
//! (no readback: call [`Tensor::download_blocking`](crate::Tensor::download_blocking) when you want
//! the numbers), and `encode_op(encoder, .., out)` records into the caller's encoder with no
//! submit, writing into a caller-provided output tensor.
//!
//! Errors an `encode_*` call cannot see, because they arise after it returns: a buffer
//! destroyed (or mapped) by the caller before the work is submitted, an encoder that already
//! holds an error or an open pass, and the device being lost after recording. wgpu reports these
//! at the caller's `finish()` or `submit()`, not here.

mod attention;
mod attention_backward;
mod paged;
mod prepare;
mod similarity;
mod softmax;
mod tensor_cores;
mod top_k;
mod tuning;
mod varlen;
mod varlen_device;
mod weighted_sum;

pub use attention::AttentionCall;
pub use paged::PagedAttentionCall;
pub use prepare::AttentionShapes;
pub use similarity::SimilarityPlan;
pub use tensor_cores::TensorCoreCheck;
pub use varlen::VarlenCall;
pub use varlen_device::{VarlenBuffers, VarlenBuffersCall};

mod checks;
pub(crate) use checks::{check_aliasing, Region};

//! The one validation layer: a problem type per operation, built once from shapes, dtypes and
//! options, and used alike by the GPU operations, the CPU path and [`crate::Backend`].
//!
//! Each `*Problem::new` checks its arguments in one documented order, so the same invalid call
//! gets the same [`Error`] on every path. Nothing here touches a device: what a device can run
//! is decided afterwards by the kernels' pure planning (`crate::kernels`), against
//! [`crate::Caps`].
//!
//! The numeric ranges (see the README's "Extreme values") are decided here too: the constants of
//! [`ScoreTransform`] carry every score through the kernels' f32 arithmetic without overflow.

pub(crate) mod attention;
pub(crate) mod backward;
pub(crate) mod paged;
pub(crate) mod similarity;
pub(crate) mod softmax;
pub(crate) mod top_k;
pub(crate) mod varlen;
pub(crate) mod weighted_sum;

pub use attention::MAX_ALIBI_SLOPE;
pub(crate) use attention::{AttentionProblem, ScoreOptions};
pub(crate) use paged::{AppendProblem, PagedProblem};
pub(crate) use similarity::SimilarityProblem;
pub(crate) use softmax::SoftmaxProblem;
pub(crate) use top_k::TopKProblem;
pub(crate) use weighted_sum::WeightedSumProblem;

mod common;
pub use common::SCALE_RANGE;
pub(crate) use common::{
    check_key_lengths, check_mask, check_multiplier, check_operand, check_output, pow2, qk_dims,
    same_dtype, saturate, sum_prescale, Dims, MaskSpec, Operand, ScoreTransform, ZNONE, ZSAT,
};

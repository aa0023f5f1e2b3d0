//! Launching kernel variants on a device: for each family, the buffers, the parameter block and
//! the dispatches of a checked call, recorded into an encoder. Above the variants (`kernels/`,
//! which know nothing of who launches them) and the device (`Context`, `Tensor`, `record.rs`);
//! below the operations (`ops/`), which validate, plan and call these.

pub(crate) mod attention;
pub(crate) mod attention_backward;
pub(crate) mod attention_merge;
pub(crate) mod kv_append;
pub(crate) mod row_norms;
mod score_args;
pub(crate) mod similarity;
pub(crate) mod softmax;
pub(crate) mod top_k;
pub(crate) mod weighted_sum;

pub(crate) use score_args::{masking_flags, ScoreArgs};

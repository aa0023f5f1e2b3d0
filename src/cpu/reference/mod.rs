//! The f64 reference: every operation computed from its definition, accumulating in f64, one
//! query row at a time, with the same semantics and validation as the GPU and the fast CPU path.
//!
//! It is slow by design and exists to check the others: the tests compare the GPU kernels and
//! the fast CPU path ([`crate::cpu`]) against it on the same seeded shapes. The fast path also
//! falls back to it for inputs whose scores or sums could leave f32's range (see
//! [`crate::cpu`]), so the extreme-value semantics have one implementation.

pub(crate) mod attention;
pub(crate) mod attention_backward;
pub(crate) mod similarity;
pub(crate) mod softmax;
pub(crate) mod top_k;
pub(crate) mod weighted_sum;

pub use attention::{attention, attention_unfused, paged_attention};
pub use attention_backward::attention_backward;
pub use crate::cpu::varlen::reference_attention_varlen as attention_varlen;
pub use similarity::similarity;
pub use softmax::softmax;
pub use top_k::top_k;
pub use weighted_sum::weighted_sum;

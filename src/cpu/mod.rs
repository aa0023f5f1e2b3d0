//! The CPU path: every GPU operation with the same semantics, multi-threaded with rayon.
//!
//! Each function mirrors the GPU kernel of the same name (`shaders/<name>.wgsl`) and accumulates
//! in f64, so it doubles as the validation reference. Outputs are f32, in the layout of the
//! first input (scores and weights are always `[batch, heads, nq, nk]` row-major).

pub(crate) mod attention;
pub(crate) mod similarity;
pub(crate) mod softmax;
mod topk;

pub use attention::{attention, attention_unfused, weighted_sum};
pub use similarity::similarity;
pub use softmax::softmax;
pub use topk::top_k;

use crate::shape::{HostMask, Layout, Shape};

/// Which scores of one `(b, h)` row survive masking; shared by softmax and attention.
#[derive(Clone, Copy)]
pub(crate) struct RowMask<'a> {
    pub mask: Option<&'a HostMask<'a>>,
    pub causal: bool,
    pub key_lengths: Option<&'a [u32]>,
    pub nq: usize,
    pub nk: usize,
}

impl RowMask<'_> {
    /// `Some(additive)` if score `(b, h, i, j)` is kept, `None` if masked.
    #[inline]
    pub fn kept(&self, b: usize, h: usize, i: usize, j: usize) -> Option<f64> {
        if let Some(kl) = self.key_lengths {
            if j >= kl[b] as usize {
                return None;
            }
        }
        if self.causal && (j as i64) > i as i64 + self.nk as i64 - self.nq as i64 {
            return None;
        }
        match self.mask {
            Some(m) => {
                let (keep, add) = m.at(b, h, i, j);
                keep.then_some(add as f64)
            }
            None => Some(0.0),
        }
    }
}

/// Reorders a BHSD-ordered buffer into `layout`.
pub(crate) fn to_layout(bhsd: Vec<f32>, shape: &Shape, layout: Layout) -> Vec<f32> {
    match layout {
        Layout::Bhsd => bhsd,
        Layout::Bshd => {
            let Shape { batch, heads, seq, dim } = *shape;
            let mut out = vec![0.0; bhsd.len()];
            for b in 0..batch {
                for h in 0..heads {
                    for s in 0..seq {
                        let src = ((b * heads + h) * seq + s) * dim;
                        let dst = ((b * seq + s) * heads + h) * dim;
                        out[dst..dst + dim].copy_from_slice(&bhsd[src..src + dim]);
                    }
                }
            }
            out
        }
    }
}

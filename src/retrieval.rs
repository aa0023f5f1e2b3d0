//! Hard retrieval's plain types: how keys are ranked ([`Metric`]), the results of a search
//! ([`TopK`]) and the largest k ([`MAX_K`]). Shared by the validation layer, the CPU path, the
//! GPU kernels and [`Index`](crate::Index).

use crate::options::Similarity;

/// Largest k supported.
pub const MAX_K: usize = 1024;

/// How retrieval ranks keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Largest dot product first.
    Dot,
    /// Largest cosine similarity first (a zero vector scores 0).
    Cosine,
    /// Smallest squared Euclidean distance first; reported scores are the squared distances.
    L2,
}

impl Metric {
    pub(crate) fn similarity(&self) -> Similarity {
        match self {
            Metric::Dot => Similarity::Dot,
            Metric::Cosine => Similarity::Cosine,
            Metric::L2 => Similarity::L2,
        }
    }
}

/// Results of a top-k search: for each of `nq` queries, `k` entries best first.
///
/// ```
/// use wgpu_attention::{cpu, Metric};
/// let keys = [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8]; // 3 keys of dim 2
/// let queries = [0.0f32, 1.0, 1.0, 0.0]; // 2 queries
/// let top = cpu::top_k(&queries, &keys, 2, 2, Metric::Dot)?;
/// assert_eq!((top.nq, top.k), (2, 2));
/// assert_eq!(top.indices_of(0), &[1, 2]); // best first
/// assert_eq!(top.scores_of(1), &[1.0, 0.6]);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Number of queries.
    pub nq: usize,
    /// Entries per query.
    pub k: usize,
    /// Key indices, `[nq, k]` row-major, best first; ties go to the lower index.
    pub indices: Vec<u32>,
    /// Scores, `[nq, k]`: dot product, cosine, or squared distance (for [`Metric::L2`]).
    pub scores: Vec<f32>,
}

impl TopK {
    /// The indices of query `i`.
    pub fn indices_of(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }
    /// The scores of query `i`.
    pub fn scores_of(&self, i: usize) -> &[f32] {
        &self.scores[i * self.k..(i + 1) * self.k]
    }
}


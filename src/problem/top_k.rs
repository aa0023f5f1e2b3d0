//! Exact top-k retrieval (`shaders/top_k.wgsl` after `similarity.wgsl`, `cpu::top_k`).

use crate::error::{Error, Result};
use crate::retrieval::{Metric, MAX_K};

/// A checked top-k call: for each of `nq` queries, the `k` best of `nk` keys of dimension `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopKProblem {
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub k: usize,
    pub metric: Metric,
}

impl TopKProblem {
    /// From row-major host slices `[nq, d]` and `[nk, d]`: the lengths must be whole rows.
    pub fn from_slices(queries: usize, keys: usize, d: usize, k: usize, metric: Metric) -> Result<Self> {
        let rows = |len: usize, argument| -> Result<usize> {
            if d == 0 || len == 0 || !len.is_multiple_of(d) {
                return Err(Error::LengthMismatch { argument, expected: len.div_ceil(d.max(1)).max(1) * d, got: len });
            }
            Ok(len / d)
        };
        let (nq, nk) = (rows(queries, "queries")?, rows(keys, "keys")?);
        Self::new(nq, nk, d, d, k, metric)
    }

    /// Checks, in this order: rows of queries and keys and the dimension (non-zero), the keys'
    /// dimension against the queries', then `k` (1..=min(nk, MAX_K)).
    pub fn new(nq: usize, nk: usize, qd: usize, kd: usize, k: usize, metric: Metric) -> Result<Self> {
        for (argument, dim, v) in [("queries", "rows", nq), ("keys", "rows", nk), ("queries", "dim", qd)] {
            if v == 0 {
                return Err(Error::EmptyDimension { argument, dim });
            }
        }
        if kd != qd {
            return Err(Error::ShapeMismatch { argument: "keys", other: "queries", dim: "dim", got: kd, expected: qd });
        }
        if k == 0 || k > MAX_K || k > nk {
            return Err(Error::InvalidArgument {
                argument: "k",
                message: format!("{k} is not in 1..={} (at most {MAX_K}, and at most the {nk} keys)", MAX_K.min(nk)),
            });
        }
        Ok(TopKProblem { nq, nk, d: qd, k, metric })
    }
}

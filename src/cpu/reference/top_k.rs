//! CPU twin of the GPU top-k (`shaders/similarity.wgsl` + `shaders/top_k.wgsl`).

use rayon::prelude::*;

use crate::cpu::{dist2_64, dot64};
use crate::error::Result;
use crate::host::scan;
use crate::retrieval::{Metric, TopK};
use crate::problem::{saturate, TopKProblem};

/// Exact top-k of `keys` (`[nk, d]` row-major) for each of `queries` (`[nq, d]`), best first,
/// ties to the lower index. Scores are computed in f64 and ranked before rounding to f32
/// (for [`Metric::L2`] the reported score is the squared distance).
pub fn top_k(queries: &[f32], keys: &[f32], d: usize, k: usize, metric: Metric) -> Result<TopK> {
    let (p, _, _) = problem(queries, keys, d, k, metric)?;
    Ok(top_k_checked(&p, queries, keys))
}

/// The checked problem of a host top-k call, its inputs scanned once: with their magnitudes.
pub(crate) fn problem(
    queries: &[f32],
    keys: &[f32],
    d: usize,
    k: usize,
    metric: Metric,
) -> Result<(TopKProblem, f32, f32)> {
    let p = TopKProblem::from_slices(queries.len(), keys.len(), d, k, metric)?;
    Ok((p, scan("queries", queries)?, scan("keys", keys)?))
}

/// [`top_k`] for a checked problem.
pub(crate) fn top_k_checked(p: &TopKProblem, queries: &[f32], keys: &[f32]) -> TopK {
    let (nq, d, k, metric) = (p.nq, p.d, p.k, p.metric);
    let norms: Vec<f64> = keys.chunks(d).map(|r| dot64(r, r).sqrt()).collect();
    let rows: Vec<(Vec<u32>, Vec<f32>)> = queries
        .par_chunks(d)
        .map(|q| {
            let qn: f64 = dot64(q, q).sqrt();
            let scored: Vec<(f64, u32)> = keys
                .chunks(d)
                .enumerate()
                .map(|(j, kr)| {
                    let s = match metric {
                        Metric::Dot => dot64(q, kr),
                        Metric::Cosine => {
                            let den = qn * norms[j];
                            if den == 0.0 {
                                0.0
                            } else {
                                dot64(q, kr) / den
                            }
                        }
                        Metric::L2 => -dist2_64(q, kr),
                    };
                    (s, j as u32)
                })
                .collect();
            ranked(scored, k, metric)
        })
        .collect();
    collect(nq, k, rows)
}

/// The best `k` of one query's `(f64 score, key)` pairs, best first, ties to the lower index,
/// as reported: indices and f32 scores (for L2 the squared distance, from `-score`).
pub(crate) fn ranked(mut scored: Vec<(f64, u32)>, k: usize, metric: Metric) -> (Vec<u32>, Vec<f32>) {
    let better = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k < scored.len() {
        scored.select_nth_unstable_by(k - 1, better);
        scored.truncate(k);
    }
    scored.sort_by(better);
    let sign = if metric == Metric::L2 { -1.0 } else { 1.0 };
    (scored.iter().map(|e| e.1).collect(), scored.iter().map(|e| saturate(sign * e.0)).collect())
}

/// Each query's ranked result, in query order, as one [`TopK`].
pub(crate) fn collect(nq: usize, k: usize, rows: Vec<(Vec<u32>, Vec<f32>)>) -> TopK {
    let mut out = TopK { nq, k, indices: Vec::with_capacity(nq * k), scores: Vec::with_capacity(nq * k) };
    for (i, s) in rows {
        out.indices.extend(i);
        out.scores.extend(s);
    }
    out
}

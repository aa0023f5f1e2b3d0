//! Fast CPU top-k (the CPU counterpart of the GPU's scoring + selection): keys in blocks, each
//! block scored against every query by one GEMM, each query's best kept in a bounded heap as
//! the block's scores are read (no `nq × nk` score matrix); threads take disjoint ranges of keys
//! and their heaps are merged. The few candidates that survive are re-scored in f64 and ranked
//! as the reference ranks them (ties to the lower index).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rayon::prelude::*;

use super::F32_SAFE;
use super::gemm::{gemm, Mat};
use super::{dist2_64, dot64};
use crate::error::Result;
use crate::retrieval::{Metric, TopK};
use crate::problem::TopKProblem;

pub(crate) use super::reference::top_k::problem;
use super::reference::top_k::{collect, ranked};

/// Keys per block (a block's keys stay in cache while every query is scored against them).
const KB: usize = 1024;
/// Candidates kept beyond `k` per query, so that f32 rounding near the k-th score cannot push
/// the exact k-th out before the f64 re-ranking.
const MARGIN: usize = 8;

/// A candidate: its f32 ranking score and key index. Orders worse-first: a lower score, or an
/// equal score with a higher index (ties go to the lower index).
#[derive(Clone, Copy, PartialEq)]
struct Cand {
    s: f32,
    j: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.s.total_cmp(&o.s).then(o.j.cmp(&self.j))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Exact top-k of `keys` (`[nk, d]` row-major) for each of `queries` (`[nq, d]`) on the fast
/// CPU path: best first, ties to the lower index, the reported scores computed in f64 as the
/// [`reference`](super::reference::top_k()) computes them (for [`Metric::L2`] the squared
/// distance). Candidates are chosen with f32 scores (keeping 8 more than `k`), so keys whose
/// scores differ from the k-th by less than f32 rounding may be ranked differently only if more
/// than 8 of them tie there. Calls whose products could pass 1e30 run on the f64 reference.
///
/// ```
/// use wgpu_attention::{cpu, Metric};
/// let keys = [0.0f32, 1.0, 1.0, 0.0, 0.7, 0.7]; // three keys of dim 2
/// let query = [1.0f32, 0.0];
/// let best = cpu::top_k(&query, &keys, 2, 2, Metric::Cosine)?;
/// assert_eq!(best.indices_of(0), &[1, 2]);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn top_k(queries: &[f32], keys: &[f32], d: usize, k: usize, metric: Metric) -> Result<TopK> {
    let (p, mq, mk) = problem(queries, keys, d, k, metric)?;
    Ok(top_k_checked(&p, queries, keys, mq, mk))
}

/// The f64 score the reference ranks by (for L2 the negated squared distance).
fn exact(metric: Metric, q: &[f32], kr: &[f32]) -> f64 {
    match metric {
        Metric::Dot => dot64(q, kr),
        Metric::Cosine => {
            let den = (dot64(q, q) * dot64(kr, kr)).sqrt();
            if den == 0.0 {
                0.0
            } else {
                dot64(q, kr) / den
            }
        }
        Metric::L2 => -dist2_64(q, kr),
    }
}

/// [`top_k`] for a checked problem; `mq` and `mk` are the inputs' largest magnitudes.
pub(crate) fn top_k_checked(p: &TopKProblem, queries: &[f32], keys: &[f32], mq: f32, mk: f32) -> TopK {
    let (nq, nk, d, k, metric) = (p.nq, p.nk, p.d, p.k, p.metric);
    let (mq, mk) = (mq as f64, mk as f64);
    if d as f64 * (mq + mk) * (mq + mk) > F32_SAFE {
        return super::reference::top_k::top_k_checked(p, queries, keys);
    }
    // ranking scores: dot; cosine with unit queries (÷ |k| per key); L2 as 2 q·k - |k|²
    // (|q|² is the same for every key of a query)
    let unit: Vec<f32>;
    let qs: &[f32] = if metric == Metric::Cosine {
        unit = queries
            .chunks(d)
            .flat_map(|q| {
                let n = dot64(q, q).sqrt();
                q.iter().map(move |&x| if n == 0.0 { 0.0 } else { (x as f64 / n) as f32 })
            })
            .collect();
        &unit
    } else {
        queries
    };
    let keep = (k + MARGIN).min(nk);
    let threads = rayon::current_num_threads();
    let ranges = (4 * threads).min(nk.div_ceil(KB)).max(1);
    let per = nk.div_ceil(ranges).div_ceil(KB) * KB;
    let heaps: Vec<Vec<BinaryHeap<Reverse<Cand>>>> = (0..ranges)
        .into_par_iter()
        .map(|r| {
            let (a, z) = ((r * per).min(nk), ((r + 1) * per).min(nk));
            let mut heaps: Vec<BinaryHeap<Reverse<Cand>>> =
                (0..nq).map(|_| BinaryHeap::with_capacity(keep + 1)).collect();
            let mut s = Vec::new();
            let mut j0 = a;
            while j0 < z {
                let j1 = (j0 + KB).min(z);
                let w = j1 - j0;
                let kb = &keys[j0 * d..j1 * d];
                s.resize(nq * w, 0.0);
                gemm(1.0, Mat::rows(qs, nq, d), Mat::rows(kb, w, d).t(), 0.0, &mut s, w);
                let adjust: Vec<(f32, f32)> = match metric {
                    Metric::Dot => vec![],
                    // score · mul + add
                    Metric::Cosine => kb
                        .chunks(d)
                        .map(|r| {
                            let n = dot64(r, r).sqrt();
                            (if n == 0.0 { 0.0 } else { (1.0 / n) as f32 }, 0.0)
                        })
                        .collect(),
                    Metric::L2 => kb.chunks(d).map(|r| (2.0, -(dot64(r, r) as f32))).collect(),
                };
                for (qi, row) in s.chunks_exact_mut(w).enumerate() {
                    if !adjust.is_empty() {
                        row.iter_mut().zip(&adjust).for_each(|(x, (m, a))| *x = *x * m + a);
                    }
                    let heap = &mut heaps[qi];
                    let mut thr = if heap.len() < keep {
                        f32::NEG_INFINITY
                    } else {
                        heap.peek().map_or(f32::NEG_INFINITY, |c| c.0.s)
                    };
                    for (jj, &x) in row.iter().enumerate() {
                        // keys come in increasing order: an equal score never beats a kept one
                        if x > thr || heap.len() < keep {
                            let c = Reverse(Cand { s: x, j: (j0 + jj) as u32 });
                            if heap.len() < keep {
                                heap.push(c);
                            } else if let Some(mut worst) = heap.peek_mut() {
                                // full (so x beats the worst): it replaces the worst, one sift
                                *worst = c;
                            }
                            if heap.len() == keep {
                                thr = heap.peek().map_or(f32::NEG_INFINITY, |c| c.0.s);
                            }
                        }
                    }
                }
                j0 = j1;
            }
            heaps
        })
        .collect();
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..nq)
        .into_par_iter()
        .map(|qi| {
            let q = &queries[qi * d..(qi + 1) * d];
            // the best `keep` of the ranges' candidates by their f32 scores, then those in f64
            let mut f32s: Vec<Cand> = heaps.iter().flat_map(|h| h[qi].iter().map(|c| c.0)).collect();
            if f32s.len() > keep {
                f32s.select_nth_unstable_by(keep - 1, |a, b| b.cmp(a));
                f32s.truncate(keep);
            }
            let cands: Vec<(f64, u32)> =
                f32s.iter().map(|c| (exact(metric, q, &keys[c.j as usize * d..(c.j as usize + 1) * d]), c.j)).collect();
            ranked(cands, k, metric)
        })
        .collect();
    collect(nq, k, rows)
}

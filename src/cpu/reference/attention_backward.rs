//! The f64 reference of the backward pass: the derivative of [`super::attention`] written from
//! its formulas, one query row at a time, accumulating in f64.
//!
//! For a kept score `s_ij` (the scale, soft-cap, ALiBi and mask applied to the dot product
//! `x_ij = q_i · k_j`) and the forward's log-sum-exp `lse_i` (which includes the sink),
//! `p_ij = exp(s_ij - lse_i)`, `D_i = dO_i · O_i`, and
//! - `dV_j = Σ_i p_ij dO_i`,
//! - `dS_ij = p_ij (dO_i · V_j - D_i)`, `dX_ij = dS_ij · ds/dx` (the scale, times
//!   `1 - tanh²` under the soft-cap),
//! - `dQ_i = Σ_j dX_ij K_j`, `dK_j = Σ_i dX_ij Q_i` (summed over the query heads of a group),
//! - `d_sink_h = -Σ_i exp(sink_h - lse_i) D_i` (the sink takes weight and gives no value).

use rayon::prelude::*;

use super::attention::scoring;
use crate::cpu::backward_inputs::{backward_problem, AttentionGrads, BackwardInputs};
use crate::cpu::{dot64, view, widen};
use crate::error::Result;
use crate::options::AttentionOptions;
use crate::problem::AttentionProblem;
use crate::shape::Element;

/// The gradients of [`super::attention`] with respect to `q`, `k`, `v` (and the sinks), in f64
/// from the definitions: the reference the fast path and the GPU are tested against. Same
/// arguments, checks and results as [`crate::cpu::attention_backward`].
pub fn attention_backward<T: Element>(call: &BackwardInputs<T>, opts: &AttentionOptions) -> Result<AttentionGrads> {
    let p = backward_problem(call, opts)?;
    Ok(backward_checked(&p, call))
}

/// One (batch, key/value head) group's gradients: dq of its query heads (BHSD rows), dk and dv
/// of the head, each query head's sink gradient.
struct Group {
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
    dsink: Vec<f64>,
}

/// [`attention_backward`] for a checked problem.
pub(crate) fn backward_checked<T: Element>(p: &AttentionProblem, call: &BackwardInputs<T>) -> AttentionGrads {
    let dims = p.dims;
    let (d, g, nq, nk) = (dims.d, dims.group(), dims.nq, dims.nk);
    let (qd, kd, vd) = (widen(call.q.data()), widen(call.k.data()), widen(call.v.data()));
    let (od, dod) = (widen(call.o.data()), widen(call.d_o.data()));
    let (q, k, v) = (view(call.q, &qd), view(call.k, &kd), view(call.v, &vd));
    let (o, d_o) = (view(call.o, &od), view(call.d_o, &dod));
    let sc = scoring(p, call.mask, None);
    let groups: Vec<Group> = (0..dims.batch * dims.kv_heads)
        .into_par_iter()
        .map(|t| {
            let (b, hk) = (t / dims.kv_heads, t % dims.kv_heads);
            let mut gr = Group {
                dq: vec![0.0; g * nq * d],
                dk: vec![0.0; nk * d],
                dv: vec![0.0; nk * d],
                dsink: vec![0.0; g],
            };
            for hg in 0..g {
                let h = hk * g + hg;
                for i in 0..nq {
                    let lse = call.lse[(b * dims.heads + h) * nq + i] as f64;
                    if !lse.is_finite() {
                        continue;
                    }
                    let (qi, oi, doi) = (q.row(b, h, i), o.row(b, h, i), d_o.row(b, h, i));
                    let di = dot64(doi, oi);
                    if let Some(s) = p.sinks {
                        gr.dsink[hg] -= (s[h] as f64 - lse).exp() * di;
                    }
                    let (start, limit) = sc.rm.key_range(b, i);
                    for j in start..limit {
                        let kj = k.row(b, hk, j);
                        let Some((s, slope)) = sc.score_slope(b, h, i, j, || dot64(qi, kj)) else { continue };
                        let pij = (s - lse).exp();
                        let dx = pij * (dot64(doi, v.row(b, hk, j)) - di) * slope;
                        let dq = &mut gr.dq[(hg * nq + i) * d..][..d];
                        dq.iter_mut().zip(kj).for_each(|(a, &x)| *a += dx * x as f64);
                        let dk = &mut gr.dk[j * d..][..d];
                        dk.iter_mut().zip(qi).for_each(|(a, &x)| *a += dx * x as f64);
                        let dv = &mut gr.dv[j * d..][..d];
                        dv.iter_mut().zip(doi).for_each(|(a, &x)| *a += pij * x as f64);
                    }
                }
            }
            gr
        })
        .collect();
    let narrow = |x: &[f64]| x.iter().map(|&y| y as f32).collect::<Vec<f32>>();
    let (dq, dk, dv): (Vec<f32>, Vec<f32>, Vec<f32>) = (
        groups.iter().flat_map(|gr| narrow(&gr.dq)).collect(),
        groups.iter().flat_map(|gr| narrow(&gr.dk)).collect(),
        groups.iter().flat_map(|gr| narrow(&gr.dv)).collect(),
    );
    let d_sinks = p.sinks.map(|_| {
        (0..dims.heads)
            .map(|h| (0..dims.batch).map(|b| groups[b * dims.kv_heads + h / g].dsink[h % g]).sum::<f64>() as f32)
            .collect()
    });
    AttentionGrads::from_bhsd(call, nk, (dq, dk, dv), d_sinks)
}

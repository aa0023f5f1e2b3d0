//! CPU twin of `shaders/attention_merge.wgsl`: partial results over disjoint key ranges,
//! combined by their log-sum-exp. The CPU attention uses it to split long key ranges across
//! threads when there are few query rows (decoding), as the GPU's split-K does.

/// The partial attention result of one query row over a range of keys.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionPartial {
    /// `Σ_j exp(s_j - max) · v_j` over the range's kept keys (`d` values).
    pub acc: Vec<f64>,
    /// The largest kept score, `-inf` if no key of the range was kept.
    pub max: f64,
    /// `Σ_j exp(s_j - max)` over the range's kept keys (0 if none).
    pub sum: f64,
}

impl AttentionPartial {
    /// The partial of a range where no key was kept.
    pub fn empty(d: usize) -> Self {
        AttentionPartial { acc: vec![0.0; d], max: f64::NEG_INFINITY, sum: 0.0 }
    }
}

/// Merges the partials of one query row (over disjoint key ranges) into its output and its
/// natural log-sum-exp: `M = max(m_s, sink)`, `L = Σ l_s e^(m_s - M) + e^(sink - M)`,
/// `O = Σ acc_s e^(m_s - M) / L`, `lse = M + ln L`, the sink (if any) counted once, in the
/// denominator only. A row no range kept anything for gives zeros and `-inf` (or the sink).
///
/// ```
/// use wgpu_attention::cpu::{attention_merge, AttentionPartial};
/// // one row whose keys were split in two halves, each with its running max, sum and
/// // unnormalised accumulator
/// let a = AttentionPartial { max: 1.0, sum: 2.0, acc: vec![2.0] };
/// let b = AttentionPartial { max: 1.0, sum: 2.0, acc: vec![6.0] };
/// let (out, lse) = attention_merge(&[a, b], None);
/// assert!((out[0] - 2.0).abs() < 1e-6 && (lse - (1.0 + 4f32.ln())).abs() < 1e-6);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn attention_merge(parts: &[AttentionPartial], sink: Option<f32>) -> (Vec<f32>, f32) {
    let d = parts.first().map_or(0, |p| p.acc.len());
    let sink = sink.map(|s| s as f64);
    let m = parts.iter().fold(sink.unwrap_or(f64::NEG_INFINITY), |a, p| a.max(p.max));
    if m == f64::NEG_INFINITY {
        return (vec![0.0; d], f32::NEG_INFINITY);
    }
    let w: Vec<f64> = parts.iter().map(|p| if p.sum > 0.0 { (p.max - m).exp() } else { 0.0 }).collect();
    let l: f64 = parts.iter().zip(&w).map(|(p, w)| p.sum * w).sum::<f64>() + sink.map_or(0.0, |s| (s - m).exp());
    let mut out = vec![0.0f64; d];
    for (p, w) in parts.iter().zip(&w) {
        out.iter_mut().zip(&p.acc).for_each(|(o, a)| *o += a * w);
    }
    (out.iter().map(|o| (o / l) as f32).collect(), (m + l.ln()) as f32)
}

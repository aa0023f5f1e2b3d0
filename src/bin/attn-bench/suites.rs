//! Benchmark cases and the named suites.

use serde::Serialize;

/// What a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Fused attention.
    Attention,
    /// Unfused attention (scores, softmax, weights · V).
    AttentionUnfused,
    /// Scaled dot-product similarity Q·Kᵀ.
    Similarity,
    /// Cosine similarity.
    Cosine,
    /// Softmax over rows of `nk` columns (`bh · nq` rows).
    Softmax,
    /// Exact top-k by dot product: `nq` queries against `nk` keys of dim `d` (`bh` = 1).
    Topk,
}

/// Element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dt {
    F32,
    F16,
}

impl Dt {
    pub fn bytes(&self) -> f64 {
        match self {
            Dt::F32 => 4.0,
            Dt::F16 => 2.0,
        }
    }
}

/// One benchmark case: `bh` batch·heads, `nq` queries, `nk` keys, head dim `d`.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub suite: String,
    pub op: Op,
    pub dtype: Dt,
    pub bh: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub causal: bool,
    /// Results per query (top-k only; 0 otherwise).
    pub k: usize,
    /// The kernel variant asked for (attention only; `Auto` lets the crate choose).
    #[serde(skip)]
    pub variant: wgpu_attention::AttentionVariant,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    pub fn new(suite: &str, op: Op, dtype: Dt, bh: usize, nq: usize, nk: usize, d: usize, causal: bool) -> Self {
        Case { suite: suite.into(), op, dtype, bh, nq, nk, d, causal, k: 0, variant: Default::default() }
    }

    /// A top-k case: `nq` queries, `nk` keys of dim `d`, `k` results each.
    pub fn topk(suite: &str, dtype: Dt, nq: usize, nk: usize, d: usize, k: usize) -> Self {
        Case {
            suite: suite.into(),
            op: Op::Topk,
            dtype,
            bh: 1,
            nq,
            nk,
            d,
            causal: false,
            k,
            variant: Default::default(),
        }
    }

    /// FLOPs: attention uses the FlashAttention convention 4·BH·Nq·Nk·D, halved when causal;
    /// similarity 2·BH·Nq·Nk·D; softmax 0 (it is judged by GB/s).
    pub fn flops(&self) -> f64 {
        let base = (self.bh * self.nq * self.nk * self.d) as f64;
        match self.op {
            Op::Attention | Op::AttentionUnfused => 4.0 * base * if self.causal { 0.5 } else { 1.0 },
            Op::Similarity | Op::Cosine | Op::Topk => 2.0 * base,
            Op::Softmax => 0.0,
        }
    }

    /// Bytes the operation must read and write at least (inputs and outputs once).
    pub fn bytes(&self) -> f64 {
        let e = self.dtype.bytes();
        let (bh, nq, nk, d) = (self.bh as f64, self.nq as f64, self.nk as f64, self.d as f64);
        match self.op {
            Op::Attention => e * (2.0 * bh * nq * d + 2.0 * bh * nk * d),
            Op::AttentionUnfused => e * (2.0 * bh * nq * d + 2.0 * bh * nk * d) + 4.0 * bh * nq * nk,
            Op::Similarity | Op::Cosine => e * (bh * nq * d + bh * nk * d) + 4.0 * bh * nq * nk,
            Op::Softmax => 2.0 * e * bh * nq * nk,
            Op::Topk => e * (nq * d + nk * d) + 8.0 * nq * self.k as f64,
        }
    }

    /// Host memory the case needs for inputs and outputs (CPU path and staging).
    pub fn host_bytes(&self) -> f64 {
        let (bh, nq, nk, d) = (self.bh as f64, self.nq as f64, self.nk as f64, self.d as f64);
        4.0 * match self.op {
            Op::Attention => 2.0 * bh * nq * d + 2.0 * bh * nk * d,
            Op::AttentionUnfused => 2.0 * bh * nq * d + 2.0 * bh * nk * d + bh * nq * nk,
            Op::Similarity | Op::Cosine => bh * nq * d + bh * nk * d + bh * nq * nk,
            Op::Softmax => 2.0 * bh * nq * nk,
            Op::Topk => nq * d + nk * d + 2.0 * nq * self.k as f64,
        }
    }
}

/// The named suites.
pub fn suite(name: &str) -> Option<Vec<Case>> {
    use Dt::*;
    use Op::*;
    let s = name;
    let mut v = vec![];
    match name {
        "quick" => {
            // small enough for a software rasteriser: a length sweep for the plot, then one of each op
            for dt in [F32, F16] {
                for n in [64, 128, 256, 512] {
                    v.push(Case::new(s, Attention, dt, 4, n, n, 64, false));
                }
            }
            v.push(Case::new(s, Attention, F32, 4, 256, 256, 64, true));
            v.push(Case::new(s, Attention, F32, 4, 1, 2048, 64, false));
            v.push(Case::new(s, AttentionUnfused, F32, 4, 256, 256, 64, false));
            v.push(Case::new(s, Similarity, F32, 4, 256, 256, 64, false));
            v.push(Case::new(s, Cosine, F32, 4, 256, 256, 64, false));
            v.push(Case::new(s, Softmax, F32, 4, 256, 1024, 0, false));
        }
        "prefill" => {
            for dt in [F16, F32] {
                for n in [1024, 2048, 4096, 8192] {
                    v.push(Case::new(s, Attention, dt, 16, n, n, 128, false));
                }
                v.push(Case::new(s, Attention, dt, 16, 4096, 4096, 128, true));
                v.push(Case::new(s, Attention, dt, 32, 1024, 1024, 64, false));
                v.push(Case::new(s, Attention, dt, 32, 4096, 4096, 64, false));
                v.push(Case::new(s, Attention, dt, 32, 4096, 4096, 64, true));
            }
        }
        "decode" => {
            for dt in [F16, F32] {
                for nk in [4096, 16384, 32768] {
                    v.push(Case::new(s, Attention, dt, 32, 1, nk, 128, false));
                }
                v.push(Case::new(s, Attention, dt, 8, 1, 131072, 128, false));
            }
        }
        "similarity" => {
            for dt in [F32, F16] {
                for d in [64, 128] {
                    v.push(Case::new(s, Similarity, dt, 16, 4096, 4096, d, false));
                }
                v.push(Case::new(s, Cosine, dt, 16, 4096, 4096, 64, false));
            }
        }
        "softmax" => {
            for dt in [F32, F16] {
                v.push(Case::new(s, Softmax, dt, 16, 4096, 4096, 0, false));
                v.push(Case::new(s, Softmax, dt, 8, 4096, 1024, 0, false));
            }
        }
        "topk" => {
            for dt in [F32, F16] {
                for k in [10, 100] {
                    v.push(Case::topk(s, dt, 1024, 1 << 20, 128, k));
                }
            }
            // 10M keys: f16 (2.5 GiB); in f32 one key tensor would pass a 4 GiB max_buffer_size
            v.push(Case::topk(s, F16, 64, 10_000_000, 128, 10));
        }
        "topk-cpu" => {
            // the shape of the faiss / PyTorch CPU figures on a 2-core machine
            for k in [10, 100] {
                v.push(Case::topk(s, F32, 256, 200_000, 128, k));
            }
        }
        _ => return None,
    }
    Some(v)
}

pub const SUITES: [&str; 7] = ["quick", "prefill", "decode", "similarity", "softmax", "topk", "topk-cpu"];

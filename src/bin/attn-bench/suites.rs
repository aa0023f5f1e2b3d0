//! Benchmark cases and the named suites.

use serde::Serialize;

/// What a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
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
    /// The backward of fused attention (dQ, dK, dV from the forward's output and log-sum-exp,
    /// computed once beforehand): the timed part is the backward alone.
    AttentionBackward,
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
///
/// Attention cases may also hold a KV cache as inference serves it: `batch` sequences of their
/// own lengths `lens` (each at most `nk`; queries at each sequence's last `nq` positions), in
/// contiguous tensors padded to `nk` with key lengths (`page_size` 0) or in a paged cache
/// (`page_size` tokens a page, pages dealt out of order); and a sliding `window`.
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
    /// The kernels' configuration asked for (attention only; default: the crate chooses).
    #[serde(skip)]
    pub config: wgpu_attention::AttentionConfig,
    /// Sequences; `bh` is `batch` × heads.
    pub batch: usize,
    /// Each sequence's key count (empty: `nk` each).
    pub lens: Vec<usize>,
    /// Tokens per page of a paged KV cache (0: contiguous K and V).
    pub page_size: usize,
    /// Sliding window: keys at most this many positions before the query's.
    pub window: Option<usize>,
    /// Query heads per key/value head (GQA; 1: as many key/value heads as query heads).
    pub kv_group: usize,
    /// The paged cache's K and V element type (`--kv-dtype`: `q8_0`, `q4_0`, `fp8`, or the
    /// case's dtype); `None`: the case's dtype.
    pub kv_dtype: Option<String>,
    /// A pack of variable-length sequences (`Context::attention_varlen`): each sequence's
    /// `lens` queries over its own `lens` keys, causal, no padding; the padded counterpart is
    /// the same case with `varlen` false (every sequence padded to the longest, key lengths).
    pub varlen: bool,
    /// With `varlen`: the offsets in device buffers (`Context::attention_varlen_buffers`, the
    /// whole pack in one dispatch of the fused kernel).
    pub device_offsets: bool,
    /// `AttentionOptions::fixed_order` (`--fixed-order`).
    pub fixed_order: bool,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    pub fn new(suite: &str, op: Op, dtype: Dt, bh: usize, nq: usize, nk: usize, d: usize, causal: bool) -> Self {
        Case {
            suite: suite.into(),
            op,
            dtype,
            bh,
            nq,
            nk,
            d,
            causal,
            k: 0,
            variant: Default::default(),
            config: Default::default(),
            batch: 1,
            lens: vec![],
            page_size: 0,
            window: None,
            kv_group: 1,
            kv_dtype: None,
            varlen: false,
            device_offsets: false,
            fixed_order: false,
        }
    }

    /// Decode over a KV cache: one query per sequence, `heads` heads, sequences of `lens` keys,
    /// contiguous (`page_size` 0, padded to the longest, with key lengths) or paged.
    pub fn kv_cache(suite: &str, dtype: Dt, heads: usize, lens: &[usize], d: usize, page_size: usize) -> Self {
        let nk = lens.iter().copied().max().unwrap_or(1);
        Case {
            batch: lens.len(),
            lens: lens.to_vec(),
            page_size,
            ..Case::new(suite, Op::Attention, dtype, lens.len() * heads, 1, nk, d, false)
        }
    }

    /// Causal prefill of `lens.len()` sequences of the given lengths, `heads` heads: packed
    /// (`varlen`) or padded to the longest with key lengths.
    pub fn prefill_lens(suite: &str, dtype: Dt, heads: usize, lens: &[usize], d: usize, varlen: bool) -> Self {
        let n = lens.iter().copied().max().unwrap_or(1);
        Case {
            batch: lens.len(),
            lens: lens.to_vec(),
            varlen,
            ..Case::new(suite, Op::Attention, dtype, lens.len() * heads, n, n, d, true)
        }
    }

    /// Query rows over all sequences: a pack's own, else `batch · nq`.
    pub fn query_rows(&self) -> usize {
        if self.varlen {
            self.seq_lens().iter().sum()
        } else {
            self.batch.max(1) * self.nq
        }
    }

    /// With a sliding window of `left` keys before each query.
    pub fn window(self, left: usize) -> Self {
        Case { window: Some(left), ..self }
    }

    /// The cache's element type (`--kv-dtype`), `None` where it is the case's dtype.
    pub fn kv(&self) -> Option<wgpu_attention::KvDType> {
        self.kv_dtype.as_deref().and_then(|s| s.parse().ok())
    }

    /// Bytes per K or V value read (scales included).
    pub fn kv_bytes_per_value(&self) -> f64 {
        self.kv().map_or(self.dtype.bytes(), |t| t.bits_per_value() / 8.0)
    }

    /// Heads per sequence.
    pub fn heads(&self) -> usize {
        self.bh / self.batch.max(1)
    }

    /// Key/value heads per sequence.
    pub fn kv_heads(&self) -> usize {
        (self.heads() / self.kv_group.max(1)).max(1)
    }

    /// Each sequence's key count.
    pub fn seq_lens(&self) -> Vec<usize> {
        if self.lens.is_empty() {
            vec![self.nk; self.batch.max(1)]
        } else {
            self.lens.clone()
        }
    }

    /// Whether FLOPs are counted pair by pair (mixed lengths, windows) rather than by the
    /// FlashAttention formula.
    fn counts_pairs(&self) -> bool {
        !self.lens.is_empty() || self.window.is_some()
    }

    /// The (query, key) pairs that are attended, over all sequences (one head): each query at
    /// position `end - nq + i` sees keys below its sequence's length, up to its position
    /// (causal) and at most `window` before it. `end` is the sequence's length over a paged
    /// cache, `nk` over contiguous tensors (key lengths do not move the queries).
    pub fn kept_pairs(&self) -> f64 {
        let mut pairs = 0.0;
        for len in self.seq_lens() {
            // a pack's sequence has its own queries, at its own positions
            let (end, nq) = if self.varlen { (len, len) } else if self.page_size > 0 { (len, self.nq) } else { (self.nk, self.nq) };
            for i in 0..nq {
                let pos = end as i64 - nq as i64 + i as i64;
                let hi = if self.causal { pos.min(len as i64 - 1) } else { len as i64 - 1 };
                let lo = self.window.map_or(0, |w| (pos - w as i64).max(0));
                pairs += (hi - lo + 1).max(0) as f64;
            }
        }
        pairs
    }

    /// Keys held per head: each sequence's (their sum; the padded `batch · nk` when contiguous).
    fn kv_tokens(&self, padded: bool) -> f64 {
        if padded {
            (self.batch.max(1) * self.nk) as f64
        } else {
            self.seq_lens().iter().sum::<usize>() as f64
        }
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
            config: Default::default(),
            batch: 1,
            lens: vec![],
            page_size: 0,
            window: None,
            kv_group: 1,
            kv_dtype: None,
            varlen: false,
            device_offsets: false,
            fixed_order: false,
        }
    }

    /// FLOPs: attention uses the FlashAttention convention 4·BH·Nq·Nk·D, halved when causal;
    /// similarity 2·BH·Nq·Nk·D; softmax 0 (it is judged by GB/s).
    /// With mixed sequence lengths or a window: 4·H·D times the pairs attended.
    pub fn flops(&self) -> f64 {
        let base = (self.bh * self.nq * self.nk * self.d) as f64;
        match self.op {
            Op::Attention if self.counts_pairs() => 4.0 * (self.heads() * self.d) as f64 * self.kept_pairs(),
            Op::Attention | Op::AttentionUnfused => 4.0 * base * if self.causal { 0.5 } else { 1.0 },
            // FlashAttention's count: five products against the forward's two
            Op::AttentionBackward => 2.5 * 4.0 * base * if self.causal { 0.5 } else { 1.0 },
            Op::Similarity | Op::Cosine | Op::Topk => 2.0 * base,
            Op::Softmax => 0.0,
        }
    }

    /// Bytes the operation must read and write at least (inputs and outputs once; of a KV
    /// cache, each sequence's own keys).
    pub fn bytes(&self) -> f64 {
        let e = self.dtype.bytes();
        let (bh, nq, nk, d) = (self.bh as f64, self.nq as f64, self.nk as f64, self.d as f64);
        match self.op {
            Op::Attention => {
                let q_rows = self.heads() as f64 * self.query_rows() as f64;
                e * 2.0 * q_rows * d + self.kv_bytes_per_value() * 2.0 * self.kv_heads() as f64 * self.kv_tokens(false) * d
            }
            Op::AttentionUnfused => e * (2.0 * bh * nq * d + 2.0 * bh * nk * d) + 4.0 * bh * nq * nk,
            // q, o, d_o and k, v read; dq, dk, dv written (f32)
            Op::AttentionBackward => {
                let kv = self.kv_heads() as f64 * nk * d;
                e * (3.0 * bh * nq * d + 2.0 * kv) + 4.0 * (bh * nq * d + 2.0 * kv)
            }
            Op::Similarity | Op::Cosine => e * (bh * nq * d + bh * nk * d) + 4.0 * bh * nq * nk,
            Op::Softmax => 2.0 * e * bh * nq * nk,
            Op::Topk => e * (nq * d + nk * d) + 8.0 * nq * self.k as f64,
        }
    }

    /// Host memory the case needs for inputs and outputs (CPU path and staging).
    pub fn host_bytes(&self) -> f64 {
        let (bh, nq, nk, d) = (self.bh as f64, self.nq as f64, self.nk as f64, self.d as f64);
        4.0 * match self.op {
            Op::Attention => 2.0 * bh * nq * d + 2.0 * self.heads() as f64 * self.kv_tokens(self.page_size == 0) * d,
            Op::AttentionUnfused => 2.0 * bh * nq * d + 2.0 * bh * nk * d + bh * nq * nk,
            Op::AttentionBackward => 5.0 * bh * nq * d + 4.0 * bh * nk * d,
            Op::Similarity | Op::Cosine => bh * nq * d + bh * nk * d + bh * nq * nk,
            Op::Softmax => 2.0 * bh * nq * nk,
            Op::Topk => nq * d + nk * d + 2.0 * nq * self.k as f64,
        }
    }
}

/// The named suites.
/// The cases of a named suite.
pub fn suite(which: Suite) -> Vec<Case> {
    use Dt::*;
    use Op::*;
    let s = which.name();
    let mut v = vec![];
    match which {
        Suite::Quick => {
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
        Suite::Prefill => {
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
        Suite::Decode => {
            for dt in [F16, F32] {
                for nk in [4096, 16384, 32768] {
                    v.push(Case::new(s, Attention, dt, 32, 1, nk, 128, false));
                }
                v.push(Case::new(s, Attention, dt, 8, 1, 131072, 128, false));
            }
        }
        Suite::Paged => {
            // decode over sequences of mixed lengths, contiguous (padded, key lengths) and paged
            // side by side. The first shape fits a 128 MiB binding in f32 (the paged pool is
            // one binding), so it runs on software Vulkan too.
            let small = [2048, 8192, 16384, 32768];
            let large = [1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768];
            for dt in [F16, F32] {
                for (heads, lens) in [(4, &small[..]), (8, &large[..])] {
                    for page_size in [0, 16] {
                        v.push(Case::kv_cache(s, dt, heads, lens, 128, page_size));
                    }
                }
            }
        }
        Suite::KvQuant => {
            // the quantized-cache targets (with --kv-dtype f16 --kv-dtype q8_0 ...: each over
            // a paged cache of each type): decode of 32 heads over 32k keys, and a batched
            // decode of 64 sequences of 4k keys, 8 heads
            v.push(Case::new(s, Attention, F16, 32, 1, 32768, 128, false));
            v.push(Case::kv_cache(s, F16, 8, &[4096; 64], 128, 16));
        }
        Suite::Backward | Suite::BackwardCpu => {
            // each backward case beside its forward, for the ratio
            let cases: Vec<(Dt, usize, usize, usize, bool)> = if which == Suite::Backward {
                vec![(F16, 16, 4096, 128, false), (F16, 16, 4096, 128, true), (F16, 32, 4096, 64, false), (F32, 16, 4096, 128, false)]
            } else {
                vec![(F32, 4, 512, 64, false), (F32, 4, 512, 64, true)]
            };
            for (dt, bh, n, d, causal) in cases {
                v.push(Case::new(s, Attention, dt, bh, n, n, d, causal));
                v.push(Case::new(s, AttentionBackward, dt, bh, n, n, d, causal));
            }
            if which == Suite::Backward {
                // GQA, 32 query heads over 8 key/value heads (the backward's pass 1 walks each
                // group's 4 heads)
                v.push(Case { kv_group: 4, ..Case::new(s, Attention, F16, 32, 4096, 4096, 128, false) });
                v.push(Case { kv_group: 4, ..Case::new(s, AttentionBackward, F16, 32, 4096, 4096, 128, false) });
            }
        }
        Suite::Varlen | Suite::VarlenCpu => {
            // a pack of sequences of lengths drawn from 16..=max (a fixed xorshift), causal
            // prefill: packed, and the same data padded to the longest with key lengths
            let (n, max, heads, d, dts) = if which == Suite::Varlen { (64, 4096, 16, 128, vec![F16]) } else { (16, 1024, 4, 64, vec![F32]) };
            let mut r = 0x9e37_79b9_7f4a_7c15u64;
            let lens: Vec<usize> = (0..n)
                .map(|_| {
                    r ^= r << 13;
                    r ^= r >> 7;
                    r ^= r << 17;
                    16 + (r % (max - 15) as u64) as usize
                })
                .collect();
            for dt in dts {
                v.push(Case::prefill_lens(s, dt, heads, &lens, d, true));
                let one = Case::prefill_lens(s, dt, heads, &lens, d, true);
                v.push(Case { device_offsets: true, ..one });
                v.push(Case::prefill_lens(s, dt, heads, &lens, d, false));
            }
        }
        Suite::Window => {
            // sliding-window prefill over 32k keys: cost in proportion to the window
            for dt in [F16, F32] {
                v.push(Case::new(s, Attention, dt, 16, 32768, 32768, 128, true));
                for w in [4096, 1024] {
                    v.push(Case::new(s, Attention, dt, 16, 32768, 32768, 128, true).window(w));
                }
            }
        }
        Suite::WindowCpu => {
            // the window suite's shape at a size a software rasteriser and 2 cores finish
            for dt in [F16, F32] {
                v.push(Case::new(s, Attention, dt, 2, 8192, 8192, 64, true));
                for w in [2048, 512] {
                    v.push(Case::new(s, Attention, dt, 2, 8192, 8192, 64, true).window(w));
                }
            }
        }
        Suite::Similarity => {
            for dt in [F32, F16] {
                for d in [64, 128] {
                    v.push(Case::new(s, Similarity, dt, 16, 4096, 4096, d, false));
                }
                v.push(Case::new(s, Cosine, dt, 16, 4096, 4096, 64, false));
            }
        }
        Suite::Softmax => {
            for dt in [F32, F16] {
                v.push(Case::new(s, Softmax, dt, 16, 4096, 4096, 0, false));
                v.push(Case::new(s, Softmax, dt, 8, 4096, 1024, 0, false));
            }
        }
        Suite::Topk => {
            for dt in [F32, F16] {
                for k in [10, 100] {
                    v.push(Case::topk(s, dt, 1024, 1 << 20, 128, k));
                }
            }
            // 10M keys: f16 (2.5 GiB); in f32 one key tensor would pass a 4 GiB max_buffer_size
            v.push(Case::topk(s, F16, 64, 10_000_000, 128, 10));
        }
        Suite::Cpu => {
            // the fast CPU path's comparison with PyTorch CPU and faiss (issue 12's shapes)
            for (n, d) in [(512, 64), (1024, 128)] {
                for causal in [false, true] {
                    v.push(Case::new(s, Attention, F32, 4, n, n, d, causal));
                }
            }
            v.push(Case::new(s, Similarity, F32, 4, 256, 256, 64, false));
            v.push(Case::new(s, Softmax, F32, 1, 1024, 1024, 0, false));
            for k in [10, 100] {
                v.push(Case::topk(s, F32, 256, 200_000, 128, k));
            }
        }
        Suite::Targets => {
            // one case per speed target of issues 9 (SIMT) and 10 (tensor cores), for a short GPU run
            v.push(Case::new(s, Attention, F32, 16, 4096, 4096, 128, false));
            v.push(Case::new(s, Attention, F16, 16, 4096, 4096, 128, false));
            v.push(Case::new(s, Attention, F16, 16, 4096, 4096, 128, true));
            v.push(Case::new(s, Attention, F16, 32, 4096, 4096, 64, false));
            v.push(Case::new(s, Attention, F16, 32, 1, 32768, 128, false));
            v.push(Case::new(s, Similarity, F32, 16, 4096, 4096, 128, false));
            v.push(Case::new(s, Similarity, F16, 16, 4096, 4096, 128, false));
            v.push(Case::new(s, Softmax, F32, 16, 4096, 4096, 0, false));
            v.push(Case::topk(s, F32, 1024, 1 << 20, 128, 10));
            // tiny: a 4 KiB output, where per-call overhead is everything
            v.push(Case::new(s, Attention, F32, 1, 8, 128, 128, false));
        }
        Suite::Sweep => {
            // the tensor-core tuning cases (issue 19), for `--sweep`: f16 prefill at d 128,
            // causal, d 64, and GQA (32 query heads on 8)
            v.push(Case::new(s, Attention, F16, 16, 4096, 4096, 128, false));
            v.push(Case::new(s, Attention, F16, 16, 4096, 4096, 128, true));
            v.push(Case::new(s, Attention, F16, 32, 4096, 4096, 64, false));
            v.push(Case { kv_group: 4, ..Case::new(s, Attention, F16, 32, 4096, 4096, 128, false) });
            // decode (one query, 32 heads over 32k keys, d 128): the decode kernel's splits
            // beside the other kernels (the 2026-11-27 run read 0.23 ms, later runs 1.15 ms)
            v.push(Case::new(s, Attention, F16, 32, 1, 32768, 128, false));
        }
        Suite::TopkCpu => {
            // the shape of the faiss / PyTorch CPU figures on a 2-core machine
            for k in [10, 100] {
                v.push(Case::topk(s, F32, 256, 200_000, 128, k));
            }
        }
    }
    v
}

/// The named suites (`--suite`), each documented for `--help` and `--list-suites`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "kebab-case")]
pub enum Suite {
    /// Small cases of every operation, fit for a software rasteriser (the default).
    Quick,
    /// Long-sequence attention prefill, f16 and f32, non-causal and causal.
    Prefill,
    /// One query per head over KV caches of 4k to 128k keys (decode).
    Decode,
    /// Decode over sequences of mixed lengths: contiguous with key lengths beside a paged cache.
    Paged,
    /// The quantized KV cache's GPU targets (run with `--kv-dtype`): f16 decode of 32 heads over
    /// 32k keys, d 128, and a batched decode of 64 sequences of 4k keys.
    KvQuant,
    /// Packed variable-length causal prefill (`attention_varlen`) beside the same data padded to
    /// the longest sequence with key lengths: 64 sequences of 16..4096 tokens, 16 heads, d 128, f16.
    Varlen,
    /// The varlen suite at a size lavapipe and 2 cores finish: 16 sequences of 16..1024 tokens,
    /// 4 heads, d 64, f32.
    VarlenCpu,
    /// Causal prefill over 32k keys: full, and sliding windows of 4096 and 1024.
    Window,
    /// Sliding-window prefill at sizes the CPU path finishes.
    WindowCpu,
    /// Similarity (scaled dot and cosine) at GEMM sizes.
    Similarity,
    /// Row softmax over rows of 4096 and 1024.
    Softmax,
    /// Exact top-k over a million keys and more.
    Topk,
    /// One case per GPU speed target (issues 9 and 10), for a short run on a GPU machine.
    Targets,
    /// The attention cases the device run sweeps (`--sweep`): f16 prefill, d 128 (causal too),
    /// d 64, and GQA 32/8 heads; f16 decode, 32 heads x 32k keys, d 128.
    Sweep,
    /// Top-k at the sizes of the faiss / PyTorch CPU comparison.
    TopkCpu,
    /// The CPU path's comparison with PyTorch CPU and faiss: attention, similarity, softmax, top-k.
    Cpu,
    /// The backward of fused attention beside its forward (issue 23's targets): f16 16x4096² d 128
    /// (and causal), 32x4096² d 64, f32 16x4096² d 128, f16 GQA 32/8 heads 4096² d 128.
    Backward,
    /// The backward beside its forward at sizes the CPU path and lavapipe finish (4 x 512², d 64,
    /// f32, and causal): the comparison with PyTorch's CPU backward.
    BackwardCpu,
}

impl Suite {
    /// The name `--suite` takes.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Quick => "quick",
            Suite::Prefill => "prefill",
            Suite::Decode => "decode",
            Suite::Paged => "paged",
            Suite::KvQuant => "kv-quant",
            Suite::Varlen => "varlen",
            Suite::VarlenCpu => "varlen-cpu",
            Suite::Window => "window",
            Suite::WindowCpu => "window-cpu",
            Suite::Similarity => "similarity",
            Suite::Softmax => "softmax",
            Suite::Topk => "topk",
            Suite::Targets => "targets",
            Suite::Sweep => "sweep",
            Suite::TopkCpu => "topk-cpu",
            Suite::Cpu => "cpu",
            Suite::Backward => "backward",
            Suite::BackwardCpu => "backward-cpu",
        }
    }
}

//! Options of the operations, and the kernel variants a caller can ask for.

/// How a query is compared with a key.
///
/// ```
/// use wgpu_attention::{cpu, HostTensor, Shape, Similarity};
/// let q = [3.0f32, 4.0];
/// let k = [3.0f32, 4.0];
/// let (q, k) = (HostTensor::new(&q, Shape::new(1, 1, 1, 2))?, HostTensor::new(&k, Shape::new(1, 1, 1, 2))?);
/// assert_eq!(cpu::similarity(&q, &k, Similarity::Dot)?, vec![25.0]);
/// assert_eq!(cpu::similarity(&q, &k, Similarity::ScaledDot(Some(0.2)))?, vec![5.0]);
/// assert_eq!(cpu::similarity(&q, &k, Similarity::Cosine)?, vec![1.0]);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Similarity {
    /// `q · k`.
    Dot,
    /// `scale · (q · k)`; `None` means `1/sqrt(dim)`. The scale must be finite.
    ScaledDot(Option<f32>),
    /// `(q · k) / (|q| |k|)`, norms computed in the kernel; a zero vector on either side gives 0.
    Cosine,
    /// `-|q - k|²`, the negated squared Euclidean distance (larger is closer), computed as
    /// `-(|q|² + |k|² - 2 q·k)` clamped to at most 0.
    L2,
}

impl Similarity {
    /// The factor applied to the raw dot product (cosine applies it after normalising).
    pub(crate) fn scale(&self, dim: usize) -> f32 {
        match self {
            Similarity::Dot | Similarity::Cosine | Similarity::L2 => 1.0,
            Similarity::ScaledDot(Some(s)) => *s,
            Similarity::ScaledDot(None) => 1.0 / (dim as f32).sqrt(),
        }
    }
}

/// Options of [`softmax`](crate::Context::softmax).
///
/// The softmax runs over the last dimension of a `[batch, heads, rows, cols]` tensor:
/// `y = softmax(x / temperature + additive_mask)` over the kept columns; masked columns get 0;
/// a row with every column masked gives all zeros.
///
/// ```
/// use wgpu_attention::{cpu, HostTensor, Shape, SoftmaxOptions};
/// let x = [1.0f32, 2.0, 3.0, 4.0];
/// // temperature 2: softmax(x / 2), over the first 3 of the 4 entries (key length 3)
/// let lens = [3u32];
/// let opts = SoftmaxOptions { temperature: 2.0, key_lengths: Some(&lens), ..Default::default() };
/// let p = cpu::softmax(&HostTensor::new(&x, Shape::new(1, 1, 1, 4))?, None, &opts)?;
/// assert_eq!(p[3], 0.0);
/// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxOptions<'a> {
    /// Divides the inputs before exponentiation: finite, between 2^-100 and 2^100. Default 1.
    pub temperature: f32,
    /// Causal masking: row `i` keeps columns `j <= i + cols - rows` (bottom-right aligned).
    pub causal: bool,
    /// Per-batch count of valid columns (`len == batch`, each `<= cols`); columns at or past it are masked.
    pub key_lengths: Option<&'a [u32]>,
}

impl Default for SoftmaxOptions<'_> {
    fn default() -> Self {
        SoftmaxOptions { temperature: 1.0, causal: false, key_lengths: None }
    }
}

/// How the fused attention kernels load Q, K and V from storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loads {
    /// One `vec4` load per four elements: needs a head dim that is a multiple of 4 and element
    /// offsets of Q, K and V that are multiples of 4.
    Vec4,
    /// Scalar loads: any head dim and offset.
    Scalar,
}

/// Which kernel variant computes an attention call.
///
/// `Auto` (the default) lets the crate choose: [`Context::plan_attention`](crate::Context::plan_attention)
/// says what it chose and why it fits. Any other value forces that variant; a variant the
/// device (or the call's shapes and alignment) cannot run is refused with
/// [`Error::Unsupported`](crate::Error::Unsupported), never swapped silently. The CPU path has a
/// single implementation and ignores this choice.
///
/// | variant | kernels | memory | suits |
/// |---|---|---|---|
/// | `Fused` | `shaders/attention.wgsl` | no scores stored | most shapes |
/// | `SplitK` | `attention.wgsl` (SPLIT) + `attention_merge.wgsl` | partials `splits·nq·(d+2)` f32 | few queries, many keys (decoding) |
/// | `Unfused` | `similarity` → `softmax` → `weighted_sum` | scores and weights `nq·nk` f32 | any head dim; inspection |
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let ctx = Context::new_blocking()?;
/// let q = ctx.zeros(Shape::new(1, 8, 1, 64), Layout::Bhsd, DType::F32)?;
/// let kv = ctx.zeros(Shape::new(1, 8, 8192, 64), Layout::Bhsd, DType::F32)?;
/// // what Auto runs here, and why; then the same call on another variant, to compare
/// let auto = ctx.plan_attention(&q, &kv, &kv, None, &AttentionOptions::default(), false)?;
/// println!("{}: {}", auto.variant, auto.reason);
/// let split = AttentionOptions { variant: AttentionVariant::SplitK(Loads::Vec4), ..Default::default() };
/// let out = ctx.attention(&q, &kv, &kv, None, &split)?; // Err(Unsupported) where it cannot run
/// # let _ = out; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttentionVariant {
    /// The crate chooses.
    #[default]
    Auto,
    /// One workgroup per block of query rows walks all keys with an online softmax.
    Fused(Loads),
    /// The keys are split across workgroups ("flash-decoding"); the partial results are merged
    /// by their log-sum-exp.
    SplitK(Loads),
    /// For few query rows against many keys (decode): one workgroup per key/value head holds
    /// the rows of every query head that shares it (K and V read once for all of them), 8
    /// lanes per key, the keys split across workgroups and merged by their log-sum-exp. Head
    /// dims up to 128.
    Decode(Loads),
    /// Scores, softmax and weighted sum as three kernels, materialising the `nq × nk` scores.
    Unfused,
    /// Fused attention on tensor cores (cooperative matrices; see `ContextOptions::tensor_cores`):
    /// f16 inputs, head dims up to 128, contiguous K and V, no key splits. Every score option
    /// (masks, causal, key lengths, windows, soft-capping, ALiBi, sinks), GQA/MQA, BSHD and the
    /// log-sum-exp work here; f32 inputs, a paged cache and decode-shaped calls (few query
    /// blocks, many keys) run the SIMT variants under `Auto`.
    TensorCores,
}

impl AttentionVariant {
    /// Every variant that can be forced (all but `Auto`).
    pub const ALL: [AttentionVariant; 8] = [
        AttentionVariant::Fused(Loads::Vec4),
        AttentionVariant::Fused(Loads::Scalar),
        AttentionVariant::SplitK(Loads::Vec4),
        AttentionVariant::SplitK(Loads::Scalar),
        AttentionVariant::Decode(Loads::Vec4),
        AttentionVariant::Decode(Loads::Scalar),
        AttentionVariant::Unfused,
        AttentionVariant::TensorCores,
    ];

    /// A short name, e.g. `fused-vec4`.
    pub fn name(&self) -> &'static str {
        match self {
            AttentionVariant::Auto => "auto",
            AttentionVariant::Fused(Loads::Vec4) => "fused-vec4",
            AttentionVariant::Fused(Loads::Scalar) => "fused-scalar",
            AttentionVariant::SplitK(Loads::Vec4) => "split-k-vec4",
            AttentionVariant::SplitK(Loads::Scalar) => "split-k-scalar",
            AttentionVariant::Decode(Loads::Vec4) => "decode-vec4",
            AttentionVariant::Decode(Loads::Scalar) => "decode-scalar",
            AttentionVariant::Unfused => "unfused",
            AttentionVariant::TensorCores => "tensor-cores",
        }
    }
}

impl std::fmt::Display for AttentionVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A sliding (local) attention window, in key positions relative to the query's position.
///
/// Query `i` sits at position `p = i + nk - nq` (bottom-right aligned, as causal; over a paged
/// cache `nk` is the sequence's length); it sees keys `j` with `p - left <= j` and, if `right`
/// is given, `j <= p + right`. Mistral's window of `w` keys ending at the query is
/// `Window { left: w - 1, right: Some(0) }` (or `right: None` with `causal: true`). A window wider
/// than the sequence changes nothing; `left: 0` keeps only keys at or after the query's position
/// (with causal, the query's own key).
///
/// ```
/// use wgpu_attention::{AttentionOptions, Window};
/// // Mistral-style local attention: each query sees itself and the 4095 keys before it
/// let opts = AttentionOptions { causal: true, window: Some(Window { left: 4095, right: None }), ..Default::default() };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Keys at most this many positions before the query's.
    pub left: usize,
    /// Keys at most this many positions after the query's; `None`: no bound on the right.
    pub right: Option<usize>,
}

/// The tuning parameters of the attention kernels: which tile shape a kernel runs with. Each
/// `None` leaves the choice to the crate (the context's tuned entry for the call's shape class,
/// then its built-in table, then the heuristic; see `ContextOptions::tuning`). A value applies to
/// the kernel it names, when that kernel runs: forced (`AttentionOptions::variant`) with a
/// value the device cannot run, the call is an `Err(Unsupported)` naming the field; under `Auto`
/// the tensor-core and decode kernels are passed over for it (the plan's `reason` says why), and
/// a SIMT chunk the device cannot run is an error.
///
/// ```
/// use wgpu_attention::{AttentionConfig, AttentionOptions};
/// // the tensor-core kernel with 32 query rows per workgroup (where it runs)
/// let opts = AttentionOptions { config: AttentionConfig { tc_rows: Some(32), ..Default::default() }, ..Default::default() };
/// assert_eq!(opts.config.to_string(), "tc_rows=32");
/// assert_eq!("tc_rows=32".parse::<AttentionConfig>(), Ok(opts.config));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttentionConfig {
    /// Tensor-core kernel: query rows per workgroup, 64, 32 or 16 (one subgroup per 16 rows;
    /// fewer rows need less workgroup memory and give more workgroups).
    pub tc_rows: Option<u32>,
    /// Tensor-core kernel: keys per tile, 32 or 64 (64 halves the barriers and the softmax
    /// hand-offs per key, and needs more workgroup memory).
    pub tc_keys: Option<u32>,
    /// Tensor-core kernel: staging depth, 1 (each K or V tile loaded, then staged: the default)
    /// or 2 (the next tile's global loads issued before the current tile's products, held in
    /// registers: hides their latency, costs registers).
    pub tc_stages: Option<u32>,
    /// Tensor-core kernel: where the softmax keeps a row's z between its two passes, 0 (written
    /// back to workgroup memory and read again: the default) or 1 (in registers).
    pub tc_softmax: Option<u32>,
    /// Fused and split-K SIMT kernels: the head-dim chunk of the Q and K tiles, 32, 16 or 8 (with
    /// it the keys per V chunk and per tile: larger chunks take fewer barriers per key and more
    /// workgroup memory).
    pub simt_chunk: Option<u32>,
    /// Decode kernel: keys per split, a positive multiple of 16 (more splits give more
    /// workgroups and more partials to merge).
    pub decode_split: Option<u32>,
    /// Backward (`Context::attention_backward`): keys per group of lanes in the dK/dV pass, and
    /// query rows per group in the dQ pass, 1 or 2 (2 only up to head dim 128). 2 lets each
    /// staged row feed two keys (fewer workgroup-memory reads: faster on a CPU adapter, the
    /// default there); 1 holds half the registers (faster on GPUs: an H200 ran 16 x 4096² d 128
    /// in 59 ms with 1 against 76 ms with 2; the default elsewhere).
    pub backward_keys: Option<u32>,
}

impl AttentionConfig {
    /// Whether every field is `None` (the crate chooses everything).
    pub fn is_default(&self) -> bool {
        *self == AttentionConfig::default()
    }
}

/// `tc_rows=32,tc_keys=64,simt_chunk=16,decode_split=512` (the fields that are set; empty for
/// none).
impl std::fmt::Display for AttentionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![];
        let fields = [
            ("tc_rows", self.tc_rows),
            ("tc_keys", self.tc_keys),
            ("tc_stages", self.tc_stages),
            ("tc_softmax", self.tc_softmax),
            ("simt_chunk", self.simt_chunk),
            ("decode_split", self.decode_split),
            ("backward_keys", self.backward_keys),
        ];
        for (name, v) in fields {
            if let Some(v) = v {
                parts.push(format!("{name}={v}"));
            }
        }
        f.write_str(&parts.join(","))
    }
}

/// Parses what `Display` writes (fields in any order, each at most once).
impl std::str::FromStr for AttentionConfig {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut c = AttentionConfig::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) =
                part.split_once('=').ok_or_else(|| format!("{part:?}: expected name=value"))?;
            let v: u32 = value.trim().parse().map_err(|_| format!("{part:?}: not a number"))?;
            let slot = match name.trim() {
                "tc_rows" => &mut c.tc_rows,
                "tc_keys" => &mut c.tc_keys,
                "tc_stages" => &mut c.tc_stages,
                "tc_softmax" => &mut c.tc_softmax,
                "simt_chunk" => &mut c.simt_chunk,
                "decode_split" => &mut c.decode_split,
                "backward_keys" => &mut c.backward_keys,
                other => {
                    return Err(format!(
                        "unknown field {other:?} (tc_rows, tc_keys, tc_stages, tc_softmax, simt_chunk, decode_split, backward_keys)"
                    ))
                }
            };
            if slot.replace(v).is_some() {
                return Err(format!("{name} given twice"));
            }
        }
        Ok(c)
    }
}

/// Options of fused and unfused attention.
///
/// `O = softmax(scores) V` per (batch, head), with the scores of query `i` and key `j` formed in
/// this order (each step only where its option is set):
///
/// 1. `s = scale · q·k`
/// 2. soft-capping: `s = softcap · tanh(s / softcap)`
/// 3. ALiBi: `s -= slope[h] · |p - j|` (`p` the query's position, as for the window)
/// 4. the additive mask is added; a `false` boolean mask entry or a `-inf` additive one drops the key
/// 5. keys outside the window, past the causal diagonal or at or past the key length are dropped
/// 6. the softmax runs over the kept keys, its denominator also counting `exp(sink[h])` when
///    sinks are given (the output is not a weighted sum over the sink: rows then weigh less than 1)
///
/// Key/value head `h / (heads / kv_heads)` serves query head `h` (GQA/MQA).
///
/// ```
/// use wgpu_attention::{cpu, AttentionOptions, HostTensor, Shape, Window};
/// let (q, kv) = (Shape::new(1, 4, 6, 8), Shape::new(1, 2, 6, 8)); // 4 query heads on 2
/// let data: Vec<f32> = (0..q.numel()).map(|i| (i as f32 * 0.1).sin()).collect();
/// let q = HostTensor::new(&data, q)?;
/// let k = HostTensor::new(&data[..kv.numel()], kv)?;
/// let slopes = [0.5f32, 0.25, 0.125, 0.0625];
/// let opts = AttentionOptions {
///     causal: true,
///     window: Some(Window { left: 3, right: None }),
///     softcap: Some(30.0),
///     alibi_slopes: Some(&slopes),
///     ..Default::default()
/// };
/// let (out, lse) = cpu::attention(&q, &k, &k, None, &opts)?;
/// assert_eq!((out.len(), lse.len()), (4 * 6 * 8, 4 * 6));
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// Score scale; `None` means `1/sqrt(head_dim)`. Must be finite, and 0 or of magnitude
    /// between 2^-100 and 2^100.
    pub scale: Option<f32>,
    /// Causal masking, aligned bottom-right as in FlashAttention: query `i` sees keys
    /// `j <= i + nk - nq` (`nk`, `nq` the tensors' sequence lengths). With `nq == nk` this is the
    /// usual lower triangle; with `nq > nk` the first `nq - nk` queries see no key and give zeros.
    pub causal: bool,
    /// Per-batch number of valid keys (padding): keys at or past `key_lengths[b]` are masked.
    /// `len == batch`, each `<= nk`; 0 masks every key (the rows give zeros).
    pub key_lengths: Option<&'a [u32]>,
    /// Sliding-window (local) attention; `None`: every key.
    pub window: Option<Window>,
    /// Logit soft-capping (Gemma 2): `s = softcap · tanh(s / softcap)` on the scaled scores,
    /// before masks and biases. Finite, between 2^-100 and 2^100.
    pub softcap: Option<f32>,
    /// ALiBi slopes, one per query head: `s -= slope[h] · |p - j|` (FlashAttention's
    /// convention; with `causal` the usual one-sided bias). Finite, magnitude at most 2^64.
    pub alibi_slopes: Option<&'a [f32]>,
    /// Attention sinks, one logit per query head, counted in the softmax denominator only
    /// (gpt-oss). The log-sum-exp includes it; a row whose keys are all masked gives zeros and a
    /// log-sum-exp equal to the sink.
    pub sinks: Option<&'a [f32]>,
    /// The GPU kernel variant; `Auto` by default (see [`AttentionVariant`]).
    pub variant: AttentionVariant,
    /// Lets f32 inputs run on tensor cores (in the spirit of PyTorch's `allow_tf32`): Q, K and V
    /// are rounded to f16 as they are staged (11 significant bits; magnitudes below 2^-24
    /// become 0), the sums stay f32 and the output f32. Only where every input's magnitude is
    /// known (tensors uploaded through the crate) and at most 65504, f16's largest; otherwise
    /// `Auto` runs the SIMT kernels and a forced `TensorCores` is refused, saying which. Off by
    /// default.
    pub f32_on_tensor_cores: bool,
    /// Fixed reduction order: a query row's output and log-sum-exp are bitwise the same however
    /// its keys arrived (prefill at once, chunked prefill or decode steps over a paged cache),
    /// for the same options on the same device. The keys are reduced in fixed blocks of
    /// [`FIXED_ORDER_BLOCK`](crate::FIXED_ORDER_BLOCK) from key 0, in tiles aligned within
    /// each block, by the split-K kernel alone, its partials merged in block order; no
    /// magnitude-based rescaling (scores or sums beyond f32's range saturate, as for
    /// unscanned inputs). `Auto` and `SplitK` run; other forced variants are refused with the
    /// reason. The CPU path computes each row on the f64 reference, in key order. Off by
    /// default (its cost: BENCHMARKS.md).
    pub fixed_order: bool,
    /// The kernels' tile shapes; all `None` (the crate chooses) by default. See
    /// [`AttentionConfig`].
    pub config: AttentionConfig,
}

impl AttentionOptions<'_> {
    /// The effective scale for head dim `d`.
    pub(crate) fn scale_for(&self, d: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (d as f32).sqrt())
    }
}
